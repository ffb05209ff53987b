"""`cmda-tune best EXPERIMENT [--json]`: the configuration the study decided is best, ready to retrain or use.

The decision is tune.decision's, taken on the experiment's trials with the decisions recorded in
decisions.jsonl standing (`keep_taken`), so `best` says what the sweep and the report say. Best: among the
configurations decided better than the reference, the largest difference (they are not tested against each
other: the output says so when there are several); when every comparison is decided and none is better, the
reference. Anything else (a sweep without `decide:`, a study still open with nothing decided better) is
"nothing decided", exit 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune.configuration import Configuration, report_number
from tune.decision import BETTER, SeedRun, Verdict, collect, decide, keep_taken, seed_run, taken
from tune.experiment import SWEEP_FILE, Experiment, ExperimentError, TrialRecord, join, open_experiment
from tune.trainable import trainer_overrides


class NothingDecided(ExperimentError):
    """The experiment holds no decided best configuration (the message says why)."""


def experiment_runs(records: Sequence[TrialRecord], metric: str, max_iters: int | None,
                    keys: Mapping[str, Configuration] | None = None) -> dict[str, SeedRun]:
    """trial_id -> SeedRun for every trial with a seed (of `keys`' configurations when given)."""
    runs = {}
    for trial in records:
        if not isinstance(trial.params, Mapping) or "seed" not in trial.params:
            continue
        try:
            key = Configuration.from_params(trial.params).key
        except ValueError:
            continue
        if keys is not None and key not in keys:
            continue
        budget = trial.max_iters or max_iters
        runs[trial.trial_id] = seed_run(key, int(trial.params["seed"]), status=trial.status,
                                        iteration=trial.iteration, max_iters=budget,
                                        value=report_number(trial.last_result, metric))
    return runs


@dataclass(frozen=True)
class Best:
    label: str
    key: str
    settings: list[str]  # --set KEY=VALUE, what the trainer needs besides the base config
    checkpoint: str | None  # the latest checkpoint of its best full-budget seed
    delta: float  # vs the reference (0 for the reference itself)
    decision: str
    tied: list[str]  # other configurations decided better (not tested against this one)

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "key": self.key, "settings": self.settings,
                "checkpoint": self.checkpoint, "delta": self.delta, "decision": self.decision,
                "also_better": self.tied}


def pick_best(verdict: Verdict, mode: str = "max") -> tuple[str | None, list[str]]:
    """(the decided best configuration key, the others decided better); None when nothing is decided."""
    sign = 1.0 if mode == "max" else -1.0
    better = [d for d in verdict.decisions.values() if d.outcome == BETTER and d.final]
    if better:
        ranked = sorted(better, key=lambda d: -sign * d.delta)
        return str(ranked[0].config), [str(d.config) for d in ranked[1:]]
    if verdict.done and verdict.references:
        return str(verdict.references[0]), []
    return None, []


def best_configuration(location: str) -> Best:
    experiment = open_experiment(location)
    sweep = experiment.sweep() or {}
    if not isinstance(sweep.get("decide"), Mapping):
        raise NothingDecided(f"{experiment.location}: the sweep has no decide: section, so nothing was "
                             "decided; see the report's comparisons (cmda-analyze) or run a decide: sweep")
    from tune.sweep import parse_sweep

    spec = parse_sweep(sweep, Path(experiment.where(SWEEP_FILE)))  # raises SweepError naming the field
    assert spec.decide is not None and spec.reference is not None
    configurations = {c.key: c for c in spec.launch_order()}
    records = experiment.trials()
    runs = experiment_runs(records, spec.metric, spec.max_iters, configurations)
    results = collect(list(runs.values()), configurations=list(configurations), reference=spec.reference.key,
                      initial_seeds=spec.seeds, mode=spec.mode, max_iters=spec.max_iters)
    history = experiment.decisions()
    recorded = history[-1] if history else {}
    verdict = keep_taken(decide(results, spec.decide), taken(recorded), recorded.get("wanted", {}))
    key, tied = pick_best(verdict, spec.mode)
    if key is None:
        still = "the study is still running" if not verdict.done else "no comparison was decided"
        raise NothingDecided(f"{experiment.location}: no configuration is decided better than "
                             f"{spec.reference.label} yet and {still}; `cmda-tune status` shows where it is")
    configuration = configurations[key]
    overrides = {**spec.overrides, **trainer_overrides({"ablation": configuration.as_param(), "seed": 0})}
    overrides.pop("seed", None)
    lambdas = overrides.pop("uda.feature_loss.lambdas", {})
    overrides.update({f"uda.feature_loss.lambdas.{term}": value for term, value in lambdas.items()})
    settings = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(overrides.items())]
    decision = verdict.decisions.get(key)
    return Best(label=configuration.label, key=key, settings=settings,
                checkpoint=_checkpoint(experiment, records, runs, key, spec.mode),
                delta=0.0 if decision is None else float(decision.delta),
                decision="reference" if decision is None else decision.outcome,
                tied=[configurations[c].label for c in tied])


def _checkpoint(experiment: Experiment, records: Sequence[TrialRecord], runs: Mapping[str, SeedRun], key: str,
                mode: str) -> str | None:
    """The latest checkpoint folder of the configuration's seed with the best full-budget value."""
    sign = 1.0 if mode == "max" else -1.0
    mine = [(run.value, trial) for trial in records if (run := runs.get(trial.trial_id)) is not None
            and run.config == key and math.isfinite(run.value)]
    for _, trial in sorted(mine, key=lambda pair: -sign * pair[0]):
        folders = sorted(name for name, is_dir in experiment.list(trial.dirname)
                         if is_dir and name.startswith("checkpoint_"))
        if folders:
            return join(experiment.location, trial.dirname, folders[-1])
    return None


def format_best(best: Best) -> str:
    lines = [f"best: {best.label}  ({best.decision}, Δ {best.delta:+.2f} vs the reference)",
             f"key: {best.key}",
             "settings: " + " ".join(f"--set {s}" for s in best.settings),
             f"checkpoint: {best.checkpoint or '(none kept)'}"]
    if best.tied:
        lines.append("also decided better (not tested against it): " + ", ".join(best.tied))
    return "\n".join(lines)

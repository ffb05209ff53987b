"""`cmda-tune best EXPERIMENT [--json]`: the study's best configuration, ready to retrain or use.

A `decide:` study: tune.decision's decision, taken on the experiment's trials with the decisions recorded in
decisions.jsonl standing (`keep_taken`), so `best` says what the sweep and the report say. Best: among the
configurations decided better than the reference, the largest difference (they are not tested against each
other: the output says so when there are several); once the study is over and none is better, the
reference. A `decide:` study still open with nothing decided better is "nothing decided", exit 1.

A study without `decide:`: the report's rule (its bold row: the largest paired difference to the reference
at the full budget, `tune.decision.best_by_delta`), said to be untested. Nothing is ranked when the
reference has not reached the full budget on every seed (exit 1), as in the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune.configuration import BASELINE_VARIANT, Configuration, report_number
from tune.decision import (
    BETTER,
    COMPLETE,
    SeedRun,
    Verdict,
    best_by_delta,
    collect,
    decide,
    keep_taken,
    paired_contrast,
    seed_run,
    taken,
)
from tune.experiment import SWEEP_FILE, Experiment, ExperimentError, TrialRecord, join, open_experiment
from tune.trainable import trainer_overrides

UNTESTED = "untested (the report's rule)"
"""The decision of a best found without a `decide:` study: the largest paired difference, no test."""


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
    decision: str  # better / reference (a decide: study), or UNTESTED (the report's rule)
    tied: list[str]  # other configurations decided better (not tested against this one)
    checkpoints: dict[int, str] = field(default_factory=dict)  # seed -> its latest checkpoint
    undecided: list[str] = field(default_factory=list)  # comparisons left open (a decide: study)

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "key": self.key, "settings": self.settings,
                "checkpoint": self.checkpoint,
                "checkpoints": {str(seed): path for seed, path in self.checkpoints.items()},
                "delta": self.delta, "decision": self.decision, "also_better": self.tied,
                "undecided": self.undecided}


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
    from tune.sweep import parse_sweep

    experiment = open_experiment(location)
    sweep = experiment.sweep()
    if sweep is None:
        raise NothingDecided(f"{experiment.location}: no {SWEEP_FILE}: not a cmda-tune experiment")
    spec = parse_sweep(sweep, Path(experiment.where(SWEEP_FILE)))  # raises SweepError naming the field
    records = experiment.trials()
    if spec.decide is None:
        return _by_the_reports_rule(experiment, spec, records)
    assert spec.reference is not None
    configurations = {c.key: c for c in spec.launch_order()}
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
    decision = verdict.decisions.get(key)
    open_ = [configurations[c].label for c, d in verdict.decisions.items()
             if c in configurations and d.outcome.startswith("undecided")]
    return _best(experiment, spec, records, runs, configurations[key],
                 delta=0.0 if decision is None else float(decision.delta),
                 decision="reference" if decision is None else decision.outcome,
                 tied=[configurations[c].label for c in tied], undecided=open_)


def _by_the_reports_rule(experiment: Experiment, spec: Any, records: Sequence[TrialRecord]) -> Best:
    """The report's bold row for a study without `decide:` (see module doc): each configuration against the
    baseline at its setting, paired by seed, over the full-budget values `collect` gathers."""
    configurations: dict[str, Configuration] = {}
    for trial in records:
        if isinstance(trial.params, Mapping) and "seed" in trial.params:
            configuration = Configuration.from_params(trial.params)
            configurations.setdefault(configuration.key, configuration)
    references: dict[str, str] = {}  # setting -> its baseline, as analysis.compare.reference_configurations
    for key, configuration in configurations.items():
        if configuration.variant == BASELINE_VARIANT:
            references.setdefault(configuration.setting_key, key)
    if not references:
        raise NothingDecided(f"{experiment.location}: no {BASELINE_VARIANT} trials: nothing to compare with")
    runs = experiment_runs(records, spec.metric, spec.max_iters, configurations)
    results = collect(list(runs.values()), configurations=list(configurations),
                      reference=next(iter(references.values())), initial_seeds=spec.seeds, mode=spec.mode)

    def complete(key: str) -> bool:  # every seed reached the full budget (a NaN value is skipped in pairs)
        return key not in results.pending and all(run.state == COMPLETE for run in runs.values()
                                                  if run.config == key)

    def full(key: str) -> bool:  # ... each with a value: what the reference needs for anything to rank
        return complete(key) and all(math.isfinite(v) for v in results.values[key].values())

    short = [configurations[r].label for r in references.values() if not full(r)]
    if short:
        raise NothingDecided(f"{experiment.location}: nothing is ranked: the reference ({', '.join(short)}) "
                             "did not reach the full budget with a value on every seed (as in the report)")
    deltas: dict[str, float] = {}
    for key, configuration in configurations.items():
        reference = references.get(configuration.setting_key)
        if reference is None or not complete(key):
            continue
        seeds = sorted(set(results.values[key]) & set(results.values[reference]))
        deltas[key] = paired_contrast([results.values[key][s] for s in seeds],
                                      [results.values[reference][s] for s in seeds]).estimate
    best = best_by_delta(deltas, spec.mode)
    return _best(experiment, spec, records, runs, configurations[best[0]], delta=deltas[best[0]],
                 decision=UNTESTED, tied=[configurations[k].label for k in best[1:]], undecided=[])


def _best(experiment: Experiment, spec: Any, records: Sequence[TrialRecord], runs: Mapping[str, SeedRun],
          configuration: Configuration, *, delta: float, decision: str, tied: list[str],
          undecided: list[str]) -> Best:
    overrides = {**spec.overrides, **trainer_overrides({"ablation": configuration.as_param(), "seed": 0})}
    overrides.pop("seed", None)
    lambdas = overrides.pop("uda.feature_loss.lambdas", {})
    overrides.update({f"uda.feature_loss.lambdas.{term}": value for term, value in lambdas.items()})
    settings = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(overrides.items())]
    checkpoints = _checkpoints(experiment, records, runs, configuration.key, spec.mode)
    return Best(label=configuration.label, key=configuration.key, settings=settings,
                checkpoint=next(iter(checkpoints.values()), None), delta=delta, decision=decision, tied=tied,
                checkpoints=checkpoints, undecided=undecided)


def _checkpoints(experiment: Experiment, records: Sequence[TrialRecord], runs: Mapping[str, SeedRun],
                 key: str, mode: str) -> dict[int, str]:
    """Seed -> the latest checkpoint folder of each of the configuration's seeds with a full-budget value,
    the best value first."""
    sign = 1.0 if mode == "max" else -1.0
    mine = [(run.value, run.seed, trial) for trial in records if (run := runs.get(trial.trial_id)) is not None
            and run.config == key and math.isfinite(run.value)]
    out: dict[int, str] = {}
    for _, seed, trial in sorted(mine, key=lambda item: -sign * item[0]):
        folders = sorted(name for name, is_dir in experiment.list(trial.dirname)
                         if is_dir and name.startswith("checkpoint_"))
        if folders and seed not in out:
            out[seed] = join(experiment.location, trial.dirname, folders[-1])
    return out


def format_best(best: Best) -> str:
    if best.decision == UNTESTED:
        how = f"by the report's rule: the largest paired Δ, {best.delta:+.2f} vs the reference; not tested"
    elif best.decision == "reference":
        how = "the reference: no configuration was decided better"
    else:
        how = f"{best.decision}, Δ {best.delta:+.2f} vs the reference"
    lines = [f"best: {best.label}  ({how})",
             f"key: {best.key}",
             "settings: " + " ".join(f"--set {s}" for s in best.settings),
             f"checkpoint: {best.checkpoint or '(none kept)'}"]
    lines += [f"  seed {seed}: {path}" for seed, path in best.checkpoints.items()]
    if best.tied:
        lines.append("also decided better (not tested against it): " + ", ".join(best.tied))
    if best.undecided:
        lines.append("left undecided: " + ", ".join(best.undecided))
    return "\n".join(lines)

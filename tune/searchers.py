"""Searchers that emit a configuration's seeds next to each other.

Ray's `grid_search` over {"ablation": ..., "seed": ...} varies the seed slowest, so a configuration's last
seed starts long after its first, and a decision over a configuration's seeds waits for it, which costs much
of what per-configuration stopping saves (benchmarks/README.md, early stopping on the study's shape). Both
searchers here hand out trials configuration-major:

- `GridSearcher` walks a fixed list of trial params (`SweepSpec.grid_trials()`).
- `ConfigurationOptuna` asks Optuna for a configuration (variant, lambda scale, and a draw of the search
  space's sampled entries: `tune.space.Space.suggest`), runs it on every seed of the sweep and tells Optuna
  ONE result per configuration: the mean over its seeds of the final metric;
  a configuration stopped early by the scheduler is told as PRUNED (with the per-iteration means over seeds
  as intermediate values), one whose seed failed for good as FAIL, so TPE never learns a truncated score as
  if it were complete. A configuration Optuna proposes again (e.g. the baseline) is not trained twice: it is
  told the known result (at once, or when its seeds finish).

Both save their state with the experiment (Ray pickles a searcher's `save` output) so `cmda-tune resume`
continues where the sweep stopped. Configurations are `tune.configuration.Configuration` keys, as the
schedulers group them. See docs/ARCHITECTURE.md (tune).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pickle
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import Searcher

from tune.configuration import BASELINE_VARIANT, ITERATION, Configuration, report_max_iters
from tune.decision import (
    LIVE,
    Results,
    SeedRun,
    Verdict,
    collect,
    decide,
    keep_taken,
    record,
    seed_run,
    taken,
)
from tune.experiment import DECISIONS_FILE, Experiment, ExperimentError
from tune.sweep import OptunaSearch, SweepSpec, make_configuration

log = logging.getLogger(__name__)


class _PickledState(Searcher):
    """save/restore of the searcher's whole state (Ray calls them at every experiment snapshot)."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))


class GridSearcher(_PickledState):
    """Hands out a fixed list of trial params in order, then FINISHED. With a concurrency limit (Ray's
    `max_concurrent_trials`, handed to `set_max_concurrency`), a configuration's consecutive trials start
    only together: all of them once the free slots hold them all, so per-configuration ASHA never waits at
    a rung for a seed that has not started."""

    def __init__(
        self, trials: list[dict[str, Any]], metric: str | None = None, mode: str | None = None
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self._trials = [dict(t) for t in trials]
        self._next = 0
        self._slots: int | None = None
        self._live: set[str] = set()
        self._group_left = 0  # trials of the group being started still to hand out

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self._slots = int(max_concurrent)
        return True

    def _group_size(self, start: int) -> int:
        keys = [Configuration.from_params(t).key for t in self._trials[start:]]
        return next((i for i, key in enumerate(keys) if key != keys[0]), len(keys))

    def _fits(self, size: int) -> bool:
        """A group of `size` may start: the free slots hold it (or nothing runs: a group wider than the slots
        still starts, in as many slots as there are)."""
        return self._slots is None or not self._live or len(self._live) + size <= self._slots

    def _grid_next(self, trial_id: str) -> dict[str, Any] | None:
        """The next trial of the fixed list; None while its group waits for slots or the list is spent."""
        if self._next >= len(self._trials):
            return None
        if self._slots is not None and len(self._live) >= self._slots:
            return None
        if self._group_left == 0:
            size = self._group_size(self._next)
            if not self._fits(size):
                return None
            self._group_left = size
        self._group_left -= 1
        self._next += 1
        self._live.add(trial_id)
        return dict(self._trials[self._next - 1])

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        params = self._grid_next(trial_id)
        if params is not None:
            return params
        return Searcher.FINISHED if self._next >= len(self._trials) else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._live.discard(trial_id)


class DecidingSearcher(GridSearcher):
    """A grid sweep that runs to a decision (the sweep file's `decide:`; the rule is tune.decision's).

    The grid's trials come first (the reference's seeds first, each configuration's seeds together). Once
    every configuration has left the early-stopping phase, `decide` names the fresh seeds each open
    comparison needs; they are handed out (the reference's first) as plain trials of the same experiment,
    and looks follow as they end, until every decision is final. Every change of the verdict is written
    atomically to the experiment's decisions.json with a growing sequence number; after a resume the final
    decisions recorded there stand (never revised), whatever the replayed results would say now.
    """

    def __init__(self, spec: SweepSpec, location: str, metric: str | None = None,
                 mode: str | None = None) -> None:
        super().__init__(spec.grid_trials(), metric=metric, mode=mode)
        assert spec.decide is not None and spec.reference is not None
        self._decide = spec.decide
        self._common = spec.common_params()
        self._location = location
        self._max_iters = spec.max_iters
        self._initial = tuple(spec.seeds)
        self._configurations = {c.key: c for c in spec.launch_order()}
        self._reference = spec.reference.key
        self._runs: dict[str, SeedRun] = {}  # trial_id -> what it ended as (LIVE until it ends)
        self._launched: set[tuple[str, int]] = set()
        self._sequence = 0
        self._recorded: dict[str, Any] | None = None
        self._history: list[dict[str, Any]] = []  # every record written, in sequence order
        self._verdict_for: int = -1  # the number of ended runs the cached verdict was taken on
        self._verdict: Verdict | None = None

    # -- Ray's hooks ------------------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        params = self._grid_next(trial_id)
        if params is None and self._next >= len(self._trials):
            params = self._fresh_next(trial_id)
        if params is None:
            verdict = self.verdict()
            if verdict.done and not self._live and self._next >= len(self._trials):
                return Searcher.FINISHED
            return None
        key = Configuration.from_params(params).key
        self._launched.add((key, int(params["seed"])))
        self._runs[trial_id] = SeedRun(key, int(params["seed"]), LIVE)
        return params

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        run = self._run_of(trial_id, result)
        if run is not None and ITERATION in result:
            self._runs[trial_id] = dataclasses.replace(run, iterations=float(result[ITERATION]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, result, error)
        result = result or {}
        run = self._run_of(trial_id, result)
        if run is None:
            return
        reached = result.get(ITERATION, run.iterations)
        status = "ERROR" if error else "TERMINATED"
        self._runs[trial_id] = seed_run(run.config, run.seed, status=status, iteration=reached,
                                        max_iters=self._max_iters, value=result.get(self.metric))
        self.verdict()  # records a change at once

    def _run_of(self, trial_id: str, result: Mapping[str, Any]) -> SeedRun | None:
        """The run of a trial; one this searcher did not hand out in its saved state (Ray saved the state
        before suggesting it) is known by the config its results carry."""
        run = self._runs.get(trial_id)
        params = result.get("config")
        if run is None and isinstance(params, Mapping) and "ablation" in params and "seed" in params:
            key = Configuration.from_params(params).key
            if key in self._configurations:
                run = self._runs[trial_id] = SeedRun(key, int(params["seed"]), LIVE)
                self._launched.add((key, run.seed))
        return run

    def restore(self, checkpoint_path: str) -> None:
        """Ray's saved searcher state, brought up to date with the experiment's trials (a trial that ended
        after the state was saved counts as ended), and the decisions recorded before the crash."""
        super().restore(checkpoint_path)
        from tune.best import experiment_runs

        experiment = Experiment(self._location)
        known = experiment.state_trial_names()  # a folder outside it is a trial Ray does not resume
        records = [trial for trial in experiment.trials() if trial.dirname in known]
        for trial_id, run in experiment_runs(records, self.metric or "", self._max_iters,
                                             self._configurations).items():
            self._runs[trial_id] = run
            self._launched.add((run.config, run.seed))
            if run.state == LIVE:
                self._live.add(trial_id)
            else:
                self._live.discard(trial_id)
        grid = [(Configuration.from_params(t).key, int(t["seed"])) for t in self._trials]
        launched = [i for i, pair in enumerate(grid) if pair in self._launched]
        self._next = max(self._next, launched[-1] + 1 if launched else 0)
        self._recorded = self._read_record()
        if self._recorded is not None:
            self._sequence = max(self._sequence, int(self._recorded.get("sequence", 0)))
        self._verdict_for = -1

    # -- the decision -----------------------------------------------------------------------------------
    def results(self) -> Results:
        return collect(list(self._runs.values()), configurations=list(self._configurations),
                       reference=self._reference, initial_seeds=self._initial, mode=self.mode or "max",
                       max_iters=self._max_iters)

    def verdict(self) -> Verdict:
        """decide() on what has ended, with the decisions recorded before a resume standing; a change is
        recorded in decisions.json."""
        ended = sum(run.state != LIVE for run in self._runs.values())
        if self._verdict is not None and ended == self._verdict_for:
            return self._verdict
        results = self.results()
        verdict = decide(results, self._decide)
        recorded = self._recorded or {}
        verdict = keep_taken(verdict, taken(recorded), recorded.get("wanted", {}))
        previous, self._verdict, self._verdict_for = self._verdict, verdict, ended
        if previous is None or previous.decisions != verdict.decisions or previous.wanted != verdict.wanted:
            self._write(verdict, results)
        return verdict

    def _fresh_next(self, trial_id: str) -> dict[str, Any] | None:
        """The next fresh seed the verdict wants that was never launched (the reference's first)."""
        if self._slots is not None and len(self._live) >= self._slots:
            return None
        verdict = self.verdict()
        for key, seeds in verdict.fresh_wanted(self.results()).items():
            for seed in seeds:
                if (key, seed) not in self._launched:
                    self._live.add(trial_id)
                    configuration = self._configurations[key]
                    return {"ablation": configuration.as_param(), "seed": int(seed), **self._common}
        return None

    def _labels(self) -> dict[str, str]:
        return {key: c.label for key, c in self._configurations.items()}

    def _write(self, verdict: Verdict, results: Results) -> None:
        self._sequence += 1
        row = record(verdict, self._decide, results, self._sequence, self._labels())
        self._history.append(row)
        text = "".join(json.dumps(r) + "\n" for r in self._history)
        try:
            Experiment(self._location).write_text(text, DECISIONS_FILE)
        except (OSError, ExperimentError) as error:
            log.warning("could not record the decisions in %s: %s", self._location, error)

    def _read_record(self) -> dict[str, Any] | None:
        """The latest record of the experiment's decisions (its history is kept and extended)."""
        try:
            history = Experiment(self._location).decisions()
        except (OSError, ExperimentError):
            return None
        if len(history) >= len(self._history):
            self._history = history
        return self._history[-1] if self._history else None


@dataclass
class _ConfigRecord:
    """One configuration Optuna proposed: its Optuna trials (the first and any repeats) and its seeds."""

    optuna_numbers: list[int] = field(default_factory=list)
    seeds: dict[str, int] = field(default_factory=dict)  # ray trial_id -> seed
    history: dict[str, dict[int, float]] = field(default_factory=dict)  # trial_id -> step -> metric
    final: dict[str, tuple[dict[str, Any], bool]] = field(default_factory=dict)  # trial_id -> (result, error)
    outcome: tuple[str, float | None, dict[int, float]] | None = None  # (state, value, intermediate)


class ConfigurationOptuna(_PickledState):
    """Optuna (TPE) over configurations; each sampled configuration runs on every seed (see module doc)."""

    def __init__(
        self,
        space: OptunaSearch,
        common: Mapping[str, Any],
        *,
        metric: str,
        mode: str,
        time_attr: str = "iteration",
        full_budget: int | None = None,
    ) -> None:
        import optuna

        super().__init__(metric=metric, mode=mode)
        self._space = space
        self._common = dict(common)
        self._time_attr = time_attr
        self._full_budget = full_budget
        sampler = optuna.samplers.TPESampler(seed=space.sampler_seed)
        direction = "maximize" if mode == "max" else "minimize"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._study = optuna.create_study(sampler=sampler, direction=direction)
        self._asked = 0
        self._optuna_trials: dict[int, Any] = {}  # number -> optuna Trial, until told
        self._queue: list[dict[str, Any]] = []  # trial params still to hand out (a configuration's seeds)
        self._records: dict[Hashable, _ConfigRecord] = {}
        self._trial_key: dict[str, Hashable] = {}
        self._repeats_in_a_row = 0

    @property
    def study(self) -> Any:
        return self._study

    # -- proposing --------------------------------------------------------------------------------------

    def _ask(self) -> tuple[int, Configuration]:
        trial = self._study.ask()
        self._optuna_trials[trial.number] = trial
        variant = trial.suggest_categorical("variant", list(self._space.variants))
        scale = None
        if variant != BASELINE_VARIANT:
            rng = self._space.ranges[variant]
            scale = trial.suggest_float(f"lambda_scale/{variant}", rng.low, rng.high, log=True)
        return trial.number, make_configuration(variant, scale, None, self._space.space.suggest(trial))

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        while not self._queue:
            if (
                self._asked >= self._space.num_samples
                or self._repeats_in_a_row > 10 * self._space.num_samples
            ):
                return Searcher.FINISHED
            number, configuration = self._ask()
            self._asked += 1
            key = configuration.key
            record = self._records.get(key)
            if record is not None:  # proposed again: not trained twice
                self._repeats_in_a_row += 1
                record.optuna_numbers.append(number)
                if record.outcome is not None:
                    self._tell(number, record.outcome)
                continue
            self._repeats_in_a_row = 0
            self._records[key] = _ConfigRecord(optuna_numbers=[number])
            self._queue = [{"ablation": configuration.as_param(), "seed": int(s), **self._common}
                           for s in self._space.seeds]
        params = self._queue.pop(0)
        key = Configuration.from_params(params).key
        self._trial_key[trial_id] = key
        self._records[key].seeds[trial_id] = params["seed"]
        return params

    # -- learning ---------------------------------------------------------------------------------------

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        record = self._record_of(trial_id)
        if record is not None and self.metric in result and self._time_attr in result:
            record.history.setdefault(trial_id, {})[int(result[self._time_attr])] = float(result[self.metric])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        record = self._record_of(trial_id)
        if record is None or trial_id in record.final:
            return
        if result and self.metric in result and self._time_attr in result:
            self.on_trial_result(trial_id, result)
        record.final[trial_id] = (dict(result or {}), error)
        if len(record.final) == len(self._space.seeds) and record.outcome is None:
            record.outcome = self._outcome(record)
            for number in record.optuna_numbers:
                self._tell(number, record.outcome)

    def _record_of(self, trial_id: str) -> _ConfigRecord | None:
        key = self._trial_key.get(trial_id)
        return None if key is None else self._records.get(key)

    def _outcome(self, record: _ConfigRecord) -> tuple[str, float | None, dict[int, float]]:
        """COMPLETE with the mean over seeds, PRUNED (stopped early) or FAIL (a seed failed for good)."""
        steps = set.intersection(*(set(h) for h in record.history.values())) if record.history else set()
        if len(record.history) < len(record.final):
            steps = set()
        intermediate = {s: _mean([record.history[t][s] for t in record.history]) for s in sorted(steps)}
        if any(error for _, error in record.final.values()):
            return "FAIL", None, intermediate
        finals = [result.get(self.metric) for result, _ in record.final.values()]
        if any(not self._ran_to_the_end(result) for result, _ in record.final.values()):
            return "PRUNED", None, intermediate
        if any(v is None for v in finals):
            return "FAIL", None, intermediate
        value = _mean([float(v) for v in finals])
        return ("COMPLETE", value, intermediate) if math.isfinite(value) else ("FAIL", None, intermediate)

    def _ran_to_the_end(self, result: Mapping[str, Any]) -> bool:
        reached = result.get(self._time_attr)
        budget = self._full_budget if self._full_budget is not None else report_max_iters(result)
        return reached is not None and budget is not None and reached >= budget

    def _tell(self, number: int, outcome: tuple[str, float | None, dict[int, float]]) -> None:
        from optuna.trial import TrialState

        state, value, intermediate = outcome
        trial = self._optuna_trials.pop(number)
        for step, mean in intermediate.items():
            if math.isfinite(mean):
                trial.report(mean, step)
        if state == "COMPLETE":
            self._study.tell(trial, value)
        else:
            self._study.tell(trial, state=TrialState.PRUNED if state == "PRUNED" else TrialState.FAIL)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def build_searcher(spec: SweepSpec, location: str | None = None) -> Searcher:
    """The searcher for a sweep's search section (trials in configuration-major order either way);
    `location`: the experiment folder, where a `decide:` sweep records its decisions."""
    if isinstance(spec.search, OptunaSearch):
        budget = spec.scheduler.max_t if spec.scheduler.type != "none" else None
        return ConfigurationOptuna(
            spec.search,
            spec.common_params(),
            metric=spec.metric,
            mode=spec.mode,
            time_attr=spec.scheduler.time_attr,
            full_budget=budget,
        )
    if spec.decide is not None:
        if location is None:
            raise ValueError("a decide: sweep needs the experiment folder to record its decisions in")
        return DecidingSearcher(spec, location, metric=spec.metric, mode=spec.mode)
    return GridSearcher(spec.grid_trials(), metric=spec.metric, mode=spec.mode)

"""Searchers that emit a configuration's seeds next to each other.

Ray's `grid_search` over {"ablation": ..., "seed": ...} varies the seed slowest, so a configuration's last
seed starts long after its first, and a decision over a configuration's seeds waits for it, which costs much
of what per-configuration stopping saves (benchmarks/README.md, early stopping on the study's shape). Both
searchers here hand out trials configuration-major:

- `GridSearcher` walks a fixed list of trial params (`SweepSpec.grid_trials()`).
- `ConfigurationOptuna` asks Optuna for a configuration (variant, lambda scale), runs it on every seed of the
  sweep and tells Optuna ONE result per configuration: the mean over its seeds of the final metric;
  a configuration stopped early by the scheduler is told as PRUNED (with the per-iteration means over seeds
  as intermediate values), one whose seed failed for good as FAIL, so TPE never learns a truncated score as
  if it were complete. A configuration Optuna proposes again (e.g. the baseline) is not trained twice: it is
  told the known result (at once, or when its seeds finish).

Both save their state with the experiment (Ray pickles a searcher's `save` output) so `cmda-tune resume`
continues where the sweep stopped. Configurations are `tune.configuration.Configuration` keys, as the
schedulers group them. See docs/ARCHITECTURE.md (tune).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import Searcher

from tune.configuration import BASELINE_VARIANT, Configuration, report_max_iters
from tune.sweep import OptunaSearch, SweepSpec, make_configuration


class _PickledState(Searcher):
    """save/restore of the searcher's whole state (Ray calls them at every experiment snapshot)."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))


class GridSearcher(_PickledState):
    """Hands out a fixed list of trial params in order, then FINISHED."""

    def __init__(
        self, trials: list[dict[str, Any]], metric: str | None = None, mode: str | None = None
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self._trials = [dict(t) for t in trials]
        self._next = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._next >= len(self._trials):
            return Searcher.FINISHED
        self._next += 1
        return dict(self._trials[self._next - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass


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
        return trial.number, make_configuration(variant, scale, None)

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


def build_searcher(spec: SweepSpec) -> Searcher:
    """The searcher for a sweep's search section (trials in configuration-major order either way)."""
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
    return GridSearcher(spec.grid_trials(), metric=spec.metric, mode=spec.mode)

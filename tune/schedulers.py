"""Early stopping that decides per configuration (variant, lambda) over all of its seeds.

Ray's ASHA judges every trial alone, so one unlucky seed of a good configuration can be stopped while its
siblings run on; the mean over seeds of that configuration is then computed from runs of unequal length and is
biased. `PerConfigASHA` applies the same asynchronous successive-halving rule (rungs at grace_period *
reduction_factor^k, keep the top 1/reduction_factor) to the configuration's MEAN metric, once every seed
has reached the rung, and then stops or keeps all seeds together: a configuration is either compared at full
budget on every seed, or censored at the same rung on every seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler


def ablation_group_key(config: dict[str, Any]) -> Hashable:
    """A configuration = everything of the ablation cell except the seed."""
    ablation = config.get("ablation", {})
    lambdas = tuple(sorted((ablation.get("lambdas") or {}).items()))
    return ablation.get("variant"), ablation.get("lambda"), lambdas


@dataclass
class _Group:
    """Bookkeeping of one configuration: its seeds' scores per rung and the decisions taken."""

    scores: dict[int, dict[str, float]] = field(default_factory=dict)  # milestone -> trial_id -> score
    decided: set[int] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    stopped_at: int | None = None


class PerConfigASHA(FIFOScheduler):
    """Asynchronous successive halving over configurations (groups of seeds) instead of single trials."""

    def __init__(self, *, time_attr: str = "iteration", metric: str | None = None, mode: str | None = None,
                 grace_period: int = 1, max_t: int = 100, reduction_factor: float = 2.0,
                 seeds_per_config: int = 1,
                 group_key: Callable[[dict[str, Any]], Hashable] = ablation_group_key) -> None:
        if grace_period < 1 or max_t < grace_period:
            raise ValueError(f"need 1 <= grace_period <= max_t, got {grace_period=}, {max_t=}")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")
        if seeds_per_config < 1:
            raise ValueError(f"seeds_per_config must be >= 1, got {seeds_per_config}")
        if mode not in (None, "max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        super().__init__()
        self._time_attr, self._metric, self._mode = time_attr, metric, mode
        self._max_t, self._rf, self._seeds = max_t, reduction_factor, seeds_per_config
        self._group_key = group_key
        self.milestones: list[int] = []
        milestone = float(grace_period)
        while milestone < max_t:  # at max_t the trial ends anyway: no decision left to take
            self.milestones.append(int(round(milestone)))
            milestone *= reduction_factor
        self._groups: dict[Hashable, _Group] = {}
        self._rung_means: dict[int, list[float]] = {m: [] for m in self.milestones}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def _group(self, trial: Any) -> _Group:
        return self._groups.setdefault(self._group_key(trial.config), _Group())

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        """An errored seed no longer holds its configuration's decisions hostage."""
        self._group(trial).failed.add(trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if self._metric is None or self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        group = self._group(trial)
        if group.stopped_at is not None:
            return TrialScheduler.STOP
        progress = result[self._time_attr]
        if progress >= self._max_t:
            return TrialScheduler.STOP
        sign = -1.0 if self._mode == "min" else 1.0
        score = sign * float(result[self._metric])
        for milestone in self.milestones:
            if progress >= milestone:
                group.scores.setdefault(milestone, {}).setdefault(trial.trial_id, score)
        return self._decide(group)

    def _decide(self, group: _Group) -> str:
        """Judge each rung once every live seed of the configuration has reached it."""
        for milestone in self.milestones:
            recorded = group.scores.get(milestone, {})
            live = {tid: s for tid, s in recorded.items() if tid not in group.failed}
            if milestone in group.decided or len(live) < self._seeds - len(group.failed) or not live:
                continue
            values = [s for s in live.values() if not math.isnan(s)]
            mean = float(np.mean(values)) if values else -math.inf
            others = self._rung_means[milestone]
            cutoff = float(np.percentile(others, (1 - 1 / self._rf) * 100)) if others else None
            others.append(mean)
            group.decided.add(milestone)
            if cutoff is not None and mean < cutoff:
                group.stopped_at = milestone
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        stopped = sum(g.stopped_at is not None for g in self._groups.values())
        return (f"PerConfigASHA: {len(self._groups)} configurations x {self._seeds} seeds, "
                f"{stopped} stopped; rungs {self.milestones}")

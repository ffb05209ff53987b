"""The trial table printed while a sweep runs: a Ray Tune callback over Ray's live Trial objects.

Apart from `tune.progress` (the row format it shares with `cmda-tune status`) because it imports Ray Tune,
which the commands that only read files should not pay for.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ray.tune import Callback

from tune.progress import TrialRow, finite_value, format_table, make_row


def trial_row(trial: Any, metric: str, mode: str, best: float | None = None) -> TrialRow:
    """A row from a live Ray Trial (its config, status, last result, and the best value seen so far)."""
    result = dict(trial.last_result or {})
    row = make_row(
        str(trial),
        trial.config,
        trial.status,
        [result] if result else [],
        metric,
        mode,
        int(getattr(trial.run_metadata, "num_failures", 0)),
    )
    return row if best is None else dataclasses.replace(row, best=best)


class LiveTable(Callback):
    """Prints the trial table every `interval_s` seconds when something changed, and once at the end."""

    def __init__(
        self, metric: str, mode: str = "max", interval_s: float = 30.0, stream: TextIO | None = None
    ):
        self._metric, self._mode, self._interval = metric, mode, interval_s
        self._stream = stream
        self._last_print = -math.inf
        self._last_text = ""
        self._best: dict[str, float] = {}

    def _print(self, trials: Sequence[Any], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_print < self._interval:
            return
        rows = [trial_row(t, self._metric, self._mode, self._best.get(t.trial_id)) for t in trials]
        text = format_table(rows, self._metric)
        if text != self._last_text or force:
            print(text, file=self._stream or sys.stdout, flush=True)
            self._last_text = text
        self._last_print = now

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        value = finite_value(result.get(self._metric))
        if value is not None:
            best = self._best.get(trial.trial_id)
            better = best is None or (value > best if self._mode == "max" else value < best)
            self._best[trial.trial_id] = value if better else best

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._print(trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._print(trials, force=True)

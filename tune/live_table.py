"""The live table printed while a sweep runs: a Ray Tune callback over Ray's live Trial objects.

What it says is `tune.watch`'s (trials done/running/pending/errored of N, ETA, each configuration's mean at
its last completed rung, each running trial's iteration from its heartbeat, `tune.heartbeat`). On a
terminal the block is redrawn in place every `interval_s`; otherwise (a CI log, a file) only what changed
is appended, a line each. Ray's own warnings that repeat (its experiment-snapshot warning) are printed once.
Apart from `tune.progress` (the rows `cmda-tune status` prints) because it imports Ray Tune.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ray.tune import Callback

from tune.configuration import Configuration, report_iteration, report_max_iters, report_number
from tune.progress import finite_value
from tune.watch import TrialView, Watch, changed_lines

CLEAR_BLOCK = "\x1b[{n}F\x1b[J"
"""ANSI: cursor up n lines to their start, clear to the end of the screen (the previous block)."""


class OncePerMessage(logging.Filter):
    """Lets each warning through once: messages equal but for their numbers count as the same."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = re.sub(r"\d+(\.\d+)?", "#", record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class LiveTable(Callback):
    """Prints the sweep's progress every `interval_s` seconds when something changed, and once at the end.

    `total` is every trial the sweep will run (N; `upper`: the most a `decide:` sweep may add up to),
    `rungs` the iterations where the scheduler decides,
    `expected_share` the share of the full budget a trial is expected to run (tune.plan), `experiment` the
    experiment's name (for the heartbeat board; None: reports only), `tty` whether to redraw in place
    (default: whether the stream is a terminal)."""

    def __init__(
        self,
        metric: str,
        mode: str = "max",
        interval_s: float = 30.0,
        stream: TextIO | None = None,
        *,
        total: int | None = None,
        upper: int | None = None,
        rungs: Sequence[int] = (),
        max_iters: int | None = None,
        expected_share: float = 1.0,
        experiment: str | None = None,
        tty: bool | None = None,
    ):
        self._metric, self._mode, self._interval = metric, mode, interval_s
        self._stream = stream
        self._tty = tty
        self._watch = Watch(total or 0, metric, tuple(rungs), max_iters, expected_share, upper=upper)
        self._experiment = experiment
        self._board: Any = None
        self._views: dict[str, TrialView] = {}
        self._last_print = -math.inf
        self._lines: list[str] = []
        self._drawn = 0
        self._filter = OncePerMessage()
        self._filtered: list[logging.Handler] = []

    # -- Ray's callback hooks ----------------------------------------------------------------------------
    def setup(self, **info: Any) -> None:
        for handler in logging.getLogger("ray").handlers:  # Ray's loggers do not propagate past "ray"
            handler.addFilter(self._filter)
            self._filtered.append(handler)
        if self._experiment is not None:
            from tune.heartbeat import start_board

            try:
                self._board = start_board(self._experiment)
            except Exception:  # noqa: BLE001 - no heartbeat: the table shows the reports only
                self._board = None

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        view = self._view(trial)
        at = report_iteration(result)
        value = finite_value(result.get(self._metric))
        if at is not None:
            view.reported_iteration = at
            if value is not None:
                view.evaluations[at] = value
        view.time_total_s = report_number(result, "time_total_s")
        view.max_iters = report_max_iters(result) or view.max_iters

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._print(trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._print(trials, force=True)
        for handler in self._filtered:
            handler.removeFilter(self._filter)
        self._filtered.clear()

    # -- drawing -----------------------------------------------------------------------------------------
    def _view(self, trial: Any) -> TrialView:
        view = self._views.get(trial.trial_id)
        if view is None:
            try:
                configuration = Configuration.from_params(trial.config)
            except ValueError:  # a trial Ray holds no config for yet
                configuration = Configuration("?")
            seed = trial.config.get("seed", -1) if isinstance(trial.config, dict) else -1
            view = self._views[trial.trial_id] = TrialView(trial.trial_id, configuration, int(seed))
        return view

    def views(self, trials: Sequence[Any]) -> list[TrialView]:
        """Ray's trials as the watch sees them: state from Ray, heartbeats from the board."""
        beats = {}
        if self._board is not None:
            from tune.heartbeat import read_board

            beats = read_board(self._board)
        out = []
        for trial in trials:
            view = self._view(trial)
            view.state = trial.status
            if view.max_iters is None:
                view.max_iters = report_max_iters(trial.last_result or {})
            beat = beats.get(trial.trial_id)
            if beat is not None:
                view.heartbeat, view.heartbeat_at = beat
            out.append(view)
        if not self._watch.total:
            self._watch.total = len(out)
        return out

    def _print(self, trials: Sequence[Any], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_print < self._interval:
            return
        self._last_print = now
        lines = self._watch.lines(self.views(trials))
        stream = self._stream or sys.stdout
        tty = self._tty if self._tty is not None else bool(getattr(stream, "isatty", lambda: False)())
        if tty:
            clear = CLEAR_BLOCK.format(n=self._drawn) if self._drawn else ""
            stream.write(clear + "\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            new = changed_lines(self._lines, lines)
            if new:
                stream.write("\n".join(new) + "\n")
        stream.flush()
        self._lines = lines

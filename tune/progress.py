"""The trial table: what a person scans during and after a sweep (variant, lambda, seed, iteration, metric).

One row format serves the live table printed while a sweep runs (`LiveTable`, a Ray Tune callback reading
Ray's Trial objects) and `cmda-tune status` (rows read from the experiment folder).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ray.tune import Callback

from tune.sweep import lambda_text


@dataclass(frozen=True)
class TrialRow:
    name: str
    variant: str
    lambda_: str
    seed: int
    state: str
    iteration: int | None
    max_iters: int | None
    last: float | None
    best: float | None
    num_failures: int

    @property
    def stopped_early(self) -> bool:
        return (
            self.state == "TERMINATED"
            and self.iteration is not None
            and bool(self.max_iters)
            and self.iteration < self.max_iters
        )


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def make_row(
    name: str,
    params: Mapping[str, Any],
    state: str,
    results: Sequence[Mapping[str, Any]],
    metric: str,
    mode: str,
    num_failures: int,
) -> TrialRow:
    ablation = params.get("ablation") or {}
    scores = [s for s in (_finite(r.get(metric)) for r in results) if s is not None]
    last = results[-1] if results else {}
    best = (max(scores) if mode == "max" else min(scores)) if scores else None
    return TrialRow(
        name=name,
        variant=str(ablation.get("variant", "?")),
        lambda_=lambda_text(ablation),
        seed=int(params.get("seed", -1)),
        state=state,
        iteration=last.get("iteration"),
        max_iters=last.get("max_iters"),
        last=_finite(last.get(metric)),
        best=best,
        num_failures=num_failures,
    )


def format_table(rows: Sequence[TrialRow], metric: str) -> str:
    """Fixed-width table in launch order; `TERMINATED*` marks a trial stopped before max_iters."""
    header = (
        "trial",
        "variant",
        "lambda",
        "seed",
        "state",
        "iteration",
        metric,
        f"best {metric}",
        "failures",
    )
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.name,
                r.variant,
                r.lambda_,
                str(r.seed),
                r.state + ("*" if r.stopped_early else ""),
                "-" if r.iteration is None else f"{r.iteration}/{r.max_iters or '?'}",
                "-" if r.last is None else f"{r.last:.4f}",
                "-" if r.best is None else f"{r.best:.4f}",
                str(r.num_failures),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    text.append(f"{len(rows)} trials: {summary}; * = stopped early by the scheduler")
    return "\n".join(text)


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
        value = _finite(result.get(self._metric))
        if value is not None:
            best = self._best.get(trial.trial_id)
            better = best is None or (value > best if self._mode == "max" else value < best)
            self._best[trial.trial_id] = value if better else best

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._print(trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._print(trials, force=True)

"""The trial table: what a person scans during and after a sweep (variant, lambda, seed, iteration, metric).

One row format serves the live table printed while a sweep runs (`tune.live_table.LiveTable`, a Ray Tune
callback reading Ray's Trial objects) and `cmda-tune status` (rows read from the experiment folder). This
module does not import Ray: `cmda-tune status` and `plan` only read files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tune.configuration import Configuration, report_iteration, report_max_iters
from tune.experiment import stopped_early


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
        return stopped_early(self.state, self.iteration, self.max_iters)


def finite_value(value: Any) -> float | None:
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
    try:
        configuration = Configuration.from_params(params)
    except ValueError:  # a damaged params.json, or a pending trial Ray holds no config for: still a row
        configuration = Configuration("?")
    scores = [s for s in (finite_value(r.get(metric)) for r in results) if s is not None]
    last = results[-1] if results else {}
    best = (max(scores) if mode == "max" else min(scores)) if scores else None
    return TrialRow(
        name=name,
        variant=configuration.variant,
        lambda_=configuration.lambda_label or "-",
        seed=int(params.get("seed", -1)),
        state=state,
        iteration=report_iteration(last),
        max_iters=report_max_iters(last),
        last=finite_value(last.get(metric)),
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

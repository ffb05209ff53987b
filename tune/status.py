"""`cmda-tune status`: the trial table of an experiment, read through `tune.experiment` (local path or URI).

No Ray is started, so it is safe while a sweep runs, and it works on a bucket as on a shared folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tune.experiment import TERMINATED, open_experiment


@dataclass(frozen=True)
class TrialStatus:
    """One row of `cmda-tune status`; `best` is the best value of `metric` the trial reported."""

    name: str
    variant: str
    weight: float | None
    seed: int
    state: str
    iteration: int | None
    max_iters: int | None
    best: float | None
    num_failures: int
    metric: str

    @property
    def best_miou18(self) -> float | None:  # the name callers used before the metric came from the sweep
        return self.best


def experiment_metric(sweep: dict[str, Any] | None) -> str:
    """The metric trials are ranked on: the sweep copy's resolved metric, else its target's headline."""
    from cmda.data.targets import get_target

    sweep = sweep or {}
    scheduler = sweep.get("scheduler") if isinstance(sweep.get("scheduler"), dict) else {}
    metric = sweep.get("metric") or scheduler.get("metric")
    if isinstance(metric, str) and metric:
        return metric
    return get_target(str(sweep.get("target") or "dsec_night")).headline_metric


def _best(results: Sequence[dict[str, Any]], metric: str, mode: str) -> float | None:
    scores = [float(r[metric]) for r in results if isinstance(r.get(metric), int | float)]
    scores = [s for s in scores if not math.isnan(s)]
    if not scores:
        return None
    return min(scores) if mode == "min" else max(scores)


def experiment_status(location: str | os.PathLike[str], metric: str | None = None) -> list[TrialStatus]:
    """Trial table of an experiment folder or URI, best trial first."""
    experiment = open_experiment(location)
    sweep = experiment.sweep()
    metric = metric or experiment_metric(sweep)
    mode = str((sweep or {}).get("mode") or ((sweep or {}).get("scheduler") or {}).get("mode") or "max")
    rows = []
    for trial in experiment.trials():
        ablation = trial.params.get("ablation") or {}
        weight = ablation.get("lambda_scale", ablation.get("lambda"))
        rows.append(TrialStatus(
            name=trial.dirname, variant=str(ablation.get("variant", "?")), weight=weight,
            seed=int(trial.params.get("seed", -1)), state=trial.status or "?", iteration=trial.iteration,
            max_iters=trial.max_iters, best=_best(trial.results, metric, mode),
            num_failures=trial.num_failures, metric=metric,
        ))
    sign = -1.0 if mode != "min" else 1.0
    return sorted(rows, key=lambda r: (r.best is None, sign * (r.best or 0.0), r.name))


def format_status(rows: Sequence[TrialStatus]) -> str:
    """Fixed-width table, best trial first; `TERMINATED*` marks a trial stopped before max_iters."""
    metric = rows[0].metric if rows else "metric"
    header = ("trial", "variant", "lambda", "seed", "state", "iteration", f"best {metric}", "failures")
    lines = [header]
    for r in rows:
        state = r.state
        if state == TERMINATED and r.iteration is not None and r.max_iters and r.iteration < r.max_iters:
            state = "TERMINATED*"
        lines.append((
            r.name, r.variant, "-" if r.weight is None else f"{r.weight:g}", str(r.seed), state,
            "-" if r.iteration is None else f"{r.iteration}/{r.max_iters or '?'}",
            "-" if r.best is None else f"{r.best:.4f}", str(r.num_failures),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    text.append(f"{len(rows)} trials: {summary}; * = stopped early by the scheduler")
    return "\n".join(text)

"""What a sweep's trials came to: `cmda-tune status` (the trial table of an experiment) and the FAILED lines.

The table is read through `tune.experiment` (local path or URI) without starting Ray, so it is safe while a
sweep runs, and it works on a bucket as on a shared folder. Its rows are the live table's (`tune.progress`).
The FAILED lines (`failed_trials`, `format_failures`) summarise a finished run's errors, one line each, from
Ray's results. See docs/ARCHITECTURE.md (tune).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune.experiment import error_message, open_experiment, saved_ranking
from tune.progress import TrialRow, make_row


def experiment_metric(sweep: dict[str, Any] | None) -> tuple[str, str]:
    """(metric, mode) trials are ranked on: the sweep copy's resolved metric, else its target's headline."""
    from cmda.data.targets import DEFAULT_TARGET, get_target

    metric, mode = saved_ranking(sweep)
    if metric:
        return metric, mode
    return get_target(str((sweep or {}).get("target") or DEFAULT_TARGET)).headline_metric, mode


def experiment_status(location: str | os.PathLike[str], metric: str | None = None) -> list[TrialRow]:
    """One row per trial of an experiment folder or URI, best first."""
    return _rows(open_experiment(location), metric)[0]


def _rows(experiment: Any, metric: str | None) -> tuple[list[TrialRow], str]:
    saved, mode = experiment_metric(experiment.sweep())
    metric = metric or saved
    rows = [
        make_row(trial.dirname, trial.params, trial.status, trial.results, metric, mode,
                 trial.num_failures)
        for trial in experiment.trials()
    ]
    sign = 1.0 if mode == "max" else -1.0
    rows.sort(key=lambda r: (r.best is None, -(sign * r.best) if r.best is not None else 0.0, r.name))
    return rows, metric


def status_table(location: str | os.PathLike[str]) -> str:
    """The table `cmda-tune status` prints."""
    from tune.progress import format_table

    return format_table(*_rows(open_experiment(location), None))


# -- the failure summary ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedTrial:
    name: str
    last_line: str
    """The error's message: the exception line, then its further lines (tune.experiment.error_message)."""
    error_file: str


def _error_text(result: Any) -> tuple[str, str]:
    """(error file path, its text) of a Ray Result, through the Result's own filesystem."""
    path = f"{result.path.rstrip('/')}/error.txt"
    try:
        with result.filesystem.open_input_stream(path) as handle:
            return path, handle.readall().decode("utf-8", errors="replace")
    except Exception:  # noqa: BLE001 - fall back to the error object Ray kept
        return path, str(result.error or "")


def failed_trials(grid: Any) -> list[FailedTrial]:
    """Trials of a Ray ResultGrid that ended in error, with the line of their error a person needs (the
    exception's message)."""
    out = []
    for result in grid:
        if result.error is None:
            continue
        path, text = _error_text(result)
        name = Path(result.path).name
        out.append(FailedTrial(name, error_message(text) or type(result.error).__name__, path))
    return out


def format_failures(failures: Sequence[FailedTrial]) -> str:
    """One FAILED line per trial: its name, the error's first line and the error file; the error's further
    lines (the problems a data check lists) follow, indented."""
    out = []
    for failure in failures:
        first, _, rest = failure.last_line.partition("\n")
        out.append(f"FAILED {failure.name}: {first}  ({failure.error_file})")
        out.extend(f"    {line.strip()}" for line in rest.splitlines() if line.strip())
    return "\n".join(out)

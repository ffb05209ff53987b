"""What a sweep's trials came to: `cmda-tune status` (the trial table of an experiment) and the FAILED lines.

The table is read through `tune.experiment` (local path or URI) without starting Ray, so it is safe while a
sweep runs, and it works on a bucket as on a shared folder. Its rows are the live table's (`tune.progress`).
The FAILED lines (`failed_trials`, `format_failures`) summarise a finished run's errors, one line each, from
Ray's results. See docs/ARCHITECTURE.md (tune).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune.configuration import Configuration
from tune.experiment import (
    DRIVER_FILE,
    PAUSED,
    PENDING,
    RUNNING,
    SWEEP_FILE,
    ExperimentError,
    error_message,
    open_experiment,
    saved_ranking,
)
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


NOT_STARTED = "NOT STARTED"
"""A trial of the sweep's grid that Ray has not created yet (a driver killed early, a concurrency limit)."""


def _rows(experiment: Any, metric: str | None) -> tuple[list[TrialRow], str]:
    sweep = experiment.sweep()
    saved, mode = experiment_metric(sweep)
    metric = metric or saved
    trials = experiment.trials()
    if sweep is None and not any(_configuration(t.params) for t in trials):
        raise ExperimentError(
            f"{experiment.location}: not a cmda-tune experiment (no {SWEEP_FILE}, and no trial has cmda-tune "
            "parameters: ablation variant, lambdas, seed); `cmda-tune status` reads what `cmda-tune sweep` "
            "writes")
    rows = [
        make_row(trial.dirname, trial.params, trial.status, trial.results, metric, mode,
                 trial.num_failures)
        for trial in trials
    ]
    rows.extend(make_row("-", params, NOT_STARTED, [], metric, mode, 0)
                for params in _not_started(experiment, sweep, trials))
    sign = 1.0 if mode == "max" else -1.0
    rows.sort(key=lambda r: (r.best is None, -(sign * r.best) if r.best is not None else 0.0, r.name))
    return rows, metric


def _configuration(params: dict[str, Any]) -> Configuration | None:
    try:
        return Configuration.from_params(params)
    except (ValueError, TypeError, KeyError):
        return None


def _not_started(experiment: Any, sweep: dict[str, Any] | None,
                 trials: Sequence[Any]) -> list[dict[str, Any]]:
    """The grid's trials no folder or state entry knows (from the sweep copy; none for Optuna, whose
    configurations are sampled as it goes, or when the copy cannot be read here)."""
    from tune.sweep import GridSearch, SweepError, parse_sweep

    if sweep is None:
        return []
    try:
        spec = parse_sweep(sweep, Path(experiment.where(SWEEP_FILE)))
    except (SweepError, OSError, ValueError):  # e.g. its base config is not on this machine
        return []
    if not isinstance(spec.search, GridSearch):
        return []
    known = {(c.key, t.params.get("seed")) for t in trials if (c := _configuration(t.params)) is not None}
    return [p for p in spec.grid_trials()
            if (Configuration.from_params(p).key, p["seed"]) not in known]


def driver_note(experiment: Any, rows: Sequence[TrialRow]) -> str | None:
    """Whether the driver of unfinished trials is still there: its DRIVER_FILE (tune.driver) names its host
    and process; a process that is gone on this host, or no file at all, means a killed driver."""
    if not any(r.state in (RUNNING, PENDING, PAUSED, NOT_STARTED) for r in rows):
        return None
    resume = f"`cmda-tune resume {experiment.location}` finishes the sweep"
    try:
        driver = json.loads(experiment.read_text(DRIVER_FILE))
    except FileNotFoundError:
        return f"the driver is gone (it stopped before these trials ended); {resume}"
    except (ValueError, ExperimentError):
        return None
    host, pid = str(driver.get("host")), int(driver.get("pid", 0))
    if host != socket.gethostname():
        return f"driver: process {pid} on {host} (cannot be checked from here)"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"the driver (process {pid} on {host}) is gone: it was killed; {resume}"
    except PermissionError:
        pass
    return f"driver: process {pid} on {host}, running"


def status_table(location: str | os.PathLike[str]) -> str:
    """The table `cmda-tune status` prints, with a line on the driver when trials are unfinished."""
    from tune.progress import format_table

    experiment = open_experiment(location)
    rows, metric = _rows(experiment, None)
    note = driver_note(experiment, rows)
    return format_table(rows, metric) + (f"\n{note}" if note else "")


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

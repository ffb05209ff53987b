"""`cmda-tune status`: the trial table of an experiment, read through `tune.experiment` (local path or URI).

No Ray is started, so it is safe while a sweep runs, and it works on a bucket as on a shared folder. The
rows are the live table's (`tune.progress`): variant, lambda, seed, state, iteration and the sweep's metric.
"""

from __future__ import annotations

import os
from typing import Any

from tune.experiment import open_experiment, saved_ranking
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

"""The record of deterministic failures, so that `resume` (and every re-submitted RayJob) never reruns them.

A trial that failed deterministically (a NaN loss, bad data: `tune.trainable.DeterministicTrialError`) fails
again at the same iteration when rerun. Ray's `Tuner.restore` cannot tell such a trial from one that failed
for a reason a rerun can fix (a node lost once too often), and resuming errored trials reruns them all. So
the driver records each deterministic failure in the experiment (`FAILURES_FILE`, written atomically on
every change) as it happens, and `resume` reads it: only `--restart-errored` reruns a recorded trial.
An experiment from before the record (or a record lost) is read from the trials' own error files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from ray.tune import Callback

from tune.experiment import ERROR, ERROR_FILE, Experiment, ExperimentError, error_summary
from tune.schedulers import DETERMINISTIC_MARKER as MARKER
from tune.schedulers import last_failure_text

log = logging.getLogger(__name__)
FAILURES_FILE = "deterministic_failures.json"


def read_failures(experiment: Experiment) -> dict[str, dict[str, str]]:
    """trial_id -> {"trial": folder name, "error": the exception line} of the recorded failures."""
    try:
        data = experiment.read_json(FAILURES_FILE)
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict):
        raise ExperimentError(f"{experiment.where(FAILURES_FILE)}: expected a mapping of trial ids")
    return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}


def write_failures(experiment: Experiment, failures: dict[str, dict[str, str]]) -> None:
    experiment.write_text(json.dumps(failures, indent=1, sort_keys=True) + "\n", FAILURES_FILE)


def known_failures(experiment: Experiment) -> dict[str, dict[str, str]]:
    """The recorded failures, plus errored trials whose error file shows a deterministic failure."""
    failures = read_failures(experiment)
    for trial in experiment.trials():
        if trial.status != ERROR or trial.trial_id in failures or not trial.error_file:
            continue
        text = experiment.read_text(trial.dirname, ERROR_FILE)
        last = text.rsplit("Failure # ", 1)[-1]
        if MARKER in last:
            failures[trial.trial_id] = {"trial": trial.dirname, "error": error_summary(text)}
    return failures


def forget(experiment: Experiment, trial_ids: Iterable[str]) -> None:
    """Drop trials from the record (they are about to be restarted)."""
    failures = read_failures(experiment)
    kept = {k: v for k, v in failures.items() if k not in set(trial_ids)}
    if kept != failures:
        write_failures(experiment, kept)


class FailureRecorder(Callback):
    """Adds each deterministic failure to the experiment's record as Ray reports it (on the driver)."""

    def __init__(self, location: str) -> None:
        self.location = location

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._record(trial)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # A failure with retries left: the schedulers end a deterministic one instead of retrying it.
        self._record(trial)

    def _record(self, trial: Any) -> None:
        text = last_failure_text(trial)
        if MARKER not in text:
            return
        try:
            experiment = Experiment(self.location)
            failures = read_failures(experiment)
            failures[str(trial.trial_id)] = {"trial": str(trial.storage.trial_dir_name),
                                             "error": error_summary(text)}
            write_failures(experiment, failures)
        except (OSError, ExperimentError) as error:  # the error files still tell (known_failures)
            log.warning("could not record the deterministic failure of %s: %s", trial, error)

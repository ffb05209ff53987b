"""Trial schedulers: no early stopping, ASHA per trial, and ASHA per configuration over its seeds.

Ray's ASHAScheduler judges trials one by one, so it stops single unlucky seeds and biases a configuration's
mean over seeds; `GroupASHA` judges a configuration's seeds together (their mean at a rung, once every live
seed reached it) and stops them together; `protected` configurations (the reference every comparison is made
against) are never stopped, though their scores still count at each rung. Every scheduler here also ends a
deterministic failure instead of retrying it, and rebuilds its rung records from result.json after
`cmda-tune resume` (Ray does not save scheduler state, Ray issue 30838). The rules one by one:
docs/ARCHITECTURE.md (tune, scheduling).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

from tune.configuration import Configuration, Ladder, read_result_lines
from tune.experiment import ExperimentError, write_file

log = logging.getLogger(__name__)
DETERMINISTIC_MARKER = "DeterministicTrialError"
LIVE = (Trial.PENDING, Trial.RUNNING, Trial.PAUSED)
DECISIONS_FILE = "scheduler_decisions.jsonl"
"""The rung decisions of a sweep, in the experiment folder (`DecisionLog`)."""


def last_failure_text(trial: Any) -> str:
    """The text of the trial's latest failure from its error file (empty when there is none)."""
    path = getattr(trial, "error_file", None)
    if not path or not Path(path).is_file():
        return ""
    text = Path(path).read_text(errors="replace")
    return text.rsplit("Failure # ", 1)[-1]


def is_deterministic_failure(trial: Any) -> bool:
    return DETERMINISTIC_MARKER in last_failure_text(trial)


def trial_history(trial: Any) -> list[dict[str, Any]]:
    """The results a trial reported before a restore, in file order, read from its result.json in storage
    (any pyarrow filesystem: local, NFS, s3://, gs://). A line cut by a crash is skipped."""
    storage = getattr(trial, "storage", None)
    if storage is None:
        return []
    fs_path = f"{storage.trial_fs_path}/result.json"
    try:
        with storage.storage_filesystem.open_input_stream(fs_path) as handle:
            text = handle.readall().decode("utf-8", errors="replace")
    except (FileNotFoundError, OSError):
        return []
    return list(read_result_lines(text).rows)


def stop_trial(tune_controller: Any, trial: Any) -> None:
    """Stop a trial through Ray and make sure the experiment state records it.

    Ray (2.60) writes a trial's status into the experiment state only for trials it marked for the next
    snapshot; stopping a trial without a running actor (PAUSED at a rung, or PENDING) sets TERMINATED in
    memory but returns before marking it, so the state file (what `cmda-tune status`, the report and a
    resume read) kept PAUSED for seeds of stopped configurations (seen in `make demo`). Marking it here
    closes that gap; a controller without the method (tests' stand-ins) is left as it is."""
    idle = trial.status in (Trial.PAUSED, Trial.PENDING)
    tune_controller.stop_trial(trial)
    mark = getattr(tune_controller, "_mark_trial_to_checkpoint", None)
    if idle and callable(mark):
        mark(trial)


class RetryPolicyScheduler(FIFOScheduler):
    """FIFO scheduling that ends deterministic failures instead of retrying them (see module doc).

    Subclasses get `_on_permanent_failure(controller, trial)` once per trial that failed for good, however
    Ray reported it (a final `on_trial_error`, or one we ended here).
    """

    def __init__(self) -> None:
        super().__init__()
        self._no_retry: set[str] = set()
        self._maybe_failed: dict[str, Any] = {}
        self._permanently_failed: set[str] = set()

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        # Ray calls this for a final failure AND before a retry. Ray 2.60 marks a trial ERROR *before* this
        # call when it will retry it (then re-adds it: on_trial_add) and *after* it when the failure is
        # final; `_settle` catches any other order at the next hook by looking at the trial's status.
        if is_deterministic_failure(trial):
            self._no_retry.add(trial.trial_id)
        if trial.status in (Trial.RUNNING, Trial.PENDING):
            self._mark_failed(tune_controller, trial)
        else:
            self._maybe_failed[trial.trial_id] = trial

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._maybe_failed.pop(trial.trial_id, None)
        if trial.trial_id in self._no_retry and trial.status == Trial.PENDING:
            log.warning(
                "trial %s failed deterministically (%s); not retrying it",
                trial,
                last_failure_text(trial).strip().splitlines()[-1:],
            )
            tune_controller._set_trial_status(trial, Trial.ERROR)  # whitelisted for schedulers by Ray
            tune_controller.search_alg.on_trial_complete(trial.trial_id, error=True)
            self._mark_failed(tune_controller, trial)
            return
        self._on_add(tune_controller, trial)

    def _settle(self, tune_controller: Any) -> None:
        """Failures that were not followed by a retry are permanent."""
        for trial_id, trial in list(self._maybe_failed.items()):
            if trial.status == Trial.ERROR:
                del self._maybe_failed[trial_id]
                self._mark_failed(tune_controller, trial)
            elif trial.status != Trial.PENDING:
                del self._maybe_failed[trial_id]

    def _mark_failed(self, tune_controller: Any, trial: Any) -> None:
        if trial.trial_id not in self._permanently_failed:
            self._permanently_failed.add(trial.trial_id)
            self._on_permanent_failure(tune_controller, trial)

    def _on_add(self, tune_controller: Any, trial: Any) -> None:
        """Hook for subclasses (a new, requeued or restored trial)."""

    def _on_permanent_failure(self, tune_controller: Any, trial: Any) -> None:
        """Hook for subclasses."""

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        self._settle(tune_controller)
        return super().choose_trial_to_run(tune_controller)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        self._settle(tune_controller)
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._settle(tune_controller)

    def debug_string(self) -> str:
        return "FIFO scheduling; deterministic failures are not retried."


@dataclass
class _Group:
    """Bookkeeping of one group (a configuration's initial seeds, or a single trial)."""

    members: dict[str, Any] = field(default_factory=dict)  # trial_id -> Trial
    scores: dict[float, dict[str, float]] = field(default_factory=dict)  # milestone -> trial_id -> score
    decided: set[float] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    stopped_at: float | None = None
    protected: bool = False  # never stopped (the reference of the comparisons)
    configuration: str = ""  # Configuration.key of its trials
    key: Hashable = ""  # its key among the scheduler's groups


class DecisionLog:
    """The rung decisions of one sweep, in the order they were taken, kept in the experiment folder
    (`DECISIONS_FILE`, one JSON object per line, the whole file replaced atomically at every decision).

    Ray does not save scheduler state; replaying results after a resume would take the decisions again in
    whatever order the replay sees them, against the failures known at the end. The log makes the replay
    exact: the decisions taken before a crash are applied as they were. The file is located through any
    trial's storage (Ray's StorageContext: local folder, NFS or bucket)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._target: tuple[Any, str] | None = None

    def bind(self, trial: Any) -> bool:
        """Find the experiment folder from a trial (once); False when the trial has no storage (tests)."""
        if self._target is None:
            storage = getattr(trial, "storage", None)
            folder = getattr(storage, "experiment_fs_path", None)
            if folder is None:
                return False
            self._target = (storage.storage_filesystem, f"{folder}/{DECISIONS_FILE}")
        return True

    def read(self) -> list[dict[str, Any]]:
        """The decisions recorded before (empty without a file); a line cut by a crash is skipped."""
        if self._target is None:
            return []
        fs, path = self._target
        try:
            with fs.open_input_stream(path) as handle:
                text = handle.readall().decode("utf-8", errors="replace")
        except (FileNotFoundError, OSError):
            return []
        rows = [row for row in read_result_lines(text).rows if "milestone" in row and "group" in row]
        self.entries = sorted(rows, key=lambda row: row.get("sequence", 0))  # file order = sequence order
        return list(self.entries)

    def append(self, entry: dict[str, Any]) -> None:
        """Record one decision with the next sequence number (decisions are ordered by it, never by clock)."""
        self.entries.append({"sequence": len(self.entries) + 1, **entry})
        if self._target is None:
            return
        fs, path = self._target
        text = "".join(json.dumps(row, allow_nan=True) + "\n" for row in self.entries)
        try:
            write_file(fs, path, text)
        except (OSError, ExperimentError) as error:  # the sweep goes on; a replay would fall back on results
            log.warning("could not record the scheduler's decision in %s: %s", path, error)


class GroupASHA(RetryPolicyScheduler):
    """Stopping ASHA over groups of trials (see module doc); `group_by` is "trial" or "configuration".

    `initial_seeds`: the seeds the groups are made of (None: every seed); a trial of another seed is a fresh
    seed of a decision (tune.decision): it is never judged at a rung, never stopped, and runs to max_t.
    `wait_at_rungs` (per configuration only): a seed that reaches a rung its group has not decided yet is
    paused there (Ray checkpoints and stops it; it resumes from its checkpoint when the group continues),
    so every seed of a configuration ends at the same iteration whatever order their reports arrive in.
    """

    def __init__(
        self,
        *,
        time_attr: str = "iteration",
        metric: str | None = None,
        mode: str | None = None,
        grace_period: int = 1,
        max_t: int = 100,
        reduction_factor: float = 2.0,
        group_by: str = "configuration",
        group_size: int = 1,
        protected: Collection[Hashable] = (),
        initial_seeds: Collection[int] | None = None,
        wait_at_rungs: bool = True,
        decision_log: DecisionLog | None = None,
    ) -> None:
        ladder = Ladder(grace_period, reduction_factor, max_t)  # raises ValueError for an impossible one
        if group_by not in ("trial", "configuration"):
            raise ValueError(f"group_by must be 'trial' or 'configuration', got {group_by!r}")
        if group_size < 1 or (group_by == "trial" and group_size != 1):
            raise ValueError(f"group_size must be >= 1 (1 when grouping by trial), got {group_size}")
        if mode not in (None, "max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        super().__init__()
        self._time_attr, self._metric, self._mode = time_attr, metric, mode
        self._max_t, self._rf = max_t, reduction_factor
        self._group_by, self._group_size = group_by, group_size
        self._protected = frozenset(protected)  # configuration keys (Configuration.key)
        self._initial = None if initial_seeds is None else frozenset(int(s) for s in initial_seeds)
        self._wait = wait_at_rungs and group_by == "configuration"
        self._log = decision_log if decision_log is not None else DecisionLog()
        self.milestones: list[float] = list(ladder.milestones)
        self._groups: dict[Hashable, _Group] = {}
        self._rungs: dict[float, list[float]] = {m: [] for m in self.milestones}
        self._to_replay: dict[str, Any] = {}

    # -- Ray's hooks ------------------------------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric and metric != self._metric) or (
            self._mode and mode and mode != self._mode
        ):
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def _on_add(self, tune_controller: Any, trial: Any) -> None:
        self._log.bind(trial)
        if self._fresh(trial):
            return
        group = self._group(trial)
        known = trial.trial_id in group.members
        group.members[trial.trial_id] = trial
        if not known and self._has_history(trial):
            self._to_replay[trial.trial_id] = trial  # restored after an interruption: replay before deciding
        if trial.status == Trial.ERROR:
            self._mark_failed(tune_controller, trial)  # restored with its error kept (resume without errored)
        elif group.stopped_at is not None and trial.status in LIVE:
            stop_trial(tune_controller, trial)  # e.g. a retried sibling of an already stopped configuration

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """FIFO over the trials that may run: a seed waiting at an undecided rung does not (it would train
        past the rung before its group is judged there)."""
        self._replay(tune_controller)
        self._settle(tune_controller)
        self._stop_paused_of_stopped(tune_controller)
        for status in (Trial.PENDING, Trial.PAUSED):
            for trial in tune_controller.get_trials():
                if trial.status == status and not self._waiting(trial):
                    return trial
        return None

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        self._replay(tune_controller)
        self._settle(tune_controller)
        self._stop_paused_of_stopped(tune_controller)
        if self._fresh(trial):
            return self._at_end(result)
        group = self._group(trial)
        group.members.setdefault(trial.trial_id, trial)
        if group.stopped_at is not None:
            return TrialScheduler.STOP
        if self._record(trial, result) and self._decide(group):
            self._stop_siblings(tune_controller, group, trial)
            return TrialScheduler.STOP
        if self._at_end(result) == TrialScheduler.STOP:
            return TrialScheduler.STOP
        if self._waiting(trial):
            return TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._replay(tune_controller)
        self._settle(tune_controller)
        if self._fresh(trial):
            return
        group = self._group(trial)
        if group.stopped_at is None and self._record(trial, result) and self._decide(group):
            self._stop_siblings(tune_controller, group, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        if self._fresh(trial):
            return
        group = self._group(trial)
        if group.stopped_at is None:  # removed without our decision: it will never report again
            self._mark_failed(tune_controller, trial)

    def _on_permanent_failure(self, tune_controller: Any, trial: Any) -> None:
        if self._fresh(trial):
            return
        group = self._group(trial)
        group.failed.add(trial.trial_id)
        if group.stopped_at is None and self._decide(group):
            self._stop_siblings(tune_controller, group, trial)

    # -- the rule ---------------------------------------------------------------------------------------

    def _fresh(self, trial: Any) -> bool:
        """A fresh seed of a decision: not one of the groups' initial seeds."""
        if self._initial is None:
            return False
        try:
            return int(trial.config.get("seed")) not in self._initial
        except (TypeError, ValueError):
            return False

    def _at_end(self, result: dict[str, Any]) -> str:
        return TrialScheduler.STOP if result.get(self._time_attr, -math.inf) >= self._max_t else (
            TrialScheduler.CONTINUE)

    def _key(self, trial: Any) -> Hashable:
        if self._group_by == "trial":
            return trial.trial_id
        return Configuration.from_params(trial.config).key

    def _group(self, trial: Any) -> _Group:
        key = self._key(trial)
        if key not in self._groups:
            configuration = Configuration.from_params(trial.config).key
            self._groups[key] = _Group(protected=configuration in self._protected,
                                       configuration=configuration, key=key)
        return self._groups[key]

    def _score(self, result: dict[str, Any]) -> float:
        value = float(result[self._metric])
        return -value if self._mode == "min" else value

    def _record(self, trial: Any, result: dict[str, Any]) -> bool:
        """Record the trial's score at every rung it has reached for the first time; True if it did."""
        if self._metric is None or self._time_attr not in result or self._metric not in result:
            return False
        progress, score = result[self._time_attr], self._score(result)
        group, recorded = self._group(trial), False
        for milestone in self.milestones:
            scores = group.scores.setdefault(milestone, {})
            if progress >= milestone and trial.trial_id not in scores:
                scores[trial.trial_id] = score
                recorded = True
        return recorded

    def _waiting(self, trial: Any) -> bool:
        """The trial reached a rung its (live) group has not decided yet: it must not train on."""
        if not self._wait or self._fresh(trial):
            return False
        group = self._groups.get(self._key(trial))
        if group is None or group.stopped_at is not None or trial.trial_id in group.failed:
            return False
        return any(trial.trial_id in group.scores.get(m, {}) and m not in group.decided
                   for m in self.milestones)

    def _decide(self, group: _Group) -> bool:
        """Judge every rung whose live members have all reported; True when the group is stopped."""
        live = self._group_size - len(group.failed)
        for milestone in self.milestones:
            if milestone in group.decided:
                continue
            scores = {t: s for t, s in group.scores.get(milestone, {}).items() if t not in group.failed}
            if live <= 0 or len(scores) < live:
                return False  # later rungs cannot be complete before this one
            values = list(scores.values())
            score = float(np.mean(values)) if all(math.isfinite(v) for v in values) else -math.inf
            finite = [v for v in self._rungs[milestone] if math.isfinite(v)]
            cutoff = float(np.percentile(finite, (1 - 1 / self._rf) * 100)) if finite else None
            stop = cutoff is not None and not group.protected and (score < cutoff or not math.isfinite(score))
            self._log.append({"group": group.key, "configuration": group.configuration,
                              "milestone": milestone, "score": score, "stopped": stop})
            self._apply(group, milestone, score, stop)
            if stop:
                return True
        return False

    def _apply(self, group: _Group, milestone: float, score: float, stop: bool) -> None:
        self._rungs[milestone].append(score)
        group.decided.add(milestone)
        if stop:
            group.stopped_at = milestone

    def _stop_paused_of_stopped(self, tune_controller: Any) -> None:
        """A seed whose group was stopped while Ray was still pausing it (saving its checkpoint) can end
        up PAUSED after the stop: it is stopped again here, so no seed of a stopped configuration stays
        paused."""
        if tune_controller is None or not self._wait:
            return
        for group in self._groups.values():
            if group.stopped_at is None:
                continue
            for member in list(group.members.values()):
                if member.status == Trial.PAUSED:
                    stop_trial(tune_controller, member)

    def _stop_siblings(self, tune_controller: Any, group: _Group, trial: Any) -> None:
        """Stop the other seeds now: waiting for their next report would cost up to one evaluation each."""
        if tune_controller is None:
            return
        for sibling in list(group.members.values()):
            if sibling is not trial and sibling.trial_id not in group.failed and sibling.status in LIVE:
                stop_trial(tune_controller, sibling)

    # -- rebuilding state after a restore ---------------------------------------------------------------

    @staticmethod
    def _has_history(trial: Any) -> bool:
        metadata = getattr(trial, "run_metadata", None)
        return bool(metadata is not None and metadata.last_result)

    def _replay(self, tune_controller: Any) -> None:
        """After a restore: apply the decisions recorded before the crash in their order, then record the
        restored trials' scores from result.json (a rung still open waits for its other seeds as before).
        Without a record (an experiment from before the log), the results are judged in timestamp order."""
        if not self._to_replay:
            return
        trials, self._to_replay = list(self._to_replay.values()), {}
        recorded = self._log.read()
        for entry in recorded:
            key = entry["group"]
            group = self._groups.setdefault(key, _Group(
                protected=entry.get("configuration") in self._protected,
                configuration=str(entry.get("configuration", "")), key=key))
            milestone = float(entry["milestone"])
            if milestone in self._rungs and milestone not in group.decided and group.stopped_at is None:
                self._apply(group, milestone, float(entry["score"]), bool(entry["stopped"]))
        rows = [(row, trial) for trial in trials for row in trial_history(trial)]
        rows.sort(key=lambda pair: (pair[0].get("timestamp", 0), pair[0].get("time_total_s", 0.0)))
        for row, trial in rows:
            group = self._group(trial)
            if group.stopped_at is None and self._record(trial, row) and not recorded:
                self._decide(group)
        for key in sorted(self._groups, key=str):
            group = self._groups[key]
            if group.stopped_at is None:
                self._decide(group)
        stopped = [g for g in self._groups.values() if g.stopped_at is not None]
        log.info(
            "scheduler state rebuilt from %d restored trials (%d results, %d recorded decisions); "
            "%d groups stopped",
            len(trials),
            len(rows),
            len(recorded),
            len(stopped),
        )
        for group in stopped:
            self._stop_siblings(tune_controller, group, None)

    def debug_string(self) -> str:
        stopped = sum(g.stopped_at is not None for g in self._groups.values())
        unit = "configurations" if self._group_by == "configuration" else "trials"
        return (
            f"ASHA per {self._group_by}: {len(self._groups)} {unit}, {stopped} stopped; "
            f"rungs [{', '.join(f'{m:g}' for m in self.milestones)}]"
        )


def build_scheduler(
    kind: str,
    *,
    metric: str,
    mode: str,
    time_attr: str = "iteration",
    grace_period: int = 1,
    max_t: int = 1,
    reduction_factor: float = 2.0,
    seeds: int = 1,
    protected: Collection[Hashable] = (),
    initial_seeds: Collection[int] | None = None,
    wait_at_rungs: bool = True,
) -> RetryPolicyScheduler:
    """The scheduler a sweep's `scheduler.type` names; `protected`: the references' configuration keys;
    `initial_seeds`: the sweep's seeds (any other seed is a fresh seed of a decision); `wait_at_rungs`:
    see GroupASHA (only where the slots hold a configuration's seeds)."""
    if kind == "none":
        return RetryPolicyScheduler()
    group_by = {"asha": "trial", "per_config_asha": "configuration"}[kind]
    return GroupASHA(
        time_attr=time_attr,
        metric=metric,
        mode=mode,
        grace_period=grace_period,
        max_t=max_t,
        reduction_factor=reduction_factor,
        group_by=group_by,
        group_size=seeds if group_by == "configuration" else 1,
        protected=protected,
        initial_seeds=initial_seeds,
        wait_at_rungs=wait_at_rungs,
    )

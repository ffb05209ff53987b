"""The one reader of Ray Tune experiment folders, wherever they live: a local or shared folder, or a bucket.

Ray Tune writes experiments through pyarrow.fs, so this module reads them through the same layer: a local
path, an NFS mount and `s3://bucket/prefix` (or `gs://`, honouring `AWS_ENDPOINT_URL` like Ray does) are
handled alike. `cmda-tune status`, `cmda-tune resume` and `cmda-analyze` all read an experiment through
`open_experiment`; nobody else parses `experiment_state-*.json`. Nothing here imports Ray or torch. What it
understands of Ray's layout: docs/ARCHITECTURE.md (tune, experiment folder).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmda.io import parse_yaml, write_text_atomic
from tune.configuration import ResultLines, read_result_lines, report_iteration, report_max_iters

SWEEP_FILE = "sweep.yaml"
DECISIONS_FILE = "decisions.jsonl"
"""The decisions of a `decide:` sweep: one tune.decision.record per change, in sequence order, the file
rewritten atomically at each (not .json: Ray copies an experiment's *.json files to its staging folder on a
resume and uploads them back later, which would put a stale copy over newer decisions)."""
STATE_PREFIX = "experiment_state-"
RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
ERROR_FILE = "error.txt"
DRIVER_FILE = "driver.json"
"""Written by the driver while it runs the trials ({host, pid, started}), removed when `fit` ends: a folder
that still has it after its driver's process is gone was left by a killed driver."""
TERMINATED, ERROR, RUNNING, PENDING, PAUSED = "TERMINATED", "ERROR", "RUNNING", "PENDING", "PAUSED"


class ExperimentError(ValueError):
    """A location that is not a readable Ray Tune experiment; the message names it and what is wrong."""


def is_uri(location: str | os.PathLike[str]) -> bool:
    """Whether a location is a URI (s3://, gs://, ray://, file://...) rather than a local path."""
    return "://" in str(location)


def normalize_location(location: str | os.PathLike[str]) -> str:
    """URIs stay as given (without a trailing slash); local paths become absolute (Ray requires it)."""
    text = str(location)
    if is_uri(text):
        return text.rstrip("/")
    return str(Path(text).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    """Child of a location, for URIs and paths alike."""
    return "/".join([location.rstrip("/"), *[p.strip("/") for p in parts if p]])


def filesystem(location: str) -> tuple[Any, str]:
    """(pyarrow FileSystem, path inside it) for a normalized location."""
    import pyarrow.fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), location
    try:
        return pafs.FileSystem.from_uri(location)
    except (OSError, ValueError) as error:  # pyarrow.ArrowInvalid is a ValueError
        raise ExperimentError(f"{location}: cannot open this storage location: {error}") from error


MESSAGE_LINES, MESSAGE_CHARS = 12, 1500
"""How much of an error's message a FAILED line carries (the rest is in error.txt)."""
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(\([\w.]*\))?: \S")


def error_message(text: str, max_lines: int = MESSAGE_LINES, max_chars: int = MESSAGE_CHARS) -> str:
    """The message of a Ray error file's LAST failure, every line of it (a data check lists its problems on
    the lines after the first), cut at `max_lines` / `max_chars` with a note of what was left out.

    error.txt holds one "Failure # N (occurred at ...)" block per failure, each a traceback that ends in
    `SomeError: message` (the outermost exception of a chain comes last). The message starts at the first
    `Name: message` line at column 0 after the block's last traceback frame and runs to the block's end;
    failing that, the block's last non-empty line.
    """
    blocks = re.split(r"^Failure # \d+.*$", text, flags=re.M)
    block = blocks[-1] if blocks else text
    lines = [line.rstrip() for line in block.splitlines()]
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    after = frames[-1] + 1 if frames else 0
    start = next((i for i in range(after, len(lines)) if _EXCEPTION_LINE.match(lines[i])
                  and not lines[i].startswith(("File ", "ray::"))), None)
    if start is None:
        found = [line for line in lines if line.strip()]
        return found[-1] if found else ""
    message = []
    for line in lines[start:]:
        if line.startswith(("The above exception", "During handling of the above")):
            break
        if line.strip():
            message.append(line)
    kept, size = [], 0
    for line in message[:max_lines]:
        if size + len(line) > max_chars and kept:
            break
        kept.append(line[:max_chars])
        size += len(line) + 1
    if len(kept) < len(message):
        kept.append(f"  ... ({len(message) - len(kept)} more line(s) in error.txt)")
    return "\n".join(kept)


def error_summary(text: str) -> str:
    """The first line of `error_message`: the exception line a person needs in a table."""
    return error_message(text).split("\n", 1)[0]


def write_file(fs: Any, path: str, text: str, where: str | None = None) -> None:
    """Write a small text file through a pyarrow filesystem: atomically (rename) on a local one; an object
    PUT (s3://, gs://) is atomic by itself."""
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        write_text_atomic(path, text)
        return
    try:
        with fs.open_output_stream(path) as stream:
            stream.write(text.encode("utf-8"))
    except OSError as error:
        raise ExperimentError(f"{where or path}: cannot write: {error}") from error


@dataclass
class TrialRecord:
    """One trial as storage knows it. `results` holds one row per reported iteration, in iteration order
    (a retried trial's repeated iterations keep their last report); `cut_last_line`: result.json ends in a
    report cut short (its last report is lost, not absent)."""

    dirname: str
    trial_id: str
    status: str
    params: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    num_failures: int = 0
    error_file: str | None = None
    error: str | None = None
    started: bool = True
    problems: list[str] = field(default_factory=list)
    cut_last_line: bool = False

    @property
    def last_result(self) -> dict[str, Any]:
        return self.results[-1] if self.results else {}

    @property
    def iteration(self) -> int | None:
        return report_iteration(self.last_result)

    @property
    def max_iters(self) -> int | None:
        return report_max_iters(self.last_result)

    @property
    def stopped_early(self) -> bool:
        return stopped_early(self.status, self.iteration, self.max_iters)


def parse_results(lines: ResultLines, where: str) -> tuple[list[dict[str, Any]], list[str]]:
    """result.json's reports -> (rows deduplicated by iteration in iteration order, problems found)."""
    rows = list(lines.rows)
    problems = []
    for number in lines.bad_lines:
        what = "the last report, cut short" if number == lines.last_line else "a damaged report"
        problems.append(f"{where}: line {number} is not valid JSON ({what}); skipped")
    by_iteration: dict[Any, dict[str, Any]] = {}
    for order, row in enumerate(rows):
        iteration = report_iteration(row)
        key = f"#{order}" if iteration is None else iteration
        by_iteration.pop(key, None)  # the last report of an iteration wins (a retry repeated it)
        by_iteration[key] = row
    deduped = list(by_iteration.values())
    if all(report_iteration(r) is not None for r in deduped):
        deduped.sort(key=report_iteration)
    if len(deduped) < len(rows):
        problems.append(f"{where}: {len(rows) - len(deduped)} repeated iteration(s) from a retry; "
                        "the last report of each is used")
    return deduped, problems


class Experiment:
    """An experiment folder (local path or URI) opened for reading; see the module docstring."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        self.location = normalize_location(location)
        self.fs, self.root = filesystem(self.location)

    # -- files -------------------------------------------------------------------------------------------
    def where(self, *parts: str) -> str:
        """A human-readable location (path or URI) of a file in the experiment."""
        return join(self.location, *parts)

    def _path(self, *parts: str) -> str:
        return join(self.root, *parts)

    def info(self, *parts: str) -> Any:
        try:
            return self.fs.get_file_info(self._path(*parts))
        except OSError as error:
            raise ExperimentError(f"{self.where(*parts)}: cannot reach storage: {error}") from error

    def exists(self, *parts: str) -> bool:
        import pyarrow.fs as pafs

        return self.info(*parts).type != pafs.FileType.NotFound

    def is_file(self, *parts: str) -> bool:
        import pyarrow.fs as pafs

        return self.info(*parts).type == pafs.FileType.File

    def list(self, *parts: str) -> list[tuple[str, bool]]:
        """(name, is_directory) of the entries directly under a folder, sorted by name."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self._path(*parts), allow_not_found=True, recursive=False)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as error:
            raise ExperimentError(f"{self.where(*parts)}: cannot list: {error}") from error
        return sorted((info.base_name, info.type == pafs.FileType.Directory) for info in infos)

    def read_bytes(self, *parts: str) -> bytes:
        try:
            with self.fs.open_input_stream(self._path(*parts)) as stream:
                return stream.readall()
        except FileNotFoundError:
            raise
        except OSError as error:
            if not self.exists(*parts):
                raise FileNotFoundError(self.where(*parts)) from error
            raise ExperimentError(f"{self.where(*parts)}: cannot read: {error}") from error

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode("utf-8", errors="replace")

    def read_json(self, *parts: str) -> Any:
        try:
            return json.loads(self.read_text(*parts))
        except json.JSONDecodeError as error:
            raise ExperimentError(
                f"{self.where(*parts)}: not valid JSON ({error}); the file is corrupt") from error

    def write_text(self, text: str, *parts: str) -> str:
        """Write a small file into the experiment (atomically on local storage; an object PUT is atomic)."""
        write_file(self.fs, self._path(*parts), text, self.where(*parts))
        return self.where(*parts)

    def remove_file(self, *parts: str) -> None:
        """Delete a file of the experiment; absent is fine."""
        try:
            self.fs.delete_file(self._path(*parts))
        except FileNotFoundError:
            pass
        except OSError as error:
            if self.exists(*parts):
                raise ExperimentError(f"{self.where(*parts)}: cannot remove: {error}") from error

    def remove(self, *parts: str) -> None:
        """Delete a folder of the experiment (local or in a bucket); absent is fine."""
        try:
            if self.info(*parts).type.name == "Directory":
                self.fs.delete_dir(self._path(*parts))
        except OSError as error:
            raise ExperimentError(f"{self.where(*parts)}: cannot remove: {error}") from error

    # -- Ray's layout ------------------------------------------------------------------------------------
    def state_files(self) -> list[str]:
        return sorted(n for n, is_dir in self.list() if not is_dir and n.startswith(STATE_PREFIX)
                      and n.endswith(".json"))

    def state(self) -> dict[str, Any] | None:
        """The newest experiment_state file, parsed; None when Ray has not written one yet."""
        files = self.state_files()
        if not files:
            return None
        state = self.read_json(files[-1])
        if not isinstance(state, dict) or not isinstance(state.get("trial_data", []), list):
            raise ExperimentError(f"{self.where(files[-1])}: not a Ray Tune experiment state (no trial_data)")
        return state

    def sweep(self) -> dict[str, Any] | None:
        """Our copy of the sweep file at the experiment root (None when absent)."""
        if not self.is_file(SWEEP_FILE):
            return None
        data = parse_yaml(self.read_text(SWEEP_FILE), self.where(SWEEP_FILE))
        if not isinstance(data, dict):
            raise ExperimentError(f"{self.where(SWEEP_FILE)}: expected a mapping")
        return data

    def is_experiment(self) -> bool:
        """Ray has written something of an experiment here (a state file or a tuner.pkl)."""
        names = {n for n, _ in self.list()}
        return "tuner.pkl" in names or any(n.startswith(STATE_PREFIX) for n in names)

    def _state_trials(self) -> dict[str, dict[str, Any]]:
        """Trial folder name -> {trial_id, status, config, num_failures, last_result} from the state file."""
        state = self.state() or {}
        out: dict[str, dict[str, Any]] = {}
        for number, entry in enumerate(state.get("trial_data", [])):
            try:
                trial_json, runtime_json = entry if isinstance(entry, list) else (entry, "{}")
                trial = json.loads(trial_json) if isinstance(trial_json, str) else dict(trial_json)
                runtime = (json.loads(runtime_json) if isinstance(runtime_json, str)
                           else dict(runtime_json or {}))
            except (TypeError, ValueError) as error:
                raise ExperimentError(
                    f"{self.where(self.state_files()[-1])}: trial entry {number} is unreadable ({error})"
                ) from error
            dirname = trial.get("relative_logdir") or trial.get("custom_dirname") or trial.get("trial_id")
            if not dirname:
                continue
            out[str(dirname)] = {
                "trial_id": str(trial.get("trial_id", "")),
                "status": str(trial.get("status", "")),
                "config": trial.get("config") if isinstance(trial.get("config"), dict) else {},
                "num_failures": int(runtime.get("num_failures", 0) or 0),
                "last_result": runtime.get("last_result") or {},
            }
        return out

    def decisions(self) -> list[dict[str, Any]]:
        """The records of DECISIONS_FILE in sequence order (empty without one; a cut line is skipped)."""
        try:
            text = self.read_text(DECISIONS_FILE)
        except FileNotFoundError:
            return []
        rows = [row for row in read_result_lines(text).rows if isinstance(row.get("sequence"), int)]
        return sorted(rows, key=lambda row: row["sequence"])

    def state_trial_names(self) -> set[str]:
        """The folder names of the trials Ray's experiment state knows (those a resume continues)."""
        return set(self._state_trials())

    def trials(self) -> list[TrialRecord]:
        """Every trial, started (a folder with params.json) or only in the state file, by folder name."""
        known = self._state_trials()
        records: dict[str, TrialRecord] = {}
        for name, is_dir in self.list():
            if not is_dir or name.startswith("."):
                continue
            try:
                params = self.read_json(name, PARAMS_FILE)
            except FileNotFoundError:
                continue
            meta = known.get(name, {})
            record = TrialRecord(
                dirname=name,
                trial_id=meta.get("trial_id") or str(params.get("trial_id", name)),
                status=meta.get("status", ""),
                params=params if isinstance(params, dict) else {},
                num_failures=meta.get("num_failures", 0),
            )
            try:
                lines = read_result_lines(self.read_text(name, RESULT_FILE))
                record.results, record.problems = parse_results(lines, self.where(name, RESULT_FILE))
                record.cut_last_line = lines.cut_last_line
            except FileNotFoundError:
                pass
            if not record.results and meta.get("last_result"):
                record.results = [meta["last_result"]]
            elif record.cut_last_line and meta.get("last_result"):
                # the cut line may be the last report; Ray's state may still hold it
                last, reached = meta["last_result"], record.iteration
                if (report_iteration(last) or -1) > (reached if reached is not None else -1):
                    record.results.append(last)
                    record.cut_last_line = False
            if self.is_file(name, ERROR_FILE):
                record.error_file = self.where(name, ERROR_FILE)
                record.error = error_summary(self.read_text(name, ERROR_FILE))
            record.status = record.status.upper() or _state_from_files(record)
            records[name] = record
        for name, meta in known.items():
            if name not in records:
                records[name] = TrialRecord(
                    dirname=name, trial_id=meta["trial_id"], status=meta["status"] or PENDING,
                    params=meta["config"], num_failures=meta["num_failures"], started=False,
                    results=[meta["last_result"]] if meta.get("last_result") else [],
                )
        return [records[name] for name in sorted(records)]


def _state_from_files(record: TrialRecord) -> str:
    """A trial the state file does not know yet (the driver was killed before its snapshot): its files say."""
    if record.error_file:
        return ERROR
    if record.last_result.get("done"):
        return TERMINATED
    return RUNNING if record.results else PENDING


def stopped_early(state: str, iteration: float | None, max_iters: float | None) -> bool:
    """Ended without error before its last iteration: stopped by the scheduler."""
    return state == TERMINATED and iteration is not None and bool(max_iters) and iteration < max_iters


def saved_ranking(sweep: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """(metric, mode) the experiment's `sweep.yaml` ranks trials on: its resolved `metric` and `mode`, else
    its scheduler's; the metric is None when neither names one (callers fall back on the headline)."""
    sweep = sweep if isinstance(sweep, Mapping) else {}
    scheduler = sweep.get("scheduler") if isinstance(sweep.get("scheduler"), Mapping) else {}
    metric = sweep.get("metric") or scheduler.get("metric")
    mode = str(sweep.get("mode") or scheduler.get("mode") or "max")
    return (str(metric) if metric else None), mode


def open_experiment(location: str | os.PathLike[str], *, must_exist: bool = True) -> Experiment:
    """Open an experiment folder or URI; with `must_exist`, a location without one is an ExperimentError
    that names it and says what was expected."""
    experiment = Experiment(location)
    if must_exist:
        if not experiment.exists():
            raise ExperimentError(f"{experiment.location}: no such experiment folder")
        if not experiment.is_experiment():
            raise ExperimentError(
                f"{experiment.location}: not a Ray Tune experiment folder (no experiment_state-*.json or "
                "tuner.pkl); point at the folder named after the sweep, e.g. STORAGE/<sweep name>")
    return experiment

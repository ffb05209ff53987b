"""`cmda-tune status`: the trial table read straight from an experiment folder (no Ray started, safe while
a sweep runs). Local folders; `tune/experiment.py` (pyarrow.fs, s3:// and gs://) replaces the reading here
once it lands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cmda.io import load_yaml
from tune.progress import TrialRow, make_row

SWEEP_COPY_NAME = "sweep.yaml"


def latest_state_file(path: Path) -> Path:
    # The timestamp in the name, not the mtime: Ray re-syncs every file of the folder at the end of a run.
    files = sorted(path.glob("experiment_state-*.json"), key=lambda f: f.name)
    if not files:
        raise FileNotFoundError(f"{path}: no experiment_state-*.json; is this a Ray Tune experiment folder?")
    return files[-1]


def read_results(result_file: Path) -> list[dict[str, Any]]:
    """Ray's result.json is one JSON object per line; a line cut by a crash is skipped."""
    rows: list[dict[str, Any]] = []
    if not result_file.is_file():
        return rows
    for line in result_file.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def saved_metric(path: Path) -> tuple[str, str]:
    """The sweep's metric and mode as saved in its sweep.yaml (the DSEC-Night headline when absent)."""
    copy = path / SWEEP_COPY_NAME
    raw = load_yaml(copy) if copy.is_file() else {}
    raw = raw if isinstance(raw, dict) else {}
    return str(raw.get("metric") or "miou18"), str(raw.get("mode") or "max")


def experiment_status(path: str | Path, metric: str | None = None) -> list[TrialRow]:
    """One row per trial, best first."""
    path = Path(path).expanduser().resolve()
    saved, mode = saved_metric(path)
    metric = metric or saved
    state = json.loads(latest_state_file(path).read_text())
    rows: list[TrialRow] = []
    for trial_json, runtime_json in state.get("trial_data", []):
        trial = json.loads(trial_json)
        runtime = json.loads(runtime_json) if isinstance(runtime_json, str) else runtime_json
        trial_dir = path / trial.get("relative_logdir", "")
        params = trial.get("evaluated_params") or {}
        if (trial_dir / "params.json").is_file():
            params = json.loads((trial_dir / "params.json").read_text())
        results = read_results(trial_dir / "result.json")
        if not results and runtime.get("last_result"):
            results = [runtime["last_result"]]
        rows.append(
            make_row(
                trial.get("custom_trial_name") or trial.get("trial_id", "?"),
                params,
                str(trial.get("status", "?")),
                results,
                metric,
                mode,
                int(runtime.get("num_failures", 0)),
            )
        )
    sign = 1.0 if mode == "max" else -1.0
    return sorted(rows, key=lambda r: (-(sign * r.best) if r.best is not None else float("inf"), r.name))

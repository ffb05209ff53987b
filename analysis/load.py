"""Read Ray Tune experiment folders into pandas: one row per trial and a long per-report history.

The format is Ray Tune's own: `experiment_state-*.json` at the experiment root (trial status and logdir)
and one folder per trial with `params.json` and `result.json` (one JSON object per report line), plus
`error.txt` for failed trials. Nothing here imports Ray or torch, so analysing a finished sweep is cheap.
A folder with running, errored or empty trials is analysed with what exists; every gap is reported in
`warnings` rather than raised.
"""

from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from cmda.data import CLASSES

FINISHED, ERROR, RUNNING, PENDING = "TERMINATED", "ERROR", "RUNNING", "PENDING"


class ExperimentError(ValueError):
    """A folder or file that is not a readable Ray Tune experiment."""


@dataclass
class Experiment:
    """What `load_experiments` returns: trials (one row each), history (one row per report), warnings."""

    trials: pd.DataFrame
    history: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    def __iter__(self):  # allows `trials, history = load_experiments(...)`
        return iter((self.trials, self.history))


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ExperimentError(f"{path}: cannot read JSON: {error}") from error


def _experiment_states(root: Path) -> dict[str, str]:
    """Trial folder name -> status, from the newest experiment_state file (empty if there is none)."""
    files = sorted(glob.glob(str(root / "experiment_state-*.json")))
    if not files:
        return {}
    state = _read_json(Path(files[-1]))
    statuses = {}
    for entry in state.get("trial_data", []):
        trial = json.loads(entry[0]) if isinstance(entry, list) else entry
        folder = trial.get("relative_logdir") or trial.get("custom_dirname")
        if folder:
            statuses[folder] = trial.get("status", "")
    return statuses


def _gpus_per_trial(root: Path, default: float) -> float:
    sweep = root / "sweep.yaml"
    if sweep.is_file():
        try:
            resources = (yaml.safe_load(sweep.read_text()) or {}).get("resources") or {}
            return float(resources.get("gpu", default) or 0.0)
        except yaml.YAMLError:
            return default
    return default


def _read_results(path: Path, warnings: list[str]) -> list[dict]:
    rows = []
    if not path.is_file():
        return rows
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            warnings.append(f"{path}: line {number} is not valid JSON (a report cut short?); skipped")
    return rows


def _trial_row(folder: Path, status: str, gpus: float, experiment: str, warnings: list[str]):
    params = _read_json(folder / "params.json")
    ablation = params.get("ablation") or {}
    results = _read_results(folder / "result.json", warnings)
    errored = (folder / "error.txt").is_file() or status == ERROR
    row = {
        "experiment": experiment,
        "trial": folder.name,
        "variant": ablation.get("variant", params.get("variant")),
        "lambda": ablation.get("lambda"),
        "lambdas": json.dumps(ablation.get("lambdas") or {}, sort_keys=True),
        "seed": params.get("seed"),
        "backbone": params.get("backbone"),
    }
    if not results:
        row.update(state=ERROR if errored else (status or PENDING), iterations=0)
        warnings.append(f"trial {folder.name}: no results yet ({row['state'].lower()})")
        return row, []
    last = results[-1]
    done = bool(last.get("done")) or status == FINISHED
    state = ERROR if errored else (FINISHED if done else (status or RUNNING))
    max_iters = last.get("max_iters")
    iterations = int(last.get("iteration", last.get("training_iteration", 0)))
    best = max(results, key=lambda r: r.get("miou18", -math.inf))
    row.update(
        state=state,
        iterations=iterations,
        max_iters=max_iters,
        stopped_early=state == FINISHED and max_iters is not None and iterations < max_iters,
        miou18=last.get("miou18"),
        miou19=last.get("miou19"),
        best_miou18=best.get("miou18"),
        best_iteration=best.get("iteration"),
        wall_s=last.get("time_total_s"),
        train_s=last.get("time/train_s"),
    )
    row["gpu_hours"] = (row["wall_s"] or 0.0) * gpus / 3600
    row.update({f"iou/{c}": last.get(f"iou/{c}") for c in CLASSES})
    if state == ERROR:
        warnings.append(
            f"trial {folder.name}: errored at iteration {iterations} (see {folder / 'error.txt'})"
        )
    elif state != FINISHED:
        warnings.append(f"trial {folder.name}: still {state.lower()} at iteration {iterations}")
    history = [
        {
            "trial": folder.name,
            "iteration": r.get("iteration", r.get("training_iteration")),
            **{
                k: v
                for k, v in r.items()
                if (
                    k.startswith(("loss/", "iou/"))
                    or k in ("miou18", "miou19", "pseudo_weight", "time_total_s")
                )
                and isinstance(v, int | float)
            },
        }
        for r in results
    ]
    return row, history


def load_experiments(dirs, gpus: float = 0.0) -> Experiment:
    """Load one or several experiment folders. `gpus` per trial is used when the folder's sweep.yaml
    does not say (it is what turns wall time into GPU-hours)."""
    trial_rows, history_rows, warnings = [], [], []
    for directory in [dirs] if isinstance(dirs, str | os.PathLike) else dirs:
        root = Path(directory)
        if not root.is_dir():
            raise ExperimentError(f"{root}: not a folder")
        folders = sorted(p for p in root.iterdir() if (p / "params.json").is_file())
        if not folders:
            raise ExperimentError(
                f"{root}: no trial folders with params.json (is this a Ray Tune experiment?)"
            )
        statuses = _experiment_states(root)
        per_trial_gpus = _gpus_per_trial(root, gpus)
        for folder in folders:
            row, history = _trial_row(
                folder, statuses.get(folder.name, ""), per_trial_gpus, root.name, warnings
            )
            trial_rows.append(row)
            history_rows.extend(history)
        # Ray creates a trial's folder only when the trial starts: pending ones exist only in the state file
        started = {folder.name for folder in folders}
        for name, status in sorted(statuses.items()):
            if name not in started:
                warnings.append(f"trial {name}: not started yet ({(status or PENDING).lower()}), no folder")
    trials = pd.DataFrame(trial_rows)
    history = pd.DataFrame(history_rows)
    if not history.empty:
        history = history.merge(trials[["trial", "variant", "lambda", "seed"]], on="trial", how="left")
    return Experiment(trials=trials, history=history, warnings=warnings)

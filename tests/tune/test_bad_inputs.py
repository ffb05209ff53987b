"""The bad inputs a new user meets with `cmda-tune` (issue 18, section 6): each ends in exit 2 with a sentence
naming the file or field and the cause, and writes nothing. No Ray is started here."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from conftest import write_base_config

from tune.cli import main
from tune.driver import saved_sweep
from tune.experiment import DRIVER_FILE, SWEEP_FILE
from tune.status import status_table
from tune.sweep import load_sweep


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("ray.init reached: the input should have been refused before")

    monkeypatch.setattr(ray, "init", refuse)


def write_sweep(tmp_path: Path, storage: str, **overrides: Any) -> Path:
    base = write_base_config(tmp_path)
    raw = {"name": "bad", "base_config": str(base), "overrides": overrides,
           "search": {"grid": {"variants": ["none", "fusion_st"], "seeds": [0]}},
           "scheduler": {"type": "none"}, "resources": {"cpu": 1}, "storage_path": storage}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def experiment_of(tmp_path: Path, sweep: Path, started: int) -> Path:
    """An experiment folder as a killed driver leaves it: the sweep copy, Ray's files, `started` trials."""
    spec = load_sweep(sweep)
    folder = Path(spec.storage_path) / spec.name
    folder.mkdir(parents=True)
    (folder / SWEEP_FILE).write_text(yaml.safe_dump(saved_sweep(spec)))
    (folder / "tuner.pkl").write_bytes(b"")
    (folder / "experiment_state-2026.json").write_text(json.dumps({"trial_data": []}))
    for number, params in enumerate(spec.grid_trials()[:started]):
        trial = folder / f"trial_{number}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps(params))
        (trial / "result.json").write_text(json.dumps({"iteration": 2, "max_iters": 8, "miou18": 1.0}) + "\n")
    return folder


def test_an_unreachable_s3_endpoint_is_one_clean_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    assert main(["sweep", str(write_sweep(tmp_path, "s3://bucket/results"))]) == 2
    err = capsys.readouterr().err
    assert "s3://bucket/results/bad: cannot reach the storage (storage_path)" in err
    assert "Traceback" not in err


def test_resume_with_a_changed_sweep_is_refused_naming_the_change(tmp_path: Path, capsys) -> None:
    sweep = write_sweep(tmp_path, str(tmp_path / "results"))
    experiment = experiment_of(tmp_path, sweep, started=1)
    changed = tmp_path / "changed.yaml"
    raw = yaml.safe_load(sweep.read_text())
    raw["overrides"] = {"train.max_iters": 16}
    changed.write_text(yaml.safe_dump(raw))
    assert main(["resume", str(experiment), "--sweep", str(changed)]) == 2
    err = capsys.readouterr().err
    assert f"{changed}: differs from the sweep this experiment ran" in err
    assert "train.max_iters: 8 -> 16" in err


def test_status_of_a_killed_sweep_lists_the_whole_grid_and_says_the_driver_is_gone(tmp_path: Path) -> None:
    experiment = experiment_of(tmp_path, write_sweep(tmp_path, str(tmp_path / "results")), started=1)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    (experiment / DRIVER_FILE).write_text(json.dumps({"host": socket.gethostname(),
                                                      "pid": int(gone.stdout), "started": 0}))
    table = status_table(experiment)
    assert "2 trials: 1 NOT STARTED, 1 RUNNING" in table, table
    assert f"is gone: it was killed; `cmda-tune resume {experiment}`" in table
    (experiment / DRIVER_FILE).unlink()  # a driver that ended without finishing the trials
    assert "the driver is gone" in status_table(experiment)


def test_status_of_another_ray_project_says_so(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "other"
    (folder / "train_fn_0").mkdir(parents=True)
    (folder / "experiment_state-2026.json").write_text(json.dumps({"trial_data": []}))
    (folder / "train_fn_0" / "params.json").write_text(json.dumps({"lr": 0.1}))
    assert main(["status", str(folder)]) == 2
    assert f"{folder}: not a cmda-tune experiment" in capsys.readouterr().err

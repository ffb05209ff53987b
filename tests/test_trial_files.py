"""tune.trial_files: a trial's small files reach its storage folder (a folder or a bucket) and come back for
a retry on a node whose scratch is empty."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs
from s3_server import list_objects, s3_bucket  # noqa: F401 - fixture

from tune.trial_files import TrialFiles


def scratch(tmp_path: Path) -> dict[str, Path]:
    work = tmp_path / "work"
    (work / "tensorboard").mkdir(parents=True)
    (work / "log.csv").write_text("iteration,loss\n2,1.0\n")
    (work / "tensorboard" / "events.out.tfevents.1").write_bytes(b"\x00event1")
    (work / "tensorboard" / ".tmp_partial").write_text("a temporary of cmda.io: never copied")
    (tmp_path / "resolved_config.yaml").write_text("seed: 0\n")
    return {"resolved_config.yaml": tmp_path / "resolved_config.yaml", "log.csv": work / "log.csv",
            "tensorboard": work / "tensorboard", "missing.txt": work / "not_written_yet.txt"}


def test_upload_copies_changed_files_only_and_restore_brings_them_back(tmp_path: Path) -> None:
    files = scratch(tmp_path / "node_a")
    storage = tmp_path / "storage" / "exp" / "trial_1"
    sync = TrialFiles(pafs.LocalFileSystem(), str(storage), files)
    assert sync.upload() == ["resolved_config.yaml", "log.csv", "tensorboard/events.out.tfevents.1"]
    assert (storage / "log.csv").read_text() == "iteration,loss\n2,1.0\n"
    assert sorted(p.name for p in (storage / "tensorboard").iterdir()) == ["events.out.tfevents.1"]
    assert sync.upload() == []  # nothing changed: nothing copied
    with files["log.csv"].open("a") as handle:
        handle.write("4,0.5\n")
    assert sync.upload() == ["log.csv"]
    assert (storage / "log.csv").read_text().endswith("4,0.5\n")

    # a retry on another node: empty scratch, same storage folder
    node_b = tmp_path / "node_b"
    moved = {name: node_b / path.relative_to(tmp_path / "node_a") for name, path in files.items()}
    restored = TrialFiles(pafs.LocalFileSystem(), str(storage), moved).restore()
    assert sorted(restored) == ["log.csv", "resolved_config.yaml", "tensorboard/events.out.tfevents.1"]
    assert moved["log.csv"].read_text() == "iteration,loss\n2,1.0\n4,0.5\n"
    assert moved["tensorboard"].joinpath("events.out.tfevents.1").read_bytes() == b"\x00event1"
    assert not [p for p in os.listdir(storage) if p.startswith(".tmp")]  # atomic writes left no temporary


def test_upload_and_restore_through_a_bucket(tmp_path: Path, s3_bucket: str) -> None:  # noqa: F811
    files = scratch(tmp_path / "node_a")
    fs, root = pafs.FileSystem.from_uri(f"{s3_bucket}/exp/trial_2")
    assert len(TrialFiles(fs, root, files).upload()) == 3
    assert list_objects(f"{s3_bucket}/exp/trial_2") == {
        "resolved_config.yaml": 8, "log.csv": 21, "tensorboard/events.out.tfevents.1": 7}
    moved = {name: tmp_path / "node_b" / name for name in files}
    TrialFiles(fs, root, moved).restore()
    assert moved["log.csv"].read_text() == "iteration,loss\n2,1.0\n"
    assert (moved["tensorboard"] / "events.out.tfevents.1").read_bytes() == b"\x00event1"
    assert not moved["missing.txt"].exists()


def test_restore_keeps_what_the_node_already_has(tmp_path: Path) -> None:
    files = scratch(tmp_path)
    storage = tmp_path / "storage"
    TrialFiles(pafs.LocalFileSystem(), str(storage), files).upload()
    files["log.csv"].write_text("iteration,loss\n2,1.0\n4,0.5\n")  # a same-node retry: scratch is newer
    assert TrialFiles(pafs.LocalFileSystem(), str(storage), files).restore() == []
    assert files["log.csv"].read_text().endswith("4,0.5\n")

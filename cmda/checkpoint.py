"""Checkpoints of a training run: the folder format, finding one, reading it, and the resume policy.

A checkpoint is one folder written atomically (a reader, Ray's syncer or a resumed run sees a whole one or
none), then named by the `latest` pointer, so a run killed at any moment resumes from its last complete
checkpoint. Resuming means continuing the same run: `prepare_resume` refuses a changed setting that would
make a different run under the same name. The trainer's loop (cmda/train.py) calls these; `cmda test`
reads checkpoints with them. See docs/ARCHITECTURE.md ("cmda.train") for the folder layout.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmda.config import Config, config_from_dict, save_config
from cmda.errors import DISK_PROBLEMS, RunError
from cmda.io import atomic_directory, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
LATEST = "latest"
"""The one-line pointer to the newest complete checkpoint folder (beside the `iter_*` folders)."""

RESUME_MAY_CHANGE = frozenset(
    {
        "name",
        "train.log_interval",
        "train.eval_interval",
        "train.progress_bar",
        "train.tensorboard",
        "train.keep_checkpoints",
        "train.work_dir",
        "train.resume",
        "train.device",
        "train.deterministic",
        "model.activation_checkpointing",
        "data.num_workers",
        "data.source.root",
        "data.target.root",
    }
)
"""Settings a resumed run may change: where things are and how often it logs or evaluates. Any other
change would make a different run under the same name, so resuming refuses it."""
RESUME_KEEPS = frozenset({"model.pretrained", "model.cyclegan", "model.init_from"})
"""Settings that describe how the run STARTED (its weight files): a resumed run keeps the checkpoint's
values (the weights come from the checkpoint), whatever the resuming config says."""


def rng_state() -> dict[str, Any]:
    """Every global random stream a step may touch (Python, NumPy, torch CPU and CUDA), in plain Python
    types and tensors so that the checkpoint loads with `weights_only=True`."""
    key, keys, *rest = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [key, keys.tolist(), *rest],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    key, keys, *rest = state["numpy"]  # a list since weights_only checkpoints, a tuple with an array before
    np.random.set_state((key, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def disk_error(error: OSError, what: Path) -> RunError | None:
    """A full, read-only or forbidden work dir as a sentence (None for other OS errors)."""
    if error.errno not in DISK_PROBLEMS:
        return None
    return RunError(
        f"cannot write {what}: {DISK_PROBLEMS[error.errno]} ({error.strerror}); free space or choose a "
        "writable train.work_dir (resume from its last complete checkpoint with --resume)"
    )


def save_checkpoint(
    work_dir: Path,
    iteration: int,
    state: dict[str, Any],
    config: Config,
    metrics: dict[str, float],
    keep: int,
) -> Path:
    """Write <work_dir>/checkpoints/iter_XXXXXXX/ (checkpoint.pt, config.yaml, metrics.json) as one atomic
    folder (group-readable, like Ray's own), then repoint `latest`, then drop the oldest beyond `keep`."""
    root = work_dir / "checkpoints"
    final = root / f"iter_{iteration:07d}"
    try:
        with atomic_directory(final) as tmp:
            torch.save(state, tmp / CHECKPOINT_FILE)
            save_config(config, tmp / CONFIG_FILE)
            write_json_atomic(tmp / METRICS_FILE, metrics)
        write_text_atomic(root / LATEST, final.name)
    except OSError as error:
        friendly = disk_error(error, final)
        if friendly is None:
            raise
        raise friendly from error
    for old in sorted(p for p in root.glob("iter_*") if p != final)[: -max(keep - 1, 0) or None]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_dir_of(path: str | os.PathLike[str]) -> Path:
    """Accept a checkpoint folder, its checkpoint.pt, a `latest` pointer or a work_dir."""
    path = Path(path)
    if path.is_file() and path.name == CHECKPOINT_FILE:
        return path.parent
    if path.is_file() and path.name == LATEST:
        return path.parent / path.read_text().strip()
    if (path / CHECKPOINT_FILE).is_file():
        return path
    for pointer in (path / LATEST, path / "checkpoints" / LATEST):
        if pointer.is_file():
            return pointer.parent / pointer.read_text().strip()
    raise RunError(
        f"{path}: no {CHECKPOINT_FILE} (expected a checkpoint folder, its `latest` file or a work_dir)"
    )


def latest_checkpoint(work_dir: str | os.PathLike[str]) -> Path | None:
    """The folder `<work_dir>/checkpoints/latest` names, or None before the first checkpoint."""
    pointer = Path(work_dir) / "checkpoints" / LATEST
    return pointer.parent / pointer.read_text().strip() if pointer.is_file() else None


OLD_CHECKPOINT_GLOBALS = (np.zeros(1).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32)))
"""What checkpoints written before the RNG state became plain lists hold beyond tensors and plain types:
numpy's RNG array. Allowed to the weights_only unpickler so they still load (arrays only, no code)."""


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The state a checkpoint holds (on the CPU), read with `weights_only=True` (tensors and plain types);
    `path` as `checkpoint_dir_of` accepts it."""
    folder = checkpoint_dir_of(path)
    try:
        with torch.serialization.safe_globals(list(OLD_CHECKPOINT_GLOBALS)):
            return torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RunError(f"{folder / CHECKPOINT_FILE}: cannot read checkpoint: {error}") from error


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {dotted.key: value} (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


@dataclass
class Resume:
    """What `prepare_resume` decided: the checkpoint to continue, and the config to continue with."""

    folder: Path
    state: dict[str, Any]
    config: Config
    changes: list[dict[str, Any]] = field(default_factory=list)


def prepare_resume(config: Config, resume_from: str | os.PathLike | None) -> Resume | None:
    """The checkpoint to continue (explicit, or `train.resume: auto`), checked against the config.

    A changed setting that alters the run is refused, naming every such key; allowed changes
    (`RESUME_MAY_CHANGE`) are kept and recorded; `RESUME_KEEPS` take the checkpoint's values.
    """
    if resume_from is None and config.train.resume == "auto":
        resume_from = latest_checkpoint(config.train.work_dir)
    if resume_from is None:
        return None
    folder = checkpoint_dir_of(resume_from)
    state = load_checkpoint(folder)
    if "optimizer" not in state:
        raise RunError(
            f"{folder}: holds weights only (an imported or exported checkpoint), nothing to resume; start a "
            f"new run from its weights with model.init_from: {folder}"
        )
    old = flatten(state["config"])
    new = flatten(config.to_dict())
    refused, allowed = [], []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after or key in RESUME_KEEPS:
            continue
        (allowed if key in RESUME_MAY_CHANGE else refused).append((key, before, after))
    if refused:
        listed = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in refused)
        raise RunError(
            f"{folder}: cannot resume with changed settings that alter the run ({listed}). Resume with the "
            f"checkpoint's values (its {CONFIG_FILE}), or start a new run in another train.work_dir. Only "
            f"these may change on resume: {', '.join(sorted(RESUME_MAY_CHANGE))}"
        )
    data = config.to_dict()
    for key in RESUME_KEEPS:
        section, name = key.split(".")
        data[section][name] = old.get(key, data[section][name])
    changes = [{"iteration": int(state["iteration"]), "key": k, "old": a, "new": b} for k, a, b in allowed]
    for change in changes:
        log.info("resume: %s changed from %r to %r", change["key"], change["old"], change["new"])
    return Resume(folder, state, config_from_dict(data, source=str(folder / CONFIG_FILE)), changes)

"""The CMDA training loop: one readable iteration loop around `DACSStep`, in named pieces.

`run(config, report=None, resume_from=None)` is the single entry point: `cmda train` calls it, and so does
the Ray trainable, passing a plain `report(metrics, checkpoint_dir)` callable, so this module never
imports Ray. The pieces, in the order `run` calls them:

    prepare_resume   the checkpoint to continue from (if any), refused when a setting that alters the run
                     changed (naming it); allowed changes (logging, evaluation interval) are recorded
    build_datasets   source, target and test datasets: bad data fails here, before anything is written
    open_work_dir    creates and probes the work dir, removes stale temporaries of a killed writer
    build_session    model built bare, then weights: ImageNet/CycleGAN files from scratch, or the checkpoint
    train_step       one DACS step + optimizer step, returns the logged values
    evaluate_and_checkpoint   the shared evaluation routine, an atomic checkpoint folder, `report`

Sample i of the training stream depends only on (seed, i) and every random draw of a step on
(seed, iteration, micro-batch), so a resumed run continues exactly where the interrupted one stopped;
with `train.accumulate` checkpoints fall only between iterations (no half-accumulated gradients to save).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmda.config import Config, config_from_dict, save_config
from cmda.data.check import check_training_data
from cmda.errors import RunError
from cmda.eval import evaluate
from cmda.io import atomic_directory, clean_stale_tmp, is_unset, write_json_atomic, write_text_atomic
from cmda.uda.dacs import DACSStep, NonFiniteLossError

log = logging.getLogger(__name__)
Report = Callable[[dict[str, float], str | None], None]
CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
LATEST = "latest"
LOG_FILE = "log.csv"

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
RESUME_KEEPS = frozenset({"model.pretrained", "model.cyclegan"})
"""Settings that describe how the run STARTED (its weight files): a resumed run keeps the checkpoint's
values (the weights come from the checkpoint), whatever the resuming config says."""

__all__ = ["run", "build_model", "load_checkpoint", "NonFiniteLossError"]


# -- devices and precision ------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; a CUDA device that does not exist is a RunError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError(
                f"train.device is {name!r} but PyTorch sees no CUDA GPU on this machine "
                "(torch.cuda.is_available() is False); set train.device: auto (the GPU when there is one) "
                "or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RunError(
                f"train.device is {name!r} but this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                "use cuda:0 .. cuda:N-1 or auto"
            )
    return device


def allow_tf32(device: torch.device) -> None:
    """fp32 matmuls and convolutions may use TF32 on CUDA, as the original's torch 1.7 did."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast_factory(device: torch.device, amp: str) -> Callable[[], contextlib.AbstractContextManager]:
    """fp32 by default (`allow_tf32`); "bf16" autocasts the training step (evaluation stays fp32)."""
    allow_tf32(device)
    if amp == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def lr_factor(iteration: int, config: Config) -> float:
    """Linear warmup (from warmup_ratio) then poly decay to 0 at max_iters, as mmcv's poly10warm."""
    optim, total = config.optim, config.train.max_iters
    poly = (1 - iteration / total) ** optim.power
    if iteration < optim.warmup_iters:
        return poly * (1 - (1 - iteration / optim.warmup_iters) * (1 - optim.warmup_ratio))
    return poly


# -- model ----------------------------------------------------------------------------------------------


def build_model(config: Config) -> torch.nn.Module:
    """The bare segmentor (random init) for this config and target; weights are loaded separately."""
    from cmda.models.segmentor import CMDASegmentor

    return CMDASegmentor(
        backbone=config.model.backbone,
        num_classes=config.model.num_classes,
        second_channels=config.data.target.second_channels,
        drop_path_rate=config.model.drop_path_rate,
        fusion=config.model.fusion,
        decoder_channels=config.model.decoder_channels,
        fuse_with=config.target.second_modality,
        activation_checkpointing=config.model.activation_checkpointing,
    )


def build_translator(config: Config, state: Mapping[str, Any] | None) -> torch.nn.Module | None:
    """The frozen CycleGAN: from the checkpoint when resuming, from `model.cyclegan` when starting."""
    from cmda.models.cyclegan import ResnetGenerator, frozen, load_event_translator

    if state is not None:
        if state.get("translator") is None:
            return None
        generator = ResnetGenerator()
        generator.load_state_dict(state["translator"])
        return frozen(generator)
    if is_unset(config.model.cyclegan) or not config.target.provides("events"):
        return None
    return load_event_translator(config.model.cyclegan)


# -- data -----------------------------------------------------------------------------------------------


class StreamSampler(torch.utils.data.Sampler[int]):
    """Indices start, start+1, ... (wrapping): the i-th sample of the run is always the same one."""

    def __init__(self, length: int, start: int, count: int) -> None:
        self.length, self.start, self.count = length, start, count

    def __iter__(self) -> Iterator[int]:
        return ((self.start + k) % self.length for k in range(self.count))

    def __len__(self) -> int:
        return self.count


def build_test_dataset(config: Config):
    """The target's labelled evaluation split, as the evaluation and `cmda test` use it."""
    return config.target.build(config.data.target, "test", None)


def build_test_loader(config: Config, dataset=None) -> torch.utils.data.DataLoader:
    dataset = build_test_dataset(config) if dataset is None else dataset
    return torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=min(config.data.num_workers, 2))


@dataclass
class Datasets:
    paired: torch.utils.data.Dataset
    test: torch.utils.data.Dataset


def build_datasets(config: Config) -> Datasets:
    """Source (with RCS), target train and target test datasets; opening them checks the data."""
    from cmda.data.cityscapes import CityscapesDataset
    from cmda.data.paired import SourceTargetDataset
    from cmda.data.rcs import RareClassSampler

    src_cfg = config.data.source
    source = CityscapesDataset(
        src_cfg.root,
        "train",
        resize=tuple(src_cfg.resize),
        crop=tuple(src_cfg.crop),
        cat_max_ratio=src_cfg.cat_max_ratio,
        with_isr=False,
    )
    target = config.target.build(config.data.target, "train", None)
    rcs = None
    if src_cfg.rcs.enabled:
        rcs = RareClassSampler.for_dataset(
            source,
            src_cfg.rcs.temperature,
            src_cfg.rcs.min_pixels,
            src_cfg.rcs.min_crop_ratio,
            seed=config.seed,
        )
    paired = SourceTargetDataset(source, target, rcs=rcs, seed=config.seed)
    return Datasets(paired=paired, test=build_test_dataset(config))


def build_train_loader(config: Config, paired, start_iteration: int) -> torch.utils.data.DataLoader:
    """Batches of `data.batch_size` from the sample of `start_iteration` on; `train.accumulate` batches make
    one iteration, so sample i is the same whichever way an iteration's samples are split."""
    batch = config.data.batch_size
    per_iteration = batch * config.train.accumulate
    remaining = (config.train.max_iters - start_iteration) * per_iteration
    return torch.utils.data.DataLoader(
        paired,
        batch_size=batch,
        sampler=StreamSampler(len(paired), start_iteration * per_iteration, remaining),
        num_workers=config.data.num_workers,
        drop_last=True,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(config.seed),  # keeps the loader off the global RNG
    )


def build_loaders(config: Config, start_iteration: int, datasets: Datasets | None = None) -> tuple[Any, Any]:
    """(train loader from `start_iteration` on, test loader)."""
    datasets = build_datasets(config) if datasets is None else datasets
    return build_train_loader(config, datasets.paired, start_iteration), build_test_loader(
        config, datasets.test
    )


# -- checkpoints ----------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _disk_error(error: OSError, what: Path) -> RunError | None:
    """A full, read-only or forbidden work dir as a sentence (None for other OS errors)."""
    reasons = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission is denied",
        errno.EPERM: "permission is denied",
    }
    if error.errno not in reasons:
        return None
    return RunError(
        f"cannot write {what}: {reasons[error.errno]} ({error.strerror}); free space or choose a writable "
        "train.work_dir (resume from its last complete checkpoint with --resume)"
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
        friendly = _disk_error(error, final)
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


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    folder = checkpoint_dir_of(path)
    try:
        return torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    except Exception as error:
        raise RunError(f"{folder / CHECKPOINT_FILE}: cannot read checkpoint: {error}") from error


def checkpoint_config(folder: Path, state: Mapping[str, Any]) -> dict[str, Any]:
    """The config a checkpoint was trained with (inside checkpoint.pt; config.yaml for older ones)."""
    if "config" in state:
        return dict(state["config"])
    from cmda.io import load_yaml

    return load_yaml(folder / CONFIG_FILE)


# -- resume ---------------------------------------------------------------------------------------------


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
    latest = Path(config.train.work_dir) / "checkpoints" / LATEST
    if resume_from is None and config.train.resume == "auto" and latest.is_file():
        resume_from = latest.parent
    if resume_from is None:
        return None
    folder = checkpoint_dir_of(resume_from)
    state = load_checkpoint(folder)
    old = flatten(checkpoint_config(folder, state))
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


# -- work dir and logs ----------------------------------------------------------------------------------


@contextlib.contextmanager
def open_work_dir(work_dir: Path) -> Iterator[Path]:
    """Create and probe the work dir (read-only or full is a sentence), clean a killed writer's temporaries;
    if the run fails before it wrote a checkpoint or a log row, a work dir it created is removed again."""
    existed = work_dir.exists()
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp_probe_", dir=work_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        if not existed and work_dir.is_dir() and not any(work_dir.iterdir()):
            work_dir.rmdir()
        friendly = _disk_error(error, work_dir) or RunError(
            f"cannot create train.work_dir {work_dir}: {error.strerror or error}; choose another "
            "train.work_dir"
        )
        raise friendly from error
    for leftover in clean_stale_tmp(work_dir / "checkpoints"):
        log.info("removed %s, left by an interrupted checkpoint write", leftover)
    try:
        yield work_dir
    except BaseException:
        kept = (work_dir / "checkpoints" / LATEST).is_file() or (work_dir / LOG_FILE).is_file()
        if not existed and not kept:
            shutil.rmtree(work_dir, ignore_errors=True)
        raise


class MetricLog:
    """CSV (one row per logged iteration: losses, and metrics where it evaluated) and TensorBoard logs.

    Opened at `start` (the iteration a run resumes from), rows and events after it are dropped: they were
    logged by the interrupted run after its last checkpoint and will be logged again. Nothing is created
    before the first row, so a run that fails at once leaves no log behind.
    """

    def __init__(self, work_dir: Path, tensorboard: bool, start: int = 0) -> None:
        self.path = work_dir / LOG_FILE
        self.tensorboard_dir = work_dir / "tensorboard"
        self.tensorboard = tensorboard
        self.start = start
        self.writer = None
        self.fields: list[str] = []
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():
            with self.path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                self.fields = list(reader.fieldnames or [])
                self.rows = [row for row in reader if int(float(row["iteration"])) <= start]
            self._rewrite()

    def _rewrite(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buffer.getvalue())

    def _tensorboard(self):
        if self.writer is None and self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # events at steps after `start` came from the interrupted run: purge them
                self.writer = SummaryWriter(str(self.tensorboard_dir), purge_step=self.start + 1)
            except Exception as error:  # tensorboard is optional; training must not depend on it
                log.info("TensorBoard logging off: %s", error)
                self.tensorboard = False
        return self.writer

    def write(self, iteration: int, values: dict[str, float]) -> None:
        """Append a row, or complete the last one when it has the same iteration (losses + metrics)."""
        row = {"iteration": iteration, **values}
        new_fields = [k for k in row if k not in self.fields]
        merge = bool(self.rows) and int(float(self.rows[-1]["iteration"])) == iteration
        if merge:
            self.rows[-1].update(row)
        else:
            self.rows.append(row)
        if merge or new_fields or not self.path.is_file():
            self.fields += new_fields
            self._rewrite()
        else:
            with self.path.open("a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self.fields).writerow(row)
        writer = self._tensorboard()
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(key, value, iteration)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, disable=not (enabled and sys.stderr.isatty()), dynamic_ncols=True
    )


# -- the session: model, step, optimizer, schedule ------------------------------------------------------


@dataclass
class Session:
    """Everything that trains, and where it is."""

    config: Config
    model: torch.nn.Module
    step: DACSStep
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    iteration: int = 0
    train_time: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        """The complete checkpoint: weights, optimizer, schedule, RNG, counters and the config."""
        translator = self.step.translator
        return {
            "model": self.model.state_dict(),
            "teacher": self.step.teacher.model.state_dict(),
            "translator": None if translator is None else translator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(),
            "iteration": self.iteration,
            "train_time": self.train_time,
            "metrics": self.metrics,
            "config": self.config.to_dict(),
            "config_changes": self.changes,
        }


def build_session(config: Config, device: torch.device, resume: Resume | None) -> Session:
    """Build the model bare; then either load the starting weights (ImageNet MiT) or restore a checkpoint."""
    model = build_model(config)
    if resume is None and not is_unset(config.model.pretrained):
        model.load_pretrained(config.model.pretrained)
    model.to(device)
    translator = build_translator(config, None if resume is None else resume.state)
    step = DACSStep(model, config.uda, config.target, seed=config.seed, translator=translator)
    step.teacher.to(device)
    if translator is not None:
        translator.to(device)
    optimizer = torch.optim.AdamW(
        model.param_groups(config.optim.lr, config.optim.weight_decay, config.optim.head_lr_mult),
        lr=config.optim.lr,
        betas=tuple(config.optim.betas),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, config))
    session = Session(config, model, step, optimizer, scheduler)
    if resume is not None:
        restore(session, resume)
    return session


def restore(session: Session, resume: Resume) -> None:
    """Continue a checkpoint: weights, optimizer, schedule, RNG streams, counters, recorded changes."""
    state = resume.state
    session.model.load_state_dict(state["model"])
    session.step.teacher.model.load_state_dict(state["teacher"])
    session.optimizer.load_state_dict(state["optimizer"])
    session.scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    session.iteration = int(state["iteration"])
    session.train_time = float(state.get("train_time", 0.0))
    session.metrics = dict(state.get("metrics", {}))
    session.changes = list(state.get("config_changes", [])) + resume.changes
    log.info("resumed from %s at iteration %d", resume.folder, session.iteration)


def iteration_batches(loader, accumulate: int) -> Iterator[list[dict]]:
    """The loader's batches in groups of `accumulate`: the micro-batches of one iteration."""
    group: list[dict] = []
    for batch in loader:
        group.append(batch)
        if len(group) == accumulate:
            yield group
            group = []


def train_step(
    session: Session, batch: dict | Sequence[dict], device: torch.device, autocast
) -> dict[str, float]:
    """One iteration: the DACS step on each micro-batch (one batch, or `train.accumulate` of them, each
    loss scaled by 1/k so the gradients sum to the large batch's), then one optimizer and schedule step.
    Returns every logged value as a float (the mean over the micro-batches)."""
    cfg = session.config
    batches = [batch] if isinstance(batch, Mapping) else list(batch)
    session.optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = defaultdict(float)
    for micro, micro_batch in enumerate(batches):
        logged = session.step(
            micro_batch, session.iteration, device, autocast, micro=micro, scale=1 / len(batches)
        )
        for key, value in logged.items():
            sums[key] += float(value)
    if cfg.optim.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(session.model.parameters(), cfg.optim.grad_clip)
    session.optimizer.step()
    session.scheduler.step()
    session.iteration += 1
    values = {k: v / len(batches) for k, v in sums.items()}
    values.update({f"{k}_weighted": v for k, v in session.step.weighted_terms(values).items()})
    return values


def evaluate_and_checkpoint(
    session: Session,
    test_loader,
    device: torch.device,
    work_dir: Path,
    losses: dict[str, float],
) -> tuple[dict[str, float], Path]:
    """Evaluate the student (in fp32) on the test split, write the checkpoint; return (report, folder)."""
    cfg = session.config
    metrics = evaluate(session.model, test_loader, device, cfg.target)
    session.metrics = metrics
    reported = {
        "iteration": session.iteration,
        "max_iters": cfg.train.max_iters,
        **metrics,
        **{f"loss/{k}": v for k, v in losses.items()},
        "time/train_s": session.train_time,
    }
    reported["pseudo_weight"] = reported.pop("loss/pseudo_weight", float("nan"))
    folder = save_checkpoint(
        work_dir, session.iteration, session.state(), cfg, reported, cfg.train.keep_checkpoints
    )
    return reported, folder


class Means:
    """Running sums of logged values, averaged and reset on demand."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] += value
        self.count += 1

    def pop(self) -> dict[str, float]:
        means = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        self.sums.clear()
        self.count = 0
        return means


def run(
    config: Config | Mapping[str, Any],
    report: Report | None = None,
    resume_from: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Train CMDA as configured; returns the last evaluation's metrics."""
    cfg = config if isinstance(config, Config) else config_from_dict(dict(config))
    device = resolve_device(cfg.train.device)
    resume = prepare_resume(cfg, resume_from)
    if resume is not None:
        cfg = resume.config
    check_training_data(cfg)  # seconds: a bad file stops the run now, not at the first draw or evaluation
    datasets = build_datasets(cfg)
    work_dir = Path(cfg.train.work_dir)
    headline = cfg.target.headline_metric
    with open_work_dir(work_dir):
        seed_everything(cfg.seed, cfg.train.deterministic)
        session = build_session(cfg, device, resume)
        autocast = autocast_factory(device, cfg.train.amp)
        train_loader = build_train_loader(cfg, datasets.paired, session.iteration)
        test_loader = build_test_loader(cfg, datasets.test)
        metric_log = MetricLog(work_dir, cfg.train.tensorboard, session.iteration)
        progress = _progress(cfg.train.max_iters, session.iteration, cfg.train.progress_bar)
        since_log, since_eval = Means(), Means()
        try:
            session.model.train()
            for batches in iteration_batches(train_loader, cfg.train.accumulate):
                tick = time.perf_counter()
                values = train_step(session, batches, device, autocast)
                session.train_time += time.perf_counter() - tick
                since_log.add(values)
                since_eval.add(values)
                progress.update(1)
                iteration, last = session.iteration, session.iteration == cfg.train.max_iters
                if iteration % cfg.train.log_interval == 0 or last:
                    means = {f"loss/{k}": v for k, v in since_log.pop().items()}
                    means["lr"] = session.optimizer.param_groups[0]["lr"]
                    metric_log.write(iteration, means)
                    progress.set_postfix(
                        loss=f"{sum(v for k, v in means.items() if k.startswith('loss/src_')):.3f}",
                        **{headline: f"{session.metrics.get(headline, math.nan):.1f}"},
                    )
                if iteration % cfg.train.eval_interval == 0 or last:
                    reported, folder = evaluate_and_checkpoint(
                        session, test_loader, device, work_dir, since_eval.pop()
                    )
                    metric_log.write(
                        iteration, {k: v for k, v in session.metrics.items() if not k.startswith("iou/")}
                    )
                    if report is not None:
                        report(reported, str(folder))
        finally:
            progress.close()
            metric_log.close()
            del train_loader
    return session.metrics

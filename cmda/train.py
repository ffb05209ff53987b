"""The CMDA training loop: one readable iteration loop around `DACSStep`, in named pieces.

`run(config, report=None, resume_from=None)` is the single entry point: `cmda train` calls it, and so does
the Ray trainable, passing a plain `report(metrics, checkpoint_dir)` callable, so this module never
imports Ray. The pieces, in the order `run` calls them:

    prepare_resume   the checkpoint to continue from (if any; cmda/checkpoint.py owns the resume policy)
    build_datasets   source, target and test datasets: bad data fails here, before anything is written
    open_work_dir    creates and probes the work dir, removes stale temporaries of a killed writer
    build_session    model built bare, then weights: ImageNet/CycleGAN files from scratch, or the checkpoint
    train_step       one DACS step + optimizer step, returns the logged values
    evaluate_and_checkpoint   the shared evaluation routine, an atomic checkpoint folder, `report`

Sample i of the training stream depends only on (seed, i) and every random draw of a step on
(seed, iteration, micro-batch), so a resumed run continues exactly where the interrupted one stopped; with
`train.accumulate` checkpoints fall only between iterations (no half-accumulated gradients to save).
Checkpoint I/O lives in cmda/checkpoint.py, log.csv / TensorBoard / the progress bar in cmda/logs.py;
docs/ARCHITECTURE.md ("cmda.train") has the contracts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmda.checkpoint import (
    CHECKPOINT_FILE,
    Resume,
    checkpoint_dir_of,
    disk_error,
    latest_checkpoint,
    load_checkpoint,
    prepare_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from cmda.config import Config, config_from_dict
from cmda.data.check import check_training_data
from cmda.errors import RunError
from cmda.eval import evaluate
from cmda.io import clean_stale_tmp, is_unset
from cmda.logs import LOG_FILE, Means, MetricLog, progress_bar
from cmda.models.segmentor import build_model
from cmda.uda.dacs import DACSStep, NonFiniteLossError

log = logging.getLogger(__name__)
Report = Callable[[dict[str, float], str | None], None]

__all__ = ["run", "build_model", "build_test_dataset", "load_checkpoint", "NonFiniteLossError"]


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
    return config.target.dataset(config.data.target, "test")


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
    target = config.target.dataset(config.data.target, "train")
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


# -- work dir -----------------------------------------------------------------------------------------


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
        friendly = disk_error(error, work_dir) or RunError(
            f"cannot create train.work_dir {work_dir}: {error.strerror or error}; choose another "
            "train.work_dir"
        )
        raise friendly from error
    for leftover in clean_stale_tmp(work_dir / "checkpoints"):
        log.info("removed %s, left by an interrupted checkpoint write", leftover)
    try:
        yield work_dir
    except BaseException:
        kept = latest_checkpoint(work_dir) is not None or (work_dir / LOG_FILE).is_file()
        if not existed and not kept:
            shutil.rmtree(work_dir, ignore_errors=True)
        raise


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
            "rng": rng_state(),
            "iteration": self.iteration,
            "train_time": self.train_time,
            "metrics": self.metrics,
            "config": self.config.to_dict(),
            "config_changes": self.changes,
        }


def build_session(config: Config, device: torch.device, resume: Resume | None) -> Session:
    """Build the model bare; then either load the starting weights (ImageNet MiT) or restore a checkpoint."""
    model = build_model(config)
    starting = resume is None and is_unset(config.model.init_from)
    if starting and not is_unset(config.model.pretrained):
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
    elif not is_unset(config.model.init_from):
        initialise_from(session, config.model.init_from)
    return session


def initialise_from(session: Session, path: str | os.PathLike[str]) -> None:
    """`model.init_from`: the student and EMA teacher weights of a checkpoint, nothing else (the optimizer,
    schedule and iteration start afresh); a checkpoint of another architecture is refused, naming it."""
    from cmda.models.weights import load_strict

    folder = checkpoint_dir_of(path)
    state = load_checkpoint(folder)
    source = folder / CHECKPOINT_FILE
    load_strict(session.model, state["model"], f"{source} (model.init_from, student)")
    teacher = state.get("teacher") or state["model"]
    load_strict(session.step.teacher.model, teacher, f"{source} (model.init_from, teacher)")
    log.info("initialised the student and teacher from %s", folder)


def restore(session: Session, resume: Resume) -> None:
    """Continue a checkpoint: weights, optimizer, schedule, RNG streams, counters, recorded changes."""
    state = resume.state
    session.model.load_state_dict(state["model"])
    session.step.teacher.model.load_state_dict(state["teacher"])
    session.optimizer.load_state_dict(state["optimizer"])
    session.scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
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


def run(
    config: Config | Mapping[str, Any],
    report: Report | None = None,
    resume_from: str | os.PathLike | None = None,
    heartbeat: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train CMDA as configured; returns the last evaluation's metrics. `report(metrics, checkpoint_dir)` is
    called at each evaluation, `heartbeat(iteration)` at each logged iteration (a sweep's live table)."""
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
        progress = progress_bar(cfg.train.max_iters, session.iteration, cfg.train.progress_bar)
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
                    if heartbeat is not None:
                        heartbeat(iteration)
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

"""The CMDA training loop: one readable iteration loop around `DACSStep`.

`run(config, report=None, resume_from=None)` is the single entry point: `cmda train` calls it, and so does
the Ray trainable, passing a plain `report(metrics, checkpoint_dir)` callable, so this module never
imports Ray. Every `eval_interval` iterations (and at the end) the student is evaluated on the target test
split, a complete checkpoint is written atomically, and `report` is called with the metrics and that
checkpoint's directory. Sample i of the training stream depends only on (seed, i) and every random draw
of a step on (seed, iteration), so a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmda.config import Config, config_from_dict, save_config
from cmda.data.check import check_training_data
from cmda.eval import evaluate
from cmda.uda.dacs import DACSStep, NonFiniteLossError

log = logging.getLogger(__name__)
Report = Callable[[dict[str, float], str | None], None]
CHECKPOINT_FILE = "checkpoint.pt"
LATEST = "latest"

__all__ = ["run", "build_model", "load_checkpoint", "NonFiniteLossError"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


def build_model(config: Config) -> torch.nn.Module:
    from cmda.models.segmentor import CMDASegmentor

    bins = config.data.target.events_bins
    return CMDASegmentor(
        backbone=config.model.backbone,
        num_classes=config.model.num_classes,
        event_channels=3 if bins == 1 else bins,
        pretrained=config.model.pretrained,
        drop_path_rate=config.model.drop_path_rate,
        fusion=config.model.fusion,
        decoder_channels=config.model.decoder_channels,
    )


def build_translator(config: Config) -> torch.nn.Module | None:
    from cmda.models.segmentor import is_unset

    if is_unset(config.model.cyclegan):
        return None
    from cmda.models.cyclegan import load_event_translator

    return load_event_translator(config.model.cyclegan)


class StreamSampler(torch.utils.data.Sampler[int]):
    """Indices start*B, start*B+1, ... (wrapping): the i-th sample of the run is always the same one."""

    def __init__(self, length: int, start: int, count: int) -> None:
        self.length, self.start, self.count = length, start, count

    def __iter__(self) -> Iterator[int]:
        return ((self.start + k) % self.length for k in range(self.count))

    def __len__(self) -> int:
        return self.count


def build_test_dataset(config: Config):
    """The target test split, whole frames (rows [:test_rows]), as the evaluation and `cmda test` use it."""
    from cmda.data.dsec import DSECNightDataset

    target = config.data.target
    return DSECNightDataset(
        target.root,
        "test",
        events_bins=target.events_bins,
        window_frames=target.window_frames,
        test_rows=target.test_rows,
        with_isr=False,
    )


def build_loaders(config: Config, start_iteration: int) -> tuple[Any, Any]:
    from cmda.data.cityscapes import CityscapesDataset
    from cmda.data.dsec import DSECNightDataset
    from cmda.data.paired import SourceTargetDataset
    from cmda.data.rcs import RareClassSampler

    src_cfg, tgt_cfg = config.data.source, config.data.target
    source = CityscapesDataset(
        src_cfg.root,
        "train",
        resize=tuple(src_cfg.resize),
        crop=tuple(src_cfg.crop),
        cat_max_ratio=src_cfg.cat_max_ratio,
        with_isr=False,
    )
    target = DSECNightDataset(
        tgt_cfg.root,
        "train",
        crop=tuple(tgt_cfg.crop),
        resize=tuple(tgt_cfg.resize),
        events_bins=tgt_cfg.events_bins,
        window_frames=tgt_cfg.window_frames,
        with_isr=False,
    )
    test = build_test_dataset(config)
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
    batch = config.data.batch_size
    remaining = (config.train.max_iters - start_iteration) * batch
    workers = config.data.num_workers
    train_loader = torch.utils.data.DataLoader(
        paired,
        batch_size=batch,
        sampler=StreamSampler(len(paired), start_iteration * batch, remaining),
        num_workers=workers,
        drop_last=True,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(
            config.seed
        ),  # keeps the loader off the global RNG (exact resume)
    )
    test_loader = torch.utils.data.DataLoader(test, batch_size=1, num_workers=min(workers, 2))
    return train_loader, test_loader


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


def save_checkpoint(
    work_dir: Path,
    iteration: int,
    state: dict[str, Any],
    config: Config,
    metrics: dict[str, float],
    keep: int,
) -> Path:
    """Write <work_dir>/checkpoints/iter_XXXXXXX/ (checkpoint.pt, config.yaml, metrics.json) atomically:
    everything goes into a temporary folder that is renamed into place, then `latest` is repointed."""
    root = work_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"iter_{iteration:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp_", dir=root))
    try:
        torch.save(state, tmp / CHECKPOINT_FILE)
        save_config(config, tmp / "config.yaml")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / LATEST)
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
    raise FileNotFoundError(
        f"{path}: no {CHECKPOINT_FILE} (expected a checkpoint folder, `latest` or work_dir)"
    )


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    folder = checkpoint_dir_of(path)
    try:
        return torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(f"{folder / CHECKPOINT_FILE}: cannot read checkpoint: {error}") from error


class MetricLog:
    """CSV (one row per log interval) and optional TensorBoard logs of every loss term and metric."""

    def __init__(self, work_dir: Path, tensorboard: bool) -> None:
        self.path = work_dir / "log.csv"
        self.rows: list[dict[str, float]] = []
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(work_dir / "tensorboard"))
            except Exception as error:  # tensorboard is optional; training must not depend on it
                log.info("TensorBoard logging off: %s", error)

    def write(self, iteration: int, values: dict[str, float]) -> None:
        row = {"iteration": iteration, **values}
        existing = self.path.is_file()
        fields = list(row)
        if existing:
            with self.path.open() as handle:
                header = next(csv.reader(handle), [])
            fields = header + [k for k in row if k not in header]
            if fields != header:  # a new column (e.g. metrics): rewrite with the wider header
                with self.path.open() as handle:
                    old = list(csv.DictReader(handle))
                self._rewrite(fields, old)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            if not existing:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, iteration)

    def _rewrite(self, fields: list[str], rows: list[dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, disable=not (enabled and sys.stderr.isatty()), dynamic_ncols=True
    )


def run(
    config: Config | Mapping[str, Any],
    report: Report | None = None,
    resume_from: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Train CMDA as configured; returns the last evaluation's metrics."""
    cfg = config if isinstance(config, Config) else config_from_dict(dict(config))
    check_training_data(cfg)  # seconds: a bad file stops the run now, not at the first draw or evaluation
    work_dir = Path(cfg.train.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.train.device)
    use_bf16 = cfg.train.amp == "bf16" or (cfg.train.amp == "auto" and device.type == "cuda")
    seed_everything(cfg.seed, cfg.train.deterministic)

    model = build_model(cfg).to(device)
    step = DACSStep(model, cfg, translator=build_translator(cfg))
    step.teacher.to(device)
    if step.translator is not None:
        step.translator.to(device)
    optimizer = torch.optim.AdamW(
        model.param_groups(cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.head_lr_mult),
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, cfg))

    start, train_time, last_metrics = 0, 0.0, {}
    if resume_from is None and cfg.train.resume == "auto" and (work_dir / "checkpoints" / LATEST).is_file():
        resume_from = work_dir / "checkpoints"
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        model.load_state_dict(state["model"])
        step.teacher.model.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start, train_time = state["iteration"], state.get("train_time", 0.0)
        last_metrics = state.get("metrics", {})
        log.info("resumed from %s at iteration %d", checkpoint_dir_of(resume_from), start)

    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    )
    train_loader, test_loader = build_loaders(cfg, start)
    metric_log = MetricLog(work_dir, cfg.train.tensorboard)
    progress = _progress(cfg.train.max_iters, start, cfg.train.progress_bar)
    sums: dict[str, float] = defaultdict(float)
    since_report: dict[str, float] = defaultdict(float)
    count = since_count = 0
    iteration = start
    try:
        model.train()
        for batch in train_loader:
            tick = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            logged = step(batch, iteration, device, autocast)
            if cfg.optim.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            iteration += 1
            values = {k: float(v) for k, v in logged.items()}
            for name, value in values.items():
                if not math.isfinite(value):
                    raise NonFiniteLossError(f"loss '{name}' is {value} at iteration {iteration - 1}")
            values.update({f"{k}_weighted": v for k, v in step.weighted_terms(values).items()})
            for key, value in values.items():
                sums[key] += value
                since_report[key] += value
            count += 1
            since_count += 1
            train_time += time.perf_counter() - tick
            progress.update(1)
            if iteration % cfg.train.log_interval == 0 or iteration == cfg.train.max_iters:
                means = {f"loss/{k}": v / count for k, v in sums.items()}
                means["lr"] = optimizer.param_groups[0]["lr"]
                metric_log.write(iteration, means)
                progress.set_postfix(
                    loss=f"{sum(v for k, v in means.items() if k.startswith('loss/src_')):.3f}",
                    miou18=f"{last_metrics.get('miou18', float('nan')):.1f}",
                )
                sums.clear()
                count = 0
            if iteration % cfg.train.eval_interval == 0 or iteration == cfg.train.max_iters:
                metrics = evaluate(model, test_loader, device, amp=use_bf16)
                last_metrics = metrics
                reported = {
                    "iteration": iteration,
                    "max_iters": cfg.train.max_iters,
                    **metrics,
                    **{f"loss/{k}": v / max(since_count, 1) for k, v in since_report.items()},
                    "time/train_s": train_time,
                }
                reported["pseudo_weight"] = reported.pop("loss/pseudo_weight", float("nan"))
                state = {
                    "model": model.state_dict(),
                    "teacher": step.teacher.model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(),
                    "iteration": iteration,
                    "train_time": train_time,
                    "metrics": metrics,
                }
                folder = save_checkpoint(
                    work_dir, iteration, state, cfg, reported, cfg.train.keep_checkpoints
                )
                metric_log.write(iteration, {k: v for k, v in metrics.items() if not k.startswith("iou/")})
                progress.set_postfix(miou18=f"{metrics['miou18']:.1f}")
                since_report.clear()
                since_count = 0
                if report is not None:
                    report(reported, str(folder))
    finally:
        progress.close()
        metric_log.close()
        del train_loader
    return last_metrics

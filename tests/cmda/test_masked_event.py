"""The masked-event term masks: its coverage on real and synthetic events, its loss, and its log entry."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmda.data import voxel
from cmda.io import load_yaml
from cmda.uda.dacs import DACSStep
from cmda.uda.feature_losses import COVERAGE_KEY, event_mask

REPO = Path(__file__).resolve().parents[2]
REAL_EVENTS = REPO.parent / "shared" / "data" / "real_events" / "evt3_sample.npy"
if not REAL_EVENTS.is_file():  # a worktree sits one level deeper than the main checkout
    REAL_EVENTS = Path("/work/shared/data/real_events/evt3_sample.npy")
STAGE4_STRIDE = 32


def coverage(events: torch.Tensor) -> float:
    """Share of stage-4 cells the mask keeps, for events [B,C,H,W]."""
    size = (events.shape[-2] // STAGE4_STRIDE, events.shape[-1] // STAGE4_STRIDE)
    return event_mask(events, size).mean().item()


def loader_grid(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> torch.Tensor:
    """A 640x480 one-bin voxel grid, CMDA-normalised, 3 channels: what the DSEC loader builds."""
    grid = voxel.events_to_voxel_grid(x, y, t, p, 1, 480, 640)
    return voxel.cmda_events_norm(grid, len(x)).expand(3, -1, -1)[None]


@pytest.mark.skipif(not REAL_EVENTS.is_file(), reason=f"real event recording not found at {REAL_EVENTS}")
def test_coverage_on_the_real_prophesee_recording_is_neither_all_nor_nothing():
    events = np.load(REAL_EVENTS)  # 1280x720 sensor, ~220k events in 54 ms
    x0, y0 = 320, 120  # the DSEC sensor's 640x480 cut from the centre: real pixels, ~50k events
    keep = (events["x"] >= x0) & (events["x"] < x0 + 640) & (events["y"] >= y0) & (events["y"] < y0 + 480)
    crop = events[keep]
    cropped = loader_grid(crop["x"] - x0, crop["y"] - y0, crop["t"], crop["p"])
    # the whole sensor scaled onto 640x480: every event kept, denser (a DSEC night window holds ~1M)
    scaled = loader_grid(events["x"] * 0.5, events["y"] * (480 / 720), events["t"], events["p"])
    for name, grid in (("crop", cropped), ("scaled", scaled)):
        training_view = F.interpolate(grid[..., 40:440, 120:520], size=(512, 512), mode="bilinear")
        for view in (grid, training_view):
            assert 0.05 < coverage(view) < 0.95, (name, coverage(view))
    # why "any event in the stage cell" masked nothing: the denser window touches nearly every cell
    touched = F.adaptive_max_pool2d((scaled != 0).any(1, keepdim=True).float(), (15, 20))
    assert touched.mean() > 0.95


def test_coverage_on_the_synthetic_twin_at_the_demo_resolution(synthetic_root):
    from cmda.data.cityscapes import CityscapesDataset
    from cmda.data.dsec import DSECNightDataset

    demo = load_yaml(REPO / "configs" / "demo.yaml")["data"]
    target = DSECNightDataset(
        synthetic_root / "DSEC_Night",
        "train",
        crop=tuple(demo["target"]["crop"]),
        resize=tuple(demo["target"]["resize"]),
        events_bins=demo["target"]["events_bins"],
        with_isr=False,
        seed=0,
    )
    source = CityscapesDataset(
        synthetic_root / "cityscapes",
        "train",
        resize=tuple(demo["source"]["resize"]),
        crop=tuple(demo["source"]["crop"]),
        with_isr=False,
        seed=0,
    )
    every = max(len(target) // 12, 1)
    night_events = torch.stack([target[i]["events"] for i in range(0, len(target), every)])
    motion = torch.stack([source[i]["motion"] for i in range(min(len(source), 12))])
    assert night_events.shape[-1] == 64 and motion.shape[-1] == 64  # a 2x2 stage-4 grid per sample
    assert (motion != 0).all()  # pseudo-events are never exactly 0: "any non-zero voxel" kept every cell
    for name, events in (("night events", night_events), ("source motion", motion)):
        assert 0.05 < coverage(events) < 0.95, name


def test_masked_variant_differs_from_the_unmasked_one_on_the_same_batch(tiny_config):
    from cmda.train import build_datasets, build_model, build_train_loader

    demo_size = {
        "data.source.resize": [128, 64],
        "data.source.crop": [64, 64],
        "data.target.crop": [100, 100],
        "data.target.resize": [64, 64],
    }
    logged = {}
    for variant in ("rgb_st+event_s_rgb_t", "rgb_st+event_s_rgb_t+masked_event"):
        config = tiny_config(**demo_size, **{"uda.feature_loss.variant": variant})
        torch.manual_seed(0)
        step = DACSStep(build_model(config), config.uda, config.target, seed=config.seed)
        batch = next(iter(build_train_loader(config, build_datasets(config).paired, 0)))
        logged[variant] = step(batch, 1, torch.device("cpu"), contextlib.nullcontext)
    plain, masked = logged["rgb_st+event_s_rgb_t"], logged["rgb_st+event_s_rgb_t+masked_event"]
    assert masked["rgb_st"].item() == plain["rgb_st"].item()  # same batch, same features
    assert 0 < masked[COVERAGE_KEY].item() < 1
    assert masked["masked_event_s_rgb_t"].item() != pytest.approx(plain["event_s_rgb_t"].item(), rel=1e-4)
    assert COVERAGE_KEY not in plain


def test_coverage_reaches_the_log_and_every_report(tiny_config):
    from cmda.train import run

    variant = "rgb_st+event_s_rgb_t+masked_event"
    config = tiny_config(**{"uda.feature_loss.variant": variant, "train.max_iters": 2})
    reports = []
    run(config, report=lambda metrics, _: reports.append(metrics))
    name = f"loss/{COVERAGE_KEY}"
    with (Path(config.train.work_dir) / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    logged = [r for r in rows if r.get("loss/mix_image")]  # evaluation rows carry only metrics
    assert [int(r["iteration"]) for r in logged] == [1, 2]  # log_interval 1
    assert all(0 <= float(r[name]) <= 1 for r in logged)
    assert reports and all(0 <= report[name] <= 1 for report in reports)

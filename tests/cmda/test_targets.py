"""The target-domain registry: every registered target, end to end on its synthetic twin.

Parametrized over `TARGETS` (as timm tests every registered model), so a new target gets these checks
by adding its registry entry and its toy section in conftest.TINY_TARGETS.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_TARGETS

from cmda.config import save_config
from cmda.data.targets import TARGETS, get_target
from cmda.train import build_model, build_test_dataset, load_checkpoint, run

ALL = sorted(TARGETS)


def test_every_target_has_a_toy_section_and_the_registry_is_consistent():
    assert set(TINY_TARGETS) == set(TARGETS)
    for name, spec in TARGETS.items():
        assert spec.name == name and spec.synthetic_dir
        assert spec.second_modality == "isr" or spec.provides(spec.second_modality)
        assert spec.recipe.fusion and set(spec.recipe.loss_weights) == {"image", "second", "fusion", "isr"}


def test_unknown_target_is_a_sentence():
    with pytest.raises(ValueError, match=r"unknown target 'kitti'; registered targets: \['dark_zurich'"):
        get_target("kitti")


@pytest.mark.parametrize("name", ALL)
def test_every_target_builds_its_splits_from_its_twin(name, tiny_config):
    config = tiny_config(target=name)
    spec = config.target
    train = spec.dataset(config.data.target, "train", 0)
    sample = train[0]
    crop_w, crop_h = config.data.target.crop if name != "dsec_night" else config.data.target.resize
    assert sample["image"].shape == (3, crop_h, crop_w)
    for modality in spec.modalities:
        assert sample[modality].shape[-2:] == (crop_h, crop_w)
    if spec.loader_isr:
        assert sample["isr"].shape == (3, crop_h, crop_w)
    test = build_test_dataset(config)
    first = test[0]
    assert first["label"].shape == first["image"].shape[-2:]
    if spec.eval_branch == "fusion":
        assert first[spec.second_modality].shape[-2:] == first["image"].shape[-2:]


@pytest.mark.parametrize("name", ALL)
def test_every_target_trains_reports_its_headline_and_cmda_test_reproduces_it(name, tiny_config, capsys):
    """A short run on the twin reports the target's metrics; `cmda test` on the checkpoint gives the same
    numbers with the same routine; the model's second backbone and fusion follow the entry."""
    from cmda.cli import main

    config = tiny_config(target=name, **{"train.max_iters": 1})
    reports = []
    final = run(config, report=lambda m, d: reports.append(m))
    spec = config.target
    assert [r["iteration"] for r in reports] == [1]
    assert set(spec.metric_names) <= set(reports[0]) and spec.headline_metric.startswith("miou")
    losses = {k for k in reports[0] if k.startswith("loss/src_")}
    branches = {"image", "fusion", spec.second_modality} | (
        {"isr"} if spec.second_modality == "events" else set()
    )
    assert losses == {f"loss/src_{b}" for b in branches}
    model = build_model(config)
    assert model.fuse_with == spec.second_modality
    assert (
        type(model.fusion).__name__
        == {"attention_avg": "AttentionAvgFusion", "attention": "AttentionFusion"}[spec.recipe.fusion]
    )
    capsys.readouterr()
    assert main(["test", config.train.work_dir]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[spec.headline_metric] == pytest.approx(final[spec.headline_metric], abs=0.01)
    assert load_checkpoint(config.train.work_dir)["config"]["data"]["target"]["name"] == name
    other = next(t for t in ALL if t != name)  # the config of another target: one sentence, not 9 KB of keys
    other_file = save_config(tiny_config(target=other), Path(config.train.work_dir) / "other.yaml")
    assert main(["test", config.train.work_dir, "--config", str(other_file)]) == 2
    err = capsys.readouterr().err
    assert f"this checkpoint was trained for target {name}" in err and f"is for {other}" in err
    assert "Missing key" not in err and "Traceback" not in err


def test_dark_zurich_step_follows_the_cs2dz_recipe(tiny_config):
    """ISR as the second modality, fused with AttentionFusion, branch weights 0.7 (no halving: no extra ISR
    branch), rightdown ISR, ignored pseudo-weight rows."""
    import contextlib

    from cmda.train import build_datasets, build_train_loader
    from cmda.uda.dacs import DACSStep

    config = tiny_config(target="dark_zurich")
    torch.manual_seed(0)
    model = build_model(config)
    step = DACSStep(model, config.uda, config.target, seed=0)
    loader = build_train_loader(config, build_datasets(config).paired, 0)
    batch = next(iter(loader))
    assert "events" not in batch["target"] and "isr" in batch["target"]
    x = step.prepare(batch, torch.device("cpu"))
    assert x.src_events is None and x.tgt_events is None
    assert step.isr_direction(torch.tensor([0, 1])) == 2  # rightdown, whatever the crop drew
    logged = step(batch, 1, torch.device("cpu"), contextlib.nullcontext)
    assert {k for k in logged if k.startswith(("src_", "mix_"))} == {
        f"{p}_{b}" for p in ("src", "mix") for b in ("image", "isr", "fusion")
    }
    assert config.uda.loss_weights.second == 0.7 and config.model.fusion == "attention"


def test_dark_zurich_twin_is_in_the_real_layout(synthetic_root: Path):
    from PIL import Image

    root = synthetic_root / get_target("dark_zurich").synthetic_dir
    images = sorted((root / "rgb_anon/val/night").glob("GOPR*/GOPR*_frame_*_rgb_anon.png"))
    assert images and sorted((root / "rgb_anon/train/night").glob("GOPR*/*_rgb_anon.png"))
    for image in images:
        label = (
            root / "gt/val/night" / image.parent.name / image.name.replace("_rgb_anon", "_gt_labelTrainIds")
        )
        assert Image.open(label).mode == "L" and Image.open(label).size == Image.open(image).size

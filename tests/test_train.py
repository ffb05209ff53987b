"""The training loop: report contract, exact resume, NaN handling, and that it learns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cmda.eval import evaluate
from cmda.train import build_loaders, build_model, checkpoint_dir_of, load_checkpoint, run
from cmda.uda import dacs


def test_reports_every_evaluation_with_a_complete_checkpoint(tiny_config):
    reports = []
    metrics = run(tiny_config(), report=lambda m, d: reports.append((m, d)))
    assert [m["iteration"] for m, _ in reports] == [2, 4]
    first, folder = reports[0]
    assert {"miou18", "miou19", "iou/road", "iou/truck", "max_iters", "time/train_s", "pseudo_weight"} <= set(
        first
    )
    assert "loss/src_fusion" in first and "loss/mix_image" in first
    assert all(isinstance(v, int | float) for v in first.values())
    state = load_checkpoint(folder)
    assert state["iteration"] == 2 and {"model", "teacher", "optimizer", "scheduler", "rng"} <= set(state)
    assert json.loads((checkpoint_dir_of(folder) / "metrics.json").read_text())["iteration"] == 2
    assert metrics["miou18"] == reports[-1][0]["miou18"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_config, tmp_path):
    straight = tiny_config(**{"train.work_dir": str(tmp_path / "straight")})
    run(straight)
    interrupted = tiny_config(**{"train.work_dir": str(tmp_path / "first"), "train.max_iters": 4})
    folders = []
    with pytest.raises(KeyboardInterrupt):  # stop right after the first checkpoint (iteration 2)
        run(interrupted, report=lambda m, d: folders.append(d) or (_ for _ in ()).throw(KeyboardInterrupt()))
    resumed = tiny_config(**{"train.work_dir": str(tmp_path / "second")})
    run(resumed, resume_from=folders[0])
    a = load_checkpoint(tmp_path / "straight")["model"]
    b = load_checkpoint(tmp_path / "second")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tiny_config, monkeypatch):
    config = tiny_config(**{"train.max_iters": 4})
    original = dacs.weighted_ce
    calls = {"n": 0}

    def poisoned(logits, label, weight=None):
        calls["n"] += 1
        value = original(logits, label, weight)
        return value * float("nan") if calls["n"] > 8 * 2 else value  # 8 CE terms per step: NaN in step 3

    monkeypatch.setattr(dacs, "weighted_ce", poisoned)
    with pytest.raises(dacs.NonFiniteLossError, match="loss term 'src_image' .source phase. is nan at iteration 2"):
        run(config)
    assert load_checkpoint(config.train.work_dir)["iteration"] == 2


def test_short_training_on_the_synthetic_twin_learns(tiny_config):
    config = tiny_config(
        **{
            "model.decoder_channels": 64,
            "data.source.resize": [128, 64],
            "data.source.crop": [64, 64],
            "data.target.crop": [100, 100],
            "data.target.resize": [64, 64],
            "train.max_iters": 40,
            "train.eval_interval": 40,
            "optim.warmup_iters": 10,
        }
    )
    torch.manual_seed(0)
    untrained = build_model(config)
    _, test_loader = build_loaders(config, 0)
    before = evaluate(untrained, test_loader, torch.device("cpu"), config.target)["miou18"]
    after = run(config)["miou18"]
    # measured: about 1.4 untrained and about 10 after 40 iterations
    assert after > before + 5, (before, after)


def test_cmda_test_cli_reproduces_the_evaluation_and_writes_colour_pngs(tiny_config, tmp_path, capsys):
    from PIL import Image

    from cmda.cli import main
    from cmda.data import PALETTE

    config = tiny_config(**{"train.max_iters": 2})
    final = run(config)
    out = tmp_path / "preds"
    assert main(["test", config.train.work_dir, "--save-predictions", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.split("predictions written")[0])
    assert printed["miou18"] == pytest.approx(final["miou18"], abs=0.01)
    pngs = sorted(out.glob("*.png"))
    assert pngs and Image.open(pngs[0]).mode == "RGB"
    colours = {tuple(c) for c in np.asarray(Image.open(pngs[0])).reshape(-1, 3)}
    assert colours <= set(PALETTE)

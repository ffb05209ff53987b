"""The training loop: report contract, exact resume, NaN handling, and that it learns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cmda.checkpoint import checkpoint_dir_of
from cmda.eval import evaluate
from cmda.train import build_model, build_test_loader, load_checkpoint, run
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
    expected = "loss term 'src_image' .source phase. is nan at iteration 2"
    with pytest.raises(dacs.NonFiniteLossError, match=expected):
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
    test_loader = build_test_loader(config)
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


def interrupt_at(iteration: int):
    """A report callback that stops the run (like a kill) right after the checkpoint of `iteration`."""
    folders = []

    def report(metrics, folder):
        folders.append(folder)
        if metrics["iteration"] == iteration:
            raise KeyboardInterrupt

    return folders, report


def test_weights_load_only_from_scratch_and_test_and_resume_need_no_weight_files(
    tiny_config, tmp_path, monkeypatch, capsys
):
    from cmda.cli import main
    from cmda.models import ResnetGenerator, build_mit
    from cmda.models.segmentor import CMDASegmentor

    mit, gan = tmp_path / "mit_b0.pth", tmp_path / "cityscapes_ICD_to_dsec_EN.pth"
    torch.save(build_mit("mit_b0").state_dict(), mit)
    generator = ResnetGenerator()
    torch.save(generator.state_dict(), gan)
    loads = []
    original = CMDASegmentor.load_pretrained
    monkeypatch.setattr(
        CMDASegmentor, "load_pretrained", lambda self, p: loads.append(p) or original(self, p)
    )
    config = tiny_config(**{"model.pretrained": str(mit), "model.cyclegan": str(gan)})
    folders, report = interrupt_at(2)
    with pytest.raises(KeyboardInterrupt):
        run(config, report=report)
    assert loads == [str(mit)]
    state = load_checkpoint(folders[0])
    for key, value in generator.state_dict().items():
        torch.testing.assert_close(state["translator"][key], value)
    mit.unlink()
    gan.unlink()
    assert main(["test", folders[0]]) == 0  # evaluates without the ImageNet or CycleGAN file
    assert "miou18" in json.loads(capsys.readouterr().out)
    run(config, resume_from=folders[0])  # resumes without them too
    assert loads == [str(mit)] and load_checkpoint(config.train.work_dir)["iteration"] == 4


def test_resume_refuses_a_changed_setting_and_records_an_allowed_one(tiny_config):
    from cmda.errors import RunError

    config = tiny_config()
    folders, report = interrupt_at(2)
    with pytest.raises(KeyboardInterrupt):
        run(config, report=report)
    with pytest.raises(
        RunError, match=r"optim\.lr: 0\.0006 in the checkpoint, 0\.001 now.*another train\.work_dir"
    ):
        run(tiny_config(**{"optim.lr": 1e-3, "data.batch_size": 1}), resume_from=folders[0])
    with pytest.raises(RunError, match=r"data\.batch_size: 2 in the checkpoint, 1 now"):
        run(tiny_config(**{"data.batch_size": 1}), resume_from=folders[0])
    run(tiny_config(**{"train.eval_interval": 1}), resume_from=folders[0])
    state = load_checkpoint(config.train.work_dir)
    assert state["iteration"] == 4 and state["config"]["train"]["eval_interval"] == 1
    assert state["config_changes"] == [{"iteration": 2, "key": "train.eval_interval", "old": 2, "new": 1}]


def test_a_killed_run_resumes_without_duplicate_log_rows_or_stale_temporaries(tiny_config, monkeypatch):
    import csv
    from pathlib import Path

    from cmda import train
    from cmda.io import default_mode

    config = tiny_config(**{"train.resume": "auto"})
    original = train.MetricLog.write

    def killed_after_row_3(self, iteration, values):
        original(self, iteration, values)
        if iteration == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(train.MetricLog, "write", killed_after_row_3)
    with pytest.raises(KeyboardInterrupt):
        run(config)
    monkeypatch.setattr(train.MetricLog, "write", original)
    work_dir = Path(config.train.work_dir)
    stale = work_dir / "checkpoints" / ".tmp_iter_0000004.abc"
    stale.mkdir()
    (stale / "checkpoint.pt").write_bytes(b"half")
    run(config)  # train.resume: auto continues from iteration 2
    assert not stale.exists()
    with (work_dir / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert rows[1]["miou18"] and rows[3]["miou18"] and not rows[2]["miou18"]
    folder = checkpoint_dir_of(work_dir)
    assert folder.stat().st_mode & 0o777 == default_mode(directory=True)


def test_a_run_that_fails_before_writing_anything_leaves_no_work_dir(tiny_config, monkeypatch):
    from pathlib import Path

    config = tiny_config()
    monkeypatch.setattr(dacs, "weighted_ce", lambda logits, label, weight=None: logits.sum() * float("nan"))
    with pytest.raises(dacs.NonFiniteLossError, match="at iteration 0"):
        run(config)
    assert not Path(config.train.work_dir).exists()

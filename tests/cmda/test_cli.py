"""`cmda` as a new user meets it: every expected failure is one sentence and a non-zero exit; a bug keeps
its traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
import yaml

from cmda.cli import main


def write_config(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def set_key(data: dict, dotted: str, value) -> dict:
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return data


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith(("INFO", "WARNING"))]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("optim.lr", -0.001, "field 'optim.lr': input should be greater than 0, got -0.001"),
        ("optim.lr", float("nan"), "field 'optim.lr': input should be a finite number, got nan"),
        ("optim.power", -1.0, "field 'optim.power': input should be greater than or equal to 0"),
        ("model.num_classes", 20, "field 'model.num_classes': target 'dsec_night' (data.target.name) labels"),
        ("data.source.crop", [128, 64], "field 'data.source.crop': must fit in data.source.resize [64, 32]"),
        (
            "data.target.crop",
            [200, 200],
            "data.target.crop [200, 200] (width, height) is larger than the DSEC-Night frames",
        ),
    ],
)
def test_bad_values_are_one_sentence_naming_the_key(tiny_config, tmp_path, capsys, key, value, expected):
    data = set_key(tiny_config().to_dict(), key, value)
    path = write_config(tmp_path / "exp.yaml", data)
    assert main(["train", path]) == 2
    line = one_error_line(capsys)
    assert expected in line
    if key == "data.target.crop":
        assert "at most [160, 120]" in line  # the right fix for this target: the frame it is cut from
    assert not Path(data["train"]["work_dir"]).exists()  # nothing left behind


def test_cuda_without_a_gpu(tiny_config, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = write_config(tmp_path / "exp.yaml", tiny_config(**{"train.device": "cuda"}).to_dict())
    assert main(["train", path]) == 2
    assert "train.device is 'cuda' but PyTorch sees no CUDA GPU" in one_error_line(capsys)


def test_work_dir_that_cannot_be_created_or_written(tiny_config, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    path = write_config(
        tmp_path / "exp.yaml", tiny_config(**{"train.work_dir": str(blocker / "run")}).to_dict()
    )
    assert main(["train", path]) == 2
    assert f"cannot create train.work_dir {blocker / 'run'}" in one_error_line(capsys)

    import cmda.train

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(cmda.train.tempfile, "mkstemp", read_only)
    config = tiny_config(**{"train.work_dir": str(tmp_path / "ro")})
    path = write_config(tmp_path / "ro.yaml", config.to_dict())
    assert main(["train", path]) == 2
    assert "the file system is read-only" in one_error_line(capsys)
    assert not (tmp_path / "ro").exists()


def test_full_disk_at_a_checkpoint(tiny_config, tmp_path, capsys, monkeypatch):
    import cmda.train

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cmda.train.torch, "save", full)
    config = tiny_config(**{"train.max_iters": 1})
    assert main(["train", write_config(tmp_path / "exp.yaml", config.to_dict())]) == 2
    line = one_error_line(capsys)
    assert "cannot write" in line and "iter_0000001: the disk is full" in line
    assert not list((Path(config.train.work_dir) / "checkpoints").glob(".tmp_*"))


def test_non_finite_loss_names_the_term(tiny_config, tmp_path, capsys, monkeypatch):
    from cmda.uda import dacs

    original = dacs.weighted_ce
    monkeypatch.setattr(
        dacs, "weighted_ce", lambda logits, label, weight=None: original(logits, label, weight) * torch.inf
    )
    assert main(["train", write_config(tmp_path / "exp.yaml", tiny_config().to_dict())]) == 2
    assert "loss term 'src_image' (source phase) is inf at iteration 0" in one_error_line(capsys)


def test_unknown_config_file_and_bad_override(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: file not found" in one_error_line(capsys)
    assert main(["train", "configs/demo.yaml", "--set", "optim.lr"]) == 2
    assert "expected key=value" in one_error_line(capsys)


def test_cmda_test_on_a_folder_without_checkpoint_leaves_no_output(tmp_path, capsys):
    out = tmp_path / "preds"
    assert main(["test", str(tmp_path), "--save-predictions", "--out", str(out)]) == 2
    assert "no checkpoint.pt" in one_error_line(capsys) and not out.exists()


def test_an_unexpected_error_keeps_its_traceback(tiny_config, tmp_path, monkeypatch):
    import cmda.train

    def bug(config):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cmda.train, "build_datasets", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", write_config(tmp_path / "exp.yaml", tiny_config().to_dict())])


def test_dry_run_checks_and_prints_the_memory_budget_without_training(tiny_config, tmp_path, capsys):
    config = tiny_config(**{"data.batch_size": 2, "model.decoder_channels": 16})
    path = write_config(tmp_path / "exp.yaml", config.to_dict())
    assert main(["train", path, "--dry-run", "--set", "model.activation_checkpointing=blocks"]) == 0
    out = capsys.readouterr().out
    assert f"{path}: config OK (mit_b0, target dsec_night)" in out and "data: OK" in out
    assert "memory of one training step (activation_checkpointing blocks, batch 2): peak" in out
    assert "fits 8 GB cards and larger" in out and "weights" in out and "activations" in out
    assert not (tmp_path / "run").exists()  # nothing written
    bad = write_config(
        tmp_path / "bad.yaml", set_key(config.to_dict(), "data.source.root", str(tmp_path / "x"))
    )
    assert main(["train", bad, "--dry-run"]) == 2  # the data check runs, as before training

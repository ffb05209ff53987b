"""The Python side: checkpoints load with torch's weights_only, `cmda export` writes safetensors + YAML that
`cmda.load_model` reads back, and older checkpoints (numpy RNG arrays) still load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from original_layout import original_checkpoint

import cmda
from cmda.checkpoint import load_checkpoint, prepare_resume, save_checkpoint, set_rng_state
from cmda.cli import main
from cmda.config import load_config, save_config
from cmda.train import build_session


def test_trainer_checkpoints_load_with_weights_only_and_older_ones_still_do(tiny_config, tmp_path):
    config = tiny_config("dark_zurich")
    session = build_session(config, torch.device("cpu"), None)  # what `run` saves at each evaluation
    folder = save_checkpoint(tmp_path / "run", 1, session.state(), config, {"miou19": 1.0}, keep=2)
    state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)  # no allowlist
    assert isinstance(state["config"], dict) and state["config"]["data"]["target"]["name"] == "dark_zurich"
    assert isinstance(state["rng"]["numpy"][1], list) and {"optimizer", "scheduler", "teacher"} <= set(state)
    old = {**state, "rng": {**state["rng"], "numpy": np.random.RandomState(7).get_state()}}  # the old format
    torch.save(old, folder / "checkpoint.pt")
    restored = load_checkpoint(folder)
    set_rng_state(restored["rng"])
    assert np.random.random() == np.random.RandomState(7).random()
    assert prepare_resume(config, folder).state["iteration"] == 0


def import_original(tiny_config, tmp_path, target: str) -> Path:
    config = tiny_config(target)
    torch.save(original_checkpoint(target), tmp_path / "original.pth")
    save_config(config, tmp_path / "config.yaml")
    out = tmp_path / "imported"
    args = ["import-checkpoint", str(tmp_path / "original.pth"), "--config", str(tmp_path / "config.yaml")]
    assert main([*args, "--out", str(out)]) == 0
    return out


@pytest.fixture()
def imported(tiny_config, tmp_path):
    return import_original(tiny_config, tmp_path, "dark_zurich")


def test_export_writes_weights_only_safetensors_with_the_config_beside(imported, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file

    state = load_checkpoint(imported)
    for weights, network in (("student", "model"), ("teacher", "teacher")):
        out = tmp_path / f"{weights}.safetensors"
        assert main(["export", str(imported), "--out", str(out), "--weights", weights]) == 0
        tensors = load_file(str(out))
        assert set(tensors) == set(state[network])
        assert all(torch.equal(tensors[k], state[network][k]) for k in tensors)
        with safe_open(str(out), "pt") as handle:
            assert handle.metadata()["network"] == weights and handle.metadata()["target"] == "dark_zurich"
        assert load_config(tmp_path / f"{weights}.yaml").to_dict() == state["config"]
    assert main(["export", str(imported), "--out", str(tmp_path / "model.pt")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


def test_load_model_reads_a_checkpoint_folder_or_an_exported_file(imported, tmp_path):
    assert main(["export", str(imported), "--out", str(tmp_path / "model.safetensors")]) == 0
    image = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    isr = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    outputs = []
    for path in (imported, tmp_path / "model.safetensors"):
        model, config = cmda.load_model(path)
        assert not model.training and config.data.target.name == "dark_zurich"
        with torch.no_grad():
            outputs.append(model.predict(image, isr))
    assert outputs[0].shape == (1, 19, 32, 48)
    torch.testing.assert_close(outputs[0], outputs[1])
    teacher, _ = cmda.load_model(imported, weights="teacher")
    with torch.no_grad():
        assert not torch.allclose(teacher.predict(image, isr), outputs[0])
    record = json.loads((imported / "import.json").read_text())
    assert record["evaluated_by_default"].startswith("student")


def test_the_readme_from_python_example_runs(tiny_config, tmp_path):
    imported = import_original(tiny_config, tmp_path, "dsec_night")
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("## From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) == 5
    namespace: dict = {}
    exec(block.replace("pretrained/cmda_cs2dsec", str(imported)), namespace)  # noqa: S102 - our README
    labels, config = namespace["labels"], namespace["config"]
    image = namespace["sample"]["image"]
    assert labels.shape == (1, *image.shape[-2:]) and config.target.name == "dsec_night"
    assert 0 <= int(labels.min()) and int(labels.max()) < 19

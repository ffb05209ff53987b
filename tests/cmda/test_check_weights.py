"""`cmda data check pretrained/`: MiT encoders, the CycleGAN translator, original CMDA checkpoints and
checkpoint folders are recognised and loaded strictly; a file that fits none is a problem naming it."""

from __future__ import annotations

import torch
from original_layout import generator, mix_transformer, original_checkpoint

from cmda.cli import main as cmda_main
from cmda.config import save_config
from cmda.data.commands import main


def tensors(shapes, prefix: str = "") -> dict[str, torch.Tensor]:
    return {key.removeprefix(prefix): torch.zeros(shape) for key, shape in shapes}


def test_every_kind_of_weights_file_is_checked(tiny_config, tmp_path, capsys):
    folder = tmp_path / "pretrained"
    folder.mkdir()
    nvlabs = tensors(mix_transformer("x", "mit_b0", 3), "x.") | {"head.weight": torch.zeros(1000, 256)}
    torch.save(nvlabs, folder / "mit_b0.pth")
    torch.save(tensors(generator("g"), "g."), folder / "cityscapes_ICD_to_dsec_EN.pth")
    torch.save(original_checkpoint("dark_zurich"), folder / "iter_40000.pth")
    config = tiny_config("dark_zurich")
    save_config(config, tmp_path / "config.yaml")
    args = [str(folder / "iter_40000.pth"), "--config", str(tmp_path / "config.yaml")]
    assert cmda_main(["import-checkpoint", *args, "--out", str(folder / "cmda_cs2dz")]) == 0
    capsys.readouterr()
    assert main(["check", str(folder)]) == 0
    out = capsys.readouterr().out
    for counted in ("1 MiT ImageNet encoders", "1 event translators", "1 checkpoint folders",
                    "1 original CMDA checkpoints (convert with cmda import-checkpoint)", ": OK"):  # fmt: skip
        assert counted in out, out
    torch.save(nvlabs, folder / "mit_b2.pth")  # a B0 file under the B2 name
    torch.save({"weight": torch.zeros(3)}, folder / "other.pth")
    assert main(["check", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"{folder / 'mit_b2.pth'}: holds mit_b0 (blocks per stage 2, 2, 2, 2; widths 32, 64, 160, 256), " \
        "not mit_b2" in out
    assert f"{folder / 'other.pth'}: neither the CycleGAN translator (48 of its keys missing" in out
    assert "2 problem(s)" in out

"""`cmda import-checkpoint`: checkpoints in the ORIGINAL code's layout (tests/cmda/original_layout.py, written
from its modules) become checkpoint folders that `cmda test`, `model.init_from` and strict loading accept;
anything that does not fit is refused, naming the file and what, and nothing is written."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import torch
from original_layout import original_checkpoint

from cmda.cli import main
from cmda.config import save_config
from cmda.train import build_model, build_session, load_checkpoint


@functools.cache
def _cached(setting: str, **kwargs) -> dict:
    return original_checkpoint(setting, **kwargs)


def original(setting: str, **kwargs) -> dict:
    """A fresh top-level copy (tensors shared: tests replace entries, never change a tensor in place)."""
    checkpoint = _cached(setting, **kwargs)
    return {**checkpoint, "state_dict": dict(checkpoint["state_dict"])}


def write(tmp_path: Path, checkpoint, name: str = "iter_40000.pth") -> Path:
    path = tmp_path / name
    torch.save(checkpoint, path)
    return path


def config_file(tmp_path: Path, config) -> Path:
    path = tmp_path / f"{config.data.target.name}.yaml"
    save_config(config, path)
    return path


def import_cli(pth: Path, config: Path, out: Path, *extra: str) -> int:
    return main(["import-checkpoint", str(pth), "--config", str(config), "--out", str(out), *extra])


def refused(capsys, out: Path) -> str:
    """The one error line of a refused import; nothing was written."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not out.exists()
    return lines[0]


def test_dsec_night_checkpoint_maps_interleaved_fusion_shared_decoder_and_translator(tiny_config, tmp_path):
    config = tiny_config()
    checkpoint = original("dsec_night")
    out = tmp_path / "imported"
    assert import_cli(write(tmp_path, checkpoint), config_file(tmp_path, config), out) == 0
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    model = build_model(config)
    model.load_state_dict(load_checkpoint(out)["model"], strict=True)
    source = checkpoint["state_dict"]
    for i in range(4):  # the original's basic_block[2i] refines stage i's image tokens, [2i+1] its events
        for leaf in ("attn.q.weight", "mlp.fc2.bias", "norm1.weight"):
            assert torch.equal(state["model"][f"fusion.image_blocks.{i}.{leaf}"],
                               source[f"model.fusion_module.basic_block.{2 * i}.{leaf}"])  # fmt: skip
            assert torch.equal(state["model"][f"fusion.event_blocks.{i}.{leaf}"],
                               source[f"model.fusion_module.basic_block.{2 * i + 1}.{leaf}"])  # fmt: skip
    pairs = {
        "decode_head.embed.2.weight": "decode_head.embed_layers_image.2.proj.weight",
        "decode_head.fuse.branches.0.bn.running_var":
            "decode_head.fuse_layer_image.aspp_modules.0.bn.running_var",
        "decode_head.fuse.branches.3.depthwise.conv.weight":
            "decode_head.fuse_layer_image.aspp_modules.3.depthwise_conv.conv.weight",
        "decode_head.fuse.branches.1.pointwise.bn.weight":
            "decode_head.fuse_layer_image.aspp_modules.1.pointwise_conv.bn.weight",
        "decode_head.fuse.bottleneck.conv.weight": "decode_head.fuse_layer_image.bottleneck.conv.weight",
        "decode_head.conv_seg.bias": "decode_head.conv_seg.bias",
        "backbone_events.block3.1.attn.sr.weight": "backbone_events.block3.1.attn.sr.weight",
    }  # fmt: skip
    for ours, theirs in pairs.items():
        assert torch.equal(state["model"][ours], source[f"model.{theirs}"]), ours
        assert torch.equal(state["teacher"][ours], source[f"ema_model.{theirs}"]), ours
    differ = ("decode_head.conv_seg.weight", "backbone_events.patch_embed1.proj.weight")
    assert not torch.equal(state["model"][differ[0]], state["teacher"][differ[0]])
    assert not torch.equal(state["model"][differ[1]], state["model"][differ[1].replace("events", "image")])
    assert set(state["translator"]) == {
        k.removeprefix("cyclegan_itrd2en.") for k in source if k.startswith("cyc")
    }
    assert torch.equal(state["translator"]["model.19.weight"], source["cyclegan_itrd2en.model.19.weight"])
    record = json.loads((out / "import.json").read_text())
    assert record["original_iteration"] == 40000 and "fusion_isr_module." in record["dropped"]
    assert (out / "config.yaml").is_file()


def test_dark_zurich_checkpoint_maps_its_own_fusion_layout(tiny_config, tmp_path):
    config = tiny_config("dark_zurich")
    checkpoint = original("dark_zurich")
    out = tmp_path / "imported"
    assert import_cli(write(tmp_path, checkpoint), config_file(tmp_path, config), out) == 0
    state = load_checkpoint(out)
    build_model(config).load_state_dict(state["model"], strict=True)
    source = checkpoint["state_dict"]
    for i in range(4):  # one Block over the 2C concatenation, then the Mlp 2C -> C -> C
        assert torch.equal(state["model"][f"fusion.blocks.{i}.attn.kv.weight"],
                           source[f"model.fusion_module.basic_block.{i}.attn.kv.weight"])  # fmt: skip
        assert torch.equal(state["model"][f"fusion.projections.{i}.dwconv.dwconv.weight"],
                           source[f"model.fusion_module.linear_block.{i}.dwconv.dwconv.weight"])  # fmt: skip
    assert state["translator"] is None


def test_cmda_test_evaluates_the_student_and_the_teacher_on_request(
    tiny_config, tmp_path, capsys, monkeypatch
):
    import cmda.eval

    config = tiny_config("dark_zurich")
    out = tmp_path / "imported"
    assert import_cli(write(tmp_path, original("dark_zurich")), config_file(tmp_path, config), out) == 0
    evaluated, real = [], cmda.eval.evaluate

    def spy(model, *args, **kwargs):
        evaluated.append({k: v.clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(cmda.eval, "evaluate", spy)
    capsys.readouterr()
    assert main(["test", str(out)]) == 0
    assert "miou19" in json.loads(capsys.readouterr().out)
    assert main(["test", str(out), "--weights", "teacher"]) == 0
    state = load_checkpoint(out)
    for seen, network in zip(evaluated, ("model", "teacher"), strict=True):
        assert all(torch.equal(seen[k], state[network][k]) for k in state[network]), network
    assert not torch.equal(
        evaluated[0]["fusion.blocks.0.attn.q.weight"], evaluated[1]["fusion.blocks.0.attn.q.weight"]
    )


def test_init_from_starts_fine_tuning_at_iteration_zero_with_both_weights(tiny_config, tmp_path):
    from cmda.train import run

    config = tiny_config("dark_zurich")
    out = tmp_path / "imported"
    assert import_cli(write(tmp_path, original("dark_zurich")), config_file(tmp_path, config), out) == 0
    imported = load_checkpoint(out)
    tuned = tiny_config(
        "dark_zurich", **{"model.init_from": str(out), "train.max_iters": 1, "train.eval_interval": 1}
    )
    session = build_session(tuned, torch.device("cpu"), None)
    assert session.iteration == 0 and not session.optimizer.state_dict()["state"]
    for name, module in (("model", session.model), ("teacher", session.step.teacher.model)):
        for key, value in module.state_dict().items():
            assert torch.equal(value, imported[name][key]), (name, key)
    run(tuned)
    assert load_checkpoint(tuned.train.work_dir)["iteration"] == 1


def test_an_imported_checkpoint_is_not_resumed(tiny_config, tmp_path, capsys):
    config = tiny_config("dark_zurich")
    out = tmp_path / "imported"
    assert import_cli(write(tmp_path, original("dark_zurich")), config_file(tmp_path, config), out) == 0
    capsys.readouterr()
    assert main(["train", str(out / "config.yaml"), "--resume", str(out)]) == 2
    assert f"model.init_from: {out}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setting", "target", "expected"),
    [
        (
            "dsec_night",
            "dark_zurich",
            "is a checkpoint of the dsec_night setting (it holds the CycleGAN event",
        ),
        ("dark_zurich", "dsec_night", "is a checkpoint of the dark_zurich setting"),
    ],
)
def test_a_checkpoint_of_the_other_setting_is_refused(
    tiny_config, tmp_path, capsys, setting, target, expected
):
    out = tmp_path / "imported"
    pth = write(tmp_path, original(setting))
    assert import_cli(pth, config_file(tmp_path, tiny_config(target)), out) == 2
    line = refused(capsys, out)
    assert str(pth) in line and expected in line and f"data.target.name is {setting}" in line


def test_a_b0_checkpoint_is_refused_by_the_b5_config(tmp_path, capsys):
    out = tmp_path / "imported"
    assert import_cli(write(tmp_path, original("dsec_night")), Path("configs/cmda_cs2dsec_b5.yaml"), out) == 2
    line = refused(capsys, out)
    assert "its backbones are mit_b0 (blocks per stage 2, 2, 2, 2" in line
    assert "model.backbone: mit_b5; set model.backbone: mit_b0" in line


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda sd: sd.update({"model.decode_head.conv_seg_events.weight": torch.zeros(19, 32, 1, 1)}),
         "unexpected keys (not part of the CMDA network this config builds): "
         "model.decode_head.conv_seg_events"),
        (lambda sd: sd.pop("model.backbone_events.block2.1.mlp.fc2.bias"),
         "missing student (model.*) weights: model.backbone_events.block2.1.mlp.fc2.bias"),
        (lambda sd: sd.pop("ema_model.decode_head.fuse_layer_image.aspp_modules.2.depthwise_conv.bn.weight"),
         "missing teacher (ema_model.*) weights: "
         "ema_model.decode_head.fuse_layer_image.aspp_modules.2.depthwise_conv.bn.weight"),
        (lambda sd: sd.pop("model.fusion_module.basic_block.5.attn.q.bias"),
         "missing student (model.*) weights: model.fusion_module.basic_block.5.attn.q.bias"),
        (lambda sd: sd.update({"model.backbone_image.block4.1.attn.proj.weight": torch.zeros(256, 128)}),
         "wrong shapes for this config: model.backbone_image.block4.1.attn.proj.weight (256, 128) "
         "(this config: (256, 256))"),
        (lambda sd: sd.update({"model.decode_head.embed_layers_fusion.1.proj.bias": torch.ones(32)}),
         "the decoder is not shared between branches (model.decode_head.embed_layers_fusion.1.proj.bias"),
        (lambda sd: sd.pop("cyclegan_itrd2en.model.22.bias"),
         "missing translator weights: cyclegan_itrd2en.model.22.bias"),
    ],
)  # fmt: skip
def test_extra_missing_and_wrong_keys_are_named(tiny_config, tmp_path, capsys, change, expected):
    checkpoint = original("dsec_night")
    change(checkpoint["state_dict"])
    out = tmp_path / "imported"
    pth = write(tmp_path, checkpoint)
    assert import_cli(pth, config_file(tmp_path, tiny_config()), out) == 2
    line = refused(capsys, out)
    assert line.startswith(f"error: {pth}") and expected in line, line


def test_sizes_that_differ_from_the_config_are_named(tiny_config, tmp_path, capsys):
    config = config_file(tmp_path, tiny_config("dark_zurich"))
    out = tmp_path / "imported"
    for sizes, expected in (
        ({"channels": 64}, "64 decoder channels (decode_head.conv_seg), but"),
        ({"second_in": 5}, "5 input channels of the second backbone (backbone_events.patch_embed1)"),
        ({"classes": 16}, "16 classes (decode_head.conv_seg), but"),
    ):
        assert import_cli(write(tmp_path, original("dark_zurich", **sizes)), config, out) == 2
        assert expected in refused(capsys, out)


def test_files_that_are_no_checkpoint_or_cut_short(tiny_config, tmp_path, capsys):
    config = config_file(tmp_path, tiny_config("dark_zurich"))
    out = tmp_path / "imported"
    whole = write(tmp_path, original("dark_zurich"))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert import_cli(truncated, config, out) == 2
    assert "cannot read: not a complete PyTorch checkpoint" in refused(capsys, out)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    assert import_cli(text, config, out) == 2
    assert f"error: {text}: cannot read" in refused(capsys, out)
    listing = write(tmp_path, [1, 2, 3], "list.pth")
    assert import_cli(listing, config, out) == 2
    assert "not a CMDA checkpoint: expected mmcv's dict with a 'state_dict'" in refused(capsys, out)
    assert import_cli(tmp_path / "absent.pth", config, out) == 2
    assert "absent.pth: file not found" in refused(capsys, out)


def test_an_existing_folder_is_kept_unless_overwrite(tiny_config, tmp_path, capsys):
    config = config_file(tmp_path, tiny_config("dark_zurich"))
    pth = write(tmp_path, original("dark_zurich"))
    out = tmp_path / "imported"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert import_cli(pth, config, out) == 2
    assert "exists; choose another --out or add --overwrite" in capsys.readouterr().err
    assert (out / "mine.txt").is_file()
    assert import_cli(pth, config, out, "--overwrite") == 0
    assert not (out / "mine.txt").exists() and (out / "checkpoint.pt").is_file()


def test_a_bare_segmentor_state_dict_imports_with_the_student_as_teacher(tiny_config, tmp_path, capsys):
    """What loaders that strip `model.` leave (XiaRho/CMDA issue #5 tried to load such a dict)."""
    checkpoint = original("dark_zurich")
    bare = {
        k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")
    }
    out = tmp_path / "imported"
    assert (
        import_cli(write(tmp_path, copy.copy(bare)), config_file(tmp_path, tiny_config("dark_zurich")), out)
        == 0
    )
    assert "the teacher is a copy of the student" in capsys.readouterr().out
    state = load_checkpoint(out)
    assert all(torch.equal(state["model"][k], state["teacher"][k]) for k in state["model"])

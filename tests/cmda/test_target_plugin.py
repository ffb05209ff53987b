"""A target from outside the package: one module and a registration, nothing else.

The recipe of docs/ARCHITECTURE.md ("Adding a target"), checked: a toy night target is written as one
module in a temporary folder (its Dataset, file layout, data check, synthetic-twin writer and TargetSpec),
registered with `cmda.data.targets.register` (or found through a `cmda.targets` entry point), and then
`cmda data synth`'s generator writes its twin, `cmda data check` recognises and checks it, two training
iterations run on it and `cmda test` reproduces the evaluation, without any file of the package knowing it.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from cmda.data import targets

TOY_MODULE = '''
"""A toy night target: Dataset, layout, check, twin writer and registry entry in one module."""

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from cmda.data import DARK_ZURICH_ISR
from cmda.data.check_report import CheckReport, check_label, image_size
from cmda.data.synthetic import Twin
from cmda.data.targets import DatasetFiles, Recipe, TargetConfigBase, TargetSpec
from cmda.data.transforms import normalize_image, read_label, read_rgb, resize
from cmda.io import write_bytes_atomic
from cmda.validation import WidthHeight

NAME = "{name}"


def image_paths(root, split):
    return sorted((Path(root) / "toy_images" / split).glob("*_night.png"))


def image_path(root, split, item):
    return Path(root) / "toy_images" / split / f"{{item:03d}}_night.png"


def label_path(image):
    return image.with_name(image.name.replace("_night", "_label"))


class ToyConfig(TargetConfigBase):
    name: Literal["{name}"] = "{name}"
    root: str = "data/toy"
    size: WidthHeight = Field(default_factory=lambda: [32, 32])


class ToyDataset(torch.utils.data.Dataset):
    def __init__(self, root, split, size, seed=None):
        self.images, self.split, self.size, self.seed = image_paths(root, split), split, tuple(size), seed

    def __len__(self):
        return len(self.images)

    def get_sample(self, index, rng):
        image = resize(read_rgb(self.images[index]), self.size)
        name = self.images[index].name
        sample = {{"image": normalize_image(image), "isr_direction": torch.tensor(2), "name": name}}
        if self.split == "val":
            label = read_label(label_path(self.images[index]))
            sample["label"] = resize(label, self.size, is_label=True).long()
        return sample

    def __getitem__(self, index):
        return self.get_sample(index, np.random.default_rng([self.seed or 0, index]))


def build(cfg, split, seed, with_isr):
    return ToyDataset(cfg.root, split, cfg.size, seed)


def check(root, thorough=True, decode_images=False, settings=None):
    with CheckReport.timed(NAME, root, thorough) as report:
        for split in ("train", "val"):
            images = image_paths(root, split)
            if not images:
                report.add(f"{{Path(root) / 'toy_images' / split}}: no *_night.png")
            for image in images:
                size = report.attempt("images", image_size, image)
                if split == "val" and size is not None:
                    report.attempt("labels", check_label, label_path(image), size, True)
    return report


@dataclass(frozen=True)
class ToyTwin(Twin):
    size: tuple = (48, 32)
    items: int = 3
    REAL_SIZE: ClassVar = {{"size": (960, 540)}}

    def write(self, folder, seed, workers=1):
        from cmda.data import scenes

        width, height = self.size
        for split in ("train", "val"):
            for item in range(self.items):
                rng = np.random.default_rng([seed, 9, item, split == "val"])
                scene = scenes.make_scene(rng, with_truck=False)
                label = scenes.rasterize(scene, width, height, frame=0.0)
                noise = rng.normal(0.0, 3.0, (height, width, 3))
                day = scenes.render_day(label, scenes.class_textures(width, height, rng), noise)
                image = image_path(folder, split, item)
                write_bytes_atomic(image, scenes.png_bytes(scenes.render_night(day, scene, 0.0)))
                if split == "val":
                    write_bytes_atomic(label_path(image), scenes.png_bytes(label))


SPEC = TargetSpec(
    name=NAME,
    description="toy night scenes (a target registered from outside the package)",
    second_modality="isr",
    headline_metric="miou19",
    metrics={{"miou19": tuple(range(19))}},
    train_split="train",
    test_split="val",
    config_model=ToyConfig,
    build=build,
    files=DatasetFiles(
        title="Toy night", markers=("toy_images",), check=check, twin=ToyTwin.make, synthetic_dir=NAME
    ),
    recipe=Recipe("attention", {{"image": 0.7, "second": 0.7, "fusion": 0.7, "isr": 0.25}}),
    eval_branch="image",
    target_isr=DARK_ZURICH_ISR,
    mixed_isr=DARK_ZURICH_ISR,
    isr_shift="rightdown",
)
'''

TINY_TWINS = {
    "cityscapes": {"size": (64, 32), "cities": ("aachen",), "images_per_city": 1},
    "dsec_night": {"size": (32, 24), "frames_per_sequence": 4, "sequences": 1},
    "dark_zurich": {"size": (32, 18), "sequences": 1, "train_per_sequence": 1, "val_per_sequence": 1},
}
"""The smallest twin of every built-in dataset, written beside the toy's by `generate`."""


def write_module(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}_target.py").write_text(TOY_MODULE.format(name=name))


@pytest.fixture()
def restored_registry(monkeypatch):
    """The registry as it was after the test (entries registered by it removed)."""
    before = dict(targets.TARGETS)
    yield targets.TARGETS
    for name in set(targets.TARGETS) - set(before):
        del targets.TARGETS[name]
    sys.modules.pop("toy_night_target", None)
    sys.modules.pop("toy_ep_target", None)


def test_a_target_registered_from_outside_checks_trains_and_tests(
    tmp_path, tiny_config, restored_registry, monkeypatch, capsys
):
    from cmda.cli import main
    from cmda.data.commands import main as data_main
    from cmda.data.synthetic import generate
    from cmda.train import run

    write_module(tmp_path / "plugins", "toy_night")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    spec = targets.register(importlib.import_module("toy_night_target").SPEC)
    assert targets.register(spec) is spec and targets.get_target("toy_night") is spec  # idempotent

    folders = generate(tmp_path / "data", seed=0, options={**TINY_TWINS, "toy_night": {"items": 3}})
    assert set(folders) == {"cityscapes", "dsec_night", "dark_zurich", "toy_night"}
    capsys.readouterr()
    assert data_main(["check", str(folders["toy_night"])]) == 0  # recognised by its marker folder
    assert "toy_night at" in capsys.readouterr().out
    assert data_main(["check", str(folders["toy_night"]), "--kind", "toy_night", "--fast"]) == 0

    section = {"name": "toy_night", "root": str(folders["toy_night"]), "size": [32, 32]}
    config = tiny_config("dark_zurich", **{"data.target": section, "train.max_iters": 2})
    assert config.target is spec and config.model.fusion == "attention"  # the toy's recipe
    final = run(config)
    assert set(spec.metric_names) <= set(final)
    capsys.readouterr()
    assert main(["test", config.train.work_dir]) == 0  # reads the checkpoint's config.yaml
    printed = json.loads(capsys.readouterr().out)
    assert printed["miou19"] == pytest.approx(final["miou19"], abs=0.01)


def test_a_target_from_an_entry_point_is_registered_when_the_registry_is_first_read(tmp_path, monkeypatch):
    """A distribution on sys.path that declares `[cmda.targets] toy_ep = toy_ep_target:SPEC`."""
    site = tmp_path / "site"
    write_module(site, "toy_ep")
    info = site / "toy_ep-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-ep\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[cmda.targets]\ntoy_ep = toy_ep_target:SPEC\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "toy_ep_target", raising=False)
    registry = targets.TargetRegistry(targets.BUILT_IN)
    assert sorted(registry) == ["dark_zurich", "dsec_night", "toy_ep"]
    assert registry["toy_ep"].files.title == "Toy night"
    monkeypatch.setattr(targets, "TARGETS", registry)
    assert list(targets.dataset_kinds()) == ["cityscapes", "dsec_night", "dark_zurich", "toy_ep"]

    (info / "entry_points.txt").write_text("[cmda.targets]\nbroken = toy_ep_target:NOTHING\n")
    with pytest.raises(targets.TargetRegistryError, match=r"entry point broken = toy_ep_target:NOTHING"):
        len(targets.TargetRegistry(targets.BUILT_IN))

"""Dark Zurich night images: the optional image-only target of CMDA's Cityscapes -> Dark Zurich variant.

Layout: rgb_anon/{train,val}/night/<GOPRxxxx>/<name>_rgb_anon.png and
gt/val/night/<GOPRxxxx>/<name>_gt_labelTrainIds.png.
Train: resize to 960x540, ISR on the WHOLE resized image (direction 'rightdown', as the original), then crop
and flip image and ISR together. Val: the full resized image and its label (PIL NEAREST, as the original).

One module for the whole target: the paths (`image_paths`, `label_path`), the Dataset and its builder,
the data check (`check`) and the synthetic twin's writer (`DarkZurichTwin`), which its registry entry in
cmda/data/targets.py names. docs/ARCHITECTURE.md ("Target domains") has the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from cmda.data.check_report import CheckReport, Settings, check_decodes, check_label, image_size
from cmda.data.errors import reports_data_errors
from cmda.data.extractors import DARK_ZURICH_ISR, DIRECTIONS, ISRParams
from cmda.data.synthetic import Twin
from cmda.data.transforms import (
    AlignedAugment,
    compute_isr,
    normalize_image,
    read_label,
    read_rgb,
    resize,
    to_uint8,
)
from cmda.io import write_bytes_atomic

IMAGE_SUFFIX = "_rgb_anon.png"
LABEL_SUFFIX = "_gt_labelTrainIds.png"
COLOUR_SUFFIX = "_gt_labelColor.png"
ISR_DIRECTION = DIRECTIONS.index("rightdown")


def image_dir(root: Path, split: str) -> Path:
    return Path(root) / "rgb_anon" / split / "night"


def image_paths(root: Path, split: str) -> list[Path]:
    """rgb_anon/<split>/night/<sequence>/*_rgb_anon.png, sorted (none when the folder is missing)."""
    folder = image_dir(root, split)
    return sorted(folder.glob(f"*/*{IMAGE_SUFFIX}")) if folder.is_dir() else []


def label_path(root: Path, split: str, image: Path, suffix: str = LABEL_SUFFIX) -> Path:
    """rgb_anon -> gt, <name>_rgb_anon.png -> <name>_gt_labelTrainIds.png (or the colour file's suffix)."""
    name = image.name[: -len(IMAGE_SUFFIX)] + suffix
    return Path(root) / "gt" / split / "night" / image.parent.name / name


def build_dataset(cfg: Any, split: str, seed: int | None, with_isr: bool) -> DarkZurichDataset:
    """The registry's builder (`TargetSpec.dataset`): the train split resized, then cropped and flipped;
    the labelled split resized whole."""
    if split == "train":
        return DarkZurichDataset(
            cfg.root, split, resize=tuple(cfg.resize), crop=tuple(cfg.crop), with_isr=with_isr, seed=seed
        )
    return DarkZurichDataset(cfg.root, split, resize=tuple(cfg.resize), with_isr=with_isr)


class DarkZurichDataset(torch.utils.data.Dataset):
    """Night samples: image [3,H,W], isr [3,H,W], isr_direction, plus label for split="val"."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        resize: tuple[int, int] = (960, 540),
        crop: tuple[int, int] = (512, 512),
        isr_params: ISRParams = DARK_ZURICH_ISR,
        with_isr: bool = True,
        seed: int | None = None,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"Dark Zurich split must be 'train' or 'val', got {split!r}")
        self.root = Path(root)
        self.split = split
        self.resize_wh = tuple(resize)
        self.isr_params = isr_params
        self.with_isr = with_isr
        self.seed = seed
        self.augment = AlignedAugment(tuple(crop), flip_prob=0.5)
        folder = image_dir(self.root, split)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: Dark Zurich night image folder not found")
        self.images = image_paths(self.root, split)
        if not self.images:
            raise FileNotFoundError(f"{folder}: no <sequence>/*{IMAGE_SUFFIX} images")

    def __len__(self) -> int:
        return len(self.images)

    def label_path(self, index: int) -> Path:
        return label_path(self.root, self.split, self.images[index])

    @reports_data_errors
    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng(None if self.seed is None else [self.seed, index])
        return self.get_sample(index, rng)

    def get_sample(self, index: int, rng: np.random.Generator) -> dict:
        original = read_rgb(self.images[index])
        image = to_uint8(resize(original, self.resize_wh))
        tensors = {"image": image.float()}
        if self.with_isr:
            tensors["isr"] = compute_isr(image, self.isr_params, ISR_DIRECTION)
        if self.split == "val":  # a label of another size than its image would be scored upsampled
            label = read_label(self.label_path(index), tuple(original.shape[-2:]))
            tensors["label"] = resize(label, self.resize_wh, is_label=True)
        else:
            params = self.augment.draw(rng, image.shape[-2], image.shape[-1])
            tensors = self.augment.apply(tensors, params)
        sample = {
            "image": normalize_image(tensors["image"]),
            "isr_direction": torch.tensor(ISR_DIRECTION, dtype=torch.int64),
            "name": self.images[index].name,
        }
        if self.with_isr:
            sample["isr"] = tensors["isr"]
        if "label" in tensors:
            sample["label"] = tensors["label"].long()
        return sample


# -- the data check and the synthetic twin ---------------------------------------------------------------


def check(
    root: str | Path, thorough: bool = True, decode_images: bool = False, settings: Settings = None
) -> CheckReport:
    """Night train images open; every val image has its trainId label of the same size (always decoded)."""
    root = Path(root)
    with CheckReport.timed("dark_zurich", root, thorough) as report:
        for split in ("train", "val"):
            images = image_paths(root, split)
            if not images:
                folder = image_dir(root, split)
                report.add(f"{folder}: no <sequence>/*{IMAGE_SUFFIX} images (is this a Dark Zurich root?)")
            for image in images:
                size = report.attempt(f"{split} images", image_size, image)
                if size is None:
                    continue
                if decode_images:
                    report.attempt("decoded images", check_decodes, image)
                if split == "val":
                    report.attempt("val labels", check_label, label_path(root, split, image), size, True)
        # A label whose image is gone: the loader lists images, so that pair would drop out of every score.
        labels = Path(root) / "gt" / "val" / "night"
        for label in sorted(labels.glob(f"*/*{LABEL_SUFFIX}")) if labels.is_dir() else []:
            name = label.name[: -len(LABEL_SUFFIX)] + IMAGE_SUFFIX
            image = image_dir(root, "val") / label.parent.name / name
            if not image.is_file():
                report.add(f"{label}: validation label without its image ({image} not found)")
    return report


SEQUENCES = ("GOPR0351", "GOPR0356")


@dataclass(frozen=True)
class DarkZurichTwin(Twin):
    """The Dark Zurich twin writer (`cmda data synth`): night images of the train and val splits and, for
    val, trainId labels (+ colour PNGs), at a 16:9 size."""

    size: tuple[int, int] = (192, 108)
    sequences: int = 2
    train_per_sequence: int = 6
    val_per_sequence: int = 3
    REAL_SIZE: ClassVar = {"size": (1920, 1080), "train_per_sequence": 2, "val_per_sequence": 1}

    def write(self, folder: Path, seed: int, workers: int = 1) -> None:
        from cmda.data import scenes

        width, height = self.size
        splits = (("train", self.train_per_sequence, 0), ("val", self.val_per_sequence, 1000))
        for seq_index, name in enumerate(SEQUENCES[: self.sequences]):
            for split, count, offset in splits:
                for item in range(count):
                    rng = np.random.default_rng([seed, 3, seq_index, offset + item])
                    scene = scenes.make_scene(rng, with_truck=False)
                    label = scenes.rasterize(scene, width, height, frame=0.0)
                    noise = rng.normal(0.0, 3.0, (height, width, 3))
                    day = scenes.render_day(label, scenes.class_textures(width, height, rng), noise)
                    stem = f"{name}_frame_{offset + 7 * item:06d}"
                    image = image_dir(folder, split) / name / f"{stem}{IMAGE_SUFFIX}"
                    files = {image: scenes.render_night(day, scene, 0.0)}
                    if split == "val":
                        files[label_path(folder, split, image)] = label
                        files[label_path(folder, split, image, COLOUR_SUFFIX)] = scenes.palette_image(label)
                    for file, pixels in files.items():
                        write_bytes_atomic(file, scenes.png_bytes(pixels))

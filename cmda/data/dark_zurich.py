"""Dark Zurich night images: the optional image-only target of CMDA's Cityscapes -> Dark Zurich variant.

Layout: rgb_anon/{train,val}/night/<GOPRxxxx>/<name>_rgb_anon.png and
gt/val/night/<GOPRxxxx>/<name>_gt_labelTrainIds.png.
Train: resize to 960x540, ISR on the WHOLE resized image (direction 'rightdown', as the original), then crop
and flip image and ISR together. Val: the full resized image and its label (PIL NEAREST, as the original).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cmda.data.errors import reports_data_errors
from cmda.data.extractors import DARK_ZURICH_ISR, DIRECTIONS, ISRParams
from cmda.data.transforms import (
    AlignedAugment,
    compute_isr,
    normalize_image,
    read_label,
    read_rgb,
    resize,
    to_uint8,
)

IMAGE_SUFFIX = "_rgb_anon.png"
LABEL_SUFFIX = "_gt_labelTrainIds.png"
ISR_DIRECTION = DIRECTIONS.index("rightdown")


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
        image_dir = self.root / "rgb_anon" / split / "night"
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{image_dir}: Dark Zurich night image folder not found")
        self.images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not self.images:
            raise FileNotFoundError(f"{image_dir}: no <sequence>/*{IMAGE_SUFFIX} images")

    def __len__(self) -> int:
        return len(self.images)

    def label_path(self, index: int) -> Path:
        """rgb_anon -> gt, <name>_rgb_anon.png -> <name>_gt_labelTrainIds.png."""
        image = self.images[index]
        name = image.name[: -len(IMAGE_SUFFIX)] + LABEL_SUFFIX
        return self.root / "gt" / self.split / "night" / image.parent.name / name

    @reports_data_errors
    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng(None if self.seed is None else [self.seed, index])
        return self.get_sample(index, rng)

    def get_sample(self, index: int, rng: np.random.Generator) -> dict:
        image = to_uint8(resize(read_rgb(self.images[index]), self.resize_wh))
        tensors = {"image": image.float()}
        if self.with_isr:
            tensors["isr"] = compute_isr(image, self.isr_params, ISR_DIRECTION)
        if self.split == "val":
            label = read_label(self.label_path(index))
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

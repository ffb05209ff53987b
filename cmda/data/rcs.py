"""Rare Class Sampling (DAFormer/CMDA): pick the source image through a class drawn with a rare-class bias.

Without it, rare classes (train, motorcycle, ...) are seen so seldom that self-training never recovers them.
p_c = softmax((1 - f_c) / T) over the classes present in the training labels, f_c their pixel frequency.

Two scale rules, both because the original constants assume Cityscapes geometry:
- `min_pixels` (3000) counts pixels of a FULL 2048x1024 label. For labels of another size it is scaled by the
  area ratio (label_w * label_h) / (2048 * 1024), so the same fraction of the image qualifies a file.
- The crop re-draw threshold `min_pixels * min_crop_ratio` (1500) is compared, in the original, with a crop of
  the 1024x512-resized image. For another resize it is scaled by (resize_w * resize_h) / (1024 * 512).
Files are matched by label BASENAME (the original keyed on full paths that only matched by accident).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from cmda.data.transforms import CROP_TRIES

FULL_LABEL_PIXELS = 2048 * 1024
REFERENCE_RESIZE_PIXELS = 1024 * 512


def load_class_stats(path: str | Path) -> list[dict]:
    """Read `sample_class_stats.json` (list of {"<trainId>": n_pixels, ..., "file": basename})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: RCS statistics not found; run `cmda data prepare-cityscapes ROOT`")
    with path.open() as handle:
        stats = json.load(handle)
    if not isinstance(stats, list):
        raise ValueError(
            f"{path}: expected a JSON list of per-image class counts, not {type(stats).__name__}"
        )
    return stats


def class_probabilities(stats: Sequence[dict], temperature: float) -> tuple[list[int], np.ndarray]:
    """Classes present in `stats` (sorted) and their sampling probabilities softmax((1 - f_c) / T)."""
    if temperature <= 0:
        raise ValueError(f"RCS temperature must be > 0, got {temperature}")
    totals: dict[int, int] = {}
    for entry in stats:
        for key, count in entry.items():
            if key == "file":
                continue
            totals[int(key)] = totals.get(int(key), 0) + int(count)
    classes = sorted(c for c, n in totals.items() if n > 0)
    if not classes:
        raise ValueError("RCS statistics contain no labelled pixels")
    counts = np.array([totals[c] for c in classes], dtype=np.float64)
    freq = counts / counts.sum()
    logits = (1.0 - freq) / temperature
    probs = np.exp(logits - logits.max())
    return classes, probs / probs.sum()


def scaled_min_pixels(min_pixels: float, label_wh: tuple[int, int]) -> float:
    """`min_pixels` (defined on 2048x1024 labels) expressed for labels of size `label_wh`."""
    return min_pixels * label_wh[0] * label_wh[1] / FULL_LABEL_PIXELS


def crop_min_pixels(min_pixels: float, min_crop_ratio: float, resize_wh: tuple[int, int]) -> float:
    """Crop acceptance threshold (original: 3000 * 0.5 on 1024x512-resized images) for resize `resize_wh`."""
    return min_pixels * min_crop_ratio * resize_wh[0] * resize_wh[1] / REFERENCE_RESIZE_PIXELS


class RareClassSampler:
    """Draws (class, label file basename) pairs with DAFormer's rare class sampling."""

    def __init__(
        self,
        stats: str | Path | Sequence[dict],
        temperature: float = 0.01,
        min_pixels: int = 3000,
        seed: int | None = None,
        label_wh: tuple[int, int] = (2048, 1024),
        min_crop_ratio: float = 0.5,
        resize_wh: tuple[int, int] = (1024, 512),
    ) -> None:
        entries = load_class_stats(stats) if isinstance(stats, (str, Path)) else list(stats)
        self.temperature = temperature
        self.min_pixels = min_pixels
        self.file_min_pixels = scaled_min_pixels(min_pixels, label_wh)
        self.min_crop_pixels = crop_min_pixels(min_pixels, min_crop_ratio, resize_wh)
        classes, probs = class_probabilities(entries, temperature)
        files: dict[int, list[str]] = {c: [] for c in classes}
        for entry in entries:
            if "file" not in entry:
                raise ValueError(f"RCS statistics entry without 'file': {entry}")
            for key, count in entry.items():
                if key != "file" and int(key) in files and int(count) > self.file_min_pixels:
                    files[int(key)].append(Path(entry["file"]).name)
        # A class with no file above the threshold cannot be sampled (the original asserts); drop it and
        # renormalise so that small or unusual datasets still train.
        keep = [i for i, c in enumerate(classes) if files[c]]
        if not keep:
            raise ValueError(
                f"no image has more than {self.file_min_pixels:.0f} pixels of any class; lower min_pixels"
            )
        self.classes = [classes[i] for i in keep]
        self.probabilities = probs[keep] / probs[keep].sum()
        self.files_with_class = {c: sorted(files[c]) for c in self.classes}
        self._rng = np.random.default_rng(seed)

    @classmethod
    def for_dataset(
        cls,
        dataset,
        temperature: float = 0.01,
        min_pixels: int = 3000,
        min_crop_ratio: float = 0.5,
        seed: int | None = None,
    ) -> RareClassSampler:
        """Sampler for a `CityscapesDataset`: its root's statistics, label size and resize."""
        return cls(
            Path(dataset.root) / "sample_class_stats.json",
            temperature=temperature,
            min_pixels=min_pixels,
            seed=seed,
            label_wh=dataset.label_size(),
            min_crop_ratio=min_crop_ratio,
            resize_wh=dataset.resize_wh,
        )

    def sample(self, rng: np.random.Generator | None = None) -> tuple[int, str]:
        """Draw a class c ~ p, then a file uniformly among those with > min_pixels of c."""
        rng = self._rng if rng is None else rng
        cls = self.classes[int(rng.choice(len(self.classes), p=self.probabilities))]
        candidates = self.files_with_class[cls]
        return cls, candidates[int(rng.integers(len(candidates)))]


def redraw_crop_for_class(
    draw: Callable[[], object],
    label_of: Callable[[object], torch.Tensor],
    cls: int,
    min_crop_pixels: float,
    tries: int = CROP_TRIES,
) -> object:
    """Re-draw a crop up to `tries` times until it holds more than `min_crop_pixels` pixels of `cls`.

    `draw()` returns augmentation parameters, `label_of(params)` the label crop they select. The last draw is
    kept when no try succeeds (the original's behaviour: the sample is still used).
    """
    params = draw()
    for _ in range(tries - 1):
        if int((label_of(params) == cls).sum()) > min_crop_pixels:
            break
        params = draw()
    return params

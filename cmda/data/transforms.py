"""Geometric augmentation applied identically to every aligned modality of one sample.

CMDA's losses compare modalities pixel by pixel (image vs events vs ISR vs label), so a crop or flip that
differs by one pixel between two of them silently corrupts training. This module therefore draws the random
box and flip ONCE (`AugmentParams`) and applies that exact geometry to a dict of tensors; labels are
resampled as PIL's NEAREST does (the original's), so no new class ids appear and the same pixels are kept.
Pure torch, so it runs unchanged on CPU tensors in loader workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cmda.data import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, NUM_CLASSES

CROP_TRIES = 10


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the geometric augmentation: crop box (in pixels of the input) and horizontal flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


def draw_crop_box(
    rng: np.random.Generator, height: int, width: int, crop_h: int, crop_w: int
) -> tuple[int, int]:
    """Uniform top-left corner so that a crop_h x crop_w box fits in height x width (both ends inclusive)."""
    if crop_h > height or crop_w > width:
        raise ValueError(
            f"crop {crop_w}x{crop_h} (WxH) is larger than the input {width}x{height}; "
            "choose a smaller crop or a larger resize"
        )
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return top, left


def crop(tensor: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Crop the last two dims of `tensor` to the box of `params`."""
    return tensor[..., params.top : params.top + params.height, params.left : params.left + params.width]


def hflip(tensor: torch.Tensor) -> torch.Tensor:
    """Mirror the last (width) dimension."""
    return torch.flip(tensor, dims=(-1,))


def pil_nearest_indices(size_in: int, size_out: int) -> torch.Tensor:
    """The source index of each of `size_out` pixels as PIL's NEAREST resize picks it along one axis.

    Pillow samples at pixel centres, (i + 0.5) * in/out, stepping through a row by adding the scale in
    float64, and truncates: a 2x downscale keeps the ODD pixels (torch's "nearest" keeps the even ones, one
    full-resolution pixel off). The running sum is reproduced, not the closed form, because the two round
    differently for some sizes (tests/test_datasets.py compares with PIL on odd and even sizes).
    """
    scale = size_in / size_out
    steps = np.full(size_out, scale)
    steps[0] = scale * 0.5
    return torch.from_numpy(np.minimum(np.add.accumulate(steps).astype(np.int64), size_in - 1))


def resize(tensor: torch.Tensor, size_wh: tuple[int, int], is_label: bool = False) -> torch.Tensor:
    """Resize the last two dims to (W, H): bilinear for signals, PIL's NEAREST for integer label maps.

    Labels take exactly the pixels the original's PIL `resize(..., Image.NEAREST)` takes
    (`pil_nearest_indices`). Bilinear uses align_corners=False (what CMDA uses for events) and antialiasing
    when shrinking, which keeps a 2x downscale of a Cityscapes frame close to PIL's bilinear filter instead
    of aliasing fine textures.
    """
    width, height = size_wh
    if tuple(tensor.shape[-2:]) == (height, width):
        return tensor
    if is_label:
        rows = pil_nearest_indices(tensor.shape[-2], height)
        cols = pil_nearest_indices(tensor.shape[-1], width)
        return tensor.index_select(-2, rows).index_select(-1, cols)
    lead = tensor.shape[:-2]
    flat = tensor.reshape(-1, 1, *tensor.shape[-2:])
    shrinking = height < tensor.shape[-2] or width < tensor.shape[-1]
    out = F.interpolate(
        flat.float(), size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking
    )
    return out.reshape(*lead, height, width)


def label_crop_is_balanced(label_crop: torch.Tensor, cat_max_ratio: float, ignore_index: int) -> bool:
    """DAFormer's crop test: more than one class and no single class above `cat_max_ratio` of the crop."""
    values = label_crop[label_crop != ignore_index]
    if values.numel() == 0:
        return False
    counts = torch.bincount(values.flatten().long())
    counts = counts[counts > 0]
    return counts.numel() > 1 and float(counts.max()) / float(counts.sum()) < cat_max_ratio


class AlignedAugment:
    """Random crop + horizontal flip (+ optional final resize) shared by all modalities of a sample.

    `crop_wh=None` keeps the full frame; `resize_wh` is applied after crop and flip (DSEC: 400 -> 512).
    """

    def __init__(
        self,
        crop_wh: tuple[int, int] | None,
        flip_prob: float = 0.5,
        resize_wh: tuple[int, int] | None = None,
        cat_max_ratio: float | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.crop_wh = crop_wh
        self.flip_prob = flip_prob
        self.resize_wh = resize_wh
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    def draw(
        self, rng: np.random.Generator, height: int, width: int, label: torch.Tensor | None = None
    ) -> AugmentParams:
        """Draw box and flip once; with `cat_max_ratio` and a label, re-draw the box up to 10 times."""
        crop_w, crop_h = self.crop_wh if self.crop_wh is not None else (width, height)
        top, left = draw_crop_box(rng, height, width, crop_h, crop_w)
        if self.cat_max_ratio is not None and self.cat_max_ratio < 1.0 and label is not None:
            for _ in range(CROP_TRIES):
                box = AugmentParams(top, left, crop_h, crop_w, False)
                if label_crop_is_balanced(crop(label, box), self.cat_max_ratio, self.ignore_index):
                    break
                top, left = draw_crop_box(rng, height, width, crop_h, crop_w)
        flip = bool(rng.random() < self.flip_prob)
        return AugmentParams(top, left, crop_h, crop_w, flip)

    def apply(
        self,
        tensors: Mapping[str, torch.Tensor],
        params: AugmentParams,
        label_keys: Iterable[str] = ("label",),
    ) -> dict[str, torch.Tensor]:
        """Apply one drawn geometry to every tensor (last two dims = H, W); `label_keys` resample as PIL's
        NEAREST."""
        label_keys = set(label_keys)
        out: dict[str, torch.Tensor] = {}
        for key, tensor in tensors.items():
            result = crop(tensor, params)
            if params.flip:
                result = hflip(result)
            if self.resize_wh is not None:
                result = resize(result, self.resize_wh, is_label=key in label_keys)
            out[key] = result.contiguous()
        return out


# --- readers and per-modality conversions shared by the Cityscapes, DSEC and Dark Zurich loaders ---------


def read_rgb(path: Path) -> torch.Tensor:
    """RGB PNG -> float [3,H,W] in 0..255 (kept unnormalised so ISR can be computed after augmentation)."""
    array = np.asarray(_open_image(path).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float()


def read_gray(path: Path) -> torch.Tensor:
    """Greyscale ('L') PNG -> float [1,H,W] in 0..255."""
    array = np.asarray(_open_image(path).convert("L"), dtype=np.uint8)
    return torch.from_numpy(array.copy())[None].float()


def read_label(path: Path, expected_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """trainId label PNG -> int64 [H,W]; rejects values outside 0..18/255 and a size unlike the image's."""
    image = _open_image(path)
    if image.mode not in ("L", "P", "I", "I;16"):
        raise ValueError(f"{path}: label must be a single-channel PNG of trainIds, got mode {image.mode}")
    array = np.asarray(image).astype(np.int64)
    if expected_hw is not None and tuple(array.shape) != tuple(expected_hw):
        raise ValueError(
            f"{path}: label size {array.shape[1]}x{array.shape[0]} (WxH) does not match the image size "
            f"{expected_hw[1]}x{expected_hw[0]}"
        )
    bad = (array > NUM_CLASSES - 1) & (array != IGNORE_INDEX) | (array < 0)
    if bad.any():
        values = sorted({int(v) for v in np.unique(array[bad])})[:10]
        raise ValueError(
            f"{path}: label values {values} outside the trainIds 0..{NUM_CLASSES - 1} and {IGNORE_INDEX} "
            "(is this a labelIds file? run `cmda data prepare-cityscapes`)"
        )
    return torch.from_numpy(array)


def normalize_image(image_255: torch.Tensor) -> torch.Tensor:
    """float RGB in 0..255 -> ImageNet-normalised (mean/std given in [0,1] units, as CMDA's loaders use)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return (image_255 / 255.0 - mean) / std


def to_uint8(image_255: torch.Tensor) -> torch.Tensor:
    """Round a float 0..255 image to uint8 (what PIL holds after a resize, and what ISR starts from)."""
    return image_255.round().clamp(0, 255).to(torch.uint8)


def read_image_header(path: Path) -> tuple[tuple[int, int], str]:
    """((width, height), PIL mode) from the file header, without decoding the pixels (fast checks)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            return image.size, image.mode
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error


def _open_image(path: Path):
    """Open a PNG with a clear error for a missing or unreadable file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error
    return image


def compute_isr(image_uint8: torch.Tensor, params, direction_index: int) -> torch.Tensor:
    """ISR (image content extractor) of one augmented RGB uint8 image [3,H,W] -> float [3,H,W] in [-1,1].

    The single ISR channel is repeated to 3 channels because the event backbone, which also encodes ISR,
    takes 3-channel input (as in CMDA).
    """
    from cmda.data import extractors

    gray = extractors.to_gray_uint8(image_uint8[None])
    isr = extractors.image_content_extractor(gray, params, extractors.DIRECTIONS[direction_index])
    return isr[0].float().expand(3, -1, -1).contiguous()

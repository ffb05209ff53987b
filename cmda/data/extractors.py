"""CMDA's modality extractors as batched torch functions that run on CPU or GPU.

- The Image Content Extractor (ICE, "image self-residual", ISR) simulates a tiny camera translation of a
  single frame: the log-intensity difference between the grey image and a copy shifted by a few pixels,
  thresholded and rescaled, looks like an event frame and exists for day and night images alike.
- The Image Motion Extractor (IME) is the same log difference between a Cityscapes frame and the frame
  before it (`leftImg8bit_IC1`), i.e. event-like motion.

The original computes both per sample through PIL and numpy on the CPU; here one call handles a batch on
the device the batch already lives on, which is what lets the training step recompute the mixed-image ISR
without a round trip to the host.
"""

from __future__ import annotations

import math

import torch

# The parameter sets are plain data kept with the other constants (importing them must not import torch);
# re-exported here because every caller of the extractors needs them.
from cmda.data import (  # noqa: F401
    CITYSCAPES_ISR,
    DARK_ZURICH_ISR,
    DIRECTIONS,
    DSEC_ISR,
    MIXED_ISR,
    ISRParams,
)


def to_gray_uint8(image: torch.Tensor) -> torch.Tensor:
    """RGB [B,3,H,W] -> grey uint8 [B,1,H,W] exactly as PIL's 'L' conversion.

    uint8 input is used as is; float input is taken as [0, 1], clamped and truncated to uint8 (what
    `(x * 255).astype(np.uint8)` does before the original hands the image to PIL). PIL computes
    (R*19595 + G*38470 + B*7471 + 0x8000) >> 16, i.e. ITU-R 601-2 luma rounded to nearest.
    """
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"expected an RGB batch [B,3,H,W], got shape {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        image = (image.float().clamp(0, 1) * 255).to(torch.uint8)
    rgb = image.to(torch.int32)
    luma = (rgb[:, 0:1] * 19595 + rgb[:, 1:2] * 38470 + rgb[:, 2:3] * 7471 + 0x8000) >> 16
    return luma.to(torch.uint8)


def _shift(gray: torch.Tensor, direction: str, step: int) -> torch.Tensor:
    """Shift a [B,1,H,W] map by `step` pixels, duplicating the border row/column (no wrap-around)."""
    h, w = gray.shape[-2:]
    out = gray.clone()
    if direction == "right":
        out[..., :, step:] = gray[..., :, : w - step]
    elif direction == "left":
        out[..., :, : w - step] = gray[..., :, step:]
    elif direction == "down":
        out[..., step:, :] = gray[..., : h - step, :]
    elif direction == "up":
        out[..., : h - step, :] = gray[..., step:, :]
    else:
        raise ValueError(f"unknown shift direction {direction!r}")
    return out


def _minmax_per_sample(values: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Per-sample min-max rescale to [low, high] (1e-8 in the denominator, as the original).

    Guard: a constant sample (an empty half) becomes 0 instead of the original's constant `low`.
    """
    flat = values.flatten(1)
    vmin = flat.min(dim=1).values.view(-1, *[1] * (values.dim() - 1))
    vmax = flat.max(dim=1).values.view(-1, *[1] * (values.dim() - 1))
    scaled = (values - vmin) / (vmax - vmin + 1e-8) * (high - low) + low
    return torch.where(vmax > vmin, scaled, torch.zeros_like(values))


def log_residual(
    gray: torch.Tensor,
    shifted: torch.Tensor,
    val_range: tuple[float, float],
    threshold: float,
    clip: float,
) -> torch.Tensor:
    """Thresholded, clipped and rescaled log difference of two grey maps (0..255), in [-1, 1].

    L(I) = ln(I/255 * (b - a) + a); D = L(shifted) - L(gray); |D| <= threshold is zeroed; the positive part
    clamped to [0, clip] is scaled to [0, 1], the negative part clamped to [-clip, 0] to [-1, 0]. `threshold`
    and `clip` are absolute (log units) here.
    """
    a, b = val_range
    diff = torch.log(shifted.double() / 255 * (b - a) + a) - torch.log(gray.double() / 255 * (b - a) + a)
    diff = torch.where(diff.abs() <= threshold, torch.zeros_like(diff), diff)
    positive = _minmax_per_sample(diff.clamp(0, clip), 0.0, 1.0)
    negative = _minmax_per_sample(diff.clamp(-clip, 0), -1.0, 0.0)
    # unchanged pixels stay exactly 0 (the min-max's 1e-8 would leave ~1e-9 residues there)
    return torch.where(diff == 0, torch.zeros_like(diff), positive + negative).float()


def _direction_indices(direction: int | str | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    if isinstance(direction, str):
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown ISR direction {direction!r}; expected one of {DIRECTIONS}")
        direction = DIRECTIONS.index(direction)
    index = torch.as_tensor(direction, dtype=torch.long, device=device).reshape(-1)
    if index.numel() == 1:
        index = index.expand(batch)
    if index.numel() != batch or bool(((index < 0) | (index > 3)).any()):
        raise ValueError(f"ISR direction must be 0..3 (one or one per sample of {batch}), got {direction}")
    return index


def image_content_extractor(
    gray: torch.Tensor,
    params: ISRParams,
    direction: int | str | torch.Tensor,
) -> torch.Tensor:
    """ISR of grey images [B,1,H,W] (0..255) -> [B,1,H,W] in [-1, 1].

    ISR = 0.5 * residual(horizontal shift) + 0.5 * residual(vertical shift), where the direction index
    (or name, or one index per sample) picks left/right and down/up. Threshold and clip are given relative
    to the log range R = ln b - ln a, as in the original's parameter sets.
    """
    if gray.dim() != 4 or gray.shape[1] != 1:
        raise ValueError(f"expected a grey batch [B,1,H,W], got shape {tuple(gray.shape)}")
    a, b = params.val_range
    log_range = math.log(b) - math.log(a)
    threshold, clip = params.threshold * log_range, params.clip_range * log_range
    index = _direction_indices(direction, gray.shape[0], gray.device)
    horizontal_right = (index // 2 == 1).view(-1, 1, 1, 1)
    vertical_up = (index % 2 == 1).view(-1, 1, 1, 1)
    step = params.shift_pixel
    shifted_h = torch.where(horizontal_right, _shift(gray, "right", step), _shift(gray, "left", step))
    shifted_v = torch.where(vertical_up, _shift(gray, "up", step), _shift(gray, "down", step))
    return 0.5 * log_residual(gray, shifted_h, params.val_range, threshold, clip) + 0.5 * log_residual(
        gray, shifted_v, params.val_range, threshold, clip
    )


def image_motion_extractor(
    now_gray: torch.Tensor,
    front_gray: torch.Tensor,
    log_add: float = 50.0,
    threshold: float = 0.1,
    clip_range: float = 0.8,
) -> torch.Tensor:
    """IME: event-like change between a frame and the frame before it, in [-1, 1].

    D = ln(now + log_add) - ln(front + log_add), |D| <= threshold zeroed, halves clipped to clip_range and
    rescaled — the `leftImg8bit_IC1` images CMDA ships were made this way. Equal to `log_residual` with the
    value range (log_add, 255 + log_add) and absolute threshold and clip.
    """
    return log_residual(front_gray, now_gray, (log_add, 255.0 + log_add), threshold, clip_range)


def motion_to_png_uint8(motion: torch.Tensor) -> torch.Tensor:
    """[-1, 1] motion map -> uint8 as stored in the IC1 PNGs: round((d + 1) / 2 * 255)."""
    return torch.round((motion.double() + 1) / 2 * 255).clamp(0, 255).to(torch.uint8)

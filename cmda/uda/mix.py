"""ClassMix and the strong augmentation of the mixed image (colour jitter, Gaussian blur).

The original (DACS as CMDA runs it) uses kornia 0.5.8's `ColorJitter` and `GaussianBlur2d`; kornia's current
`ColorJiggle` keeps the 0.5.8 jitter semantics, so both operations are kornia's own code, batched on the
device. Only the random draws are ours: every factor, order and class choice comes from an explicit
`torch.Generator`, so a step is reproducible from (seed, iteration) and a resumed run draws exactly what an
uninterrupted one would (kornia's own sampler would draw from the global RNG).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from kornia.augmentation import ColorJiggle
from kornia.filters import gaussian_blur2d
from torch import Tensor

JITTER_FACTORS = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
"""kornia's parameter names; `order` indexes this tuple (0 brightness, 1 contrast, 2 saturation, 3 hue)."""


def class_mix_masks(labels: Tensor, generator: torch.Generator) -> Tensor:
    """ClassMix masks [B,1,H,W] (1 = paste from source) from source labels [B,H,W].

    As in DACS/CMDA: the candidate classes are the unique values of the WHOLE batch (255 included), and each
    sample draws its own ceil(n/2) of them without replacement; its mask marks where its own label is one
    of its chosen classes (a chosen class the sample does not contain pastes nothing).
    """
    classes = torch.unique(labels)
    n = classes.numel()
    masks = []
    for label in labels:
        order = torch.randperm(n, generator=generator)[: (n + n % 2) // 2]
        masks.append(torch.isin(label, classes[order.to(classes.device)]))
    return torch.stack(masks).unsqueeze(1).float()


def mix(mask: Tensor, source: Tensor, target: Tensor) -> Tensor:
    """mask * source + (1 - mask) * target, with the mask broadcast over channels."""
    return mask * source + (1 - mask) * target


def draw_color_jitter(batch: int, strength: float, generator: torch.Generator) -> dict[str, Tensor]:
    """Per-sample factors and application orders for `apply_color_jitter`, as kornia 0.5.8 draws them.

    `ColorJitter(s, s, s, s)` of 0.5.8: brightness, contrast and saturation factors U(1-s, 1+s) (brightness
    bounded to [0, 2], the others to >= 0), hue U(-s, s) turns (bounded to +-0.5), and a random order of the
    four operations. The original calls the jitter once per sample, so every sample gets its own factors AND
    its own order: `order` is [B, 4].
    """
    s = float(strength)
    bounds = ((max(1 - s, 0.0), min(1 + s, 2.0)), (max(1 - s, 0.0), 1 + s), (max(1 - s, 0.0), 1 + s))
    params = {}
    for name, (low, high) in zip(JITTER_FACTORS[:3], bounds):
        params[name] = low + (high - low) * torch.rand(batch, generator=generator)
    hue = min(s, 0.5)
    params["hue_factor"] = -hue + 2 * hue * torch.rand(batch, generator=generator)
    params["order"] = torch.stack([torch.randperm(4, generator=generator) for _ in range(batch)])
    return params


@lru_cache(maxsize=1)
def _jiggle() -> ColorJiggle:
    """One kornia module; its own ranges are unused because the parameters are always passed in."""
    return ColorJiggle(p=1.0)


def apply_color_jitter(image: Tensor, params: dict[str, Tensor]) -> Tensor:
    """kornia's `ColorJiggle` on [0,1] images [B,3,H,W] with the given per-sample factors and orders.

    Brightness is ADDED (x + b - 1), contrast MULTIPLIES the raw values (x * c), saturation and hue act in
    HSV, and the result stays in [0, 1]: kornia 0.5.8's ColorJitter, which CMDA used. kornia applies one order
    per call, so samples are grouped by their order (one call per distinct order, at most B).
    """
    out = torch.empty_like(image)
    orders = params["order"]
    for order in torch.unique(orders, dim=0):
        rows = (orders == order).all(dim=1).nonzero().flatten()
        group = {name: params[name][rows].to(image.device, image.dtype) for name in JITTER_FACTORS}
        group["order"] = order
        out[rows.to(image.device)] = _jiggle()(image[rows.to(image.device)], params=group)
    return out


def color_jitter(image: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Draw per-sample jitter parameters from `generator` and apply them (see the two functions above)."""
    return apply_color_jitter(image, draw_color_jitter(image.shape[0], strength, generator))


def blur_kernel_size(size: int) -> int:
    """The original's odd kernel of about 10% of the side: floor(ceil(0.1 s) - 0.5 + ceil(0.1 s) % 2)."""
    k = math.ceil(0.1 * size)
    return int(math.floor(k - 0.5 + k % 2))


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """kornia's Gaussian blur (reflect border) with the original's kernel size rule per side."""
    height, width = image.shape[-2:]
    kernel = (blur_kernel_size(height), blur_kernel_size(width))
    return gaussian_blur2d(image, kernel, (float(sigma), float(sigma)), border_type="reflect")

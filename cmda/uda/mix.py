"""ClassMix and the strong augmentation of the mixed image (colour jitter, Gaussian blur), in pure torch.

All randomness comes from an explicit `torch.Generator`, so a step is reproducible from (seed, iteration)
and a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def class_mix_masks(labels: Tensor, generator: torch.Generator) -> Tensor:
    """ClassMix masks [B,1,H,W] (1 = paste from source) from source labels [B,H,W].

    As in DACS/CMDA the classes are the unique values of the WHOLE batch (255 included); ceil(n/2) of them
    are chosen without replacement, and each sample's mask marks where its own label is a chosen class.
    """
    classes = torch.unique(labels)
    n = classes.numel()
    order = torch.randperm(n, generator=generator)[: (n + n % 2) // 2]
    chosen = classes[order.to(classes.device)]
    return torch.isin(labels, chosen).unsqueeze(1).float()


def mix(mask: Tensor, source: Tensor, target: Tensor) -> Tensor:
    """mask * source + (1 - mask) * target, with the mask broadcast over channels."""
    return mask * source + (1 - mask) * target


def _grey(image: Tensor) -> Tensor:
    return (0.299 * image[:, 0:1] + 0.587 * image[:, 1:2] + 0.114 * image[:, 2:3]).expand_as(image)


def _rotate_hue(image: Tensor, angle: Tensor) -> Tensor:
    """Hue rotation by `angle` (radians, one per sample) in YIQ space (chroma rotates, luma is kept)."""
    to_yiq = image.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, image)
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack((yiq[:, 0], cos * i - sin * q, sin * i + cos * q), dim=1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)


def color_jitter(image: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Brightness, contrast, saturation and hue jitter of [0,1] images, factors drawn per sample.

    Brightness, contrast and saturation factors are U(1-s, 1+s); hue shifts U(-s, s) of a full turn (done
    as a YIQ rotation). The original uses kornia's ColorJitter(s, s, s, s); this is our own torch version
    of the same four operations in a fixed order.
    """
    b = image.shape[0]

    def factor() -> Tensor:
        return (1 + (torch.rand(b, generator=generator) * 2 - 1) * strength).to(image).view(-1, 1, 1, 1)

    out = (image * factor()).clamp(0, 1)
    mean = _grey(out).mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * factor() + mean).clamp(0, 1)
    grey = _grey(out)
    out = ((out - grey) * factor() + grey).clamp(0, 1)
    hue = ((torch.rand(b, generator=generator) * 2 - 1) * strength * 2 * math.pi).to(image)
    return _rotate_hue(out, hue).clamp(0, 1)


def blur_kernel_size(size: int) -> int:
    """The original's odd kernel of about 10% of the side: floor(ceil(0.1 s) - 0.5 + ceil(0.1 s) % 2)."""
    k = math.ceil(0.1 * size)
    return int(math.floor(k - 0.5 + k % 2))


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with the original's kernel size rule, reflect padding."""
    _, c, h, w = image.shape
    outputs = image
    for axis, size in ((2, h), (3, w)):
        k = blur_kernel_size(size)
        coords = torch.arange(k, dtype=image.dtype, device=image.device) - (k - 1) / 2
        kernel = torch.exp(-(coords**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        view = (1, 1, k, 1) if axis == 2 else (1, 1, 1, k)
        pad = (0, 0, k // 2, k // 2) if axis == 2 else (k // 2, k // 2, 0, 0)
        weight = kernel.view(view).expand(c, -1, -1, -1)
        outputs = F.conv2d(F.pad(outputs, pad, mode="reflect"), weight, groups=c)
    return outputs

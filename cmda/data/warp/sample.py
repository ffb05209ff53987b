"""Sampling a frame image at dense frame coordinates: the default pixel-centre convention and the
original's (`--cmda-v1`).

The package docstring (cmda/data/warp/__init__.py) says how the two conventions differ; docs/ARCHITECTURE.md
("Deliberate deviations") says why the default differs from the original.
"""

from __future__ import annotations

import numpy as np


def in_view(coords: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Event pixels whose frame position lies on the frame sensor (pixel centres at integers)."""
    width, height = frame_size
    u, v = coords[..., 0], coords[..., 1]
    with np.errstate(invalid="ignore"):
        return (u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5)


def sample_cmda_v1(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """The original's sampling: grid_sample(align_corners=False, zeros) on coordinates / (size / 2) - 1,
    clamped to [-1, 1], in float64, truncated to uint8. Grid memory layout as in the original."""
    import torch
    import torch.nn.functional as F

    height, width = image.shape[:2]
    layout = np.ascontiguousarray(coords.transpose(2, 1, 0)).transpose(2, 1, 0)  # strides of a [2, W, H] base
    grid = torch.from_numpy(layout)[None]
    grid[:, :, :, 0] = grid[:, :, :, 0] / (width / 2) - 1
    grid[:, :, :, 1] = grid[:, :, :, 1] / (height / 2) - 1
    grid = torch.clamp(grid, min=-1, max=1)
    source = torch.from_numpy(np.transpose(image, (2, 0, 1)))[None].double()
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # NaN where scipy could not place a pixel in the triangulation: uint8 0, as numpy casts it on x86
    return np.nan_to_num(warped[0].numpy().transpose(1, 2, 0), nan=0.0).astype(np.uint8)


def bilinear_taps(coords: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices [4, H, W] and float32 weights [4, H, W] that sample an image of `size` (W, h)
    bilinearly at `coords` [H, W, 2] (x, y): integer coordinates at pixel centres (OpenCV's remap
    convention), positions off the image clamped to its edge. Separate from `apply_taps` so a fixed
    geometry is computed once for many images."""
    width, height = size
    x = np.clip(np.nan_to_num(coords[..., 0]), 0, width - 1)
    y = np.clip(np.nan_to_num(coords[..., 1]), 0, height - 1)
    x0, y0 = np.floor(x).astype(np.intp), np.floor(y).astype(np.intp)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = x - x0, y - y0
    indices = np.stack([y0 * width + x0, y0 * width + x1, y1 * width + x0, y1 * width + x1])
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]).astype(np.float32)
    return indices, weights


def apply_taps(image: np.ndarray, taps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """float32 [H, W, C] = the taps' weighted sum of a [h, w, C] image's pixels (one channel plane at a
    time: 1-D gathers are several times faster than gathering pixel rows)."""
    indices, weights = taps
    planes = np.ascontiguousarray(np.moveaxis(image, -1, 0)).reshape(image.shape[2], -1)
    out = np.empty((image.shape[2], *indices.shape[1:]), dtype=np.float32)
    for channel, plane in enumerate(planes):
        total = plane.take(indices[0]) * weights[0]
        for k in range(1, 4):
            total += plane.take(indices[k]) * weights[k]
        out[channel] = total
    return np.moveaxis(out, 0, -1)


def sample_pixel_centres(
    image: np.ndarray,
    coords: np.ndarray,
    taps: tuple[np.ndarray, np.ndarray] | None = None,
    visible: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Bilinear samples of `image` at `coords` (`bilinear_taps`, `apply_taps`) rounded to uint8, with pixels
    off the frame sensor set to 0; also returns how many pixels were off the sensor. `taps` and `visible`
    (`bilinear_taps` and `in_view` of `coords` on the image) may be passed in when precomputed. Plain
    numpy, so worker processes need not import torch."""
    size = (image.shape[1], image.shape[0])
    if visible is None:
        visible = in_view(coords, size)
    if taps is None:
        taps = bilinear_taps(coords, size)
    out = np.clip(np.rint(apply_taps(image, taps)), 0, 255).astype(np.uint8)
    out[~visible] = 0
    return out, int((~visible).sum())

"""The CPU voxel-grid splat as one compiled loop (numba, cached on disk) behind `events_to_voxel_grid`.

Why a compiled loop: a vectorised splat makes a dozen passes over arrays of a million events (corner
indices, weights, masks, one scatter per corner), so it is bound by memory traffic at ~5-25 M events/s per
core. One loop that reads each event once, optionally looks its raw pixel up in the rectify map, and adds
its four (or eight) corner weights runs at over 100 M events/s on one thread, which is what a loader
worker has. numba compiles it on the first call of a process and caches the machine code on disk
(`cache=True`: `__pycache__` next to this file, or numba's user cache directory when that is read-only),
so later processes and loader workers load it in milliseconds. The loop releases the GIL (`nogil`).

Semantics are the original's (DSEC `VoxelGrid`, CMDA `events_to_voxel_grid`), corner by corner: x0, y0, t0
truncate toward zero, corner c of coordinate v gets weight 1 - |c - v| and only corners inside the grid
count. The grid is padded by one cell on each side (and one bin at the end) so that the corners of every
event that can touch the grid (-2 < x < W) land in the array without a branch per corner.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _add_event(padded, x, y, value, t, num_bins, height, width):  # pragma: no cover
    """Add one event at float position (x, y) and normalised time t to the padded grid."""
    if not (x > -2.0 and x < width and y > -2.0 and y < height):
        return  # both corners outside the grid in x or in y (also rejects NaN)
    one = np.float32(1.0)
    padded_w = width + 2
    x0 = np.int64(x)  # truncation toward zero, as the original's .int()
    y0 = np.int64(y)
    wx0 = one - abs(np.float32(x0) - x)
    wx1 = one - abs(np.float32(x0 + 1) - x)
    wy0 = one - abs(np.float32(y0) - y)
    wy1 = one - abs(np.float32(y0 + 1) - y)
    base = (y0 + 1) * padded_w + x0 + 1
    if num_bins > 1:
        t0 = min(np.int64(t), num_bins - 1)  # t* <= num_bins - 1 up to float32 rounding
        plane = padded_w * (height + 2)
        base += t0 * plane
        high = value * (one - abs(np.float32(t0 + 1) - t))
        value = value * (one - abs(np.float32(t0) - t))
        row0 = high * wy0
        row1 = high * wy1
        padded[base + plane] += row0 * wx0
        padded[base + plane + 1] += row0 * wx1
        padded[base + plane + padded_w] += row1 * wx0
        padded[base + plane + padded_w + 1] += row1 * wx1
    row0 = value * wy0
    row1 = value * wy1
    padded[base] += row0 * wx0
    padded[base + 1] += row0 * wx1
    padded[base + padded_w] += row1 * wx0
    padded[base + padded_w + 1] += row1 * wx1


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _time_scale(ts, num_bins):  # pragma: no cover
    """(num_bins - 1) / (t_last - t_first), or 0 with one bin or when all times are equal."""
    span = np.float64(ts[ts.shape[0] - 1]) - np.float64(ts[0])
    return (num_bins - 1) / span if num_bins > 1 and span > 0 else 0.0


@numba.njit(cache=True, nogil=True, boundscheck=False)
def splat(xs, ys, polarity, ts, num_bins, height, width, padded):  # pragma: no cover
    """Accumulate events at float positions into `padded`; return the index of the first event whose time
    is earlier than its predecessor's (the grid is then incomplete and must not be used), or -1.

    padded: float32 [(num_bins + 1) * (height + 2) * (width + 2)], zeroed; polarity: 0/1; ts: event times
    (any unit); bin position t* = (num_bins - 1) * (t - t_first) / (t_last - t_first), in float64.
    """
    one = np.float32(1.0)
    scale = _time_scale(ts, num_bins)
    t_first = np.float64(ts[0])
    for i in range(xs.shape[0]):
        if i > 0 and ts[i] < ts[i - 1]:
            return i
        t = np.float32((np.float64(ts[i]) - t_first) * scale)
        value = np.float32(2.0) * np.float32(polarity[i]) - one
        _add_event(padded, np.float32(xs[i]), np.float32(ys[i]), value, t, num_bins, height, width)
    return -1


@numba.njit(cache=True, nogil=True, boundscheck=False)
def splat_rectified(xs, ys, polarity, ts, rectify_map, num_bins, height, width, padded):  # pragma: no cover
    """`splat` of raw sensor pixels, each looked up in `rectify_map` (float32 [H, W, 2]) first.

    The raw pixels must lie inside the map (the caller checks: reads here are not bounds-checked).
    """
    one = np.float32(1.0)
    scale = _time_scale(ts, num_bins)
    t_first = np.float64(ts[0])
    for i in range(xs.shape[0]):
        if i > 0 and ts[i] < ts[i - 1]:
            return i
        t = np.float32((np.float64(ts[i]) - t_first) * scale)
        value = np.float32(2.0) * np.float32(polarity[i]) - one
        x = rectify_map[ys[i], xs[i], 0]
        y = rectify_map[ys[i], xs[i], 1]
        _add_event(padded, x, y, value, t, num_bins, height, width)
    return -1

"""Event voxel grids, as the original builds them, and CMDA's normalisation of a grid.

Why a compiled loop for the CPU splat: a vectorised splat makes a dozen passes over arrays of a million
events (corner indices, weights, masks, one scatter per corner), so it is bound by memory traffic. One
loop that reads each event once, optionally looks its raw pixel up in the rectify map, and adds its four
(or eight) corner weights is many times faster on the one thread a loader worker has (figures in
benchmarks/README.md, "Event voxelization"). numba compiles it on the first call of a process and caches
the machine code on disk (`cache=True`: `__pycache__` next to this file, or numba's user cache directory
when that is read-only); the loop releases the GIL (`nogil`). Event tensors on an accelerator take the
tensor path (`_splat_torch`) on their device instead.

Semantics are the original's (DSEC `VoxelGrid`, CMDA `events_to_voxel_grid`), corner by corner: x0, y0, t0
truncate toward zero, corner c of coordinate v gets weight 1 - |c - v| and only corners inside the grid
count. The compiled loop pads the grid by one cell on each side (and one bin at the end) so that the
corners of every event that can touch the grid (-2 < x < W) land in the array without a branch per
corner. Reading the events is cmda/data/event_files.py's job; docs/ARCHITECTURE.md ("cmda.data") has the
contracts.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

CLIP_EVENTS_PER_UNIT = 500_000
"""CMDA's clip level is (number of events / 500000) * 1.5 standard deviations."""
CLIP_SCALE = 1.5
NO_RECTIFY_MAP = np.zeros((0, 0, 2), dtype=np.float32)
"""What `splat` gets for events already at float positions (no rectify-map lookup)."""


# -- the compiled CPU splat -------------------------------------------------------------------------------


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
def splat(xs, ys, polarity, ts, rectify_map, num_bins, height, width, padded):  # pragma: no cover
    """Accumulate events into `padded`; return the index of the first event whose time is earlier than its
    predecessor's (the grid is then incomplete and must not be used), or -1.

    rectify_map: float32 [H, W, 2], xs and ys raw sensor pixels looked up in it first (they must lie inside
    the map: the caller checks, reads here are not bounds-checked); or an empty [0, 0, 2] array, xs and ys
    then float positions. padded: float32 [(num_bins + 1) * (height + 2) * (width + 2)], zeroed;
    polarity: 0/1; ts: event times (any unit); bin position t* = (num_bins - 1) * (t - t_first) /
    (t_last - t_first), in float64.
    """
    one = np.float32(1.0)
    rectify = rectify_map.shape[0] > 0
    scale = _time_scale(ts, num_bins)
    t_first = np.float64(ts[0])
    for i in range(xs.shape[0]):
        if i > 0 and ts[i] < ts[i - 1]:
            return i
        t = np.float32((np.float64(ts[i]) - t_first) * scale)
        value = np.float32(2.0) * np.float32(polarity[i]) - one
        if rectify:
            row, column = np.int64(ys[i]), np.int64(xs[i])
            x, y = rectify_map[row, column, 0], rectify_map[row, column, 1]
        else:
            x, y = np.float32(xs[i]), np.float32(ys[i])
        _add_event(padded, x, y, value, t, num_bins, height, width)
    return -1


# -- voxel grids ------------------------------------------------------------------------------------------


def _as_tensor(values, device: torch.device | None, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.to(device=device if device is not None else values.device, dtype=dtype)
    return torch.as_tensor(np.asarray(values), dtype=dtype, device=device)


def _as_array(values, dtype=None) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=dtype)


def _normalized_time(t: torch.Tensor, num_bins: int) -> torch.Tensor:
    """(num_bins - 1) * (t - t[0]) / (t[-1] - t[0]) in float32 (zeros when all times are equal)."""
    times = t.to(torch.float64)
    span = float(times[-1] - times[0])
    relative = (times - times[0]) / span if span > 0 else torch.zeros_like(times)
    return (relative * (num_bins - 1)).float()


def _check_sorted_times(times: torch.Tensor) -> None:
    """The original's bin position uses t[0] and t[-1] as the window's bounds: times must be sorted."""
    drops = torch.nonzero(times.diff() < 0)
    if len(drops):
        first = int(drops[0, 0])
        raise ValueError(f"event times must be sorted: event {first + 1} is earlier than event {first}")


def warm_up_voxel_kernel() -> None:
    """Load the compiled kernel for DSEC's dtypes (uint16 pixels, uint8 polarity, int64 µs) in this process.

    A dataset calls this when it is built, so DataLoader workers forked from the process inherit the
    machine code instead of each loading the on-disk cache (see benchmarks/README.md for the cost).
    """
    pixels, one = np.zeros(1, np.uint16), np.zeros(1, np.uint8)
    events_to_voxel_grid(
        pixels, pixels, np.zeros(1, np.int64), one, 1, 1, 1, rectify_map=np.zeros((1, 1, 2), np.float32)
    )


def _splat_numba(x, y, t, p, num_bins, height, width, rectify_map) -> torch.Tensor:
    if rectify_map is None:
        xs, ys = _as_array(x, np.float32), _as_array(y, np.float32)
        table = NO_RECTIFY_MAP
    else:
        xs, ys = _as_array(x), _as_array(y)  # raw pixels keep their integer dtype (uint16 in DSEC)
        if xs.dtype.kind not in "iu" or ys.dtype.kind not in "iu":
            raise ValueError(f"raw event pixels must be integers to index the rectify map, got {xs.dtype}")
        table = _as_array(rectify_map, np.float32)
        if len(xs) and (
            xs.min() < 0 or ys.min() < 0 or xs.max() >= table.shape[1] or ys.max() >= table.shape[0]
        ):
            raise ValueError(
                f"raw event pixels x in {xs.min()}..{xs.max()}, y in {ys.min()}..{ys.max()} do not fit the "
                f"rectify map of shape {table.shape} (H, W, 2)"
            )
    polarity = _as_array(p)  # 0/1 in any numeric dtype (uint8 in DSEC): the kernel converts per event
    times = _as_array(t)
    if times.dtype.kind not in "iuf":
        raise ValueError(f"event times must be numbers, got {times.dtype}")
    padded = np.zeros((num_bins + 1) * (height + 2) * (width + 2), dtype=np.float32)
    unsorted = splat(xs, ys, polarity, times, table, num_bins, height, width, padded)
    if unsorted >= 0:
        raise ValueError(f"event times must be sorted: event {unsorted} is earlier than event {unsorted - 1}")
    grid = padded.reshape(num_bins + 1, height + 2, width + 2)[:num_bins, 1:-1, 1:-1]
    return torch.from_numpy(np.ascontiguousarray(grid))


def _splat_torch(x, y, t, p, num_bins, height, width, rectify_map) -> torch.Tensor:
    """The same splat with tensor operations, for event tensors that live on an accelerator."""
    device = x.device if isinstance(x, torch.Tensor) else None
    if rectify_map is not None:
        table = _as_tensor(rectify_map, device, torch.float32)
        xy = table[_as_tensor(y, device, torch.long), _as_tensor(x, device, torch.long)]
        xs, ys = xy[:, 0], xy[:, 1]
    else:
        xs, ys = _as_tensor(x, device, torch.float32), _as_tensor(y, device, torch.float32)
    polarity = _as_tensor(p, xs.device, torch.float32)
    padded_w, padded_h = width + 2, height + 2
    plane = padded_w * padded_h
    touches = (xs > -2) & (xs < width) & (ys > -2) & (ys < height)
    value = (polarity * 2 - 1) * touches
    x0, y0 = xs.trunc(), ys.trunc()
    base = (y0.long() + 1).clamp(0, height) * padded_w + (x0.long() + 1).clamp(0, width)
    weight_x = (1 - (x0 - xs).abs(), 1 - (x0 + 1 - xs).abs())
    weight_y = (1 - (y0 - ys).abs(), 1 - (y0 + 1 - ys).abs())
    times = _as_tensor(t, xs.device, torch.float64)
    _check_sorted_times(times)
    steps = [(0, value)]
    if num_bins > 1:
        t_norm = _normalized_time(times, num_bins)
        t0 = t_norm.trunc()
        base = base + t0.long().clamp(0, num_bins - 1) * plane
        steps = [(0, value * (1 - (t0 - t_norm).abs())), (plane, value * (1 - (t0 + 1 - t_norm).abs()))]
    grid = torch.zeros((num_bins + 1) * plane, dtype=torch.float32, device=xs.device)
    for t_step, weight_t in steps:
        for y_step, weight in ((0, weight_t * weight_y[0]), (padded_w, weight_t * weight_y[1])):
            grid.index_add_(0, base + t_step + y_step, weight * weight_x[0])
            grid.index_add_(0, base + t_step + y_step + 1, weight * weight_x[1])
    return grid.view(num_bins + 1, padded_h, padded_w)[:num_bins, 1:-1, 1:-1].contiguous()


def events_to_voxel_grid(
    x,
    y,
    t,
    p,
    num_bins: int,
    height: int,
    width: int,
    rectify_map: np.ndarray | torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Trilinear splat of events into a (num_bins, height, width) float32 grid.

    Each event carries 2p-1 (polarity -1/+1) and adds value*(1-|X-x|)(1-|Y-y|)(1-|T-t*|) to its integer
    neighbours X in {x0, x0+1}, Y in {y0, y0+1}, T in {t0, t0+1}, with t* = (num_bins-1)*(t-t_0)/(t_last-t_0)
    and x0, y0, t0 truncated toward zero as DSEC's and CMDA's `.int()` do (so for x in (-2, 0) a corner
    gets a negative weight, as in the original). Corners outside the grid are dropped. With one bin every
    event lands in bin 0. `rectify_map` (H, W, 2): x, y are raw sensor pixels, looked up as map[y, x]
    first (DSEC's forward map). The grid is not normalised: `cmda_events_norm` is what CMDA applies.

    backend "auto": the compiled numba loop (`splat`) for CPU data, tensor operations
    for tensors on an accelerator (the grid is then on that device); "numba" / "torch" force one.
    """
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")
    on_device = isinstance(x, torch.Tensor) and x.device.type != "cpu"
    use_torch = backend == "torch" or (backend == "auto" and on_device)
    if len(x) == 0:
        device = x.device if isinstance(x, torch.Tensor) else None
        return torch.zeros(num_bins, height, width, dtype=torch.float32, device=device)
    splat = _splat_torch if use_torch else _splat_numba
    return splat(x, y, t, p, num_bins, height, width, rectify_map)


def _minmax(values: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Min-max rescale to [low, high] as the original does (1e-8 in the denominator).

    Guard: a constant map (an empty half) returns zeros instead of the constant `low` the original
    produces, which would turn a frame without negative events into -1 everywhere.
    """
    vmin, vmax = values.min(), values.max()
    if vmax == vmin:
        return torch.zeros_like(values)
    return (values - vmin) / (vmax - vmin + 1e-8) * (high - low) + low


def cmda_events_norm(grid: torch.Tensor, num_events: int, clip: float | None = None) -> torch.Tensor:
    """CMDA's event normalisation of a voxel grid into [-1, 1]; empty cells stay 0.

    1. Standardise the non-zero cells with their mean and population std.
    2. Clip level c = num_events / 500000 * 1.5 (denser windows keep a wider range) unless `clip` is given.
    3. The positive part clamped to [0, c] is min-max scaled to [0, 1], the negative part clamped to [-c, 0]
       is scaled to [-1, 0]; the output is their sum.
    Deliberate differences to the original: an empty half stays 0 (the original turns it into -1
    everywhere), and cells without events are exactly 0 (the original leaves ~1e-9 rounding residues).
    """
    grid = torch.as_tensor(grid, dtype=torch.float32)
    mask = grid != 0
    count = int(mask.sum())
    if count == 0:
        return torch.zeros_like(grid)
    values = grid[mask]
    mean = values.mean()
    std = torch.sqrt(torch.clamp((values * values).mean() - mean * mean, min=0.0))
    standardised = torch.where(mask, (grid - mean) / (std + 1e-8), torch.zeros_like(grid))
    level = float(clip) if clip is not None else num_events / CLIP_EVENTS_PER_UNIT * CLIP_SCALE
    positive = _minmax(standardised.clamp(0, level), 0.0, 1.0)
    negative = _minmax(standardised.clamp(-level, 0), -1.0, 0.0)
    # the 1e-8 of the min-max leaves ~1e-9 residues in empty cells; they must stay exactly 0 ("no event")
    return torch.where(mask, positive + negative, torch.zeros_like(grid))

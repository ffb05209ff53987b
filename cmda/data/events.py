"""DSEC event files: reading time windows, rectification, voxel grids and CMDA's event normalisation.

The file layout is DSEC's own (`events.h5` with `events/{x,y,t,p}`, `ms_to_idx`, `t_offset`, Blosc-ZSTD
compressed; `rectify_map.h5` with `rectify_map` of shape (H, W, 2)). Windows are sliced the way DSEC's
EventSlicer does it: `ms_to_idx` bounds the window to whole milliseconds, then a binary search inside that
small block finds the exact edges, so a 50 ms window of a recording with 10^9 events reads a few MB, never
the whole file.

A binary search on times that are not sorted returns a wrong window without any error, so every block of
`events/t` read here is checked to be non-decreasing (a `diff` over data already in memory), and
`EventSlicer.verify` scans a whole file (monotonic time, `ms_to_idx` against the times) where that is
affordable: when the index files are built and in `cmda data check`.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import torch

from cmda.data.errors import DataError
from cmda.io import atomic_path

EVENT_KEYS = ("events/x", "events/y", "events/t", "events/p", "ms_to_idx", "t_offset")
CLIP_EVENTS_PER_UNIT = 500_000
"""CMDA's clip level is (number of events / 500000) * 1.5 standard deviations."""
CLIP_SCALE = 1.5
VERIFY_CHUNK = 1 << 24
"""Events per read when `EventSlicer.verify` scans a whole file (64 MiB of uint32 times)."""


class EventFileError(DataError):
    """A DSEC event or rectification file that is missing, unreadable or not in the expected format."""


def _open_h5(path: Path, what: str) -> h5py.File:
    if not path.is_file():
        raise EventFileError(f"{path}: {what} not found")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise EventFileError(
            f"{path}: cannot read {what} (corrupt or truncated HDF5 file?): {error}"
        ) from error


class EventSlicer:
    """Random access to the events of one DSEC `events.h5` by absolute time (µs) or by event index.

    Opens the file lazily-safe (one handle per instance; use one instance per worker process) and checks the
    layout up front so a broken file fails at construction with its name, not deep inside a training step.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file = _open_h5(self.path, "event file")
        try:
            self._check_layout()
            self.t_offset = int(self._file["t_offset"][()])
            self.ms_to_idx = np.asarray(self._read("ms_to_idx", 0, None), dtype=np.int64)
            self.num_events = int(self._file["events/t"].shape[0])
            self._t = self._file["events/t"]
            self.t_last = int(self._read("events/t", self.num_events - 1, None)[0]) if self.num_events else -1
            self._check_ms_to_idx()
        except BaseException:
            self._file.close()
            raise

    def _check_layout(self) -> None:
        for key in EVENT_KEYS:
            if key not in self._file:
                raise EventFileError(
                    f"{self.path}: missing dataset '{key}' (expected DSEC keys {EVENT_KEYS})"
                )
        lengths = {key: self._file[key].shape for key in EVENT_KEYS[:4]}
        if len({shape for shape in lengths.values()}) != 1 or len(lengths["events/t"]) != 1:
            raise EventFileError(f"{self.path}: events/x, y, t, p must be 1-D of equal length, got {lengths}")
        for key in EVENT_KEYS[:5]:
            if self._file[key].dtype.kind not in "iu":
                raise EventFileError(
                    f"{self.path}: dataset '{key}' must hold integers, got {self._file[key].dtype}"
                )

    def _check_ms_to_idx(self) -> None:
        """ms_to_idx must cover the recording, be non-decreasing and point inside the event arrays.

        DSEC's length is the last event's millisecond + 1; one entry less is accepted (the last partial
        millisecond is then searched from the entry before), anything shorter is a truncated index.
        """
        table, needed = self.ms_to_idx, max(self.t_last // 1000, 1) if self.num_events else 1
        if len(table) < needed:
            raise EventFileError(
                f"{self.path}: ms_to_idx has {len(table)} entries but events/t runs to {self.t_last} µs, "
                f"which needs at least {needed} (one per millisecond); the file is truncated or was "
                "written with a wrong ms_to_idx"
            )
        if len(table) and (table[0] < 0 or table[-1] > self.num_events or np.any(np.diff(table) < 0)):
            raise EventFileError(
                f"{self.path}: ms_to_idx must be non-decreasing indices in 0..{self.num_events} "
                f"(the number of events), got values {int(table.min())}..{int(table.max())}"
            )

    def __enter__(self) -> EventSlicer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _read(self, key: str, i0: int, i1: int | None) -> np.ndarray:
        try:
            return self._file[key][i0:i1]
        except OSError as error:
            raise EventFileError(
                f"{self.path}: cannot read '{key}'[{i0}:{i1}] (truncated file?): {error}"
            ) from error

    def _times(self, i0: int, i1: int) -> np.ndarray:
        """events/t[i0:i1] (relative µs, int64), checked to be non-decreasing."""
        times = self._read("events/t", i0, i1).astype(np.int64)
        check_sorted(times, self.path, i0)
        return times

    def get_events_by_index(self, i0: int, i1: int) -> dict[str, np.ndarray]:
        """Events with indices in [i0, i1): x, y (uint16), t (absolute µs, int64), p (uint8)."""
        i0, i1 = max(int(i0), 0), min(int(i1), self.num_events)
        i1 = max(i1, i0)
        return {
            "x": self._read("events/x", i0, i1),
            "y": self._read("events/y", i0, i1),
            "t": self._times(i0, i1) + self.t_offset,
            "p": self._read("events/p", i0, i1),
        }

    def index_window(self, t_start_us: int, t_end_us: int) -> tuple[int, int] | None:
        """Index range [i0, i1) of the events with t_start <= t < t_end (absolute µs).

        None when the window starts after the last millisecond of the recording. Unlike DSEC's slicer, a
        window that only ends past it returns the events that exist (the file is complete, nothing is lost).
        """
        start, end = int(t_start_us) - self.t_offset, int(t_end_us) - self.t_offset
        start_ms, end_ms = max(start // 1000, 0), max(-(-end // 1000), 0)
        if start_ms >= len(self.ms_to_idx):
            return None
        block0 = int(self.ms_to_idx[start_ms])
        block1 = int(self.ms_to_idx[end_ms]) if end_ms < len(self.ms_to_idx) else self.num_events
        times = self._times(block0, block1)
        i0 = block0 + int(np.searchsorted(times, start, side="left"))
        i1 = block0 + int(np.searchsorted(times, end, side="left"))
        return i0, i1

    def get_events(self, t_start_us: int, t_end_us: int) -> dict[str, np.ndarray] | None:
        """Events of the half-open absolute window [t_start, t_end), or None when it starts after the file."""
        window = self.index_window(t_start_us, t_end_us)
        return None if window is None else self.get_events_by_index(*window)

    def last_event_index_at_or_before(self, t_abs_us: int) -> int:
        """Index of the last event with t <= the given absolute time; -1 outside the recording.

        This is the rule behind DSEC-Night's `images_to_events_index.txt`: search only the few
        milliseconds around the timestamp (ms_to_idx one ms before to one ms after).
        """
        ts = int(t_abs_us) - self.t_offset
        if ts <= 0 or ts > self.t_last:
            return -1
        ms = ts // 1000
        last_entry = len(self.ms_to_idx) - 1
        left = int(self.ms_to_idx[min(max(ms - 1, 0), last_entry)])
        right = int(self.ms_to_idx[ms + 1]) if ms + 1 <= last_entry else self.num_events
        times = self._times(left, right)
        return left + int(np.searchsorted(times, ts, side="right")) - 1

    def verify(self, chunk: int = VERIFY_CHUNK) -> None:
        """Scan the whole file: events/t non-decreasing and ms_to_idx[ms] == first index with t >= 1000 ms.

        Reads events/t once, `chunk` events at a time (about 1 s per 10^8 events with Blosc-ZSTD).
        """
        table = self.ms_to_idx
        previous_last = None
        for i0 in range(0, self.num_events, chunk):
            times = self._read("events/t", i0, min(i0 + chunk, self.num_events)).astype(np.int64)
            if previous_last is not None and len(times) and times[0] < previous_last:
                check_sorted(np.array([previous_last, times[0]]), self.path, i0 - 1)
            check_sorted(times, self.path, i0)
            # milliseconds whose first event lies in this chunk: previous_last < 1000 ms <= times[-1]
            lo_ms = 0 if previous_last is None else previous_last // 1000 + 1
            hi_ms = min(int(times[-1]) // 1000, len(table) - 1)
            if hi_ms >= lo_ms:
                ms = np.arange(lo_ms, hi_ms + 1, dtype=np.int64)
                expected = i0 + np.searchsorted(times, ms * 1000, side="left")
                self._compare_ms_to_idx(ms, expected)
            previous_last = int(times[-1])
        tail = np.arange((self.t_last // 1000 + 1) if self.num_events else 0, len(table), dtype=np.int64)
        self._compare_ms_to_idx(tail, np.full(len(tail), self.num_events, dtype=np.int64))

    def pixel_max(self, chunk: int = VERIFY_CHUNK) -> tuple[int, int]:
        """(max x, max y) over all events, (0, 0) for a file without events; reads only events/x and y,
        `chunk` events at a time."""
        x_max = y_max = 0
        for i0 in range(0, self.num_events, chunk):
            i1 = min(i0 + chunk, self.num_events)
            x_max = max(x_max, int(self._read("events/x", i0, i1).max()))
            y_max = max(y_max, int(self._read("events/y", i0, i1).max()))
        return x_max, y_max

    def _compare_ms_to_idx(self, ms: np.ndarray, expected: np.ndarray) -> None:
        wrong = np.nonzero(self.ms_to_idx[ms] != expected)[0]
        if len(wrong):
            first = int(wrong[0])
            raise EventFileError(
                f"{self.path}: ms_to_idx[{int(ms[first])}] = {int(self.ms_to_idx[ms[first]])} but the first "
                f"event at or after {int(ms[first])} ms is event {int(expected[first])} ({len(wrong)} wrong "
                "entries); rebuild ms_to_idx from events/t"
            )


def check_sorted(times: np.ndarray, path: Path, first_index: int = 0) -> None:
    """Raise EventFileError naming `path` and the first decreasing pair of event times."""
    if len(times) < 2:
        return
    drops = np.nonzero(times[1:] < times[:-1])[0]
    if len(drops):
        i = int(drops[0])
        raise EventFileError(
            f"{path}: events/t is not sorted: event {first_index + i + 1} has t = {int(times[i + 1])} µs, "
            f"earlier than event {first_index + i} (t = {int(times[i])} µs); windows of this file would be "
            "wrong (corrupt file, or events written out of order)"
        )


def load_rectify_map(path: str | os.PathLike[str]) -> np.ndarray:
    """DSEC `rectify_map.h5` -> float32 (H, W, 2): map[y_raw, x_raw] = (x_rect, y_rect)."""
    path = Path(path)
    with _open_h5(path, "rectification map") as handle:
        if "rectify_map" not in handle:
            raise EventFileError(f"{path}: missing dataset 'rectify_map'")
        data = handle["rectify_map"][()]
    if data.ndim != 3 or data.shape[2] != 2:
        raise EventFileError(f"{path}: 'rectify_map' must have shape (H, W, 2), got {data.shape}")
    if data.dtype.kind != "f":
        raise EventFileError(f"{path}: 'rectify_map' must be floating point, got {data.dtype}")
    return np.ascontiguousarray(data, dtype=np.float32)


def check_events_fit_map(
    x: np.ndarray, y: np.ndarray, rectify_map: np.ndarray, events_path: Path, map_path: Path
) -> None:
    """Raw event pixels must index the map (x < W, y < H); a transposed (W, H, 2) map fails here."""
    if len(x) == 0:
        return
    height, width = rectify_map.shape[:2]
    x_max, y_max = int(np.max(x)), int(np.max(y))
    if x_max >= width or y_max >= height:
        hint = " (is the map transposed? DSEC's is (H, W, 2))" if x_max < height and y_max < width else ""
        raise EventFileError(
            f"{map_path}: rectify_map has shape {rectify_map.shape} (H, W, 2) but {events_path} has events "
            f"up to x = {x_max}, y = {y_max}{hint}"
        )


def rectify_events(x: np.ndarray, y: np.ndarray, rectify_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw sensor coordinates -> rectified float coordinates through map[y, x] (DSEC's forward map)."""
    xy = rectify_map[np.asarray(y, dtype=np.int64), np.asarray(x, dtype=np.int64)]
    return xy[:, 0], xy[:, 1]


def build_ms_to_idx(t_rel_us: np.ndarray) -> np.ndarray:
    """ms_to_idx[ms] = index of the first event with t >= 1000*ms (DSEC semantics, ms_to_idx[0] == 0)."""
    last_ms = int(t_rel_us[-1]) // 1000 if len(t_rel_us) else 0
    return np.searchsorted(t_rel_us, np.arange(last_ms + 1, dtype=np.int64) * 1000, side="left").astype(
        np.uint64
    )


def write_dsec_events_h5(
    path: str | os.PathLike[str],
    x: np.ndarray,
    y: np.ndarray,
    t_abs_us: np.ndarray,
    p: np.ndarray,
    compress: bool = True,
) -> None:
    """Write events as a real DSEC `events.h5` (dtypes u2/u2/u4/u1, ms_to_idx u8, t_offset i8), atomically.

    Compression is Blosc-ZSTD with bit-shuffle (HDF5 filter 32001), what uzh-rpg's own DSEC writers use.
    Events must be sorted by time.
    """
    t_abs = np.asarray(t_abs_us, dtype=np.int64)
    if len(t_abs) and np.any(np.diff(t_abs) < 0):
        raise ValueError(f"{path}: event timestamps must be sorted")
    t_offset = int(t_abs[0]) if len(t_abs) else 0
    t_rel = t_abs - t_offset
    options = (
        dict(hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.BITSHUFFLE))
        if compress
        else {}
    )
    columns = {"x": (x, np.uint16), "y": (y, np.uint16), "t": (t_rel, np.uint32), "p": (p, np.uint8)}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        for name, (values, dtype) in columns.items():
            handle.create_dataset(
                f"events/{name}", data=np.asarray(values).astype(dtype), chunks=True, **options
            )
        handle.create_dataset("ms_to_idx", data=build_ms_to_idx(t_rel), chunks=True, **options)
        handle.create_dataset("t_offset", data=np.int64(t_offset))


def write_rectify_map_h5(path: str | os.PathLike[str], rectify_map: np.ndarray) -> None:
    """Write a DSEC `rectify_map.h5` (float32, (H, W, 2)), atomically."""
    data = np.asarray(rectify_map, dtype=np.float32)
    if data.ndim != 3 or data.shape[2] != 2:
        raise ValueError(f"{path}: rectify map must have shape (H, W, 2), got {data.shape}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("rectify_map", data=data)


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
    machine code instead of each importing numba and loading the on-disk cache (~1 s per worker).
    """
    pixels, one = np.zeros(1, np.uint16), np.zeros(1, np.uint8)
    events_to_voxel_grid(
        pixels, pixels, np.zeros(1, np.int64), one, 1, 1, 1, rectify_map=np.zeros((1, 1, 2), np.float32)
    )


def _splat_numba(x, y, t, p, num_bins, height, width, rectify_map) -> torch.Tensor:
    from cmda.data import voxel_kernel

    if rectify_map is None:
        xs, ys = _as_array(x, np.float32), _as_array(y, np.float32)
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
    if rectify_map is None:
        unsorted = voxel_kernel.splat(xs, ys, polarity, times, num_bins, height, width, padded)
    else:
        unsorted = voxel_kernel.splat_rectified(
            xs, ys, polarity, times, table, num_bins, height, width, padded
        )
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
    normalize: bool = False,
    rectify_map: np.ndarray | torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Trilinear splat of events into a (num_bins, height, width) float32 grid.

    Each event carries 2p-1 (polarity -1/+1) and adds value*(1-|X-x|)(1-|Y-y|)(1-|T-t*|) to its integer
    neighbours X in {x0, x0+1}, Y in {y0, y0+1}, T in {t0, t0+1}, with t* = (num_bins-1)*(t-t_0)/(t_last-t_0)
    and x0, y0, t0 truncated toward zero as DSEC's and CMDA's `.int()` do (so for x in (-2, 0) a corner
    gets a negative weight, as in the original). Corners outside the grid are dropped. With one bin every
    event lands in bin 0. `rectify_map` (H, W, 2): x, y are raw sensor pixels, looked up as map[y, x]
    first (DSEC's forward map). `normalize=True` applies DSEC's own normalisation (mean / unbiased std over
    the non-zero cells).

    backend "auto": the compiled numba loop (`cmda.data.voxel_kernel`) for CPU data, tensor operations for
    tensors on an accelerator (the grid is then on that device); "numba" / "torch" force one.
    """
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")
    on_device = isinstance(x, torch.Tensor) and x.device.type != "cpu"
    use_torch = backend == "torch" or (backend == "auto" and on_device)
    if len(x) == 0:
        device = x.device if isinstance(x, torch.Tensor) else None
        return torch.zeros(num_bins, height, width, dtype=torch.float32, device=device)
    splat = _splat_torch if use_torch else _splat_numba
    grid = splat(x, y, t, p, num_bins, height, width, rectify_map)
    return dsec_normalize(grid) if normalize else grid


def dsec_normalize(grid: torch.Tensor) -> torch.Tensor:
    """DSEC's voxel-grid normalisation: standardise the non-zero cells (unbiased std), zeros stay zero."""
    mask = grid != 0
    if mask.sum() < 1:
        return grid
    values = grid[mask]
    mean = values.mean()
    std = values.std() if values.numel() > 1 else values.new_zeros(())
    out = grid.clone()
    out[mask] = (values - mean) / std if std > 0 else values - mean
    return out


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

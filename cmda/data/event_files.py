"""DSEC's event file format: reading `events.h5` by event index, checking it, and writing it.

The layout is DSEC's own (`events.h5` with `events/{x,y,t,p}`, `ms_to_idx`, `t_offset`, Blosc-ZSTD
compressed; `rectify_map.h5` with `rectify_map` of shape (H, W, 2)), so the real dataset and the synthetic
twin go through the same reader. `ms_to_idx` lets a frame's event index be found by searching a few
milliseconds of events, never the whole recording.

A binary search on times that are not sorted returns a wrong index without any error, so every block of
`events/t` read here is checked to be non-decreasing (a `diff` over data already in memory), and
`EventSlicer.verify` scans a whole file where that is affordable (when the index files are built and in
`cmda data check`). Voxel grids of the events are cmda/data/voxel.py's job; docs/ARCHITECTURE.md
("cmda.data") has the contracts.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from cmda.data.errors import DataError
from cmda.io import atomic_path

EVENT_KEYS = ("events/x", "events/y", "events/t", "events/p", "ms_to_idx", "t_offset")
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
    """Random access to the events of one DSEC `events.h5` by event index, and the index of a time (µs).

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

        Reads events/t once, `chunk` events at a time (timings in benchmarks/README.md, "Event files").
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

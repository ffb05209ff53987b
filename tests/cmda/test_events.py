"""Event files, window slicing, voxel grids and CMDA's event normalisation against slow references."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the Blosc filter
import numba
import numpy as np
import pytest
import torch

from cmda.data import event_files, voxel
from cmda.data.errors import DataError
from cmda.data.event_files import EventFileError

REAL_EVENTS_NAME = Path("shared/data/real_events/evt3_sample.npy")
REAL_EVENTS = next(
    (p / REAL_EVENTS_NAME for p in Path(__file__).resolve().parents if (p / REAL_EVENTS_NAME).is_file()),
    Path(__file__).resolve().parents[3] / REAL_EVENTS_NAME,
)
"""The real recording in the project's shared/ folder (beside the checkout or above a worktree)."""


def random_events(n: int, seed: int = 0, width: int = 64, height: int = 48, duration_us: int = 200_000):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(1_000_000, 1_000_000 + duration_us, n)).astype(np.int64)
    return rng.integers(0, width, n), rng.integers(0, height, n), t, rng.integers(0, 2, n)


@pytest.fixture()
def event_file(tmp_path):
    x, y, t, p = random_events(5000)
    path = tmp_path / "events.h5"
    event_files.write_dsec_events_h5(path, x, y, t, p)
    return path, (x, y, t, p)


def test_write_read_round_trip_keeps_dsec_dtypes_and_values(event_file):
    path, (x, y, t, p) = event_file
    with h5py.File(path, "r") as handle:
        assert handle["events/x"].dtype == np.uint16 and handle["events/y"].dtype == np.uint16
        assert handle["events/t"].dtype == np.uint32 and handle["events/p"].dtype == np.uint8
        assert handle["ms_to_idx"].dtype == np.uint64 and handle["t_offset"].dtype == np.int64
        assert handle["events/x"]._filters.get("32001") is not None or "32001" in str(
            handle["events/x"]._filters
        )
        t_rel = handle["events/t"][:].astype(np.int64)
        ms_to_idx = handle["ms_to_idx"][:].astype(np.int64)
    # DSEC semantics: t[ms_to_idx[ms]] >= 1000 ms and t[ms_to_idx[ms] - 1] < 1000 ms
    assert ms_to_idx[0] == 0
    for ms, index in enumerate(ms_to_idx):
        if index < len(t_rel):
            assert t_rel[index] >= 1000 * ms
        if index > 0:
            assert t_rel[index - 1] < 1000 * ms
    with event_files.EventSlicer(path) as slicer:
        assert slicer.t_offset == t[0] and slicer.num_events == len(t)
        got = slicer.get_events_by_index(0, len(t))
    np.testing.assert_array_equal(got["t"], t)
    np.testing.assert_array_equal(got["x"], x)
    np.testing.assert_array_equal(got["p"], p)


def test_frame_windows_equal_brute_force_filter(event_file):
    """The windows the DSEC loader reads: the events from the last one at or before the previous frame's
    timestamp to the last one at or before the frame's, through the index file's rule."""
    from cmda.data.dsec_layout import event_window

    path, (x, y, t, p) = event_file
    rng = np.random.default_rng(1)
    windows = [
        (t[0], t[0] + 1),
        (t[0] - 5000, t[0] + 10_000),
        (t[100], t[100] + 50_000),
        (t[-1] - 3000, t[-1]),
    ]
    windows += [(s, s + int(d)) for s, d in zip(rng.integers(t[0], t[-1], 20), rng.integers(0, 40_000, 20))]
    windows.append((int(t[-1]) + 2000, int(t[-1]) + 10_000))  # starts after the recording
    order = np.arange(len(t))

    def last_at_or_before(query: int) -> int:  # -1 outside the recording, as images_to_events_index.txt
        return -1 if query <= t[0] or query > t[-1] else int(order[t <= query][-1])

    with event_files.EventSlicer(path) as slicer:
        for start, end in windows:
            index = np.array([slicer.last_event_index_at_or_before(int(s)) for s in (start, end)])
            expected = (last_at_or_before(int(start)), last_at_or_before(int(end)))
            assert tuple(index) == expected
            if -1 in expected:
                with pytest.raises(DataError, match="outside the event recording"):
                    event_window(index, 1, 1, path)
                continue
            first, last = event_window(index, 1, 1, path)
            got = slicer.get_events_by_index(first, last + 1)
            keep = (order >= expected[0]) & (t <= end)
            np.testing.assert_array_equal(got["t"], t[keep])
            np.testing.assert_array_equal(got["x"], x[keep])


def test_last_event_index_matches_brute_force(event_file):
    path, (_, _, t, _) = event_file
    with event_files.EventSlicer(path) as slicer:
        for query in [t[0], t[0] + 1, t[10], t[2000] + 3, t[-1], t[-1] + 1, t[0] - 10]:
            relative = query - t[0]
            expected = -1 if relative <= 0 or relative > t[-1] - t[0] else int(np.nonzero(t <= query)[0][-1])
            assert slicer.last_event_index_at_or_before(int(query)) == expected


def reference_voxel_grid(x, y, t, p, bins, height, width):
    """The per-event, per-corner definition, written as plainly as possible."""
    grid = np.zeros((bins, height, width), dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    span = t[-1] - t[0]
    for xi, yi, ti, pi in zip(x, y, t, p):
        t_norm = (bins - 1) * (ti - t[0]) / span if span > 0 and bins > 1 else 0.0
        x0, y0, t0 = int(xi), int(yi), int(t_norm)  # truncation toward zero, as the original
        for cx in (x0, x0 + 1):
            for cy in (y0, y0 + 1):
                for ct in (t0, t0 + 1):
                    if 0 <= cx < width and 0 <= cy < height and 0 <= ct < bins:
                        weight = (1 - abs(cx - xi)) * (1 - abs(cy - yi)) * (1 - abs(ct - t_norm))
                        grid[ct, cy, cx] += (2 * int(pi) - 1) * weight
    return grid


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("bins", [1, 3, 5])
def test_voxel_grid_equals_per_event_reference(bins, backend):
    rng = np.random.default_rng(bins)
    n, width, height = 400, 20, 15
    x = rng.uniform(-2.5, width + 0.5, n).astype(np.float32)  # includes (-2, 0), where weights turn negative
    y = rng.uniform(-2.5, height + 0.5, n).astype(np.float32)
    t = np.sort(rng.integers(0, 50_000, n))
    p = rng.integers(0, 2, n)
    got = voxel.events_to_voxel_grid(x, y, t, p, bins, height, width, backend=backend)
    expected = reference_voxel_grid(x, y, t, p, bins, height, width)
    assert got.shape == (bins, height, width) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)
    from_tensors = voxel.events_to_voxel_grid(
        torch.from_numpy(x), torch.from_numpy(y), t, p, bins, height, width, backend=backend
    )
    torch.testing.assert_close(from_tensors, got)
    normalized = voxel.cmda_events_norm(from_tensors, num_events=n)  # what the loader applies
    np.testing.assert_allclose(normalized.numpy(), reference_cmda_norm(expected, n), atol=1e-3)


@pytest.mark.parametrize("bins", [1, 4])
def test_rectification_inside_the_splat_equals_lookup_then_splat(bins):
    """The default path looks raw pixels up in the rectify map inside the compiled loop."""
    rng = np.random.default_rng(11)
    height, width, n = 24, 32, 3000
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    rect_map = np.stack([xs * 1.07 - 1.5, ys * 0.95 + 0.7], axis=-1)  # pushes some events off the grid
    x_raw = rng.integers(0, width, n).astype(np.uint16)
    y_raw = rng.integers(0, height, n).astype(np.uint16)
    t = np.sort(rng.integers(0, 10_000, n))
    p = rng.integers(0, 2, n).astype(np.uint8)
    x_rect, y_rect = rect_map[y_raw, x_raw, 0], rect_map[y_raw, x_raw, 1]  # DSEC's forward map
    expected = reference_voxel_grid(x_rect, y_rect, t, p, bins, height, width)
    for backend in ("numba", "torch"):
        got = voxel.events_to_voxel_grid(
            x_raw, y_raw, t, p, bins, height, width, rectify_map=rect_map, backend=backend
        )
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)
    with pytest.raises(ValueError, match=r"do not fit the rectify map of shape \(32, 24, 2\)"):
        voxel.events_to_voxel_grid(
            x_raw, y_raw, t, p, bins, height, width, rectify_map=rect_map.transpose(1, 0, 2)
        )


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_voxel_grid_rejects_unsorted_times(backend):
    x, y, p = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0]), np.array([1, 0, 1])
    with pytest.raises(ValueError, match="event times must be sorted: event 2 is earlier than event 1"):
        voxel.events_to_voxel_grid(x, y, np.array([0, 500, 100]), p, 2, 4, 5, backend=backend)


def test_voxel_grid_handles_empty_and_constant_time():
    assert voxel.events_to_voxel_grid([], [], [], [], 2, 4, 5).abs().sum() == 0
    grid = voxel.events_to_voxel_grid([1.0, 2.0], [1.0, 1.0], [7, 7], [1, 0], 3, 4, 5)
    assert grid[0, 1, 1] == 1 and grid[0, 1, 2] == -1 and grid[1:].abs().sum() == 0


def reference_cmda_norm(grid: np.ndarray, num_events: int) -> np.ndarray:
    """Direct transcription of CMDA's events_norm (enforce_no_events_zero) on a grid with both signs."""
    mask = grid != 0
    n = mask.sum()
    mean = grid.sum() / n
    std = np.sqrt((grid**2).sum() / n - mean**2)
    v = mask * (grid - mean) / (std + 1e-8)
    clip = num_events / 500000 * 1.5
    pos = np.clip(np.maximum(v, 0), 0, clip)
    neg = np.clip(np.minimum(v, 0), -clip, 0)
    pos = (pos - pos.min()) / (pos.max() - pos.min() + 1e-8)
    neg = (neg - neg.min()) / (neg.max() - neg.min() + 1e-8) - 1
    return np.where(mask, pos + neg, 0.0)


def test_cmda_norm_equals_transcription_and_guards_the_empty_half():
    rng = np.random.default_rng(3)
    grid = rng.normal(size=(1, 12, 16)) * (rng.random((1, 12, 16)) < 0.4)
    got = voxel.cmda_events_norm(torch.from_numpy(grid).float(), num_events=800_000)
    np.testing.assert_allclose(got.numpy(), reference_cmda_norm(grid, 800_000), atol=1e-5)
    assert got.min() >= -1 and got.max() <= 1 and (got[torch.from_numpy(grid == 0)] == 0).all()
    constant = torch.from_numpy(
        (grid != 0).astype(np.float32)
    )  # standardises to all zeros: both halves empty
    out = voxel.cmda_events_norm(constant, num_events=800_000)
    assert out.abs().sum() == 0, "an empty half must stay 0 (the original's -1 quirk is guarded)"
    assert voxel.cmda_events_norm(torch.zeros(1, 3, 3), 10).abs().sum() == 0


def test_rectification_indexes_map_by_row_then_column():
    rect = np.zeros((3, 4, 2), dtype=np.float32)
    rect[2, 1] = (10.5, 20.25)
    grid = voxel.events_to_voxel_grid(np.array([1]), np.array([2]), [0], [1], 1, 24, 16, rectify_map=rect)
    assert grid[0, 20, 10] == 0.5 * 0.75 and grid[0, 21, 11] == 0.5 * 0.25  # the event is at (10.5, 20.25)


def test_bad_files_give_named_errors(tmp_path, event_file):
    path, _ = event_file
    with pytest.raises(EventFileError, match="missing.h5: event file not found"):
        event_files.EventSlicer(tmp_path / "missing.h5")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(EventFileError, match="truncated.h5: cannot read"):
        event_files.EventSlicer(truncated)
    no_offset = tmp_path / "no_offset.h5"
    with h5py.File(no_offset, "w") as handle:
        for key in ("x", "y", "t", "p"):
            handle.create_dataset(f"events/{key}", data=np.zeros(3, np.uint16))
        handle.create_dataset("ms_to_idx", data=np.zeros(1, np.uint64))
    with pytest.raises(EventFileError, match="no_offset.h5: missing dataset 't_offset'"):
        event_files.EventSlicer(no_offset)
    float_t = tmp_path / "float_t.h5"
    with h5py.File(float_t, "w") as handle:
        for key in ("x", "y", "p"):
            handle.create_dataset(f"events/{key}", data=np.zeros(3, np.uint16))
        handle.create_dataset("events/t", data=np.zeros(3, np.float32))
        handle.create_dataset("ms_to_idx", data=np.zeros(1, np.uint64))
        handle.create_dataset("t_offset", data=np.int64(0))
    with pytest.raises(EventFileError, match="float_t.h5: dataset 'events/t' must hold integers"):
        event_files.EventSlicer(float_t)
    bad_map = tmp_path / "rectify_map.h5"
    with h5py.File(bad_map, "w") as handle:
        handle.create_dataset("rectify_map", data=np.zeros((4, 5), np.float32))
    with pytest.raises(EventFileError, match=r"rectify_map.h5: 'rectify_map' must have shape \(H, W, 2\)"):
        event_files.load_rectify_map(bad_map)


@pytest.mark.skipif(not REAL_EVENTS.is_file(), reason=f"real recording not found at {REAL_EVENTS}")
def test_real_recording_through_the_dsec_pipeline(tmp_path):
    """A real Prophesee recording, cropped to the DSEC sensor, written as events.h5 and voxelized."""
    raw = np.load(REAL_EVENTS)
    keep = (raw["x"] < 640) & (raw["y"] < 480)
    x, y, t, p = raw["x"][keep], raw["y"][keep], raw["t"][keep].astype(np.int64), raw["p"][keep]
    order = np.argsort(t, kind="stable")
    x, y, t, p = x[order], y[order], t[order] + 1_000_000, p[order]
    path = tmp_path / "events.h5"
    event_files.write_dsec_events_h5(path, x, y, t, p)
    start, end = int(t[0]) + 20_000, int(t[0]) + 30_000
    with event_files.EventSlicer(path) as slicer:
        first = slicer.last_event_index_at_or_before(start)
        last = slicer.last_event_index_at_or_before(end)
        window = slicer.get_events_by_index(first, last + 1)  # the loader's window: index file entries
    keep = (np.arange(len(t)) >= first) & (t <= end)
    assert keep.sum() > 1000
    np.testing.assert_array_equal(window["x"], x[keep])
    grid = voxel.events_to_voxel_grid(window["x"], window["y"], window["t"], window["p"], 1, 480, 640)
    expected = np.zeros((480, 640))
    np.add.at(expected, (y[keep].astype(int), x[keep].astype(int)), 2 * p[keep].astype(float) - 1)
    np.testing.assert_allclose(grid[0].numpy(), expected, atol=1e-4)
    normalized = voxel.cmda_events_norm(grid, int(keep.sum()))
    assert normalized.abs().max() <= 1 and (normalized[grid == 0] == 0).all()


def test_cpu_default_is_the_compiled_kernel_and_device_tensors_stay_on_their_device(monkeypatch):
    """CPU data takes the numba loop without any opt-in; tensors on an accelerator keep the tensor path."""
    calls = []
    compiled = voxel.splat
    monkeypatch.setattr(voxel, "splat", lambda *args: calls.append(args) or compiled(*args))
    x, y, t, p = np.array([1.5], np.float32), np.array([2.25], np.float32), np.array([0]), np.array([1])
    grid = voxel.events_to_voxel_grid(torch.from_numpy(x), torch.from_numpy(y), t, p, 1, 4, 4)
    assert len(calls) == 1 and isinstance(compiled, numba.core.registry.CPUDispatcher)
    assert grid[0, 2, 1] == pytest.approx(0.5 * 0.75) and grid[0, 3, 2] == pytest.approx(0.5 * 0.25)
    if torch.cuda.is_available():
        on_device = voxel.events_to_voxel_grid(*(torch.as_tensor(a).cuda() for a in (x, y, t, p)), 1, 4, 4)
        assert on_device.device.type == "cuda" and len(calls) == 1
        torch.testing.assert_close(on_device.cpu(), grid)


def test_verify_scans_the_whole_file_in_chunks(tmp_path, event_file):
    path, (x, y, t, p) = event_file
    with event_files.EventSlicer(path) as slicer:
        slicer.verify(chunk=777)  # a good file passes, chunk boundaries included
    data = {}
    with h5py.File(path, "r") as handle:
        data = {key: handle[key][()] for key in event_files.EVENT_KEYS}
    shifted = dict(data, ms_to_idx=data["ms_to_idx"].copy())
    shifted["ms_to_idx"][50] += 1  # still non-decreasing, but no longer the first event of millisecond 50
    broken = tmp_path / "shifted.h5"
    with h5py.File(broken, "w") as handle:
        for key, value in shifted.items():
            handle.create_dataset(key, data=value)
    with (
        event_files.EventSlicer(broken) as slicer,
        pytest.raises(EventFileError, match=r"shifted.h5: ms_to_idx\[50\]"),
    ):
        slicer.verify(chunk=1000)
    unsorted = dict(data, **{"events/t": data["events/t"].copy()})
    unsorted["events/t"][2000] = unsorted["events/t"][1999] - 1  # decreasing exactly at a chunk boundary
    broken = tmp_path / "unsorted.h5"
    with h5py.File(broken, "w") as handle:
        for key, value in unsorted.items():
            handle.create_dataset(key, data=value)
    with event_files.EventSlicer(broken) as slicer:
        with pytest.raises(EventFileError, match=r"unsorted.h5: events/t is not sorted: event 2000 has t"):
            slicer.verify(chunk=1000)
        with pytest.raises(EventFileError, match="events/t is not sorted"):
            slicer.get_events_by_index(1990, 2010)  # every block read for a window is checked too

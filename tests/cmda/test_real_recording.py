"""The one real event recording end to end: a DSEC-layout sequence -> index files -> loader -> training.

`shared/data/real_events/evt3_sample.npy` holds 219,596 events of a Prophesee sensor (1280x720, ~54 ms).
It is written as a DSEC sequence at its own resolution (Blosc-ZSTD events.h5, identity rectify map,
frame timestamps every 10 ms inside the recording), with night frames and labels from the synthetic
generator at that resolution; then `index-dsec`, `cmda data check`, the loader and two training
iterations run on it, so a real sensor's timestamps, polarity balance and density pass the whole target
path, not only the voxel grid.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cmda.data import event_files, voxel

REAL_EVENTS_NAME = Path("shared/data/real_events/evt3_sample.npy")
REAL_EVENTS = next(
    (p / REAL_EVENTS_NAME for p in Path(__file__).resolve().parents if (p / REAL_EVENTS_NAME).is_file()), None
)
pytestmark = pytest.mark.skipif(
    REAL_EVENTS is None, reason=f"real recording {REAL_EVENTS_NAME} not found beside or above the checkout"
)
WIDTH, HEIGHT = 1280, 720
FRAME_PERIOD_US = 10_000
CLOCK_OFFSET_US = 50_000_000_000  # DSEC-like absolute clock


@pytest.fixture(scope="module")
def real_sequence(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray], np.ndarray]:
    """ROOT/<sequence> in the DSEC layout around the real events; returns (root, events, timestamps)."""
    from cmda.data.dsec import build_index_files
    from cmda.data.dsec_twin import DSEC_SEQUENCES, write_dsec

    raw = np.load(REAL_EVENTS)
    events = {
        "x": raw["x"].astype(np.uint16),
        "y": raw["y"].astype(np.uint16),
        "t": raw["t"].astype(np.int64) + CLOCK_OFFSET_US,
        "p": raw["p"].astype(np.uint8),
    }
    assert events["x"].max() < WIDTH and events["y"].max() < HEIGHT
    root = tmp_path_factory.mktemp("real_recording")
    frames = (int(events["t"][-1] - events["t"][0]) - 2_000) // FRAME_PERIOD_US + 1
    write_dsec(root, 0, (WIDTH, HEIGHT), frames, 6, 0.15, 0, sequences=1)  # frames + labels at 1280x720
    sequence = root / DSEC_SEQUENCES[0]
    event_files.write_dsec_events_h5(
        sequence / "events/left/events.h5", events["x"], events["y"], events["t"], events["p"]
    )
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    event_files.write_rectify_map_h5(sequence / "events/left/rectify_map.h5", np.stack([xs, ys], axis=-1))
    timestamps = events["t"][0] + 2_000 + FRAME_PERIOD_US * np.arange(frames, dtype=np.int64)
    (sequence / "images/timestamps.txt").write_text("".join(f"{t}\n" for t in timestamps))
    build_index_files(root)
    return root, events, timestamps


def test_real_recording_indexes_checks_and_loads(real_sequence):
    from cmda.data.check import check_tree
    from cmda.data.dsec import DSECNightDataset

    root, events, timestamps = real_sequence
    assert all(report.ok for report in check_tree(root)), [r.problems for r in check_tree(root)]
    test = DSECNightDataset(root, split="test", test_rows=HEIGHT, with_isr=False)
    train = DSECNightDataset(root, crop=(400, 400), resize=(512, 512), seed=0)
    assert len(test) >= 1 and len(train) >= 2
    sequence, frame = test.samples[0]
    # the window ends at the frame's timestamp and starts at the previous one's, by the original's rule
    start, end = timestamps[frame - 1], timestamps[frame]
    inside = (events["t"] > start) & (events["t"] <= end)
    first, last = test.event_window(sequence, frame)
    assert last - first == inside.sum() and inside.sum() > 20_000  # real density: ~4 M events/s
    window = slice(first, last + 1)
    grid = np.zeros((HEIGHT, WIDTH))
    np.add.at(grid, (events["y"][window], events["x"][window]), 2.0 * events["p"][window] - 1)
    expected = voxel.cmda_events_norm(torch.from_numpy(grid).float()[None], last + 1 - first)
    sample = test[0]
    assert sample["events"].shape == (3, HEIGHT, WIDTH) and sample["label"].shape == (HEIGHT, WIDTH)
    torch.testing.assert_close(sample["events"][:1], expected, atol=1e-5, rtol=1e-5)
    positive, negative = (sample["events"][0] > 0).float().mean(), (sample["events"][0] < 0).float().mean()
    assert 0.005 < positive < 0.2 and 0.005 < negative < 0.2  # both polarities, a sparse real frame
    for index in range(len(train)):
        crop = train[index]
        assert crop["events"].shape == (3, 512, 512) and crop["events"].abs().max() <= 1.0
        assert crop["isr"].shape == (3, 512, 512) and torch.isfinite(crop["image"]).all()


def test_two_training_iterations_on_the_real_recording(real_sequence, tiny_config):
    from cmda.train import run

    root, _, _ = real_sequence
    reports = []
    config = tiny_config(**{"data.target.root": str(root), "train.max_iters": 2, "train.eval_interval": 2})
    metrics = run(config, report=lambda m, d: reports.append(m))
    assert [m["iteration"] for m in reports] == [2]
    losses = {k: v for k, v in reports[0].items() if k.startswith("loss/")}
    assert "loss/src_events" in losses and "loss/mix_fusion" in losses
    assert all(math.isfinite(v) for v in losses.values())
    assert 0 <= metrics["acc"] <= 100 and math.isfinite(metrics["miou19"])

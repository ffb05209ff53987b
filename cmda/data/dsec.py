"""DSEC-Night target domain: the Dataset (warped night frames, event voxel grids), its builder, and the
split index builder (`cmda data index-dsec`).

Files and paths are cmda/data/dsec_layout.py's; the data check is cmda/data/dsec_check.py and the
synthetic twin's writer cmda/data/dsec_twin.py (the registry entry in cmda/data/targets.py points to all
three). docs/ARCHITECTURE.md ("cmda.data") has the contracts.

List files (written into the dataset root by `build_index_files`, paths relative to that root):
  night_dataset_warp.txt (train), night_test_dataset_warp.txt (test); line = "<seq>/images/left/rectified/
  NNNNNN.png <event index>". Rules of the original create_dsec_dataset_txt.py: a listed frame has
  number >= 2, a warp image and an event index > 0; test = the frames with a label file; train = every
  other frame outside the sequence's excluded range. The excluded ranges of the five DSEC-Night sequences
  are the original's fixed ones (`ORIGINAL_TRAIN_EXCLUSIONS`); any other sequence excludes frames up to
  its last label file (our rule, since the original defines no range for it). One rule of ours on top:
  a frame whose event window would start before the recording (`dsec_layout.event_window` refuses it) is
  dropped, because training would fail on it whenever it is drawn.

The sensor size is read from the rectify map, never assumed to be 640x480.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmda.data import event_files, voxel
from cmda.data.dsec_layout import (
    EVENTS_FILE,
    RECTIFY_MAP_FILE,
    TEST_LIST,
    TIMESTAMPS_FILE,
    TRAIN_LIST,
    check_map_matches_image,
    empty_dirs,
    event_window,
    index_path,
    label_path,
    labelled_frames,
    list_line,
    missing_parts,
    read_event_index,
    read_list_file,
    read_timestamps,
    sequence_dirs,
    warp_image_path,
)
from cmda.data.errors import DataError, reports_data_errors
from cmda.data.extractors import DSEC_ISR, ISRParams
from cmda.data.transforms import (
    AlignedAugment,
    AugmentParams,
    compute_isr,
    normalize_image,
    read_label,
    read_rgb,
    to_uint8,
)
from cmda.io import write_text_atomic

MIN_FRAME = 2
"""The original lists frames from number 2 on (`image_change_num=2`)."""
ORIGINAL_TRAIN_EXCLUSIONS: dict[str, tuple[int, int]] = {
    "zurich_city_09_a": (0, 797),
    "zurich_city_09_b": (0, 149),
    "zurich_city_09_c": (0, 581),
    "zurich_city_09_d": (0, 743),
    "zurich_city_09_e": (0, 365),
}
"""Frames (inclusive) kept out of the training list, from the original create_dsec_dataset_txt.py
(`labels_range`: 810 - 13, 162 - 13, 594 - 13, 756 - 13, 378 - 13)."""


def build_dataset(cfg: Any, split: str, seed: int | None, with_isr: bool) -> DSECNightDataset:
    """The registry's builder (`TargetSpec.dataset`): the train split cropped from the frame, then resized
    (the crop must fit the sensor, read from the rectify map); the test split whole frames, rows
    [:test_rows]."""
    from cmda.data.targets import check_crop_fits

    events = {"events_bins": cfg.events_bins, "window_frames": cfg.window_frames, "with_isr": with_isr}
    if split != "train":
        return DSECNightDataset(cfg.root, split, test_rows=cfg.test_rows, **events)
    dataset = DSECNightDataset(
        cfg.root, split, crop=tuple(cfg.crop), resize=tuple(cfg.resize), seed=seed, **events
    )
    height, width = dataset.rectify_map(dataset.samples[0][0]).shape[:2]
    check_crop_fits(
        cfg.crop, (width, height), f"DSEC-Night frames of {cfg.root}",
        "the crop is taken from the frame before it is resized to data.target.resize, so use a "
        f"data.target.crop of at most [{width}, {height}] (the original: [400, 400])",
    )  # fmt: skip
    return dataset


class IncompleteSequenceError(DataError):
    """A DSEC sequence folder that lacks a file or folder the loaders need."""


def excluded_from_training(sequence_name: str, labelled: list[int]) -> tuple[int, int]:
    """The inclusive frame range kept out of the training list: the original's for its five sequences,
    else 0 .. the last labelled frame (-1 when there is no label: every frame may train)."""
    return ORIGINAL_TRAIN_EXCLUSIONS.get(sequence_name, (0, max(labelled, default=-1)))


@dataclass
class IndexSummary:
    """What `build_index_files` wrote, skipped and dropped (the command prints it)."""

    train: Path
    test: Path
    train_count: int = 0
    test_count: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    """sequence name -> why it was skipped (only with skip_incomplete)."""
    dropped: Counter = field(default_factory=Counter)
    """reason -> number of frames left out of both lists."""


def event_indices(sequence: Path, timestamps: np.ndarray) -> np.ndarray:
    """Per frame, the index of the last event at or before its timestamp (-1 outside the recording).

    The whole events/t is verified first (sorted, ms_to_idx consistent): a binary search over unsorted
    times would silently give wrong windows.
    """
    with event_files.EventSlicer(sequence / EVENTS_FILE) as slicer:
        slicer.verify()
        return np.array([slicer.last_event_index_at_or_before(int(t)) for t in timestamps], dtype=np.int64)


def build_index_files(
    root: str | Path, out_dir: str | Path | None = None, skip_incomplete: bool = False
) -> IndexSummary:
    """Write every sequence's images_to_events_index.txt and the train/test list files (rules: module doc).

    A sequence without its event file, rectify map, timestamps or warp images is an error naming what is
    missing (the test split would silently shrink otherwise), unless `skip_incomplete`, which leaves it
    out and records why in the summary.
    """
    root = Path(root)
    out_dir = root if out_dir is None else Path(out_dir)
    summary = IndexSummary(out_dir / TRAIN_LIST, out_dir / TEST_LIST)
    sequences = []
    incomplete = {}
    for sequence in sequence_dirs(root):
        missing = missing_parts(sequence)
        if missing:
            incomplete[sequence.name] = "missing " + ", ".join(missing)
        else:
            sequences.append(sequence)
    for folder in empty_dirs(root):
        incomplete[folder.name] = "an empty folder (no events/, images/, warp_images/): not copied?"
    if incomplete and not skip_incomplete:
        details = "; ".join(f"{root / name}: {why}" for name, why in incomplete.items())
        raise IncompleteSequenceError(
            f"{details} (pass --skip-incomplete to index the complete sequences only; the test split then "
            "differs from the full DSEC-Night one)"
        )
    summary.skipped = incomplete
    if not sequences:
        raise IncompleteSequenceError(f"{root}: no complete sequence to index")
    train_lines: list[str] = []
    test_lines: list[str] = []
    for sequence in sequences:
        timestamps = read_timestamps(sequence / TIMESTAMPS_FILE)
        index = event_indices(sequence, timestamps)
        write_text_atomic(index_path(sequence), "".join(f"{i}\n" for i in index))
        labelled = set(labelled_frames(sequence))
        first_excluded, last_excluded = excluded_from_training(sequence.name, sorted(labelled))
        for frame, event_index in enumerate(index):
            if frame < MIN_FRAME or event_index <= 0:
                continue
            try:
                event_window(index, frame, 1, index_path(sequence))
            except DataError:
                summary.dropped["event window starts before the recording"] += 1
                continue
            if not warp_image_path(sequence, frame).is_file():
                summary.dropped["no warp image"] += 1
                continue
            line = list_line(sequence.name, frame, int(event_index))
            if frame in labelled:
                test_lines.append(line)
            if not first_excluded <= frame <= last_excluded:  # as the original: labels do not matter here
                train_lines.append(line)
    write_text_atomic(summary.train, "".join(f"{line}\n" for line in train_lines))
    write_text_atomic(summary.test, "".join(f"{line}\n" for line in test_lines))
    summary.train_count, summary.test_count = len(train_lines), len(test_lines)
    return summary


class DSECNightDataset(torch.utils.data.Dataset):
    """Target samples: image, events [C,H,W], isr, isr_direction (+ label for split="test").

    Train: random `crop` (W,H) box + flip shared by image/events/ISR, then resize to `resize`; ISR of the
    augmented image with direction 2 * (x % 2) + (y % 2). Test: full frame rows [:test_rows].
    Events: voxel grid of events idx[n - window_frames] .. idx[n] (inclusive), rectified, CMDA-normalised;
    one bin is repeated to 3 channels. h5 files are opened lazily, once per process.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        index_file: str | Path | None = None,
        crop: tuple[int, int] = (400, 400),
        resize: tuple[int, int] = (512, 512),
        events_bins: int = 1,
        window_frames: int = 1,
        test_rows: int = 440,
        isr_params: ISRParams = DSEC_ISR,
        with_isr: bool = True,
        seed: int | None = None,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"DSEC split must be 'train' or 'test', got {split!r}")
        if events_bins < 1 or window_frames < 1:
            raise ValueError(
                f"events_bins and window_frames must be >= 1, got {events_bins}, {window_frames}"
            )
        self.root = Path(root)
        self.split = split
        self.events_bins = events_bins
        self.window_frames = window_frames
        self.test_rows = test_rows
        self.isr_params = isr_params
        self.with_isr = with_isr
        self.seed = seed
        default_list = TRAIN_LIST if split == "train" else TEST_LIST
        self.list_path = Path(index_file) if index_file is not None else self.root / default_list
        self.samples = [(entry.sequence, entry.frame) for entry in read_list_file(self.list_path, self.root)]
        self.augment = AlignedAugment(tuple(crop), flip_prob=0.5, resize_wh=tuple(resize))
        self._event_index = {  # one read per sequence, not per sample
            seq: read_event_index(index_path(seq)) for seq in dict.fromkeys(seq for seq, _ in self.samples)
        }
        for sequence, frame in self.samples:  # a stale list or index file fails here, not when drawn
            self.event_window(sequence, frame)
        voxel.warm_up_voxel_kernel()
        self.empty_windows = 0
        self._warned_empty = False
        self._pid = -1
        self._slicers: dict[Path, event_files.EventSlicer] = {}
        self._rectify_maps: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_slicers"], state["_rectify_maps"], state["_pid"] = {}, {}, -1
        return state

    def __del__(self) -> None:
        for slicer in getattr(self, "_slicers", {}).values():
            try:
                slicer.close()
            except Exception:  # noqa: BLE001 - closing at interpreter shutdown must not raise
                pass

    # -- per-process cached readers ------------------------------------------------------------------
    def _check_process(self) -> None:
        if self._pid != os.getpid():  # after a fork the parent's h5 handles must not be reused
            self._slicers, self._rectify_maps, self._pid = {}, {}, os.getpid()

    def _slicer(self, sequence: Path) -> event_files.EventSlicer:
        self._check_process()
        if sequence not in self._slicers:
            self._slicers[sequence] = event_files.EventSlicer(sequence / EVENTS_FILE)
        return self._slicers[sequence]

    def rectify_map(self, sequence: Path) -> np.ndarray:
        """float32 [H, W, 2] raw -> rectified coordinates (cached per process)."""
        self._check_process()
        if sequence not in self._rectify_maps:
            self._rectify_maps[sequence] = event_files.load_rectify_map(self._map_path(sequence))
        return self._rectify_maps[sequence]

    @staticmethod
    def _map_path(sequence: Path) -> Path:
        return sequence / RECTIFY_MAP_FILE

    # -- loading ---------------------------------------------------------------------------------------
    def event_window(self, sequence: Path, frame: int) -> tuple[int, int]:
        """Inclusive event index range of the window ending at `frame` (`dsec_layout.event_window`)."""
        return event_window(
            self._event_index[sequence], frame, self.window_frames, index_path(sequence), self.list_path
        )

    def voxel_grid(self, sequence: Path, frame: int) -> torch.Tensor:
        """Rectified, CMDA-normalised event grid [bins, H, W] at sensor resolution."""
        rect_map = self.rectify_map(sequence)
        height, width = rect_map.shape[0], rect_map.shape[1]
        first, last = self.event_window(sequence, frame)
        events = self._slicer(sequence).get_events_by_index(first, last + 1)
        num_events = len(events["t"])
        if num_events == 0:
            self.empty_windows += 1
            if not self._warned_empty:
                warnings.warn(
                    f"{sequence.name} frame {frame}: no events in the window; using a zero event grid "
                    "(counted in dataset.empty_windows)",
                    stacklevel=2,
                )
                self._warned_empty = True
            return torch.zeros(self.events_bins, height, width)
        map_path, events_path = self._map_path(sequence), self._slicer(sequence).path
        event_files.check_events_fit_map(events["x"], events["y"], rect_map, events_path, map_path)
        grid = voxel.events_to_voxel_grid(
            events["x"], events["y"], events["t"], events["p"], self.events_bins, height, width,
            rectify_map=rect_map,
        )  # fmt: skip
        return torch.as_tensor(voxel.cmda_events_norm(grid, num_events)).float()

    def load(self, index: int) -> dict[str, torch.Tensor]:
        """Full-frame tensors: image (0..255), events grid, label (test split only)."""
        sequence, frame = self.samples[index]
        image_path = warp_image_path(sequence, frame)
        image = read_rgb(image_path)
        check_map_matches_image(
            self.rectify_map(sequence), self._map_path(sequence), image_path, image.shape[-2:]
        )
        grid = self.voxel_grid(sequence, frame)
        out = {"image": image, "events": grid}
        if self.split == "test":
            out["label"] = read_label(label_path(sequence, frame), expected_hw=tuple(image.shape[-2:]))
        return out

    @reports_data_errors
    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng(None if self.seed is None else [self.seed, index])
        return self.get_sample(index, rng)

    def get_sample(self, index: int, rng: np.random.Generator) -> dict:
        tensors = self.load(index)
        height, width = tensors["image"].shape[-2:]
        if self.split == "train":
            params = self.augment.draw(rng, height, width)
            tensors = self.augment.apply(tensors, params)
        else:
            rows = min(self.test_rows, height)
            params = AugmentParams(0, 0, rows, width, False)
            tensors = {key: value[..., :rows, :].contiguous() for key, value in tensors.items()}
        return self._finish(tensors, params, index)

    def _finish(self, tensors: dict[str, torch.Tensor], params: AugmentParams, index: int) -> dict:
        sequence, frame = self.samples[index]
        image_uint8 = to_uint8(tensors["image"])
        events = tensors["events"]
        if self.events_bins == 1:
            events = events.expand(3, -1, -1).contiguous()
        direction = 2 * (params.left % 2) + (params.top % 2)
        sample = {
            "image": normalize_image(image_uint8.float()),
            "events": events.float(),
            "isr_direction": torch.tensor(direction, dtype=torch.int64),
            "name": f"{sequence.name}/{frame:06d}",
        }
        if self.with_isr:
            sample["isr"] = compute_isr(image_uint8, self.isr_params, direction)
        if "label" in tensors:
            sample["label"] = tensors["label"].long()
        return sample

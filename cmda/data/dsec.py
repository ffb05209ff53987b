"""DSEC-Night target domain: warped night frames, event voxel grids and ISR, plus the split index builder.

Layout per sequence (zurich_city_09_{a..e}):
  events/left/events.h5, events/left/rectify_map.h5
  images/left/rectified/NNNNNN.png, images/timestamps.txt (absolute µs), images/images_to_events_index.txt
  labels/<seq>_NNNNNN_grey_gtFine_labelTrainIds.png (test frames), warp_images/NNNNNN.png

List files (written into the dataset root by `build_index_files`, paths relative to that root):
  night_dataset_warp.txt (train), night_test_dataset_warp.txt (test); line = "<seq>/images/left/rectified/
  NNNNNN.png <event index>". Rules of the original create_dsec_dataset_txt.py: a listed frame has
  number >= 2, a warp image and an event index > 0; test = the frames with a label file; train = every
  other frame outside the sequence's excluded range. The excluded ranges of the five DSEC-Night sequences
  are the original's fixed ones (`ORIGINAL_TRAIN_EXCLUSIONS`); any other sequence excludes frames up to
  its last label file (our rule, since the original defines no range for it). One rule of ours on top:
  a frame whose event window would start before the recording (the previous frame's index is -1) is
  dropped, because training would fail on it whenever it is drawn.

The sensor size is read from the rectify map, never assumed to be 640x480.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cmda.data import events as ev
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

TRAIN_LIST = "night_dataset_warp.txt"
TEST_LIST = "night_test_dataset_warp.txt"
INDEX_FILE = "images_to_events_index.txt"
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
SEQUENCE_PARTS = {
    "events file": Path("events/left/events.h5"),
    "rectify map": Path("events/left/rectify_map.h5"),
    "image timestamps": Path("images/timestamps.txt"),
}
_LABEL_RE = re.compile(r"_(\d{6})_grey_gtFine_labelTrainIds\.png$")


class IncompleteSequenceError(DataError):
    """A DSEC sequence folder that lacks a file or folder the loaders need."""


def sequence_dirs(root: Path) -> list[Path]:
    """Sequence folders of a DSEC-Night root: sub-folders holding any of events/, images/, warp_images/."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: DSEC root folder not found")
    found = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and any((p / d).is_dir() for d in ("events", "images", "warp_images"))
    )
    if not found:
        raise DataError(
            f"{root}: no sequence folders (<sequence>/events/left/events.h5, ...) found; is this a DSEC root?"
        )
    return found


def missing_parts(sequence: Path) -> list[str]:
    """What of a sequence is missing: the event file, rectify map, timestamps, or all warp images."""
    missing = [f"{rel} ({what})" for what, rel in SEQUENCE_PARTS.items() if not (sequence / rel).is_file()]
    warp = sequence / "warp_images"
    if not warp.is_dir():
        missing.append("warp_images/ (the folder is missing)")
    elif next(warp.glob("*.png"), None) is None:
        missing.append("warp_images/ (the folder holds no PNG)")
    return missing


def read_timestamps(path: Path) -> np.ndarray:
    """images/timestamps.txt -> int64 absolute µs, one per frame, strictly increasing."""
    if not path.is_file():
        raise DataError(f"{path}: image timestamps file not found")
    try:
        values = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as error:
        raise DataError(f"{path}: expected one integer µs timestamp per line ({error})") from error
    drops = np.nonzero(np.diff(values) <= 0)[0]
    if len(drops):
        line = int(drops[0]) + 2
        raise DataError(
            f"{path}: timestamps must increase; line {line} ({values[line - 1]}) is not after line "
            f"{line - 1} ({values[line - 2]})"
        )
    return values


def read_event_index(path: Path) -> np.ndarray:
    """images/images_to_events_index.txt -> int64 per frame (-1 = frame outside the event recording)."""
    if not path.is_file():
        raise DataError(f"{path}: event index file not found; run `cmda data index-dsec ROOT`")
    try:
        return np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as error:
        raise DataError(f"{path}: expected one integer event index per line ({error})") from error


def labelled_frames(sequence: Path) -> list[int]:
    """Frame numbers that have a label file in <seq>/labels."""
    label_dir = sequence / "labels"
    if not label_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in label_dir.iterdir() if (m := _LABEL_RE.search(p.name)))


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
    with ev.EventSlicer(sequence / SEQUENCE_PARTS["events file"]) as slicer:
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
        timestamps = read_timestamps(sequence / SEQUENCE_PARTS["image timestamps"])
        index = event_indices(sequence, timestamps)
        write_text_atomic(sequence / "images" / INDEX_FILE, "".join(f"{i}\n" for i in index))
        labelled = set(labelled_frames(sequence))
        first_excluded, last_excluded = excluded_from_training(sequence.name, sorted(labelled))
        for frame, event_index in enumerate(index):
            if frame < MIN_FRAME or event_index <= 0:
                continue
            if index[frame - 1] < 0:
                summary.dropped["event window starts before the recording"] += 1
                continue
            if not (sequence / "warp_images" / f"{frame:06d}.png").is_file():
                summary.dropped["no warp image"] += 1
                continue
            line = f"{sequence.name}/images/left/rectified/{frame:06d}.png {event_index}"
            if frame in labelled:
                test_lines.append(line)
            if not first_excluded <= frame <= last_excluded:  # as the original: labels do not matter here
                train_lines.append(line)
    write_text_atomic(summary.train, "".join(f"{line}\n" for line in train_lines))
    write_text_atomic(summary.test, "".join(f"{line}\n" for line in test_lines))
    summary.train_count, summary.test_count = len(train_lines), len(test_lines)
    return summary


def read_list_file(path: Path, root: Path) -> list[tuple[Path, int]]:
    """List file -> (sequence folder, frame number) per line; paths relative to `root`."""
    if not path.is_file():
        raise DataError(f"{path}: DSEC list file not found; run `cmda data index-dsec {root}`")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        rel = Path(line.split()[0])
        parts = rel.parts
        if len(parts) < 5 or parts[-4:-1] != ("images", "left", "rectified") or not rel.stem.isdigit():
            raise DataError(
                f"{path}:{number}: expected '<seq>/images/left/rectified/NNNNNN.png [index]', got {line!r}"
            )
        entries.append((root / Path(*parts[:-4]), int(rel.stem)))
    if not entries:
        raise DataError(f"{path}: list file is empty")
    return entries


def check_map_matches_image(
    rectify_map: np.ndarray, map_path: Path, image_path: Path, image_hw: tuple[int, int]
) -> None:
    """The rectify map defines the event sensor grid; the warped frame must be on the same grid."""
    height, width = rectify_map.shape[:2]
    if (height, width) != tuple(image_hw):
        hint = " (is the map transposed? DSEC's is (H, W, 2))" if (width, height) == tuple(image_hw) else ""
        raise DataError(
            f"{map_path}: rectify_map has shape {rectify_map.shape} (H, W, 2), i.e. a {width}x{height} (WxH) "
            f"sensor, but {image_path} is {image_hw[1]}x{image_hw[0]}{hint}"
        )


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
        self.samples = read_list_file(self.list_path, self.root)
        self.augment = AlignedAugment(tuple(crop), flip_prob=0.5, resize_wh=tuple(resize))
        self._event_index = {  # one read per sequence, not per sample
            seq: read_event_index(seq / "images" / INDEX_FILE)
            for seq in dict.fromkeys(seq for seq, _ in self.samples)
        }
        for sequence, frame in self.samples:  # a stale list or index file fails here, not when drawn
            self.event_window(sequence, frame)
        ev.warm_up_voxel_kernel()
        self.empty_windows = 0
        self._warned_empty = False
        self._pid = -1
        self._slicers: dict[Path, ev.EventSlicer] = {}
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

    def _slicer(self, sequence: Path) -> ev.EventSlicer:
        self._check_process()
        if sequence not in self._slicers:
            self._slicers[sequence] = ev.EventSlicer(sequence / SEQUENCE_PARTS["events file"])
        return self._slicers[sequence]

    def rectify_map(self, sequence: Path) -> np.ndarray:
        """float32 [H, W, 2] raw -> rectified coordinates (cached per process)."""
        self._check_process()
        if sequence not in self._rectify_maps:
            self._rectify_maps[sequence] = ev.load_rectify_map(self._map_path(sequence))
        return self._rectify_maps[sequence]

    @staticmethod
    def _map_path(sequence: Path) -> Path:
        return sequence / SEQUENCE_PARTS["rectify map"]

    # -- loading ---------------------------------------------------------------------------------------
    def event_window(self, sequence: Path, frame: int) -> tuple[int, int]:
        """Inclusive event index range of the window ending at `frame`; errors name the index file."""
        index = self._event_index[sequence]
        path = sequence / "images" / INDEX_FILE
        start_frame = frame - self.window_frames
        if start_frame < 0 or frame >= len(index):
            raise DataError(
                f"{path}: frame {frame} (listed in {self.list_path}) needs lines "
                f"{start_frame + 1}..{frame + 1} for a {self.window_frames}-frame event window, the file "
                f"has {len(index)} lines"
            )
        first, last = int(index[start_frame]), int(index[frame])
        if first < 0 or last < 0:
            raise DataError(
                f"{path}: frame {frame} (listed in {self.list_path}) has an event window starting at frame "
                f"{start_frame}, whose event index is {first} (-1: its timestamp lies outside the event "
                "recording); re-run `cmda data index-dsec`, which leaves such frames out"
            )
        if last < first:
            raise DataError(
                f"{path}: event indices decrease from frame {start_frame} ({first}) to frame {frame} "
                f"({last}); re-run `cmda data index-dsec`"
            )
        return first, last

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
        events_path = self._slicer(sequence).path
        ev.check_events_fit_map(events["x"], events["y"], rect_map, events_path, self._map_path(sequence))
        grid = ev.events_to_voxel_grid(
            events["x"], events["y"], events["t"], events["p"], self.events_bins, height, width,
            rectify_map=rect_map,
        )  # fmt: skip
        return torch.as_tensor(ev.cmda_events_norm(grid, num_events)).float()

    def load(self, index: int) -> dict[str, torch.Tensor]:
        """Full-frame tensors: image (0..255), events grid, label (test split only)."""
        sequence, frame = self.samples[index]
        image_path = sequence / "warp_images" / f"{frame:06d}.png"
        image = read_rgb(image_path)
        check_map_matches_image(
            self.rectify_map(sequence), self._map_path(sequence), image_path, image.shape[-2:]
        )
        grid = self.voxel_grid(sequence, frame)
        out = {"image": image, "events": grid}
        if self.split == "test":
            label_path = sequence / "labels" / f"{sequence.name}_{frame:06d}_grey_gtFine_labelTrainIds.png"
            out["label"] = read_label(label_path, expected_hw=tuple(image.shape[-2:]))
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

"""DSEC-Night target domain: warped night frames, event voxel grids and ISR, plus the split index builder.

Layout per sequence (zurich_city_09_{a..e}):
  events/left/events.h5, events/left/rectify_map.h5
  images/left/rectified/NNNNNN.png, images/timestamps.txt (absolute µs), images/images_to_events_index.txt
  labels/<seq>_NNNNNN_grey_gtFine_labelTrainIds.png (test frames), warp_images/NNNNNN.png

List files (written into the dataset root by `build_index_files`, paths relative to that root):
  night_dataset_warp.txt (train), night_test_dataset_warp.txt (test); line = "<seq>/images/left/rectified/
  NNNNNN.png <event index>". Train = frames after the labelled range, test = labelled frames; both need
  frame >= 2, an existing warp image and an event index > 0 (the original create_dsec_dataset_txt.py rules).

The sensor size is read from the rectify map, never assumed to be 640x480.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from cmda.data import events as ev
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

TRAIN_LIST = "night_dataset_warp.txt"
TEST_LIST = "night_test_dataset_warp.txt"
INDEX_FILE = "images_to_events_index.txt"
_LABEL_RE = re.compile(r"_(\d{6})_grey_gtFine_labelTrainIds\.png$")


def sequence_dirs(root: Path) -> list[Path]:
    """Sequence folders of a DSEC-Night root (those holding events/left/events.h5)."""
    found = sorted(p for p in root.iterdir() if (p / "events" / "left" / "events.h5").is_file())
    if not found:
        raise FileNotFoundError(f"{root}: no <sequence>/events/left/events.h5 found (is this a DSEC root?)")
    return found


def read_timestamps(path: Path) -> np.ndarray:
    """images/timestamps.txt -> int64 absolute µs, one per frame."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image timestamps file not found")
    try:
        values = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as error:
        raise ValueError(f"{path}: expected one integer µs timestamp per line ({error})") from error
    return values


def read_event_index(path: Path) -> np.ndarray:
    """images/images_to_events_index.txt -> int64 per frame (-1 = frame outside the event recording)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: event index file not found; run `cmda data index-dsec ROOT`")
    try:
        return np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as error:
        raise ValueError(f"{path}: expected one integer event index per line ({error})") from error


def labelled_frames(sequence: Path) -> list[int]:
    """Frame numbers that have a label file in <seq>/labels."""
    label_dir = sequence / "labels"
    if not label_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in label_dir.iterdir() if (m := _LABEL_RE.search(p.name)))


def _write_text_atomic(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".txt")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(f"{line}\n" for line in lines))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_index_files(root: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write every sequence's images_to_events_index.txt and the train/test list files; return the lists.

    The labelled range of a sequence is [0, last labelled frame]; train uses the frames after it, so the
    real boundaries (09_a > 797, ...) follow from the label files present.
    """
    root = Path(root)
    out_dir = root if out_dir is None else Path(out_dir)
    train_lines: list[str] = []
    test_lines: list[str] = []
    for sequence in sequence_dirs(root):
        timestamps = read_timestamps(sequence / "images" / "timestamps.txt")
        with ev.EventSlicer(sequence / "events" / "left" / "events.h5") as slicer:
            index = [slicer.last_event_index_at_or_before(int(t)) for t in timestamps]
        _write_text_atomic(sequence / "images" / INDEX_FILE, [str(i) for i in index])
        labelled = set(labelled_frames(sequence))
        last_labelled = max(labelled, default=-1)
        for frame, event_index in enumerate(index):
            if frame < 2 or event_index <= 0 or not (sequence / "warp_images" / f"{frame:06d}.png").is_file():
                continue
            line = f"{sequence.name}/images/left/rectified/{frame:06d}.png {event_index}"
            if frame in labelled:
                test_lines.append(line)
            elif frame > last_labelled:
                train_lines.append(line)
    train_path, test_path = out_dir / TRAIN_LIST, out_dir / TEST_LIST
    _write_text_atomic(train_path, train_lines)
    _write_text_atomic(test_path, test_lines)
    return train_path, test_path


def read_list_file(path: Path, root: Path) -> list[tuple[Path, int]]:
    """List file -> (sequence folder, frame number) per line; paths relative to `root`."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: DSEC list file not found; run `cmda data index-dsec {root}`")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        rel = Path(line.split()[0])
        parts = rel.parts
        if len(parts) < 5 or parts[-4:-1] != ("images", "left", "rectified") or not rel.stem.isdigit():
            raise ValueError(
                f"{path}:{number}: expected '<seq>/images/left/rectified/NNNNNN.png [index]', got {line!r}"
            )
        entries.append((root / Path(*parts[:-4]), int(rel.stem)))
    if not entries:
        raise ValueError(f"{path}: list file is empty")
    return entries


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
        self._event_index = {seq: read_event_index(seq / "images" / INDEX_FILE) for seq, _ in self.samples}
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
            self._slicers[sequence] = ev.EventSlicer(sequence / "events" / "left" / "events.h5")
        return self._slicers[sequence]

    def rectify_map(self, sequence: Path) -> np.ndarray:
        """float32 [H, W, 2] raw -> rectified coordinates (cached per process)."""
        self._check_process()
        if sequence not in self._rectify_maps:
            path = sequence / "events" / "left" / "rectify_map.h5"
            self._rectify_maps[sequence] = ev.load_rectify_map(path)
        return self._rectify_maps[sequence]

    # -- loading ---------------------------------------------------------------------------------------
    def event_window(self, sequence: Path, frame: int) -> tuple[int, int]:
        """Inclusive event index range of the window ending at `frame`; errors name the index file."""
        index = self._event_index[sequence]
        path = sequence / "images" / INDEX_FILE
        start_frame = frame - self.window_frames
        if start_frame < 0 or frame >= len(index):
            raise ValueError(
                f"{path}: frame {frame} needs lines {start_frame}..{frame}, the file has {len(index)} lines"
            )
        first, last = int(index[start_frame]), int(index[frame])
        if first < 0 or last < 0:
            raise ValueError(
                f"{path}: frame {frame} (or frame {start_frame}) has event index -1, i.e. its timestamp lies "
                "outside the event recording; remove it from the list file"
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
        x_rect, y_rect = ev.rectify_events(events["x"], events["y"], rect_map)
        grid = ev.events_to_voxel_grid(
            x_rect, y_rect, events["t"], events["p"], self.events_bins, height, width, normalize=False
        )
        return torch.as_tensor(ev.cmda_events_norm(grid, num_events)).float()

    def load(self, index: int) -> dict[str, torch.Tensor]:
        """Full-frame tensors: image (0..255), events grid, label (test split only)."""
        sequence, frame = self.samples[index]
        image_path = sequence / "warp_images" / f"{frame:06d}.png"
        image = read_rgb(image_path)
        grid = self.voxel_grid(sequence, frame)
        if grid.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"{image_path}: image size {image.shape[-1]}x{image.shape[-2]} (WxH) differs from the event "
                f"sensor size {grid.shape[-1]}x{grid.shape[-2]} of {sequence}/events/left/rectify_map.h5"
            )
        out = {"image": image, "events": grid}
        if self.split == "test":
            label_path = sequence / "labels" / f"{sequence.name}_{frame:06d}_grey_gtFine_labelTrainIds.png"
            out["label"] = read_label(label_path, expected_hw=tuple(image.shape[-2:]))
        return out

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

"""DSEC-Night's files: where each one lives in a sequence, how the list and index files read, and which
event window a frame has.

The loader, the index builder (`cmda data index-dsec`), the data check, the synthetic twin's writer and
`cmda data warp-dsec` all read or write these files, so every path and every rule about them is written
here once. No torch: the warp's worker processes and the check import it cheaply. The rules of the
list files are in cmda/data/dsec.py's docstring; docs/ARCHITECTURE.md ("cmda.data") has the contracts.

Layout per sequence (zurich_city_09_{a..e} in DSEC-Night):
  events/left/events.h5, events/left/rectify_map.h5
  images/left/rectified/NNNNNN.png, images/timestamps.txt (absolute µs), images/images_to_events_index.txt
  labels/<seq>_NNNNNN_grey_gtFine_labelTrainIds.png (test frames), warp_images/NNNNNN.png
  calibration/cam_to_cam.yaml, disparity/event/NNNNNN.png (what warp-dsec reads)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cmda.data.errors import DataError

TRAIN_LIST = "night_dataset_warp.txt"
TEST_LIST = "night_test_dataset_warp.txt"
INDEX_FILE = "images_to_events_index.txt"
EVENTS_FILE = Path("events/left/events.h5")
RECTIFY_MAP_FILE = Path("events/left/rectify_map.h5")
TIMESTAMPS_FILE = Path("images/timestamps.txt")
FRAME_IMAGE_DIR = Path("images/left/rectified")
"""The left frame camera's rectified images: what the list files name, and what warp-dsec warps."""
WARP_IMAGE_DIR = Path("warp_images")
"""Frame images warped into the event camera: what the loader reads as the night image."""
LABEL_DIR = Path("labels")
DISPARITY_DIR = Path("disparity/event")
CALIBRATION_FILE = Path("calibration/cam_to_cam.yaml")
SEQUENCE_PARTS = {
    "events file": EVENTS_FILE,
    "rectify map": RECTIFY_MAP_FILE,
    "image timestamps": TIMESTAMPS_FILE,
}
"""The files every sequence needs (besides its warp images)."""
_LABEL_SUFFIX = "_grey_gtFine_labelTrainIds.png"
_LABEL_RE = re.compile(rf"_(\d{{6}}){re.escape(_LABEL_SUFFIX)}$")
_FRAME_NAME = re.compile(r"^\d{6}\.png$")


def frame_name(frame: int) -> str:
    """NNNNNN.png: every per-frame file of a sequence is named by its frame number."""
    return f"{frame:06d}.png"


def is_frame_name(name: str) -> bool:
    return bool(_FRAME_NAME.match(name))


def warp_image_path(sequence: Path, frame: int) -> Path:
    return sequence / WARP_IMAGE_DIR / frame_name(frame)


def frame_image_path(sequence: Path, frame: int) -> Path:
    return sequence / FRAME_IMAGE_DIR / frame_name(frame)


def disparity_path(sequence: Path, frame: int) -> Path:
    return sequence / DISPARITY_DIR / frame_name(frame)


def label_path(sequence: Path, frame: int) -> Path:
    return sequence / LABEL_DIR / f"{sequence.name}_{frame:06d}{_LABEL_SUFFIX}"


def index_path(sequence: Path) -> Path:
    return sequence / "images" / INDEX_FILE


def list_line(sequence_name: str, frame: int, event_index: int) -> str:
    """One line of a list file (paths relative to the dataset root), as the original writes it."""
    return f"{sequence_name}/{FRAME_IMAGE_DIR.as_posix()}/{frame_name(frame)} {event_index}"


class ListEntry(NamedTuple):
    sequence: Path
    frame: int
    event_index: int | None
    """The list file's second column (None when a line has none)."""


def read_list_file(path: Path, root: Path) -> list[ListEntry]:
    """A list file -> one entry per line; paths relative to `root`."""
    if not path.is_file():
        raise DataError(f"{path}: DSEC list file not found; run `cmda data index-dsec {root}`")
    entries = []
    layout = f"<seq>/{FRAME_IMAGE_DIR.as_posix()}/NNNNNN.png <event index>"
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        rel = Path(parts[0])
        image_dir = tuple(FRAME_IMAGE_DIR.parts)
        if (
            len(rel.parts) < len(image_dir) + 2
            or rel.parts[-len(image_dir) - 1 : -1] != image_dir
            or not rel.stem.isdigit()
            or len(parts) > 2
            or (len(parts) == 2 and not parts[1].lstrip("-").isdigit())
        ):
            raise DataError(f"{path}:{number}: expected '{layout}', got {line!r}")
        sequence = root / Path(*rel.parts[: -len(image_dir) - 1])
        entries.append(ListEntry(sequence, int(rel.stem), int(parts[1]) if len(parts) == 2 else None))
    if not entries:
        raise DataError(f"{path}: list file is empty")
    return entries


def sequence_dirs(root: Path) -> list[Path]:
    """Sequence folders of a DSEC-Night root: sub-folders holding any of events/, images/, warp_images/."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: DSEC root folder not found")
    found = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and any((p / d).is_dir() for d in ("events", "images", WARP_IMAGE_DIR))
    )
    if not found:
        raise DataError(
            f"{root}: no sequence folders (<sequence>/{EVENTS_FILE}, ...) found; is this a DSEC root?"
        )
    return found


def empty_dirs(root: Path) -> list[Path]:
    """Sub-folders of a DSEC root that hold nothing at all: a sequence whose copy failed or was emptied, which
    `sequence_dirs` cannot recognise (no events/, images/ or warp_images/) and would leave out unnoticed."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and not any(p.iterdir()))


def looks_like_dsec(folder: Path) -> bool:
    """A DSEC root: some sub-folder holds events/ (what `cmda data check` recognises)."""
    return any((child / "events").is_dir() for child in folder.iterdir() if child.is_dir())


def missing_parts(sequence: Path) -> list[str]:
    """What of a sequence is missing: the event file, rectify map, timestamps, or all warp images."""
    missing = [f"{rel} ({what})" for what, rel in SEQUENCE_PARTS.items() if not (sequence / rel).is_file()]
    warp = sequence / WARP_IMAGE_DIR
    if not warp.is_dir():
        missing.append(f"{WARP_IMAGE_DIR}/ (the folder is missing)")
    elif next(warp.glob("*.png"), None) is None:
        missing.append(f"{WARP_IMAGE_DIR}/ (the folder holds no PNG)")
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
    label_dir = sequence / LABEL_DIR
    if not label_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in label_dir.iterdir() if (m := _LABEL_RE.search(p.name)))


def event_window(
    index: np.ndarray, frame: int, window_frames: int, path: Path, listed_in: Path | None = None
) -> tuple[int, int]:
    """Inclusive event-index range [first, last] of the window that ends at `frame`: from the last event at
    or before the timestamp of frame - window_frames to the last one at or before the frame's (the
    original's rule). `index` is the sequence's index file (`path`); an index of 0 is an event like any
    other, -1 (a timestamp outside the recording) makes the window invalid. Errors name the file."""
    where = f"frame {frame}" + (f" (listed in {listed_in})" if listed_in is not None else "")
    start = frame - window_frames
    if start < 0 or frame >= len(index):
        raise DataError(
            f"{path}: {where} needs lines {start + 1}..{frame + 1} for a {window_frames}-frame event "
            f"window, the file has {len(index)} lines"
        )
    first, last = int(index[start]), int(index[frame])
    if first < 0 or last < 0:
        raise DataError(
            f"{path}: {where} has an event window from line {start + 1} (frame {start}, event index {first}) "
            f"to line {frame + 1} (frame {frame}, {last}); -1 means a timestamp outside the event recording; "
            "re-run `cmda data index-dsec`, which leaves such frames out"
        )
    if last < first:
        raise DataError(
            f"{path}: event indices decrease from frame {start} ({first}) to frame {frame} ({last}); re-run "
            "`cmda data index-dsec`"
        )
    return first, last


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

"""The data check of a DSEC-Night tree (`cmda data check`, and its fast form before every training).

What the DSEC loader and the index builder rely on, file by file: sequences complete, event files and
rectify maps consistent, the index and list files in agreement with each other and with the events, every
listed frame's event window valid (the one rule, `dsec_layout.event_window`), warp images on the sensor
grid, test labels valid. Fast vs thorough is cmda/data/check.py's docstring; docs/ARCHITECTURE.md
("cmda.data") has the contracts.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cmda.data import dsec_layout as layout
from cmda.data import event_files
from cmda.data.check_report import CheckReport, Settings, check_decodes, check_label
from cmda.data.errors import DataError
from cmda.data.transforms import read_image_header


def check(
    root: str | Path, thorough: bool = True, decode_images: bool = False, settings: Settings = None
) -> CheckReport:
    """Sequences complete, event files and rectify maps consistent, index and list files in agreement,
    warp images on the sensor grid, test labels valid (see the module doc for fast vs thorough).
    `settings`: the `data.target` section (its `window_frames`, default 1)."""
    window_frames = int((settings or {}).get("window_frames", 1))
    with CheckReport.timed("dsec_night", root, thorough) as report:
        _check_tree(report, Path(root), thorough, decode_images, window_frames)
    return report


def _check_tree(
    report: CheckReport, root: Path, thorough: bool, decode_images: bool, window_frames: int
) -> None:
    sequences = report.attempt("DSEC roots", layout.sequence_dirs, root) or []
    report.checked["sequences"] = len(sequences)
    listed: dict[str, dict[Path, dict[int, int]]] = {}
    for split, name in (("train", layout.TRAIN_LIST), ("test", layout.TEST_LIST)):
        listed[split] = {}
        entries = report.attempt("list files", _read_list_with_index, root / name, root)
        for sequence, frame, index in entries or []:
            listed[split].setdefault(sequence, {})[frame] = index
    if sequences:
        for folder in layout.empty_dirs(root):
            report.add(f"{folder}: an empty folder in the DSEC root (a sequence not copied?); fill or remove")
    for sequence in sequences:
        missing = layout.missing_parts(sequence)
        if missing:
            report.add(f"{sequence}: missing " + ", ".join(missing))
            continue
        frames = {**listed["train"].get(sequence, {}), **listed["test"].get(sequence, {})}
        labelled = set(listed["test"].get(sequence, {}))
        _check_sequence(report, sequence, frames, labelled, window_frames, thorough, decode_images)
    for split in listed.values():
        for sequence in split:
            if sequence not in sequences:
                report.add(f"{sequence}: listed in the {root} list files but not a sequence folder")


def _read_list_with_index(path: Path, root: Path) -> list[layout.ListEntry]:
    """The entries of a list file, each of which must carry its event index column."""
    entries = layout.read_list_file(path, root)
    for entry in entries:
        if entry.event_index is None:
            image = layout.frame_image_path(entry.sequence, entry.frame)
            raise DataError(f"{path}: the line of {image} has no event index column")
    return entries


def _check_sequence(
    report: CheckReport,
    sequence: Path,
    frames: dict[int, int],
    labelled: set[int],
    window_frames: int,
    thorough: bool,
    decode_images: bool,
) -> None:
    events_path = sequence / layout.EVENTS_FILE
    map_path = sequence / layout.RECTIFY_MAP_FILE
    rect_map = report.attempt("rectify maps", event_files.load_rectify_map, map_path)
    timestamps = report.attempt("timestamp files", layout.read_timestamps, sequence / layout.TIMESTAMPS_FILE)
    index_path = layout.index_path(sequence)
    index = report.attempt("index files", layout.read_event_index, index_path)
    slicer = report.attempt("event files", event_files.EventSlicer, events_path)
    try:
        if slicer is not None and thorough:
            report.attempt("event files scanned", slicer.verify)
            if rect_map is not None:
                report.attempt("event pixel ranges", _check_pixel_range, slicer, rect_map, map_path)
        if timestamps is not None and index is not None and slicer is not None:
            _check_index(report, index, index_path, timestamps, slicer, frames, thorough)
        if index is not None:
            for frame in sorted(frames):
                report.attempt("event windows", layout.event_window, index, frame, window_frames, index_path)
        for frame in sorted(frames):
            image = layout.warp_image_path(sequence, frame)
            size = report.attempt("warp images", _check_warp_image, image, rect_map, map_path)
            if decode_images:
                report.attempt("decoded images", check_decodes, image)
            if frame in labelled:
                report.attempt("test labels", check_label, layout.label_path(sequence, frame), size, True)
    finally:
        if slicer is not None:
            slicer.close()


def _check_warp_image(image: Path, rect_map: np.ndarray | None, map_path: Path) -> tuple[int, int]:
    """(width, height) of a warp image, which must match the rectify map's sensor grid."""
    size, _ = read_image_header(image)
    if rect_map is not None:
        layout.check_map_matches_image(rect_map, map_path, image, (size[1], size[0]))
    return size


def _check_pixel_range(slicer: event_files.EventSlicer, rect_map: np.ndarray, map_path: Path) -> None:
    x_max, y_max = slicer.pixel_max()
    event_files.check_events_fit_map(np.array([x_max]), np.array([y_max]), rect_map, slicer.path, map_path)


def _check_index(
    report: CheckReport,
    index: np.ndarray,
    index_path: Path,
    timestamps: np.ndarray,
    slicer: event_files.EventSlicer,
    frames: dict[int, int],
    thorough: bool,
) -> None:
    """Lines = timestamps, values in -1..num_events-1 and non-decreasing, list column == index file, and
    the index recomputed from the events (every frame when thorough, else the first and last listed)."""
    if len(index) != len(timestamps):
        report.add(
            f"{index_path}: {len(index)} lines but images/timestamps.txt has {len(timestamps)}; "
            "re-run `cmda data index-dsec`"
        )
        return
    bad = np.nonzero((index < -1) | (index >= slicer.num_events))[0]
    if len(bad):
        report.add(
            f"{index_path}: line {int(bad[0]) + 1} holds {int(index[bad[0]])}, outside "
            f"-1..{slicer.num_events - 1} (the events of {slicer.path}); re-run `cmda data index-dsec`"
        )
        return
    valid = index[index >= 0]
    if np.any(np.diff(valid) < 0):
        report.add(
            f"{index_path}: event indices decrease from one frame to the next; re-run `cmda data index-dsec`"
        )
    for frame, listed_index in sorted(frames.items()):
        if frame < len(index) and index[frame] != listed_index:
            report.add(
                f"{index_path}: line {frame + 1} (frame {frame}) has event index {int(index[frame])} but the "
                f"list file says "
                f"{listed_index}; re-run `cmda data index-dsec`"
            )
            break
    listed = sorted(frames)
    to_recompute: Iterable[int] = range(len(index)) if thorough else {listed[0], listed[-1]} if listed else ()
    for frame in sorted(to_recompute):
        expected = report.attempt(
            "re-indexed frames", slicer.last_event_index_at_or_before, int(timestamps[frame])
        )
        if expected is not None and expected != index[frame]:
            report.add(
                f"{index_path}: line {frame + 1} (frame {frame}) has event index {int(index[frame])}, but "
                f"{slicer.path} gives "
                f"{expected} for its timestamp; the index is stale, re-run `cmda data index-dsec`"
            )
            break

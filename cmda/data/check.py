"""`cmda data check ROOT`: find bad files in a Cityscapes / DSEC-Night / Dark Zurich tree before training.

A run reads its data lazily: a truncated PNG, a label with labelIds instead of trainIds or a stale event
index surfaces when the sampler first draws that file, or at the first evaluation hours in. This module
walks what the loaders will read and collects every problem (file + what is wrong) instead of stopping
at the first, in two depths:

- fast (`thorough=False`, what `check_training_data` runs before every training): every file the splits
  list exists and its header opens with the expected size; event files open with a consistent layout and
  `ms_to_idx`; index files have one line per timestamp, valid and non-decreasing indices, windows inside
  the recording and agree with the list files; two frames per sequence are re-indexed from the events;
  the evaluation labels (DSEC-Night test, Dark Zurich val: small) are decoded and their values checked.
  Metadata only, so seconds even for the real datasets.
- thorough (the command's default): additionally every label is decoded (values, sizes), every event file
  is scanned whole (time sorted, `ms_to_idx` exact, pixel range within the rectify map) and every frame's
  index is recomputed from the events; `decode_images=True` also decodes every image.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmda.data import events as ev
from cmda.data.errors import DataError
from cmda.data.transforms import NUM_CLASSES, read_image_header, read_label

log = logging.getLogger(__name__)
KINDS = ("cityscapes", "dsec_night", "dark_zurich")
SHOWN_PROBLEMS = 20
"""How many problems an error message lists (all are in the report)."""
_CHECK_ERRORS = (DataError, ValueError, OSError, KeyError)


class DataCheckError(DataError):
    """A dataset tree with problems; the message lists them (file: problem)."""


@dataclass
class CheckReport:
    """Problems found in one dataset tree and what was looked at."""

    kind: str
    root: Path
    thorough: bool
    problems: list[str] = field(default_factory=list)
    checked: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str | BaseException) -> None:
        self.problems.append(str(problem))

    def attempt(self, what: str, function, *args, **kwargs) -> Any:
        """Call `function`; on a data error record it and return None; else count `what` as checked."""
        try:
            result = function(*args, **kwargs)
        except _CHECK_ERRORS as error:
            self.add(error)
            return None
        self.checked[what] += 1
        return result

    def summary(self) -> str:
        counts = ", ".join(f"{n} {what}" for what, n in self.checked.items()) or "nothing"
        depth = "thorough" if self.thorough else "fast"
        verdict = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        return f"{self.kind} at {self.root} ({depth}, {self.seconds:.1f} s; {counts}): {verdict}"


# -- shared file checks -------------------------------------------------------------------------------------


def _same_size(path: Path, expected_wh: tuple[int, int], what: str) -> tuple[int, int]:
    size, _ = read_image_header(path)
    if tuple(size) != tuple(expected_wh):
        raise DataError(
            f"{path}: {what} is {size[0]}x{size[1]} (WxH), expected {expected_wh[0]}x{expected_wh[1]}"
        )
    return size


def _label_header(path: Path, expected_wh: tuple[int, int] | None) -> None:
    size, mode = read_image_header(path)
    if mode not in ("L", "P", "I", "I;16"):
        raise DataError(f"{path}: label must be a single-channel PNG of trainIds, got mode {mode}")
    if expected_wh is not None and tuple(size) != tuple(expected_wh):
        raise DataError(
            f"{path}: label size {size[0]}x{size[1]} (WxH) does not match the image size "
            f"{expected_wh[0]}x{expected_wh[1]}"
        )


def _label(path: Path, expected_wh: tuple[int, int] | None, decode: bool) -> None:
    """Header (mode, size) always; decoded values 0..18 / 255 when `decode`."""
    if decode:
        read_label(path, None if expected_wh is None else (expected_wh[1], expected_wh[0]))
    else:
        _label_header(path, expected_wh)


def _decode(path: Path) -> None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except OSError as error:
        raise DataError(f"{path}: cannot decode the image (truncated or corrupt?): {error}") from error


# -- Cityscapes ---------------------------------------------------------------------------------------------


def check_cityscapes(
    root: str | Path, thorough: bool = True, decode_images: bool = False, rcs: bool = True
) -> CheckReport:
    """The train split the source loader reads: image, trainId label and IC1 motion image per frame, all of
    one size, plus the RCS statistics (every file they name must be a train label)."""
    from cmda.data.cityscapes import IMAGE_SUFFIX, STATS_FILES, TRAIN_IDS_SUFFIX

    start = time.perf_counter()
    root = Path(root)
    report = CheckReport("cityscapes", root, thorough)
    image_dir = root / "leftImg8bit" / "train"
    images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}")) if image_dir.is_dir() else []
    if not images:
        report.add(f"{image_dir}: no <city>/*{IMAGE_SUFFIX} images (is this a Cityscapes root?)")
    label_names = set()
    for image in images:
        size = report.attempt("images", lambda p=image: read_image_header(p)[0])
        if size is None:
            continue
        if decode_images:
            report.attempt("decoded images", _decode, image)
        stem = image.name[: -len(IMAGE_SUFFIX)]
        label = root / "gtFine" / "train" / image.parent.name / f"{stem}{TRAIN_IDS_SUFFIX}"
        if not label.is_file():
            report.add(f"{label}: label not found (run `cmda data prepare-cityscapes {root}`)")
        else:
            label_names.add(label.name)
            report.attempt("labels", _label, label, size, thorough)
        motion = root / "leftImg8bit_IC1" / "train" / image.parent.name / image.name
        report.attempt("motion images", _same_size, motion, size, "the IC1 motion image")
    if rcs and images:
        report.attempt("RCS statistics files", _check_rcs_stats, root / STATS_FILES[0], label_names)
    report.seconds = time.perf_counter() - start
    return report


def _check_rcs_stats(path: Path, label_names: set[str]) -> None:
    from cmda.data.rcs import load_class_stats

    stats = load_class_stats(path)
    named = [entry.get("file") for entry in stats if isinstance(entry, dict)]
    unknown = sorted({str(name) for name in named if name not in label_names})
    if len(named) != len(stats) or unknown:
        raise DataError(
            f"{path}: {len(stats) - len(named)} entries without 'file', {len(unknown)} files not among the "
            f"train labels (e.g. {unknown[:3]}); re-run `cmda data prepare-cityscapes`"
        )
    for entry in stats:
        bad = [k for k in entry if k != "file" and (not k.isdigit() or int(k) >= NUM_CLASSES)]
        if bad:
            raise DataError(f"{path}: entry {entry['file']} has class keys {bad}, expected trainIds 0..18")


# -- DSEC-Night ---------------------------------------------------------------------------------------------


def check_dsec(
    root: str | Path, thorough: bool = True, decode_images: bool = False, window_frames: int = 1
) -> CheckReport:
    """Sequences complete, event files and rectify maps consistent, index and list files in agreement,
    warp images on the sensor grid, test labels valid (see the module doc for fast vs thorough)."""
    from cmda.data import dsec

    start = time.perf_counter()
    root = Path(root)
    report = CheckReport("dsec_night", root, thorough)
    sequences = report.attempt("DSEC roots", dsec.sequence_dirs, root) or []
    report.checked["sequences"] = len(sequences)
    listed: dict[str, dict[Path, dict[int, int]]] = {}
    for split, name in (("train", dsec.TRAIN_LIST), ("test", dsec.TEST_LIST)):
        listed[split] = {}
        entries = report.attempt("list files", _read_list_with_index, root / name, root)
        for sequence, frame, index in entries or []:
            listed[split].setdefault(sequence, {})[frame] = index
    for sequence in sequences:
        missing = dsec.missing_parts(sequence)
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
    report.seconds = time.perf_counter() - start
    return report


def _read_list_with_index(path: Path, root: Path) -> list[tuple[Path, int, int]]:
    """(sequence, frame, event index column) per line of a list file."""
    from cmda.data.dsec import read_list_file

    entries = read_list_file(path, root)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    result = []
    for number, ((sequence, frame), line) in enumerate(zip(entries, lines), start=1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{path}:{number}: expected '<image path> <event index>', got {line!r}")
        result.append((sequence, frame, int(parts[1])))
    return result


def _check_sequence(
    report: CheckReport,
    sequence: Path,
    frames: dict[int, int],
    labelled: set[int],
    window_frames: int,
    thorough: bool,
    decode_images: bool,
) -> None:
    from cmda.data import dsec

    events_path = sequence / dsec.SEQUENCE_PARTS["events file"]
    map_path = sequence / dsec.SEQUENCE_PARTS["rectify map"]
    rect_map = report.attempt("rectify maps", ev.load_rectify_map, map_path)
    timestamps = report.attempt(
        "timestamp files", dsec.read_timestamps, sequence / "images" / "timestamps.txt"
    )
    index_path = sequence / "images" / dsec.INDEX_FILE
    index = report.attempt("index files", dsec.read_event_index, index_path)
    slicer = report.attempt("event files", ev.EventSlicer, events_path)
    try:
        if slicer is not None and thorough:
            report.attempt("event files scanned", slicer.verify)
            if rect_map is not None:
                report.attempt("event pixel ranges", _check_pixel_range, slicer, rect_map, map_path)
        if timestamps is not None and index is not None and slicer is not None:
            _check_index(report, index, index_path, timestamps, slicer, frames, thorough)
        if index is not None:
            for frame in sorted(frames):
                report.attempt("event windows", _check_window, index, index_path, frame, window_frames)
        for frame in sorted(frames):
            image = sequence / "warp_images" / f"{frame:06d}.png"
            size = report.attempt("warp images", _check_warp_image, image, rect_map, map_path)
            if decode_images:
                report.attempt("decoded images", _decode, image)
            if frame in labelled:
                label = sequence / "labels" / f"{sequence.name}_{frame:06d}_grey_gtFine_labelTrainIds.png"
                report.attempt("test labels", _label, label, size, True)
    finally:
        if slicer is not None:
            slicer.close()


def _check_warp_image(image: Path, rect_map: np.ndarray | None, map_path: Path) -> tuple[int, int]:
    """(width, height) of a warp image, which must match the rectify map's sensor grid."""
    from cmda.data.dsec import check_map_matches_image

    size, _ = read_image_header(image)
    if rect_map is not None:
        check_map_matches_image(rect_map, map_path, image, (size[1], size[0]))
    return size


def _check_pixel_range(slicer: ev.EventSlicer, rect_map: np.ndarray, map_path: Path) -> None:
    x_max, y_max = slicer.pixel_max()
    ev.check_events_fit_map(np.array([x_max]), np.array([y_max]), rect_map, slicer.path, map_path)


def _check_index(
    report: CheckReport,
    index: np.ndarray,
    index_path: Path,
    timestamps: np.ndarray,
    slicer: ev.EventSlicer,
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
                f"{index_path}: frame {frame} has event index {int(index[frame])} but the list file says "
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
                f"{index_path}: frame {frame} has event index {int(index[frame])}, but {slicer.path} gives "
                f"{expected} for its timestamp; the index is stale, re-run `cmda data index-dsec`"
            )
            break


def _check_window(index: np.ndarray, index_path: Path, frame: int, window_frames: int) -> None:
    start = frame - window_frames
    if start < 0 or frame >= len(index):
        raise DataError(
            f"{index_path}: listed frame {frame} needs lines {start + 1}..{frame + 1} for its "
            f"{window_frames}-frame event window, the file has {len(index)} lines"
        )
    if index[start] < 0 or index[frame] <= 0:
        raise DataError(
            f"{index_path}: listed frame {frame} has an event window from index {int(index[start])} to "
            f"{int(index[frame])}, outside the recording; re-run `cmda data index-dsec`"
        )


# -- Dark Zurich ----------------------------------------------------------------------------------------


def check_dark_zurich(root: str | Path, thorough: bool = True, decode_images: bool = False) -> CheckReport:
    """Night train images open; every val image has its trainId label of the same size (always decoded)."""
    from cmda.data.dark_zurich import IMAGE_SUFFIX, LABEL_SUFFIX

    start = time.perf_counter()
    root = Path(root)
    report = CheckReport("dark_zurich", root, thorough)
    for split in ("train", "val"):
        folder = root / "rgb_anon" / split / "night"
        images = sorted(folder.glob(f"*/*{IMAGE_SUFFIX}")) if folder.is_dir() else []
        if not images:
            report.add(f"{folder}: no <sequence>/*{IMAGE_SUFFIX} images (is this a Dark Zurich root?)")
        for image in images:
            size = report.attempt(f"{split} images", lambda p=image: read_image_header(p)[0])
            if size is None:
                continue
            if decode_images:
                report.attempt("decoded images", _decode, image)
            if split == "val":
                name = image.name[: -len(IMAGE_SUFFIX)] + LABEL_SUFFIX
                label = root / "gt" / "val" / "night" / image.parent.name / name
                report.attempt("val labels", _label, label, size, True)
    report.seconds = time.perf_counter() - start
    return report


# -- whole trees and the trainer's hook ---------------------------------------------------------------------


def detect(root: str | Path) -> list[tuple[str, Path]]:
    """(kind, root) of the dataset trees at ROOT or one level below (e.g. the synthetic twin's root)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")

    def kind_of(folder: Path) -> str | None:
        if (folder / "leftImg8bit").is_dir() or (folder / "gtFine").is_dir():
            return "cityscapes"
        if (folder / "rgb_anon").is_dir():
            return "dark_zurich"
        if any((child / "events").is_dir() for child in folder.iterdir() if child.is_dir()):
            return "dsec_night"
        from cmda.data.check_weights import KIND, looks_like_weights

        return KIND if looks_like_weights(folder) else None

    own = kind_of(root)
    if own is not None:
        return [(own, root)]
    found = [(kind, child) for child in sorted(root.iterdir()) if child.is_dir() and (kind := kind_of(child))]
    if not found:
        raise DataError(
            f"{root}: neither a Cityscapes (leftImg8bit/), DSEC-Night (<sequence>/events/) nor Dark Zurich "
            "(rgb_anon/) tree nor weights (*.pth, <folder>/checkpoint.pt), nor a folder holding such trees; "
            "pass --kind"
        )
    return found


def check_tree(
    root: str | Path,
    kind: str = "auto",
    thorough: bool = True,
    decode_images: bool = False,
    window_frames: int = 1,
) -> list[CheckReport]:
    """Check every dataset tree at ROOT (kind "auto": detected) and return one report per tree."""
    from cmda.data.check_weights import KIND as WEIGHTS
    from cmda.data.check_weights import check_weights

    if kind not in ("auto", *KINDS, WEIGHTS):
        raise DataError(f"unknown dataset kind {kind!r}; expected one of {('auto', *KINDS, WEIGHTS)}")
    trees = detect(root) if kind == "auto" else [(kind, Path(root))]
    reports = []
    for tree_kind, path in trees:
        if tree_kind == WEIGHTS:
            reports.append(check_weights(path))
        elif tree_kind == "cityscapes":
            reports.append(check_cityscapes(path, thorough, decode_images))
        elif tree_kind == "dsec_night":
            reports.append(check_dsec(path, thorough, decode_images, window_frames))
        else:
            reports.append(check_dark_zurich(path, thorough, decode_images))
    return reports


def raise_on_problems(reports: list[CheckReport]) -> None:
    """DataCheckError listing the first SHOWN_PROBLEMS problems of all reports (none: return)."""
    problems = [problem for report in reports for problem in report.problems]
    if not problems:
        return
    shown = "\n  ".join(problems[:SHOWN_PROBLEMS])
    more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    roots = ", ".join(str(report.root) for report in reports if not report.ok)
    raise DataCheckError(
        f"{len(problems)} data problem(s) in {roots} (`cmda data check ROOT` lists them all):"
        f"\n  {shown}{more}"
    )


def check_training_data(config: Any) -> list[CheckReport]:
    """The fast check of what a training run will read (source train split, target splits); raises
    DataCheckError listing the problems, so a bad file stops the run in seconds, not hours in."""
    data = config.data
    target_kind = getattr(data.target, "name", "dsec_night")
    reports = [check_cityscapes(data.source.root, thorough=False, rcs=data.source.rcs.enabled)]
    if target_kind == "dsec_night":
        window = getattr(data.target, "window_frames", 1)
        reports.append(check_dsec(data.target.root, thorough=False, window_frames=window))
    elif target_kind == "dark_zurich":
        reports.append(check_dark_zurich(data.target.root, thorough=False))
    else:
        raise DataError(
            f"data.target.name: no data check for target {target_kind!r}; expected one of {KINDS[1:]}"
        )
    for report in reports:
        log.info("data check: %s", report.summary())
    raise_on_problems(reports)
    return reports

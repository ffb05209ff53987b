"""`cmda data warp-dsec`: plan the frames of each sequence, warp them (in worker processes), write the
warp images atomically and each sequence's log, and the command line.

The package docstring (cmda/data/warp/__init__.py) says why the warp exists; docs/ARCHITECTURE.md
("cmda.data") has the contracts.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from cmda.data.dsec_layout import (
    CALIBRATION_FILE,
    DISPARITY_DIR,
    FRAME_IMAGE_DIR,
    WARP_IMAGE_DIR,
    is_frame_name,
)
from cmda.data.parallel import run_jobs
from cmda.data.warp.calibration import Calibration, WarpError
from cmda.data.warp.densify import DenseMap, densify, homography_map
from cmda.data.warp.sample import bilinear_taps, in_view, sample_cmda_v1, sample_pixel_centres
from cmda.io import clean_stale_tmp, write_bytes_atomic

METHODS = ("disparity", "homography")
LOG_FILE = "warp_images_log.csv"


# -- one frame ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameJob:
    image: Path
    disparity: Path | None  # None for the homography
    output: Path


@dataclass(frozen=True)
class FrameResult:
    file: str
    disparity_pixels: int | None
    out_of_view: int
    fallback: str


def _open_png(path: Path, writable: bool = False) -> tuple[np.ndarray, str]:
    """Pixels and PIL mode of an image file; an unreadable file is a WarpError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as handle:
            # writable for the frame image: torch.from_numpy warns on read-only arrays
            return (np.array(handle) if writable else np.asarray(handle)), handle.mode
    except OSError as error:
        raise WarpError(f"{path}: cannot read the image ({error})") from error


def read_frame_image(path: Path, calib: Calibration) -> np.ndarray:
    image, mode = _open_png(path, writable=True)
    if mode != "RGB":
        raise WarpError(f"{path}: expected an 8-bit RGB image, got mode {mode}")
    width, height = calib.frame_size
    if image.shape[:2] != (height, width):
        raise WarpError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]}, expected {width}x{height} "
            f"(camRect1 resolution of {calib.path})"
        )
    return image


def read_disparity(path: Path, calib: Calibration) -> np.ndarray:
    disparity, _ = _open_png(path)
    if disparity.ndim != 2 or disparity.dtype.kind not in "ui" or disparity.dtype.itemsize < 2:
        raise WarpError(
            f"{path}: expected a 16-bit single-channel disparity PNG, got {disparity.dtype} {disparity.shape}"
        )
    width, height = calib.event_size
    if disparity.shape != (height, width):
        raise WarpError(
            f"{path}: disparity map is {disparity.shape[1]}x{disparity.shape[0]}, expected {width}x{height} "
            f"(camRect0 resolution of {calib.path})"
        )
    return disparity.astype(np.uint16)


_HOMOGRAPHY_GEOMETRY: dict[tuple, tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]] = {}
"""The last `_homography_geometry` of this process (one sequence's, as a sequence is warped at a time)."""


def _homography_geometry(
    calib: Calibration, image_size: tuple[int, int]
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
    """`homography_map(calib)`, its `bilinear_taps` and its `in_view` mask on an image of `image_size`
    (W, H), read-only: the same for every frame of a sequence, so computed once per calibration and kept
    (keyed by value, as each worker process receives its own copy of the calibration per frame)."""
    key = (tuple(calib.event_size), tuple(image_size), calib.homography().tobytes())
    geometry = _HOMOGRAPHY_GEOMETRY.get(key)
    if geometry is None:
        coords = homography_map(calib)
        taps = bilinear_taps(coords, image_size)
        visible = in_view(coords, image_size)
        for array in (coords, *taps, visible):
            array.setflags(write=False)
        _HOMOGRAPHY_GEOMETRY.clear()
        geometry = _HOMOGRAPHY_GEOMETRY[key] = (coords, taps, visible)
    return geometry


def _warp(
    image: np.ndarray, calib: Calibration, disparity: np.ndarray | None, cmda_v1: bool
) -> tuple[np.ndarray, DenseMap, int]:
    """`warp_image` plus the number of event pixels whose frame position is off the frame sensor."""
    size = (image.shape[1], image.shape[0])
    taps = visible = None
    if disparity is None:
        coords, taps, visible = _homography_geometry(calib, size)
        dense = DenseMap(coords, None)
    else:
        dense = densify(calib, disparity, cmda_v1=cmda_v1)
    if cmda_v1:
        warped = sample_cmda_v1(image, dense.coords)
        if visible is None:
            visible = in_view(dense.coords, size)
        return warped, dense, int((~visible).sum())
    warped, out_of_view = sample_pixel_centres(image, dense.coords, taps=taps, visible=visible)
    return warped, dense, out_of_view


def warp_image(
    image: np.ndarray, calib: Calibration, disparity: np.ndarray | None, *, cmda_v1: bool = False
) -> tuple[np.ndarray, DenseMap]:
    """One frame image -> its warp image [H_event, W_event, 3] uint8 and the coordinates it sampled
    (disparity None = the homography, whose coordinates are read-only and shared between frames)."""
    warped, dense, _ = _warp(image, calib, disparity, cmda_v1)
    return warped, dense


def warp_file(job: FrameJob, calib: Calibration, cmda_v1: bool) -> FrameResult:
    """Read, warp and atomically write one frame."""
    from PIL import Image

    disparity = read_disparity(job.disparity, calib) if job.disparity is not None else None
    image = read_frame_image(job.image, calib)  # its size is calib.frame_size
    warped, dense, out_of_view = _warp(image, calib, disparity, cmda_v1)
    buffer = io.BytesIO()
    Image.fromarray(warped).save(buffer, format="PNG")
    write_bytes_atomic(job.output, buffer.getvalue())
    return FrameResult(job.output.name, dense.disparity_pixels, out_of_view, dense.fallback)


# -- sequences ----------------------------------------------------------------------------------------------


def find_sequences(path: str | Path) -> list[Path]:
    """PATH is a sequence (holds images/left/rectified/) or a folder of sequences."""
    path = Path(path)
    if not path.is_dir():
        raise WarpError(f"{path}: folder not found")
    if (path / FRAME_IMAGE_DIR).is_dir():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / FRAME_IMAGE_DIR).is_dir())
    if not found:
        raise WarpError(f"{path}: neither a DSEC sequence (no {FRAME_IMAGE_DIR}/) nor a folder of sequences")
    return found


def _frame_files(folder: Path) -> dict[int, Path]:
    return {int(p.stem): p for p in folder.iterdir() if is_frame_name(p.name)} if folder.is_dir() else {}


@dataclass
class SequencePlan:
    sequence: Path
    calibration: Calibration
    jobs: list[FrameJob]
    kept: int  # outputs that exist and are kept
    without_disparity: int  # frame images with no disparity map (odd indices in DSEC)


def plan_sequence(sequence: Path, method: str, overwrite: bool) -> SequencePlan:
    """Which frames to warp; checks the calibration and that every disparity map has its image."""
    if method not in METHODS:
        raise WarpError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    calib = Calibration.load(sequence / CALIBRATION_FILE)
    images = _frame_files(sequence / FRAME_IMAGE_DIR)
    if method == "disparity":
        disparity_dir = sequence / DISPARITY_DIR
        if not disparity_dir.is_dir():
            raise WarpError(
                f"{disparity_dir}: folder not found (DSEC has disparity for its train sequences only; "
                f"use --method homography for the others)"
            )
        maps = _frame_files(disparity_dir)
        for index, path in sorted(maps.items()):
            if index not in images:
                raise WarpError(
                    f"{path}: disparity map without its frame image {sequence / FRAME_IMAGE_DIR / path.name}"
                )
        pairs = [(images[i], maps[i]) for i in sorted(maps)]
        without = len(set(images) - set(maps))
    else:
        pairs = [(images[i], None) for i in sorted(images)]
        without = 0
    jobs, kept = [], 0
    for image, disparity in pairs:
        output = sequence / WARP_IMAGE_DIR / image.name
        if output.exists() and not overwrite:
            kept += 1
            continue
        jobs.append(FrameJob(image, disparity, output))
    return SequencePlan(sequence, calib, jobs, kept, without)


LOG_FIELDS = ("file", "method", "convention", "disparity_pixels", "out_of_view_pixels", "fallback")


def _write_log(sequence: Path, results: Iterable[FrameResult], method: str, cmda_v1: bool) -> Path:
    """Merge this run's rows into <sequence>/warp_images_log.csv (rows of kept files stay)."""
    path = sequence / LOG_FILE
    rows: dict[str, dict[str, str]] = {}
    if path.is_file():
        with path.open(newline="") as handle:
            rows = {row["file"]: row for row in csv.DictReader(handle) if row.get("file")}
    for result in results:
        rows[result.file] = {
            "file": result.file,
            "method": method,
            "convention": "cmda_v1" if cmda_v1 else "pixel_centre",
            "disparity_pixels": "" if result.disparity_pixels is None else str(result.disparity_pixels),
            "out_of_view_pixels": str(result.out_of_view),
            "fallback": result.fallback,
        }
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    for name in sorted(rows):
        writer.writerow({key: rows[name].get(key, "") for key in LOG_FIELDS})
    write_bytes_atomic(path, text.getvalue().encode())
    return path


@dataclass
class SequenceReport:
    sequence: Path
    written: list[FrameResult]
    kept: int
    without_disparity: int
    log: Path | None

    def summary(self) -> str:
        parts = [f"{self.sequence.name}: {len(self.written)} written, {self.kept} kept"]
        if self.kept:
            parts[0] += " (already there; --overwrite replaces them)"
        if self.without_disparity:
            parts.append(
                f"{self.without_disparity} frames without disparity map skipped (DSEC has them at even "
                f"indices only; --method homography warps every frame)"
            )
        if self.written:
            counts = [r.out_of_view for r in self.written]
            parts.append(f"out-of-view pixels per frame {min(counts)}..{max(counts)}")
            fallbacks = sum(1 for r in self.written if r.fallback)
            if fallbacks:
                parts.append(f"{fallbacks} frames used the homography fallback (see {LOG_FILE})")
        return "; ".join(parts)


def warp_sequences(
    paths: Sequence[str | Path],
    method: str = "disparity",
    *,
    cmda_v1: bool = False,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> list[SequenceReport]:
    """Warp every sequence found under `paths`. All sequences are planned (and checked) before any work."""
    plans = [plan_sequence(seq, method, overwrite) for path in paths for seq in find_sequences(path)]
    reports = []
    for plan in plans:
        clean_stale_tmp(plan.sequence / WARP_IMAGE_DIR)
        results = run_jobs(
            partial(warp_file, calib=plan.calibration, cmda_v1=cmda_v1),
            plan.jobs,
            workers,
            progress,
            desc=plan.sequence.name,
            unit="frame",
        )
        log = _write_log(plan.sequence, results, method, cmda_v1) if results else None
        reports.append(SequenceReport(plan.sequence, results, plan.kept, plan.without_disparity, log))
    return reports


# -- command line -------------------------------------------------------------------------------------------


def add_warp_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cmda data warp-dsec PATH [PATH ...]`."""
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="a DSEC sequence or a folder of them"
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="disparity",
        help="disparity: CMDA's depth-aware warp (needs disparity/event/, even frames only); "
        "homography: infinite depth, every frame",
    )
    parser.add_argument(
        "--cmda-v1",
        action="store_true",
        help="reproduce the original generator's pixels (half-pixel offset, half-edge padding, truncation)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes, parallel over frames")
    parser.add_argument("--overwrite", action="store_true", help="replace existing warp images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_warp_dsec(args: argparse.Namespace) -> list[SequenceReport]:
    """Execute `cmda data warp-dsec` from parsed arguments."""
    if args.workers < 1:
        raise WarpError(f"--workers must be >= 1, got {args.workers}")
    reports = warp_sequences(
        args.paths,
        args.method,
        cmda_v1=args.cmda_v1,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    for report in reports:
        print(report.summary())
    return reports

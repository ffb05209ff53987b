"""Cityscapes IC1 motion images (`cmda data make-ic1`): CMDA's image change between frames t-1 and t.

For every leftImg8bit/<split>/<city>/<name> (frame t) and the sequence frame before it,
leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<t-1>_leftImg8bit.png, both read as PIL 'L' images:

    d = log(I_t + 50) - log(I_t-1 + 50), and d = 0 where |d| <= 0.1
    the positive part, clipped to [0, 0.8], min-max normalised over the image to [0, 1];
    the negative part, clipped to [-0.8, 0], min-max normalised to [-1, 0] (each sign to its own range)
    pixel = round((positive + negative + 1) / 2 * 255), an 'L' PNG: 128 = no change

written to leftImg8bit_IC1/<split>/<city>/<name>, the file the source loader reads as `motion`. These are
the steps and parameters of `get_image_change` in the original's create_cityscapes_image_change.py
(image_change_range 1, log_add 50, threshold 0.1, clip_range 0.8), in float32 as it computes them. Its
published loop skips every image but one (`if image_name != 'aachen_000082_000019_leftImg8bit.png':
continue`, a debugging leftover); every image is written here. One deviation: a sign without any change
in the image stays 0, where the original's min-max of an all-zero half gives -1 everywhere (a whole image
darker than "no change"); the same rule as for events and ISR (docs/ARCHITECTURE.md).

Use it when you have the sequence frames: the whole leftImg8bit_sequence archive, or only the previous
frames, which `--list-needed` names (a few GB instead of the archive's 324 GB). Otherwise download the CMDA
authors' leftImg8bit_IC1 set (README, "Real data").
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmda.data.errors import DataError
from cmda.io import atomic_path, clean_stale_tmp

IMAGE_DIR, SEQUENCE_DIR, OUTPUT_DIR = "leftImg8bit", "leftImg8bit_sequence", "leftImg8bit_IC1"
SPLITS = ("train", "val", "test")
LOG_OFFSET = np.float32(50.0)
THRESHOLD = np.float32(0.1)
CLIP = np.float32(0.8)
FRAME_STEP = 1
"""The previous frame is t - 1 (the original's image_change_range)."""
NAME = re.compile(r"^(?P<stem>.+)_(?P<frame>\d{6})_leftImg8bit\.png$")
SEQUENCE_ARCHIVE = "leftImg8bit_sequence_trainvaltest.zip"


def _to_range(part: np.ndarray, low: np.float32) -> np.ndarray:
    """Min-max normalisation to [low, low + 1] over the whole image, as the original (its 1e-8 included);
    a constant part (no change of that sign anywhere) stays 0."""
    least, most = part.min(), part.max()
    if least == most:
        return np.zeros_like(part)
    return (part - least) / (most - least + np.float32(1e-8)) + low


def image_change(now: np.ndarray, before: np.ndarray) -> np.ndarray:
    """IC1 of two uint8 grey images of the same size -> uint8, 128 where nothing changed."""
    change = np.log(now.astype(np.float32) + LOG_OFFSET) - np.log(before.astype(np.float32) + LOG_OFFSET)
    change[np.abs(change) <= THRESHOLD] = 0
    positive = np.clip(np.maximum(change, 0), 0, CLIP)
    negative = np.clip(np.minimum(change, 0), -CLIP, 0)
    signed = _to_range(positive, np.float32(0)) + _to_range(negative, np.float32(-1))
    return np.around((signed + 1) / 2 * 255).astype(np.uint8)


def _read_grey(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read the image ({error})") from error


@dataclass(frozen=True)
class IC1Job:
    now: Path
    before: Path
    out: Path


def make_ic1_file(job: IC1Job) -> Path:
    """Write one IC1 image atomically (a killed run leaves only a `.tmp_` name, removed on the next run)."""
    from PIL import Image

    now, before = _read_grey(job.now), _read_grey(job.before)
    if now.shape != before.shape:
        raise DataError(
            f"{job.before}: {before.shape[1]}x{before.shape[0]} (WxH), but frame t {job.now} is "
            f"{now.shape[1]}x{now.shape[0]}"
        )
    with atomic_path(job.out) as tmp:
        Image.fromarray(image_change(now, before)).save(tmp, format="PNG")  # uint8 2-D: mode "L"
    return job.out


def previous_frame(root: Path, image: Path) -> Path:
    """leftImg8bit/<split>/<city>/<stem>_<t>_leftImg8bit.png -> the sequence frame t-1 beside it."""
    match = NAME.match(image.name)
    if match is None:
        raise DataError(f"{image}: not a Cityscapes image name (<city>_<sequence>_<frame>_leftImg8bit.png)")
    frame = int(match["frame"])
    if frame < FRAME_STEP:
        raise DataError(f"{image}: frame {frame} has no previous frame in the sequence")
    split, city = image.parent.parent.name, image.parent.name
    name = f"{match['stem']}_{frame - FRAME_STEP:06d}_leftImg8bit.png"
    return root / SEQUENCE_DIR / split / city / name


def frames(root: Path, splits: Sequence[str]) -> list[Path]:
    """Every leftImg8bit image of `splits`, sorted; a missing folder or an empty split is a DataError."""
    images = []
    for split in splits:
        folder = root / IMAGE_DIR / split
        if not folder.is_dir():
            raise DataError(f"{folder}: Cityscapes image folder not found (is {root} a Cityscapes root?)")
        found = sorted(folder.glob("*/*_leftImg8bit.png"))
        if not found:
            raise DataError(f"{folder}: no <city>/*_leftImg8bit.png images")
        images += found
    return images


@dataclass
class IC1Plan:
    jobs: list[IC1Job]
    kept: int


def plan_ic1(root: str | Path, splits: Sequence[str] = ("train",), overwrite: bool = False) -> IC1Plan:
    """The files to write; every previous frame they need is checked here, before anything is written."""
    root = Path(root)
    jobs, kept, missing = [], 0, []
    images = frames(root, splits)
    for image in images:
        out = root / OUTPUT_DIR / image.relative_to(root / IMAGE_DIR)
        if out.exists() and not overwrite:
            kept += 1
            continue
        before = previous_frame(root, image)
        if not before.is_file():
            missing.append((before, image))
        jobs.append(IC1Job(image, before, out))
    if missing:
        before, image = missing[0]
        raise DataError(
            f"{before}: the frame before {image.name} (frame t-1 of its IC1 image) not found; "
            f"{len(missing)} of {len(images)} previous frames are missing. Extract them from "
            f"{SEQUENCE_ARCHIVE} into {root} (`cmda data make-ic1 {root} --list-needed` names them) or "
            "download the CMDA authors' leftImg8bit_IC1 instead (README, Real data)"
        )
    return IC1Plan(jobs, kept)


def make_ic1(
    root: str | Path,
    splits: Sequence[str] = ("train",),
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[list[Path], int]:
    """Write leftImg8bit_IC1 for `splits`; returns (written files, files kept because they existed)."""
    from cmda.data.parallel import run_jobs

    plan = plan_ic1(root, splits, overwrite)
    for folder in sorted({job.out.parent for job in plan.jobs}):
        clean_stale_tmp(folder)
    written = run_jobs(make_ic1_file, plan.jobs, workers, progress, desc=OUTPUT_DIR, unit="image")
    return written, plan.kept


def add_ic1_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cmda data make-ic1 CITYSCAPES_ROOT`."""
    parser.add_argument(
        "root", type=Path, help="Cityscapes root (holds leftImg8bit/ and leftImg8bit_sequence/)"
    )
    parser.add_argument(
        "--split",
        action="append",
        choices=SPLITS,
        dest="splits",
        help="split to process, repeatable (default: train, the only split the trainer reads)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes, parallel over images")
    parser.add_argument("--overwrite", action="store_true", help="replace existing IC1 images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--list-needed",
        action="store_true",
        help=f"print the sequence frames the split needs (paths inside {SEQUENCE_ARCHIVE}) and stop",
    )


def run_make_ic1(args: argparse.Namespace) -> None:
    """Execute `cmda data make-ic1` from parsed arguments."""
    splits = args.splits or ["train"]
    if args.workers < 1:
        raise DataError(f"--workers must be >= 1, got {args.workers}")
    if args.list_needed:
        for image in frames(args.root, splits):
            print(previous_frame(args.root, image).relative_to(args.root).as_posix())
        return
    written, kept = make_ic1(args.root, splits, args.workers, args.overwrite, not args.no_progress)
    note = " (already there; --overwrite replaces them)" if kept else ""
    print(f"{args.root / OUTPUT_DIR}: {len(written)} written, {kept} kept{note}")

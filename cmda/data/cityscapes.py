"""Cityscapes source domain: day images, trainId labels, the offline motion image (IC1) and online ISR.

Layout (real Cityscapes plus CMDA's extras):
  leftImg8bit/train/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  leftImg8bit_IC1/train/<city>/<same name>                    IME output, 'L' PNG, 128 = no change
  gtFine/train/<city>/<stem>_gtFine_labelTrainIds.png         made by `prepare_cityscapes`
  sample_class_stats.json, sample_class_stats_dict.json, samples_with_class.json   (RCS statistics)

`prepare_cityscapes` converts the shipped *_gtFine_labelIds.png with the official labelId->trainId table and
counts class pixels of the train labels in parallel. The statistics are keyed by label BASENAME, so they stay
valid wherever the dataset is mounted (the original stored full paths and matched them by string equality).

The paths are spelled once (`image_paths`, `label_path`, `motion_path`) and shared by the Dataset, its
data check (`check`) and its synthetic twin's writer (`CityscapesTwin`), which the registry's `SOURCE`
entry names (cmda/data/targets.py). docs/ARCHITECTURE.md ("cmda.data") has the contracts.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from cmda.data.check_report import (
    CheckReport,
    Settings,
    check_decodes,
    check_label,
    check_same_size,
    image_size,
)
from cmda.data.errors import DataError, reports_data_errors
from cmda.data.extractors import CITYSCAPES_ISR, ISRParams
from cmda.data.rcs import redraw_crop_for_class
from cmda.data.synthetic import Twin
from cmda.data.transforms import (
    IGNORE_INDEX,
    NUM_CLASSES,
    AlignedAugment,
    AugmentParams,
    compute_isr,
    crop,
    normalize_image,
    read_gray,
    read_label,
    read_rgb,
    resize,
    to_uint8,
)
from cmda.io import atomic_path, write_bytes_atomic, write_json_atomic

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
COLOUR_SUFFIX = "_gtFine_color.png"
STATS_FILES = ("sample_class_stats.json", "sample_class_stats_dict.json", "samples_with_class.json")

# cityscapesscripts labels.py: labelId -> trainId for the 19 evaluated classes; everything else is ignore.
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


def image_paths(root: Path, split: str) -> list[Path]:
    """leftImg8bit/<split>/<city>/*_leftImg8bit.png, sorted (none when the folder is missing)."""
    folder = Path(root) / "leftImg8bit" / split
    return sorted(folder.glob(f"*/*{IMAGE_SUFFIX}")) if folder.is_dir() else []


def image_path(root: Path, split: str, city: str, stem: str) -> Path:
    return Path(root) / "leftImg8bit" / split / city / f"{stem}{IMAGE_SUFFIX}"


def label_path(root: Path, split: str, image: Path, suffix: str = TRAIN_IDS_SUFFIX) -> Path:
    """The gtFine file of an image: its trainIds label, or with `suffix` its labelIds or colour file."""
    stem = image.name[: -len(IMAGE_SUFFIX)]
    return Path(root) / "gtFine" / split / image.parent.name / f"{stem}{suffix}"


def motion_path(root: Path, split: str, image: Path) -> Path:
    """The IC1 motion image of an image (same name, in leftImg8bit_IC1)."""
    return Path(root) / "leftImg8bit_IC1" / split / image.parent.name / image.name


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a labelIds array to trainIds with a 256-entry lookup table (unknown ids -> 255)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table[label_ids.astype(np.uint8)]


def _convert_one(label_ids_path: str) -> tuple[str, dict[str, int] | None]:
    """Worker: write the trainIds PNG next to a labelIds PNG; return per-class counts for train labels."""
    from PIL import Image

    source = Path(label_ids_path)
    with Image.open(source) as image:
        label_ids = np.asarray(image)
    if label_ids.ndim != 2:
        raise ValueError(f"{source}: labelIds PNG must be single-channel, got shape {label_ids.shape}")
    train_ids = label_ids_to_train_ids(label_ids)
    target = source.with_name(source.name[: -len(LABEL_IDS_SUFFIX)] + TRAIN_IDS_SUFFIX)
    with atomic_path(target) as tmp:
        Image.fromarray(train_ids).save(tmp, format="PNG")
    if source.parent.parent.name != "train":
        return target.name, None
    counts = np.bincount(train_ids.ravel(), minlength=256)[:NUM_CLASSES]
    return target.name, {str(c): int(n) for c, n in enumerate(counts) if n > 0}


def prepare_cityscapes(root: str | Path, workers: int = 4) -> list[Path]:
    """Convert gtFine labelIds -> labelTrainIds and write the RCS statistics of the train split.

    Returns the written statistics files. `workers <= 1` runs in-process (cheaper for tiny datasets).
    """
    root = Path(root)
    gt_root = root / "gtFine"
    if not gt_root.is_dir():
        raise FileNotFoundError(f"{gt_root}: Cityscapes gtFine folder not found")
    sources = sorted(str(p) for p in gt_root.glob(f"*/*/*{LABEL_IDS_SUFFIX}"))
    if not sources:
        raise FileNotFoundError(f"{gt_root}: no */*/*{LABEL_IDS_SUFFIX} files")
    if workers <= 1:
        results = [_convert_one(s) for s in sources]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_convert_one, sources, chunksize=8))
    stats_list = [{**counts, "file": name} for name, counts in results if counts is not None]
    stats_dict = {entry["file"]: {k: v for k, v in entry.items() if k != "file"} for entry in stats_list}
    with_class: dict[str, list[list]] = {}
    for entry in stats_list:
        for key, count in entry.items():
            if key != "file":
                with_class.setdefault(key, []).append([entry["file"], count])
    with_class = {k: with_class[k] for k in sorted(with_class, key=int)}
    outputs = [root / name for name in STATS_FILES]
    for path, obj in zip(outputs, (stats_list, stats_dict, with_class)):
        write_json_atomic(path, obj)
    return outputs


class CityscapesDataset(torch.utils.data.Dataset):
    """Source samples: image [3,H,W] (ImageNet-normalised), label [H,W], motion [1,H,W], isr [3,H,W].

    Geometry as CMDA: resize the full frame to `resize` (W,H), random `crop`, flip p=0.5, drawn once and
    shared by all modalities. ISR direction index = 2 * (crop_x % 2) + flip (see extractors.DIRECTIONS).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        resize: tuple[int, int] = (1024, 512),
        crop: tuple[int, int] | None = (512, 512),
        cat_max_ratio: float | None = None,
        isr_params: ISRParams = CITYSCAPES_ISR,
        with_isr: bool = True,
        seed: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.resize_wh = tuple(resize)
        self.isr_params = isr_params
        self.with_isr = with_isr
        self.seed = seed
        self.augment = AlignedAugment(
            tuple(crop) if crop is not None else None,
            flip_prob=0.5 if split == "train" else 0.0,
            cat_max_ratio=cat_max_ratio,
        )
        image_dir = self.root / "leftImg8bit" / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{image_dir}: Cityscapes image folder not found")
        self.images = image_paths(self.root, split)
        if not self.images:
            raise FileNotFoundError(f"{image_dir}: no <city>/*{IMAGE_SUFFIX} images")
        self._index_by_label = {self.label_path(i).name: i for i in range(len(self.images))}

    def __len__(self) -> int:
        return len(self.images)

    def label_path(self, index: int) -> Path:
        return label_path(self.root, self.split, self.images[index])

    def motion_path(self, index: int) -> Path:
        return motion_path(self.root, self.split, self.images[index])

    def index_of_label(self, label_basename: str) -> int:
        """Dataset index of the image whose label file has this basename (RCS statistics key)."""
        try:
            return self._index_by_label[label_basename]
        except KeyError:
            raise KeyError(
                f"{label_basename}: in the RCS statistics but not among the images of {self.root}; "
                "re-run `cmda data prepare-cityscapes`"
            ) from None

    def label_size(self) -> tuple[int, int]:
        """(W, H) of the label files (RCS scales its pixel thresholds with it)."""
        from PIL import Image

        with Image.open(self.label_path(0)) as image:
            return image.size

    @reports_data_errors
    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng(None if self.seed is None else [self.seed, index])
        return self.get_sample(index, rng)

    def load(self, index: int) -> dict[str, torch.Tensor]:
        """Resized but un-augmented tensors: image (0..255), label, motion (0..255)."""
        image = read_rgb(self.images[index])
        label = read_label(self.label_path(index), expected_hw=tuple(image.shape[-2:]))
        motion = read_gray(self.motion_path(index))
        if motion.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"{self.motion_path(index)}: motion image size {motion.shape[-1]}x{motion.shape[-2]} (WxH) "
                f"differs from {self.images[index]} ({image.shape[-1]}x{image.shape[-2]})"
            )
        return {
            "image": resize(image, self.resize_wh),
            "label": resize(label, self.resize_wh, is_label=True),
            "motion": resize(motion, self.resize_wh),
        }

    def get_sample(
        self,
        index: int,
        rng: np.random.Generator,
        rare_class: int | None = None,
        min_crop_pixels: float = 0.0,
    ) -> dict:
        """One augmented sample; with `rare_class`, re-draw the crop until it shows enough of that class."""
        tensors = self.load(index)
        height, width = tensors["image"].shape[-2:]

        def draw() -> AugmentParams:
            return self.augment.draw(rng, height, width, label=tensors["label"])

        if rare_class is None:
            params = draw()
        else:
            params = redraw_crop_for_class(
                draw, lambda p: crop(tensors["label"], p), rare_class, min_crop_pixels
            )
        out = self.augment.apply(tensors, params)
        return self._finish(out, params, index)

    def _finish(self, out: dict[str, torch.Tensor], params: AugmentParams, index: int) -> dict:
        image_uint8 = to_uint8(out["image"])
        direction = 2 * (params.left % 2) + int(params.flip)
        sample = {
            "image": normalize_image(image_uint8.float()),
            "label": out["label"].long(),
            "motion": (out["motion"] / 255.0 - 0.5) / 0.5,
            "isr_direction": torch.tensor(direction, dtype=torch.int64),
            "name": self.images[index].name,
        }
        if self.with_isr:
            sample["isr"] = compute_isr(image_uint8, self.isr_params, direction)
        return sample


# -- the data check and the synthetic twin ---------------------------------------------------------------


def check(
    root: str | Path, thorough: bool = True, decode_images: bool = False, settings: Settings = None
) -> CheckReport:
    """The train split the source loader reads: image, trainId label and IC1 motion image per frame, all of
    one size, plus the RCS statistics (every file they name must be a train label) unless the `data.source`
    section (`settings`) turns RCS off."""
    rcs = bool((settings or {}).get("rcs", {}).get("enabled", True))
    root = Path(root)
    with CheckReport.timed("cityscapes", root, thorough) as report:
        images = image_paths(root, "train")
        if not images:
            folder = root / "leftImg8bit" / "train"
            report.add(f"{folder}: no <city>/*{IMAGE_SUFFIX} images (is this a Cityscapes root?)")
        label_names = set()
        for image in images:
            size = report.attempt("images", image_size, image)
            if size is None:
                continue
            if decode_images:
                report.attempt("decoded images", check_decodes, image)
            label = label_path(root, "train", image)
            if not label.is_file():
                report.add(f"{label}: label not found (run `cmda data prepare-cityscapes {root}`)")
            else:
                label_names.add(label.name)
                report.attempt("labels", check_label, label, size, thorough)
            motion = motion_path(root, "train", image)
            report.attempt("motion images", check_same_size, motion, size, "the IC1 motion image")
        if rcs and images:
            report.attempt("RCS statistics files", _check_rcs_stats, root / STATS_FILES[0], label_names)
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


EGO_VEHICLE_LABEL_ID = 1
"""Cityscapes "ego vehicle": a labelId that maps to ignore (255); the twin's bottom rows carry it."""


@dataclass(frozen=True)
class CityscapesTwin(Twin):
    """The Cityscapes twin writer (`cmda data synth`): day images, IC1 motion images (the IME of a
    synthetic previous frame), gtFine labelIds and colour PNGs; then `prepare_cityscapes`."""

    size: tuple[int, int] = (256, 128)
    cities: tuple[str, ...] = ("aachen", "bochum", "cologne")
    images_per_city: int = 8
    REAL_SIZE: ClassVar = {"size": (2048, 1024), "images_per_city": 2}

    def write(self, folder: Path, seed: int, workers: int = 1) -> None:
        from cmda.data import extractors, scenes

        width, height = self.size
        to_label_ids = np.zeros(256, dtype=np.uint8)  # 0 = "unlabeled" -> ignore
        for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
            to_label_ids[train_id] = label_id
        for city_index, city in enumerate(self.cities):
            for item in range(self.images_per_city):
                rng = np.random.default_rng([seed, 1, city_index, item])
                scene = scenes.make_scene(rng, with_truck=bool(rng.random() < 0.5))
                textures = scenes.class_textures(width, height, rng)
                noise = rng.normal(0.0, 3.0, (height, width, 3))
                label = scenes.rasterize(scene, width, height, frame=0.0)
                label_ids = to_label_ids[label]
                label_ids[-max(1, height // 20) :] = EGO_VEHICLE_LABEL_ID
                image = scenes.render_day(label, textures, noise)
                before = scenes.rasterize(scene, width, height, frame=-1.0)
                previous = scenes.render_day(before, textures, noise)
                now_gray = extractors.to_gray_uint8(torch.from_numpy(image).permute(2, 0, 1)[None])
                front_gray = extractors.to_gray_uint8(torch.from_numpy(previous).permute(2, 0, 1)[None])
                ime = extractors.motion_to_png_uint8(extractors.image_motion_extractor(now_gray, front_gray))
                motion = np.asarray(ime).reshape(height, width).astype(np.uint8)
                colour = np.where(label_ids == EGO_VEHICLE_LABEL_ID, 255, label).astype(np.uint8)
                path = image_path(folder, "train", city, f"{city}_000000_{item:06d}")
                files = {
                    path: image,
                    motion_path(folder, "train", path): motion,
                    label_path(folder, "train", path, LABEL_IDS_SUFFIX): label_ids,
                    label_path(folder, "train", path, COLOUR_SUFFIX): scenes.palette_image(colour),
                }
                for file, pixels in files.items():
                    write_bytes_atomic(file, scenes.png_bytes(pixels))
        prepare_cityscapes(folder, workers=workers)

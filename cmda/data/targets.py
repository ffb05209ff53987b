"""The target-domain registry: what the rest of the code may ask of a target dataset.

A target domain is one module in `cmda/data` (its Dataset and on-disk layout) plus one `TargetSpec`
entry in `TARGETS`. Nothing outside this registry and that module names a dataset: the config (its
`data.target` section is the entry's `config_model`, picked by `data.target.name`), the trainer (datasets
come from `build_dataset`), the training step (the second modality is events or the image's ISR, as
`second_modality` says; ISR parameters and shift rule come from the entry), evaluation (classes, metric
definitions, headline metric, which branch predicts), `cmda test`, sweep validation (a loss term that
needs something the target lacks), the scheduler's metric and the analysis all read the entry
(DAFormer's "a dataset = one module + one registry entry + one config").

The entry also holds the original's recipe for that setting (fusion module, branch loss weights, rows
the pseudo-label weight ignores): config fields left at null take these values, so a config says only
what it changes.

This module holds only plain data and pydantic models and imports nothing heavy (no torch), so `tune/`
and `analysis/` can read it cheaply; dataset modules are imported when a dataset is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from cmda.data import (
    CLASSES,
    DARK_ZURICH_ISR,
    DIRECTIONS,
    DSEC_EXCLUDED_CLASS,
    DSEC_ISR,
    MIXED_ISR,
    NUM_CLASSES,
    ISRParams,
)
from cmda.errors import CMDAError
from cmda.validation import StrictModel, WidthHeight, crop_in_resize, fits

SECOND_MODALITIES = ("events", "isr")
"""What the second backbone encodes on the target: event voxel grids, or the image's ISR."""
EVAL_BRANCHES = ("fusion", "image")
"""Which output evaluation reads: the fusion of image and second modality, or the image branch alone."""


class TargetConfigBase(StrictModel):
    """Fields every target's `data.target` section has."""

    root: str
    """Dataset root folder (the layout is the target module's)."""

    @property
    def second_channels(self) -> int:
        """Input channels of the second backbone (3 for ISR and for a one-bin event grid)."""
        return 3

    @property
    def training_size(self) -> list[int]:
        """(width, height) of a training sample as the step sees it."""
        return list(self.crop)


class DSECNightConfig(TargetConfigBase):
    """`data.target` for DSEC-Night: a `crop` box is cut from the 640x480 frame, then resized to `resize`
    (the original's 400x400 -> 512x512); the test split is whole frames, rows [:test_rows]."""

    name: Literal["dsec_night"] = "dsec_night"
    root: str = "data/DSEC_Night"
    crop: WidthHeight = Field(default_factory=lambda: [400, 400])
    resize: WidthHeight = Field(default_factory=lambda: [512, 512])
    events_bins: int = Field(default=1, gt=0)
    """Voxel-grid time bins; one bin is repeated to 3 channels for the MiT stem (the paper's setting)."""
    window_frames: int = Field(default=1, gt=0)
    """Events of how many frame intervals before the image form one grid."""
    test_rows: int = Field(default=440, gt=0)

    @property
    def second_channels(self) -> int:
        return 3 if self.events_bins == 1 else self.events_bins

    @property
    def training_size(self) -> list[int]:
        return list(self.resize)  # the crop is resized after it is cut


class DarkZurichConfig(TargetConfigBase):
    """`data.target` for Dark Zurich: the night image is resized to `resize` (the original's 960x540),
    then a `crop` box is cut from it (512x512); the labelled validation split is evaluated whole."""

    name: Literal["dark_zurich"] = "dark_zurich"
    root: str = "data/dark_zurich"
    resize: WidthHeight = Field(default_factory=lambda: [960, 540])
    crop: WidthHeight = Field(default_factory=lambda: [512, 512])

    @field_validator("crop")
    @classmethod
    def _crop_fits_resize(cls, crop: list[int], info: ValidationInfo) -> list[int]:
        return crop_in_resize(crop, info.data.get("resize"), "target", "Dark Zurich")


@dataclass(frozen=True)
class Recipe:
    """The original's settings for one target: the values config fields left at null take."""

    fusion: str
    """Fusion module (cmda.models.fusion.FUSIONS) of image and second-modality features."""
    loss_weights: dict[str, float]
    """Branch CE weights: image, second (the second modality), fusion, isr (the extra un-fused ISR branch
    that exists only when the second modality is events)."""
    pseudo_weight_ignore_top: int = 0
    pseudo_weight_ignore_bottom: int = 0
    """Rows at the top / bottom of the night crop whose pseudo-label weight is 0."""


@dataclass(frozen=True)
class TargetSpec:
    """One target domain (see the module docstring for who reads what)."""

    name: str
    description: str
    second_modality: str
    """"events" (the second backbone sees event voxel grids) or "isr" (it sees the night image's ISR)."""
    headline_metric: str
    metrics: dict[str, tuple[int, ...]]
    """mIoU name -> trainIds averaged (reported in percent, with `iou/<class>` and `acc`)."""
    train_split: str
    test_split: str
    """The labelled split evaluations use, in the dataset's own naming."""
    config_model: type[TargetConfigBase]
    build: Callable[[Any, str, int | None], Any]
    """build(target_config, role, seed) -> Dataset; role is "train" or "test"."""
    recipe: Recipe
    eval_branch: str = "fusion"
    """What evaluation predicts with: "fusion" (image + second modality) or "image" (image alone)."""
    target_isr: ISRParams = DSEC_ISR
    mixed_isr: ISRParams = MIXED_ISR
    """ISR parameters of the night image and of the ClassMix-mixed image."""
    isr_shift: str = "random"
    """ISR shift direction of source, night and mixed images: "random" (drawn, as the DSEC recipe) or a
    fixed direction name (the Dark Zurich recipe uses "rightdown")."""
    loader_isr: bool = False
    """True: the night ISR comes from the loader (computed on the whole resized image before the crop, as
    the original does there); False: the step computes it on the device from the crop."""
    modalities: frozenset[str] = field(default_factory=frozenset)
    """What a target sample provides beyond the image (+ label on the test split): e.g. {"events"}."""
    num_classes: int = NUM_CLASSES
    synthetic_dir: str = ""
    """Folder of the synthetic twin under `cmda data synth ROOT`."""

    def __post_init__(self) -> None:
        if self.second_modality not in SECOND_MODALITIES:
            raise ValueError(f"target {self.name!r}: second_modality must be one of {SECOND_MODALITIES}")
        if self.second_modality == "events" and "events" not in self.modalities:
            raise ValueError(f"target {self.name!r}: second modality events, but it provides no events")
        if self.headline_metric not in self.metrics:
            raise ValueError(f"target {self.name!r}: headline metric {self.headline_metric!r} not in metrics")
        if self.eval_branch not in EVAL_BRANCHES:
            raise ValueError(f"target {self.name!r}: eval_branch must be one of {EVAL_BRANCHES}")
        if self.isr_shift != "random" and self.isr_shift not in DIRECTIONS:
            raise ValueError(f"target {self.name!r}: isr_shift must be 'random' or one of {DIRECTIONS}")

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every scalar an evaluation of this target reports (what a scheduler may rank on)."""
        return (*self.metrics, "acc", *(f"iou/{c}" for c in CLASSES))

    @property
    def fixed_isr_direction(self) -> int | None:
        """Index into DIRECTIONS when the ISR shift is fixed, None when it is drawn."""
        return None if self.isr_shift == "random" else DIRECTIONS.index(self.isr_shift)

    def provides(self, modality: str) -> bool:
        return modality in self.modalities


def check_crop_fits(crop: list[int], frame_wh: tuple[int, int], what: str, fix: str) -> None:
    """A crop larger than the frames it is cut from, as a sentence naming the key and the right fix."""
    if not fits(crop, list(frame_wh)):
        raise CMDAError(
            f"data.target.crop {crop} (width, height) is larger than the {what} "
            f"({frame_wh[0]}x{frame_wh[1]}) it is cut from; {fix}"
        )


def _build_dsec(cfg: DSECNightConfig, role: str, seed: int | None):
    from cmda.data.dsec import DSECNightDataset

    if role == "train":
        dataset = DSECNightDataset(
            cfg.root, "train", crop=tuple(cfg.crop), resize=tuple(cfg.resize), events_bins=cfg.events_bins,
            window_frames=cfg.window_frames, with_isr=False, seed=seed,
        )  # fmt: skip
        sequence = dataset.samples[0][0]
        height, width = dataset.rectify_map(sequence).shape[:2]
        check_crop_fits(
            cfg.crop, (width, height), f"DSEC-Night frames of {cfg.root}",
            "the crop is taken from the frame before it is resized to data.target.resize, so use a "
            f"data.target.crop of at most [{width}, {height}] (the original: [400, 400])",
        )  # fmt: skip
        return dataset
    return DSECNightDataset(
        cfg.root, "test", events_bins=cfg.events_bins, window_frames=cfg.window_frames,
        test_rows=cfg.test_rows, with_isr=False,
    )  # fmt: skip


def _build_dark_zurich(cfg: DarkZurichConfig, role: str, seed: int | None):
    from cmda.data.dark_zurich import DarkZurichDataset

    if role == "train":
        return DarkZurichDataset(
            cfg.root, "train", resize=tuple(cfg.resize), crop=tuple(cfg.crop), isr_params=DARK_ZURICH_ISR,
            with_isr=True, seed=seed,
        )  # fmt: skip
    return DarkZurichDataset(cfg.root, "val", resize=tuple(cfg.resize), with_isr=False)


ALL_CLASSES = tuple(range(NUM_CLASSES))

TARGETS: dict[str, TargetSpec] = {
    "dsec_night": TargetSpec(
        name="dsec_night",
        description="DSEC-Night (zurich_city_09_a..e): warped night frames + events, 18 evaluated classes",
        second_modality="events",
        headline_metric="miou18",
        metrics={
            "miou18": tuple(c for c in ALL_CLASSES if c != DSEC_EXCLUDED_CLASS),
            "miou19": ALL_CLASSES,
        },
        train_split="train",
        test_split="test",
        config_model=DSECNightConfig,
        build=_build_dsec,
        recipe=Recipe(
            fusion="attention_avg",
            loss_weights={"image": 0.5, "second": 0.5, "fusion": 0.5, "isr": 0.25},
        ),
        eval_branch="fusion",
        target_isr=DSEC_ISR,
        mixed_isr=MIXED_ISR,
        isr_shift="random",
        loader_isr=False,
        modalities=frozenset({"events"}),
        synthetic_dir="DSEC_Night",
    ),
    "dark_zurich": TargetSpec(
        name="dark_zurich",
        description="Dark Zurich night (rgb_anon/*/night): images only, the second backbone sees their ISR; "
        "evaluated on the 50 labelled validation images over 19 classes",
        second_modality="isr",
        headline_metric="miou19",
        metrics={"miou19": ALL_CLASSES},
        train_split="train",
        test_split="val",
        config_model=DarkZurichConfig,
        build=_build_dark_zurich,
        recipe=Recipe(
            fusion="attention",
            loss_weights={"image": 0.7, "second": 0.7, "fusion": 0.7, "isr": 0.25},
            pseudo_weight_ignore_top=15,
            pseudo_weight_ignore_bottom=120,
        ),
        # the original evaluates cs2dz_image+raw-isr on the image branch (whole_inference switches the
        # output to "image" and passes no ISR unless tools/test.py --image_isr is given)
        eval_branch="image",
        target_isr=DARK_ZURICH_ISR,
        mixed_isr=DARK_ZURICH_ISR,
        isr_shift="rightdown",
        loader_isr=True,
        modalities=frozenset(),
        synthetic_dir="dark_zurich",
    ),
}


class UnknownTargetError(CMDAError, ValueError):
    """A target name that is not in the registry."""


def get_target(name: str) -> TargetSpec:
    try:
        return TARGETS[name]
    except KeyError:
        raise UnknownTargetError(f"unknown target {name!r}; registered targets: {sorted(TARGETS)}") from None


DEFAULT_TARGET = "dsec_night"

"""The target-domain registry: what the rest of the code may ask of a target dataset.

A target domain is one module (its Dataset, file layout, data check and synthetic-twin writer) plus one
`TargetSpec` in `TARGETS`. Nothing outside this registry and that module names a dataset: the config (its
`data.target` section is the entry's `config_model`, picked by `data.target.name`), the trainer (datasets
come from `TargetSpec.dataset`), the training step (the second modality is events or the image's ISR, as
`second_modality` says; ISR parameters and shift rule come from the entry), evaluation (classes, metric
definitions, headline metric, which branch predicts), `cmda test`, the data tools (`cmda data check` and
`cmda data synth` loop over `dataset_kinds()`: the source, Cityscapes, and every target), sweep
validation, the scheduler's metric and the analysis all read the entry (DAFormer's "a dataset = one module
+ one registry entry + one config"). A target from outside the package registers with `register(spec)`
or an entry point in the group `cmda.targets` (loaded once, when the registry is first read).

The entry also holds the original's recipe for that setting (fusion module, branch loss weights, rows
the pseudo-label weight ignores): config fields left at null take these values, so a config says only
what it changes.

This module holds only plain data and pydantic models and imports nothing heavy (no torch), so `tune/`
and `analysis/` can read it cheaply; the functions an entry names in dataset modules are `Lazy`
references, imported when first called. docs/ARCHITECTURE.md ("Target domains") has the recipe.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
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

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "cmda.targets"
"""Entry points of this group name a `TargetSpec` (`name = package.module:SPEC`); they are registered the
first time the registry is read."""
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
class Lazy:
    """A function (or class) named by `module:qualified.name`, imported when first called: a registry
    entry names its dataset module's functions without importing torch."""

    reference: str

    def load(self) -> Any:
        module, _, qualified = self.reference.partition(":")
        found: Any = importlib.import_module(module)
        for part in qualified.split("."):
            found = getattr(found, part)
        return found

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.load()(*args, **kwargs)


@dataclass(frozen=True)
class DatasetFiles:
    """What the data tools know about one dataset's files: how to recognise a tree of it, how to check one
    (`cmda data check --kind <name>`, and before every training), and how to write its synthetic twin
    (`cmda data synth`). Every target has one (`TargetSpec.files`, its kind is the target's name); so has
    the source (`SOURCE`, kind `SOURCE_KIND`)."""

    title: str
    """How messages name it ("DSEC-Night")."""
    markers: tuple[str, ...]
    """Folders (glob patterns, relative to a root) whose presence marks a tree of this kind."""
    check: Callable[..., Any]
    """check(root, thorough=True, decode_images=False, settings=None) -> cmda.data.check.CheckReport;
    `settings` is the dataset's config section as a dict (or the command line's options)."""
    twin: Callable[..., Any]
    """twin(real_size=False, **options) -> a writer with `write(folder, seed, workers)` (see
    cmda.data.synthetic.Twin): options are the writer's own, validated before anything is written."""
    synthetic_dir: str
    """Folder of the synthetic twin under `cmda data synth ROOT`."""

    def recognises(self, folder: Path) -> bool:
        return any(match.is_dir() for marker in self.markers for match in folder.glob(marker))

    def describe(self) -> str:
        return f"{self.title}: {' or '.join(f'{marker}/' for marker in self.markers)}"


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
    """The split training draws from, in the dataset's own naming."""
    test_split: str
    """The labelled split evaluations use, in the dataset's own naming."""
    config_model: type[TargetConfigBase]
    build: Callable[..., Any]
    """build(target_config, split, seed, with_isr) -> Dataset (see `dataset`, which calls it)."""
    files: DatasetFiles
    """Its files: recognised, checked and synthesised by the data tools (kind: `name`)."""
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

    @property
    def synthetic_dir(self) -> str:
        """Folder of the synthetic twin under `cmda data synth ROOT`."""
        return self.files.synthetic_dir

    def provides(self, modality: str) -> bool:
        return modality in self.modalities

    def dataset(self, target_config: Any, role: str, seed: int | None = None) -> Any:
        """The Dataset of a role: "train" (`train_split`, augmented, the night ISR from the loader when
        `loader_isr`) or "test" (`test_split`, whole frames, the ISR only when evaluation fuses with it)."""
        if role == "train":
            return self.build(target_config, self.train_split, seed, self.loader_isr)
        if role == "test":
            fuses_isr = self.eval_branch == "fusion" and self.second_modality == "isr"
            return self.build(target_config, self.test_split, None, fuses_isr)
        raise ValueError(f"role must be 'train' or 'test', got {role!r}")


def check_crop_fits(crop: list[int], frame_wh: tuple[int, int], what: str, fix: str) -> None:
    """A crop larger than the frames it is cut from, as a sentence naming the key and the right fix."""
    if not fits(crop, list(frame_wh)):
        raise CMDAError(
            f"data.target.crop {crop} (width, height) is larger than the {what} "
            f"({frame_wh[0]}x{frame_wh[1]}) it is cut from; {fix}"
        )


ALL_CLASSES = tuple(range(NUM_CLASSES))

BUILT_IN: dict[str, TargetSpec] = {
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
        build=Lazy("cmda.data.dsec:build_dataset"),
        files=DatasetFiles(
            title="DSEC-Night",
            markers=("*/events",),
            check=Lazy("cmda.data.dsec_check:check"),
            twin=Lazy("cmda.data.dsec_twin:DsecTwin.make"),
            synthetic_dir="DSEC_Night",
        ),
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
        build=Lazy("cmda.data.dark_zurich:build_dataset"),
        files=DatasetFiles(
            title="Dark Zurich",
            markers=("rgb_anon",),
            check=Lazy("cmda.data.dark_zurich:check"),
            twin=Lazy("cmda.data.dark_zurich:DarkZurichTwin.make"),
            synthetic_dir="dark_zurich",
        ),
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
    ),
}


SOURCE_KIND = "cityscapes"
SOURCE = DatasetFiles(
    title="Cityscapes",
    markers=("leftImg8bit", "gtFine"),
    check=Lazy("cmda.data.cityscapes:check"),
    twin=Lazy("cmda.data.cityscapes:CityscapesTwin.make"),
    synthetic_dir="cityscapes",
)
"""The source dataset's files. The source is not a target (no recipe, no metrics: the trainer has one
source, `data.source`), but the data tools treat its tree like a target's, so it has the same record."""


class UnknownTargetError(CMDAError, ValueError):
    """A target name that is not in the registry."""


class TargetRegistryError(CMDAError, ValueError):
    """A target that cannot be registered (a name taken, an entry point that does not load)."""


class TargetRegistry(MutableMapping[str, TargetSpec]):
    """name -> TargetSpec: the built-in targets, then those of the `cmda.targets` entry points (loaded
    once, the first time the registry is read), then those given to `register`."""

    def __init__(self, entries: dict[str, TargetSpec]) -> None:
        self._entries = dict(entries)
        self._plugins_loaded = False

    def _loaded(self) -> dict[str, TargetSpec]:
        if not self._plugins_loaded:
            self._plugins_loaded = True  # first: a plugin that reads the registry while loading sees no loop
            for spec in _entry_point_targets():
                self.register(spec)
        return self._entries

    def register(self, spec: TargetSpec) -> TargetSpec:
        if not isinstance(spec, TargetSpec):
            raise TargetRegistryError(f"register() takes a TargetSpec, got {type(spec).__name__}")
        known = self._loaded().get(spec.name)
        if known is not None and known != spec:
            raise TargetRegistryError(f"target {spec.name!r} is already registered ({known.description})")
        if spec.name == SOURCE_KIND:
            raise TargetRegistryError(f"target name {spec.name!r} is the source dataset's")
        self._entries[spec.name] = spec
        return spec

    def __getitem__(self, name: str) -> TargetSpec:
        return self._loaded()[name]

    def __setitem__(self, name: str, spec: TargetSpec) -> None:
        self._loaded()[name] = spec

    def __delitem__(self, name: str) -> None:
        del self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        return f"TargetRegistry({sorted(self)})"


def _entry_point_targets() -> list[TargetSpec]:
    """The TargetSpecs the installed distributions declare in the `cmda.targets` entry-point group."""
    from importlib.metadata import entry_points

    found = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = entry.load()
        except Exception as error:  # noqa: BLE001 - named with the entry point, then raised
            raise TargetRegistryError(
                f"entry point {entry.name} = {entry.value} (group {ENTRY_POINT_GROUP}) does not load: "
                f"{type(error).__name__}: {error}"
            ) from error
        if not isinstance(spec, TargetSpec):
            raise TargetRegistryError(
                f"entry point {entry.name} = {entry.value} (group {ENTRY_POINT_GROUP}) names a "
                f"{type(spec).__name__}, expected a cmda.data.targets.TargetSpec"
            )
        log.debug("target %s registered from entry point %s", spec.name, entry.value)
        found.append(spec)
    return found


TARGETS = TargetRegistry(BUILT_IN)
"""The registry every reader uses (a mapping: `TARGETS[name]`, `sorted(TARGETS)`, `TARGETS.items()`)."""


def register(spec: TargetSpec) -> TargetSpec:
    """Register a target from outside the package (same name and same spec again: nothing changes)."""
    return TARGETS.register(spec)


def get_target(name: str) -> TargetSpec:
    try:
        return TARGETS[name]
    except KeyError:
        raise UnknownTargetError(f"unknown target {name!r}; registered targets: {sorted(TARGETS)}") from None


def dataset_kinds() -> dict[str, DatasetFiles]:
    """Every dataset the data tools know, source first: kind name -> its files."""
    return {SOURCE_KIND: SOURCE, **{name: spec.files for name, spec in TARGETS.items()}}


DEFAULT_TARGET = "dsec_night"

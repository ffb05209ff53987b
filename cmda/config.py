"""The trainer configuration: pydantic models loaded from YAML, every problem named by file and field.

A config is plain data (nanoGPT style): every knob has a documented default here, a YAML file overrides
what it names, and `--set a.b=value` (or a sweep's overrides) changes single dotted keys. Unknown keys,
wrong types and out-of-range numbers are errors that name the file and the dotted field
(`configs/x.yaml: field 'optim.lr': input should be greater than 0, got -1.0`), so a typo never silently
trains the wrong experiment. Choice lists (backbones, fusion modules, loss variants, targets) are read
from their registries, never copied.

`data.target` is the section of the target domain named by `data.target.name` (each target's fields are
its registry entry's `config_model`). Fields left at null (`model.fusion`, `uda.loss_weights.*`,
`uda.pseudo_weight_ignore_*`) take the original's recipe for that target; the loaded config holds the
resolved values, so a saved config.yaml says exactly what trained.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from cmda.data import NUM_CLASSES
from cmda.data.targets import DEFAULT_TARGET, TARGETS, TargetSpec, get_target
from cmda.errors import ConfigError
from cmda.io import YAMLFileError, is_unset, write_yaml_atomic
from cmda.models.checkpointing import CHECKPOINTING
from cmda.models.fusion import FUSIONS
from cmda.models.mit import MIT_CONFIGS
from cmda.overrides import load_with_overrides, parse_override
from cmda.uda.feature_losses import VARIANTS
from cmda.validation import (
    FiniteFloat,
    NonNegativeFloat,
    NonNegativeInt,
    Origin,
    PositiveInt,
    Probability,
    StrictModel,
    WidthHeight,
    crop_in_resize,
    field_error,
    register_union_tags,
    validate,
)

BackboneName = Literal[tuple(MIT_CONFIGS)]  # type: ignore[valid-type]
FusionName = Literal[tuple(FUSIONS)]  # type: ignore[valid-type]
VariantName = Literal[tuple(VARIANTS)]  # type: ignore[valid-type]
PositiveFloat = Annotated[FiniteFloat, Field(gt=0)]


def _yaml_off(value: Any) -> Any:
    """YAML 1.1 reads a bare `off` as false; for the fields whose choices include "off" it means "off"."""
    return "off" if value is False else value


CheckpointingMode = Annotated[Literal[CHECKPOINTING], BeforeValidator(_yaml_off)]  # type: ignore[valid-type]
AmpMode = Annotated[Literal["off", "bf16"], BeforeValidator(_yaml_off)]

_TARGET_MODELS = tuple(spec.config_model for spec in TARGETS.values())
register_union_tags(TARGETS)
TargetConfig = Annotated[Union[_TARGET_MODELS], Field(discriminator="name")]  # noqa: UP007 - registry models


class ModelConfig(StrictModel):
    backbone: BackboneName = "mit_b5"
    pretrained: str = "none"
    """NVlabs mit_bX.pth loaded into both backbones when a run starts from scratch; "none" = random init.
    Never read on resume or by `cmda test` (the weights are in the checkpoint)."""
    cyclegan: str = "none"
    """cityscapes_ICD_to_dsec_EN.pth (source motion -> pseudo-events), read when a run starts from scratch
    and kept in its checkpoints; "none" uses the raw motion image as source events."""
    init_from: str = "none"
    """A checkpoint folder (ours, or one written by `cmda import-checkpoint`) whose student and EMA teacher
    weights a new run starts from: fresh optimizer, iteration 0 (fine-tuning). `model.pretrained` is then
    not read; `model.cyclegan` still gives the translator. Never read on resume."""
    drop_path_rate: Annotated[FiniteFloat, Field(ge=0, lt=1)] = 0.1
    num_classes: PositiveInt = NUM_CLASSES
    decoder_channels: PositiveInt = 256
    fusion: FusionName | None = None
    """Fusion of image and second-modality features; null = the target's recipe."""
    activation_checkpointing: CheckpointingMode = "off"
    """"off", "blocks" or "stages": recompute the transformer blocks and decoder branches (blocks) or whole
    stages and decoders (stages) in the backward pass; the same losses and gradients for less memory and
    more compute (`cmda.models.checkpointing`; `cmda-tune plan` shows what each setting needs)."""


class RCSConfig(StrictModel):
    enabled: bool = True
    temperature: PositiveFloat = 0.01
    min_pixels: NonNegativeInt = 3000
    min_crop_ratio: Probability = 0.5


class SourceDataConfig(StrictModel):
    """Cityscapes: each image is resized to `resize`, then a `crop` box is cut from it."""

    root: str = "data/cityscapes"
    resize: WidthHeight = Field(default_factory=lambda: [1024, 512])
    crop: WidthHeight = Field(default_factory=lambda: [512, 512])
    cat_max_ratio: Probability | None = None
    """DAFormer's class-balanced crop (null = off, as CMDA)."""
    rcs: RCSConfig = Field(default_factory=RCSConfig)

    @field_validator("crop")
    @classmethod
    def _crop_fits_resize(cls, crop: list[int], info: ValidationInfo) -> list[int]:
        return crop_in_resize(crop, info.data.get("resize"), "source", "Cityscapes")


class DataConfig(StrictModel):
    source: SourceDataConfig = Field(default_factory=SourceDataConfig)
    target: TargetConfig = Field(default_factory=lambda: TARGETS[DEFAULT_TARGET].config_model())
    batch_size: PositiveInt = 2
    num_workers: NonNegativeInt = 4

    @field_validator("target", mode="before")
    @classmethod
    def _default_target(cls, value: Any) -> Any:
        """A section without `name` is the default target's."""
        if isinstance(value, dict) and "name" not in value:
            return {"name": DEFAULT_TARGET, **value}
        return value


class LossWeights(StrictModel):
    """Branch CE weights; null = the target's recipe (DSEC-Night 0.5/0.5/0.5/0.25, Dark Zurich
    0.7/0.7/0.7 with no extra ISR branch)."""

    image: NonNegativeFloat | None = None
    second: NonNegativeFloat | None = None
    """The second-modality branch (events on DSEC-Night, ISR on Dark Zurich); halved when the extra ISR
    branch exists, as the original does."""
    fusion: NonNegativeFloat | None = None
    isr: NonNegativeFloat | None = None
    """The extra, un-fused ISR branch (only where the second modality is events)."""

    def as_dict(self) -> dict[str, float]:
        return {"image": self.image, "second": self.second, "fusion": self.fusion, "isr": self.isr}


class FeatureLossConfig(StrictModel):
    variant: VariantName = "none"
    lambda_scale: NonNegativeFloat = 1.0
    """Multiplies every term's default lambda (1.0 = the registry's defaults; each term records whether its
    value is one the L2 fork ran, one read from its comments, or ours: `Term.provenance`)."""
    lambdas: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    """Explicit per-term lambdas; they win over the scale."""
    stages: Annotated[list[Annotated[int, Field(ge=0, le=3)]], Field(min_length=1)] = Field(
        default_factory=lambda: [3]
    )
    reduction: Literal["mse", "stats"] = "mse"
    """"mse" (element mean, the study's choice) or "stats" (MSE of per-channel means and variances)."""
    target_features: Literal["mixed", "night"] = "mixed"
    """Target-side features: the ClassMix batch ("mixed", as the study) or an extra pure-night pass."""
    mask_source: Literal["source", "target"] = "source"
    """Which events mask the masked-event term: the source pseudo-events or the target's events."""

    @field_validator("lambdas")
    @classmethod
    def _terms_of_variant(cls, lambdas: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        variant = info.data.get("variant")
        if variant is None:
            return lambdas
        terms = sorted(VARIANTS[variant].terms)
        unknown = sorted(set(lambdas) - set(terms))
        if unknown:
            raise ValueError(
                f"{unknown} not terms of variant {variant!r} (its terms: {', '.join(terms) or 'none'})"
            )
        return lambdas

    def resolved_lambdas(self) -> dict[str, float]:
        """The per-term lambdas that train."""
        return VARIANTS[self.variant].resolve_lambdas(self.lambda_scale, self.lambdas)


class UDAConfig(StrictModel):
    alpha: Probability = 0.999
    """EMA decay of the teacher."""
    pseudo_threshold: Probability = 0.968
    loss_weights: LossWeights = Field(default_factory=LossWeights)
    pseudo_weight_ignore_top: NonNegativeInt | None = None
    pseudo_weight_ignore_bottom: NonNegativeInt | None = None
    """Rows at the top / bottom of the night crop whose pseudo-label weight is 0; null = the target's
    recipe (0 / 0 on DSEC-Night, 15 / 120 on Dark Zurich)."""
    color_jitter_strength: NonNegativeFloat = 0.2
    color_jitter_p: Probability = 0.8
    """Probability of jittering the mixed image (the original jitters when U(0,1) > 0.2)."""
    blur: bool = True
    teacher_events_p: Probability = 0.5
    """On targets with events: probability that the teacher fuses the night image with events (else with
    the night ISR). Targets whose second modality is ISR always fuse with the ISR."""
    feature_loss: FeatureLossConfig = Field(default_factory=FeatureLossConfig)


class OptimConfig(StrictModel):
    lr: PositiveFloat = 6e-5
    weight_decay: NonNegativeFloat = 0.01
    head_lr_mult: PositiveFloat = 10.0
    betas: Annotated[list[Annotated[FiniteFloat, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)] = (
        Field(default_factory=lambda: [0.9, 0.999])
    )
    warmup_iters: NonNegativeInt = 1500
    warmup_ratio: Annotated[FiniteFloat, Field(gt=0, le=1)] = 1e-6
    power: NonNegativeFloat = 1.0
    grad_clip: PositiveFloat | None = None


class TrainConfig(StrictModel):
    max_iters: PositiveInt = 40000
    """Optimizer steps (the learning-rate schedule, evaluation and checkpoints count these)."""
    accumulate: PositiveInt = 1
    """Gradient accumulation: each optimizer step sums the gradients of `accumulate` forward/backward passes
    of `data.batch_size` samples each (losses scaled by 1/accumulate), i.e. an effective batch of
    accumulate x batch_size in a fraction of the activation memory. Equal to the large batch except for
    the decoder's BatchNorm statistics and the step's per-batch draws (README, Config)."""
    eval_interval: PositiveInt = 4000
    log_interval: PositiveInt = 50
    work_dir: str = "runs/cmda"
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")] = "auto"
    """"auto" (CUDA when available), "cpu", "cuda" or "cuda:N"."""
    amp: AmpMode = "off"
    """"off": fp32 (TF32 matmuls allowed on CUDA), as the original and the study train; "bf16": autocast,
    an opt-in speed setting and a documented deviation."""
    deterministic: bool = False
    resume: Literal["never", "auto"] = "never"
    """"never" or "auto" (continue from <work_dir>/checkpoints/latest when it exists)."""
    keep_checkpoints: PositiveInt = 2
    progress_bar: bool = True
    tensorboard: bool = True


class Config(StrictModel):
    name: str = "cmda"
    seed: NonNegativeInt = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    uda: UDAConfig = Field(default_factory=UDAConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _target_recipe(self) -> Config:
        """Null recipe fields take the target's values (see the module docstring)."""
        recipe = self.target.recipe
        if self.model.fusion is None:
            self.model.fusion = recipe.fusion
        weights = self.uda.loss_weights
        for key, value in recipe.loss_weights.items():
            if getattr(weights, key) is None:
                setattr(weights, key, value)
        if self.uda.pseudo_weight_ignore_top is None:
            self.uda.pseudo_weight_ignore_top = recipe.pseudo_weight_ignore_top
        if self.uda.pseudo_weight_ignore_bottom is None:
            self.uda.pseudo_weight_ignore_bottom = recipe.pseudo_weight_ignore_bottom
        return self

    @property
    def target(self) -> TargetSpec:
        """The registry entry of `data.target.name`."""
        return get_target(self.data.target.name)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


def sync_target_configs() -> None:
    """Let `data.target` take the section of every registered target, also one registered (`register`,
    an entry point) after this module was imported: the union of config models is rebuilt when the
    registry changed."""
    global _TARGET_MODELS
    models = tuple(spec.config_model for spec in TARGETS.values())
    if models == _TARGET_MODELS:
        return
    register_union_tags(TARGETS)
    DataConfig.model_fields["target"].annotation = Union[models]  # noqa: UP007 - the discriminator stays
    DataConfig.model_rebuild(force=True)
    Config.model_rebuild(force=True)
    _TARGET_MODELS = models


def cross_field_errors(config: Config, source: str) -> list[str]:
    """Problems that span fields or need a registry entry, one line each (same format as pydantic's)."""
    spec = config.target
    errors = []
    if config.model.num_classes != spec.num_classes:
        errors.append(field_error(
            source, "model.num_classes",
            f"target {spec.name!r} (data.target.name) labels and evaluates {spec.num_classes} classes (the "
            f"Cityscapes trainIds); set model.num_classes: {spec.num_classes}", config.model.num_classes,
        ))  # fmt: skip
    variant = VARIANTS[config.uda.feature_loss.variant]
    for term, needs in variant.requires.items():
        missing = sorted(needs - spec.modalities)
        if missing:
            provides = ", ".join(sorted(spec.modalities)) or "images only"
            errors.append(field_error(
                source, "uda.feature_loss.variant",
                f"term {term!r} of variant {variant.name!r} needs {', '.join(missing)} from the target, but "
                f"target {spec.name!r} (data.target.name) provides {provides} (its second modality is "
                f"{spec.second_modality}); choose a variant without that term or a target with {missing[0]}",
                variant.name,
            ))  # fmt: skip
    if not spec.provides("events") and not is_unset(config.model.cyclegan):
        errors.append(field_error(
            source, "model.cyclegan",
            f"target {spec.name!r} (data.target.name) has no events, and the CycleGAN translator only makes "
            "source pseudo-events for event targets; set model.cyclegan: none", config.model.cyclegan,
        ))  # fmt: skip
    return errors


def config_from_dict(data: Any, source: str = "<dict>", origin_of: Origin | None = None) -> Config:
    """Build and validate a Config from a nested dict (missing keys keep their defaults); `origin_of`
    names where a field's value came from when that is not `source` (a `--set` option)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config must be a mapping of sections, got {type(data).__name__}")
    sync_target_configs()
    config = validate(Config, data, source, ConfigError, origin_of)
    errors = cross_field_errors(config, source)
    if errors:
        raise ConfigError("\n".join(errors))
    return config


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | list[str] | None = None) -> Config:
    """Load a YAML config file, apply overrides, validate."""
    try:
        data = load_with_overrides(path, overrides)
    except YAMLFileError as error:
        raise ConfigError(str(error)) from None
    return config_from_dict(data, source=str(path), origin_of=override_origins(overrides))


def override_origins(overrides: dict[str, Any] | list[str] | None) -> Origin:
    """Field -> the `--set KEY=VALUE` option that set it (or that replaced a section above it), so a
    problem with a value given on the command line is reported against the command line, not the file."""
    if isinstance(overrides, list):
        given = {parse_override(item)[0]: f"--set {item}" for item in overrides}
    else:
        given = {key: f"override '{key}'" for key in overrides or {}}

    def origin_of(field: str) -> str | None:
        for key, where in given.items():
            if field == key or field.startswith((f"{key}.", f"{key}[")) or key.startswith(f"{field}."):
                return where
        return None

    return origin_of


def save_config(config: Config, path: str | os.PathLike[str]) -> Path:
    """Write the config (resolved values) as YAML, atomically."""
    return write_yaml_atomic(path, config.to_dict())

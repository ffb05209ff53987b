"""Typed trainer configuration: plain dataclasses loaded from YAML and validated with clear errors.

A config is plain data (nanoGPT style): every knob has a documented default here, a YAML file overrides
what it names, and `--set a.b=value` (or a sweep's overrides) change single dotted keys. Unknown keys and
wrong types are errors that name the dotted key and the file, so a typo never silently trains the wrong
experiment.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config value or key that is not what the trainer expects."""


@dataclass
class ModelConfig:
    backbone: str = "mit_b5"
    pretrained: str = "none"
    """Path to an NVlabs mit_bX.pth, or "none" to train from scratch."""
    cyclegan: str = "none"
    """Path to cityscapes_ICD_to_dsec_EN.pth; "none" uses the raw motion image as source events."""
    drop_path_rate: float = 0.1
    num_classes: int = 19
    decoder_channels: int = 256
    fusion: str = "attention_avg"


@dataclass
class RCSConfig:
    enabled: bool = True
    temperature: float = 0.01
    min_pixels: int = 3000
    min_crop_ratio: float = 0.5


@dataclass
class SourceDataConfig:
    root: str = "data/cityscapes"
    resize: list[int] = field(default_factory=lambda: [1024, 512])
    crop: list[int] = field(default_factory=lambda: [512, 512])
    cat_max_ratio: float | None = None
    rcs: RCSConfig = field(default_factory=RCSConfig)


@dataclass
class TargetDataConfig:
    root: str = "data/DSEC_Night"
    crop: list[int] = field(default_factory=lambda: [400, 400])
    resize: list[int] = field(default_factory=lambda: [512, 512])
    events_bins: int = 1
    test_rows: int = 440
    window_frames: int = 1


@dataclass
class DataConfig:
    source: SourceDataConfig = field(default_factory=SourceDataConfig)
    target: TargetDataConfig = field(default_factory=TargetDataConfig)
    batch_size: int = 2
    num_workers: int = 4


@dataclass
class FeatureLossConfig:
    variant: str = "none"
    weight: float | None = None
    """One lambda for every term of the variant; null keeps the per-term defaults."""
    lambdas: dict[str, float] = field(default_factory=dict)
    """Per-term lambdas; they win over `weight`."""
    stages: list[int] = field(default_factory=lambda: [3])
    reduction: str = "mse"
    """"mse" (element mean, the study's choice) or "stats" (MSE of per-channel means and variances)."""
    target: str = "mixed"
    """"mixed" (the ClassMix batch, as the study) or "night" (an extra student pass on the night batch)."""
    mask_source: str = "source"
    """Which events mask the masked_event term: "source" pseudo-events or "target" events."""


@dataclass
class UDAConfig:
    alpha: float = 0.999
    pseudo_threshold: float = 0.968
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"image": 0.5, "events": 0.5, "fusion": 0.5, "isr": 0.25}
    )
    color_jitter_strength: float = 0.2
    color_jitter_p: float = 0.2
    """Jitter is applied when U(0,1) > this value (the original's naming)."""
    blur: bool = True
    teacher_events_p: float = 0.5
    """Probability that the teacher fuses the night image with events (else with the night ISR)."""
    feature_loss: FeatureLossConfig = field(default_factory=FeatureLossConfig)


@dataclass
class OptimConfig:
    lr: float = 6e-5
    weight_decay: float = 0.01
    head_lr_mult: float = 10.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 1.0
    grad_clip: float | None = None


@dataclass
class TrainConfig:
    max_iters: int = 40000
    eval_interval: int = 4000
    log_interval: int = 50
    work_dir: str = "runs/cmda"
    device: str = "auto"
    amp: str = "auto"
    """"auto" (bf16 on CUDA, off on CPU), "bf16" or "off"."""
    deterministic: bool = False
    resume: str = "never"
    """"never" or "auto" (continue from <work_dir>/checkpoints/latest when it exists)."""
    keep_checkpoints: int = 2
    progress_bar: bool = True
    tensorboard: bool = True


@dataclass
class Config:
    name: str = "cmda"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    uda: UDAConfig = field(default_factory=UDAConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES = {
    "uda.feature_loss.reduction": ("mse", "stats"),
    "uda.feature_loss.target": ("mixed", "night"),
    "uda.feature_loss.mask_source": ("source", "target"),
    "train.amp": ("auto", "bf16", "off"),
    "train.resume": ("never", "auto"),
    "model.fusion": ("attention_avg", "attention", "average"),
}


def _check_value(value: Any, annotation: Any, key: str, source: str) -> Any:
    """Check (and lightly coerce: int -> float, tuple -> list) one value against its annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, key, source)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        (item,) = typing.get_args(annotation)
        return [_check_value(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        _, item = typing.get_args(annotation)
        return {str(k): _check_value(v, item, f"{key}.{k}", source) for k, v in value.items()}
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: '{key}' has an unsupported type {annotation}")


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"'{prefix}.{unknown[0]}'" if prefix else f"'{unknown[0]}'"
        raise ConfigError(f"{source}: unknown key {where}; valid keys here: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        key = f"{prefix}.{name}" if prefix else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, data[name], key, source)
        else:
            kwargs[name] = _check_value(data[name], annotation, key, source)
    return cls(**kwargs)


def _validate(config: Config, source: str) -> None:
    flat = {
        "uda.feature_loss.reduction": config.uda.feature_loss.reduction,
        "uda.feature_loss.target": config.uda.feature_loss.target,
        "uda.feature_loss.mask_source": config.uda.feature_loss.mask_source,
        "train.amp": config.train.amp,
        "train.resume": config.train.resume,
        "model.fusion": config.model.fusion,
    }
    for key, value in flat.items():
        if value not in CHOICES[key]:
            raise ConfigError(f"{source}: '{key}' must be one of {CHOICES[key]}, got {value!r}")
    from cmda.models.mit import MIT_CONFIGS
    from cmda.uda.feature_losses import VARIANTS

    if config.model.backbone not in MIT_CONFIGS:
        raise ConfigError(
            f"{source}: 'model.backbone' must be one of {sorted(MIT_CONFIGS)}, got {config.model.backbone!r}"
        )
    loss = config.uda.feature_loss
    if loss.variant not in VARIANTS:
        raise ConfigError(
            f"{source}: 'uda.feature_loss.variant' must be one of {sorted(VARIANTS)}, got {loss.variant!r}"
        )
    terms = VARIANTS[loss.variant].terms
    for term, value in loss.lambdas.items():
        if term not in terms:
            raise ConfigError(
                f"{source}: 'uda.feature_loss.lambdas.{term}' is not a term of variant {loss.variant!r} "
                f"(its terms: {sorted(terms) or 'none'})"
            )
        if value < 0:
            raise ConfigError(f"{source}: 'uda.feature_loss.lambdas.{term}' must be >= 0, got {value}")
    if loss.weight is not None and loss.weight < 0:
        raise ConfigError(f"{source}: 'uda.feature_loss.weight' must be >= 0 or null, got {loss.weight}")
    for stage in loss.stages:
        if not 0 <= stage <= 3:
            raise ConfigError(f"{source}: 'uda.feature_loss.stages' entries must be 0..3, got {stage}")
    for key, pair in (
        ("data.source.resize", config.data.source.resize),
        ("data.source.crop", config.data.source.crop),
        ("data.target.crop", config.data.target.crop),
        ("data.target.resize", config.data.target.resize),
    ):
        if len(pair) != 2 or min(pair) <= 0:
            raise ConfigError(f"{source}: '{key}' must be [width, height] of positive integers, got {pair}")
    positive = {
        "data.batch_size": config.data.batch_size,
        "train.max_iters": config.train.max_iters,
        "train.eval_interval": config.train.eval_interval,
        "train.log_interval": config.train.log_interval,
        "data.target.events_bins": config.data.target.events_bins,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{source}: '{key}' must be > 0, got {value}")


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Build and validate a Config from a nested dict (missing keys keep their defaults)."""
    config = _build(Config, data or {}, "", source)
    _validate(config, source)
    return config


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """Return a copy of `data` with dotted-key overrides applied (strings 'k=v' are YAML-parsed)."""
    result = copy.deepcopy(data)
    if not overrides:
        return result
    items = [parse_override(o) for o in overrides] if isinstance(overrides, list) else list(overrides.items())
    for key, value in items:
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{key}': '{part}' is not a mapping")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return result


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | list[str] | None = None) -> Config:
    """Load a YAML config file, apply overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    return config_from_dict(apply_overrides(data, overrides), source=str(path))


def save_config(config: Config, path: str | os.PathLike[str]) -> None:
    """Write the config as YAML, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config.to_dict(), handle, sort_keys=False)
    os.replace(tmp, path)

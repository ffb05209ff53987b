"""Sweep files: the schema, and its validation before Ray starts.

A sweep file names a trainer config, dotted overrides shared by every trial, and either an ablation grid
(variant x lambda scale, or explicit per-term lambdas, x seed) or an Optuna budget over configurations.
Everything here is plain data validated with pydantic (`cmda.validation`), without Ray, so a typo costs a
second instead of a cluster allocation; every error names the file and the dotted field.

Lambdas: the grid's `lambda_scales` multiply each term's default (`cmda.uda.feature_losses.VARIANTS`, the
L2 fork's values), or a grid entry gives explicit per-term `lambdas`; either resolves here into the
`tune.configuration.Configuration` the trials train. See docs/ARCHITECTURE.md (tune).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from cmda.data.targets import DEFAULT_TARGET
from cmda.io import YAMLFileError, load_yaml
from cmda.overrides import dotted_get, load_with_overrides
from cmda.uda.variant_names import VARIANT_NAMES
from cmda.validation import StrictModel, validate, whole_number
from tune.configuration import BASELINE_VARIANT, Configuration, Ladder, round_value
from tune.decision import DecideSpec
from tune.errors import SweepError
from tune.paths import parse_path_map
from tune.space import EMPTY, Space, SpaceError, parse_space

ASHA_TYPES = ("asha", "per_config_asha")
SCHEDULER_TYPES = (*ASHA_TYPES, "none")
CALLBACK_TYPES = ("wandb", "mlflow")
AUTO = "auto"
"""`max_concurrent_trials: auto`; the driver resolves it to a number once connected (tune.capacity)."""
MAX_GPUS_PER_TRIAL = 1.0
# Keys the search space sets for each trial; a sweep's overrides must not fight over them.
TRIAL_KEYS = (
    "seed",
    "uda.feature_loss.variant",
    "uda.feature_loss.lambdas",
    "uda.feature_loss.lambda_scale",
)


# -- the file's schema ------------------------------------------------------------------------------------


def _entry_from_name(value: Any) -> Any:
    """A bare variant name in a list of variants is shorthand for {variant: name}."""
    return {"variant": value} if isinstance(value, str) else value


class GridEntry(StrictModel):
    """One variant of the grid: scaled default lambdas (the grid's scales unless given) or explicit ones."""

    variant: str
    lambda_scales: list[float] | None = Field(default=None, min_length=1)
    lambdas: dict[str, float] | None = None

    @field_validator("lambda_scales")
    @classmethod
    def _scales_non_negative(cls, value: list[float] | None) -> list[float] | None:
        for scale in value or []:
            if not math.isfinite(scale) or scale < 0:
                raise ValueError(f"lambda scales must be finite numbers >= 0, got {scale!r}")
        return value

    @field_validator("lambdas")
    @classmethod
    def _lambdas_non_negative(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for term, lam in (value or {}).items():
            if not math.isfinite(lam) or lam < 0:
                raise ValueError(f"lambda of term {term!r} must be a finite number >= 0, got {lam!r}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> GridEntry:
        if self.lambda_scales is not None and self.lambdas is not None:
            raise ValueError("give either lambda_scales or explicit per-term lambdas, not both")
        return self


class GridSpace(StrictModel):
    variants: list[GridEntry] = Field(min_length=1)
    lambda_scales: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("variants", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return [_entry_from_name(v) for v in value] if isinstance(value, list) else value

    @field_validator("lambda_scales")
    @classmethod
    def _scales(cls, value: list[float]) -> list[float]:
        return GridEntry._scales_non_negative(value) or []

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate seeds in {value}")
        return value


class ScaleRange(StrictModel):
    """Log-uniform range Optuna samples a lambda scale from."""

    low: float = Field(gt=0, allow_inf_nan=False)
    high: float = Field(gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> ScaleRange:
        if self.high <= self.low:
            raise ValueError(f"a log-uniform range needs low < high, got low={self.low}, high={self.high}")
        return self


class OptunaEntry(StrictModel):
    variant: str
    lambda_scale: ScaleRange | None = None


class OptunaSpace(StrictModel):
    """Optuna samples configurations (variant, lambda scale); each one runs on every seed."""

    variants: list[OptunaEntry] = Field(min_length=1)
    lambda_scale: ScaleRange | None = None
    num_samples: int = Field(ge=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    sampler_seed: int = 0

    @field_validator("variants", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, (list, Mapping)) and _contains_grid(value):
            raise ValueError("Optuna cannot take grid entries; use search.grid for an exhaustive grid")
        return [_entry_from_name(v) for v in value] if isinstance(value, list) else value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        return GridSpace._unique_seeds(value)


def _contains_grid(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "grid_search" in value or "grid" in value or any(_contains_grid(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_grid(v) for v in value)
    return False


class SearchSection(StrictModel):
    grid: GridSpace | None = None
    optuna: OptunaSpace | None = None
    space: dict[str, Any] | None = None
    """Dotted trainer keys varied beside the ablation (tune.space: grid, choice, uniform, loguniform, randint,
    qrandint)."""
    num_samples: int | None = Field(default=None, ge=1)
    """Draws of the space's sampled entries per grid point (grid search; default 1)."""
    sampler_seed: int | None = None
    """Seed of those draws (grid search; default 0)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchSection:
        if (self.grid is None) == (self.optuna is None):
            raise ValueError("give exactly one of 'grid' or 'optuna'")
        return self


class SchedulerSection(StrictModel):
    """Early stopping: `asha` (per trial), `per_config_asha` (per configuration, over its seeds) or none."""

    type: Literal[SCHEDULER_TYPES] = "none"  # type: ignore[valid-type]
    metric: str | None = None
    """Default: the target's headline metric (miou18 on DSEC-Night, miou19 on Dark Zurich)."""
    mode: Literal["max", "min"] | None = None
    """Default: max."""
    time_attr: str = "iteration"
    grace_period: int | None = Field(default=None, ge=1)
    reduction_factor: float = Field(default=2.0, gt=1, allow_inf_nan=False)
    max_t: int | None = Field(default=None, ge=1)
    """Default: the trainer's train.max_iters."""


class ResourcesSection(StrictModel):
    cpu: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    gpu: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """Per trial: a fraction shares a GPU, 1 is a whole one; more is refused (`MAX_GPUS_PER_TRIAL`)."""
    autoscaling: bool = False
    """The cluster starts nodes on demand (also recognised by itself: tune.capacity): a trial no current
    node can hold is then a warning, and the trials wait for the nodes the autoscaler starts."""
    cluster_gpus: int | None = Field(default=None, ge=1)
    """GPUs the cluster has or can scale to, for `max_concurrent_trials: auto` where the autoscaler's
    maximum cannot be read (default: read it, else count the GPUs of the nodes that are up)."""

    @field_validator("gpu")
    @classmethod
    def _one_device(cls, value: float) -> float:
        if value > MAX_GPUS_PER_TRIAL:
            raise ValueError(
                f"a trial trains on one device (cmda.train is one process, one GPU), so {value:g} GPUs per "
                f"trial would leave {value - 1:g} idle; use resources.gpu: 1 and let max_concurrent_trials: "
                "auto run one trial per GPU (the study's trials are independent)"
            )
        return value


class FailureSection(StrictModel):
    max_failures: int = Field(default=0, ge=-1)


class CheckpointSection(StrictModel):
    num_to_keep: int = Field(default=1, ge=1)
    """Best checkpoints kept by the sweep's metric; the latest is always kept besides them."""


class ReferenceEntry(StrictModel):
    """The configuration every other one is compared with: a variant of the grid, with its lambda scale
    (or explicit lambdas) where the grid has that variant at several."""

    variant: str
    lambda_scale: float | None = None
    lambdas: dict[str, float] | None = None


class DecideSection(StrictModel):
    """`decide:` (tune.decision.DecideSpec): run the study until each comparison with the reference is
    decided better, worse or equivalent, or its seeds or the budget run out."""

    effect: float
    power: float = 0.8
    alpha: float = 0.05
    max_seeds: int = 12
    budget: float = 1.0
    fit: Literal["worst", "expected"] = "worst"


class SweepFile(StrictModel):
    name: str | None = None
    base_config: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    search: SearchSection
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    max_concurrent_trials: Annotated[int, Field(ge=1)] | Literal["auto"] | None = None
    """Trials at once: a number, "auto" (every GPU the cluster has or can scale to, one trial each, in
    whole groups of seeds: tune.capacity), or unset (as many as the nodes hold)."""
    storage_path: str = Field(default="~/ray_results", min_length=1)
    failure: FailureSection = Field(default_factory=FailureSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    callbacks: dict[Literal[CALLBACK_TYPES], dict[str, Any] | bool] = Field(default_factory=dict)  # type: ignore[valid-type]
    path_map: dict[str, str] = Field(default_factory=dict)
    """Driver folder -> the folder the cluster's nodes mount it at (tune.paths)."""
    reference: ReferenceEntry | None = None
    """Default: variant none (the baseline), when the grid has it."""
    decide: DecideSection | None = None
    # Resolved values, written into the experiment folder's sweep.yaml; when given they must agree.
    metric: str | None = None
    mode: Literal["max", "min"] | None = None
    target: str | None = None

    @field_validator("reference", mode="before")
    @classmethod
    def _reference_name(cls, value: Any) -> Any:
        return _entry_from_name(value)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value):
            raise ValueError("expected a folder name without '/'")
        return value

    @field_validator("overrides")
    @classmethod
    def _dotted_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key or key.startswith(".") or key.endswith("."):
                raise ValueError(f"expected dotted config keys such as 'train.max_iters', got {key!r}")
        return value


# -- configurations and trials ----------------------------------------------------------------------------


def resolve_lambdas(
    variant: str, scale: float | None, explicit: Mapping[str, float] | None
) -> dict[str, float]:
    """Per-term lambdas: the trainer's own rule (`VARIANTS[v].resolve_lambdas`, scale None = 1.0), rounded as
    configurations round them (`tune.configuration.round_value`). An unknown term is a KeyError."""
    from cmda.uda.feature_losses import VARIANTS

    try:
        factor = 1.0 if scale is None else float(scale)
        resolved = VARIANTS[variant].resolve_lambdas(factor, dict(explicit or {}))
    except ValueError as exc:
        raise KeyError(str(exc)) from None
    return {term: round_value(value) for term, value in sorted(resolved.items())}


def make_configuration(
    variant: str,
    scale: float | None,
    explicit: Mapping[str, float] | None,
    params: Mapping[str, Any] | None = None,
) -> Configuration:
    """The configuration a grid entry or an Optuna sample trains: its lambdas resolved; the scale kept
    for its label (not for the baseline, nor for explicit lambdas); `params` its setting of the search
    space's keys (tune.space)."""
    lambdas = resolve_lambdas(variant, scale, explicit)
    shown_scale = None if variant == BASELINE_VARIANT or explicit is not None else scale
    return Configuration(variant, tuple(lambdas.items()), dict(params or {}), lambda_scale=shown_scale)


@dataclass(frozen=True)
class GridSearch:
    configurations: tuple[Configuration, ...]
    seeds: tuple[int, ...]
    space: Space = EMPTY
    """The search space the configurations' settings came from (already crossed into them)."""

    @property
    def num_trials(self) -> int:
        return len(self.configurations) * len(self.seeds)


@dataclass(frozen=True)
class OptunaSearch:
    variants: tuple[str, ...]
    ranges: dict[str, ScaleRange]  # variant -> lambda-scale range; the baseline has none
    num_samples: int
    seeds: tuple[int, ...]
    sampler_seed: int
    space: Space = EMPTY
    """Sampled entries Optuna draws with each configuration (tune.space)."""

    @property
    def num_trials(self) -> int:
        """An upper bound: a configuration sampled twice runs once."""
        return self.num_samples * len(self.seeds)


@dataclass(frozen=True)
class SchedulerSpec:
    type: str = "none"
    time_attr: str = "iteration"
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_t: int = 1

    @property
    def ladder(self) -> Ladder | None:
        """The rungs the scheduler decides at (None without early stopping)."""
        if self.type not in ASHA_TYPES:
            return None
        return Ladder(self.grace_period, self.reduction_factor, self.max_t)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file with everything resolved: paths are absolute, the metric is the target's."""

    path: Path
    name: str
    base_config: Path
    overrides: dict[str, Any]
    search: GridSearch | OptunaSearch
    scheduler: SchedulerSpec
    metric: str
    mode: str
    target: str
    max_iters: int
    eval_interval: int
    backbone: str
    cpu: float
    gpu: float
    max_concurrent_trials: int | str | None
    """A number, AUTO (resolved by the driver into a number before the Tuner is built) or None."""
    storage_path: str
    max_failures: int
    num_to_keep: int
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    path_map: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    autoscaling: bool = False
    cluster_gpus: int | None = None
    reference: Configuration | None = None
    """What every configuration is compared with: never stopped by a scheduler, its seeds launched first."""
    decide: DecideSpec | None = None

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.search.seeds

    @property
    def waits_at_rungs(self) -> bool:
        """Per-configuration ASHA holds a seed at a rung until its siblings reach it (so every seed of a
        configuration ends at one iteration); only possible when the slots hold a configuration's seeds."""
        slots = self.max_concurrent_trials  # `auto` is resolved in whole configurations (tune.capacity)
        holds_seeds = not isinstance(slots, int) or slots >= len(self.seeds)
        return self.scheduler.type == "per_config_asha" and holds_seeds

    @property
    def max_trials(self) -> int:
        """Every trial the sweep may create: with `decide:`, every configuration at max_seeds."""
        if self.decide is not None and isinstance(self.search, GridSearch):
            return len(self.search.configurations) * max(self.decide.max_seeds, len(self.seeds))
        return self.search.num_trials

    def common_params(self) -> dict[str, Any]:
        """Entries every trial shares: the base config, the overrides and the backbone (informative)."""
        return {
            "base_config": str(self.base_config),
            "overrides": dict(self.overrides),
            "backbone": self.backbone,
        }

    def trial_params(self, configuration: Configuration, seed: int) -> dict[str, Any]:
        return {"ablation": configuration.as_param(), "seed": int(seed), **self.common_params()}

    def grid_trials(self) -> list[dict[str, Any]]:
        """Every trial's params in launch order: configuration-major, a configuration's seeds side by side
        (so its seeds reach each rung together and per-configuration decisions never wait long)."""
        if not isinstance(self.search, GridSearch):
            raise TypeError("the trials of an Optuna sweep are sampled at run time")
        return [self.trial_params(c, s) for c in self.launch_order() for s in self.search.seeds]

    def launch_order(self) -> tuple[Configuration, ...]:
        """The grid's configurations, the reference first (its seeds are needed by every comparison)."""
        if not isinstance(self.search, GridSearch):
            raise TypeError("the trials of an Optuna sweep are sampled at run time")
        configurations = self.search.configurations
        first = None if self.reference is None else self.reference.key
        return tuple(sorted(configurations, key=lambda c: c.key != first))


def _fail(path: Path, fieldname: str, message: str) -> SweepError:
    return SweepError(f"{path}: field '{fieldname}': {message}")


def _check_variant(path: Path, where: str, name: str) -> None:
    if name not in VARIANT_NAMES:
        raise _fail(path, where, f"unknown variant {name!r}; valid variants: {list(VARIANT_NAMES)}")


def _grid(path: Path, grid: GridSpace) -> GridSearch:
    configurations: list[Configuration] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(grid.variants):
        where = f"search.grid.variants[{i}]"
        _check_variant(path, f"{where}.variant", entry.variant)
        if entry.variant == BASELINE_VARIANT:
            if entry.lambda_scales is not None or entry.lambdas:
                raise _fail(path, where, "the baseline 'none' has no feature loss: it takes no lambdas")
            cells = [make_configuration(entry.variant, None, None)]  # once per seed, never per scale
        elif entry.lambdas is not None:
            try:
                cells = [make_configuration(entry.variant, None, entry.lambdas)]
            except KeyError as exc:
                raise _fail(path, f"{where}.lambdas", str(exc.args[0])) from None
        else:
            scales = entry.lambda_scales if entry.lambda_scales is not None else grid.lambda_scales
            cells = [make_configuration(entry.variant, s, None) for s in scales]
        for cell in cells:
            if cell.key in seen:
                raise _fail(
                    path,
                    where,
                    f"configuration {cell.variant} with lambdas {dict(cell.lambdas)} is "
                    f"already in the grid ({seen[cell.key]}); its seeds would be counted twice",
                )
            seen[cell.key] = where
            configurations.append(cell)
    return GridSearch(tuple(configurations), tuple(grid.seeds))


def _optuna(path: Path, opt: OptunaSpace) -> OptunaSearch:
    names: list[str] = []
    ranges: dict[str, ScaleRange] = {}
    for i, entry in enumerate(opt.variants):
        where = f"search.optuna.variants[{i}]"
        _check_variant(path, f"{where}.variant", entry.variant)
        if entry.variant in names:
            raise _fail(path, where, f"variant {entry.variant!r} listed twice")
        names.append(entry.variant)
        if entry.variant == BASELINE_VARIANT:
            continue
        rng = entry.lambda_scale or opt.lambda_scale
        if rng is None:
            raise _fail(
                path,
                "search.optuna.lambda_scale",
                f"variant {entry.variant!r} needs a lambda-scale range (global or per variant)",
            )
        ranges[entry.variant] = rng
    return OptunaSearch(tuple(names), ranges, opt.num_samples, tuple(opt.seeds), opt.sampler_seed)


def _with_space(path: Path, model: SweepFile, search: GridSearch | OptunaSearch) -> GridSearch | OptunaSearch:
    """The search with its space (tune.space): a grid's ablation cells crossed with every setting (each
    cell at each setting, so every configuration has its baseline at the same setting), or the space handed
    to Optuna to sample."""
    section = model.search
    try:
        space = parse_space(section.space, num_samples=section.num_samples, sampler_seed=section.sampler_seed,
                            optuna=isinstance(search, OptunaSearch), overrides=list(model.overrides),
                            trial_keys=TRIAL_KEYS)
        if isinstance(search, OptunaSearch):
            return dataclasses.replace(search, space=space)
        settings = space.settings()
    except SpaceError as error:
        raise _fail(path, error.field, error.message) from None
    cells = search.configurations
    configurations = tuple(dataclasses.replace(c, params=s) for s in settings for c in cells)
    return GridSearch(configurations, search.seeds, space)


def _resolve_base_config(path: Path, value: str) -> Path:
    """Relative to the sweep file first (sweeps travel with their configs), then to the cwd."""
    candidate = Path(value).expanduser()
    options = [candidate] if candidate.is_absolute() else [path.parent / candidate, Path.cwd() / candidate]
    for option in options:
        if option.is_file():
            return option.resolve()
    raise _fail(path, "base_config", f"no such file; looked at {[str(o) for o in options]}")


def _trainer_default(key: str) -> Any:
    """A trainer config default (e.g. train.max_iters) when the base config does not set it."""
    from cmda.config import config_from_dict

    node: Any = config_from_dict({})
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _positive_trainer_int(path: Path, base: Path, overrides: Mapping[str, Any], template: dict[str, Any],
                          key: str) -> int:
    """A trainer setting the sweep itself reads (its rungs, plan, the analysis), checked where it is set
    before anything is derived from it, so a bad value is named, not its consequence (scheduler.max_t)."""
    value = whole_number(dotted_get(template, key, _trainer_default(key)))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        where = f"{path}: field 'overrides.{key}'" if key in overrides else f"{base}: field '{key}'"
        raise SweepError(f"{where}: expected a whole number >= 1, got {value!r}")
    return value


def _agreeing(path: Path, fieldname: str, given: Any, *others: tuple[str, Any]) -> Any:
    """`given` unless unset; a value set in two places must be the same in both."""
    for other_field, other in others:
        if given is not None and other is not None and given != other:
            raise _fail(path, fieldname, f"{given!r} disagrees with {other_field}: {other!r}")
    return given


def _metric(path: Path, model: SweepFile, target_name: str) -> str:
    from cmda.data.targets import UnknownTargetError, get_target

    try:
        target = get_target(target_name)
    except UnknownTargetError as exc:
        raise _fail(path, "data.target.name (base_config/overrides)", str(exc)) from None
    given = _agreeing(path, "scheduler.metric", model.scheduler.metric, ("metric", model.metric))
    metric = given or model.metric or target.headline_metric
    where = "scheduler.metric" if model.scheduler.metric else "metric"
    if metric not in target.metric_names:
        listed = [m for m in target.metric_names if not m.startswith("iou/")]
        raise _fail(
            path,
            where,
            f"the trainer does not report {metric!r} on target {target_name!r}; it reports "
            f"{listed} and 'iou/<class>' for each class",
        )
    return metric


def _scheduler(path: Path, section: SchedulerSection, max_iters: int) -> SchedulerSpec:
    if section.type == "none":
        return SchedulerSpec()
    if section.grace_period is None:
        raise _fail(path, "scheduler.grace_period", f"required for {section.type}")
    max_t = section.max_t if section.max_t is not None else max_iters
    if section.time_attr == "iteration" and max_t > max_iters:
        raise _fail(
            path,
            "scheduler.max_t",
            f"trials end at train.max_iters={max_iters}; max_t={max_t} can never be reached",
        )
    if section.grace_period > max_t:
        raise _fail(
            path, "scheduler.grace_period", f"grace_period {section.grace_period} exceeds max_t {max_t}"
        )
    return SchedulerSpec(
        section.type, section.time_attr, section.grace_period, section.reduction_factor, max_t
    )


def parse_sweep(raw: Any, path: Path) -> SweepSpec:
    """Validate a loaded sweep mapping; `path` is where it came from (for messages and relative paths)."""
    model = validate(SweepFile, raw, str(path), SweepError)
    for key in model.overrides:
        if key in TRIAL_KEYS:
            raise _fail(path, f"overrides.{key}", "set per trial by the sweep's search space; remove it here")
    base = _resolve_base_config(path, model.base_config)
    try:
        template = load_with_overrides(base, model.overrides)
    except (YAMLFileError, ValueError) as exc:
        raise _fail(path, "base_config", str(exc)) from None
    search: GridSearch | OptunaSearch
    search = _grid(path, model.search.grid) if model.search.grid else _optuna(path, model.search.optuna)
    search = _with_space(path, model, search)
    max_iters = _positive_trainer_int(path, base, model.overrides, template, "train.max_iters")
    eval_interval = _positive_trainer_int(path, base, model.overrides, template, "train.eval_interval")
    target = str(dotted_get(template, "data.target.name", DEFAULT_TARGET))
    _agreeing(path, "target", model.target, ("data.target.name of the base config", target))
    metric = _metric(path, model, target)
    mode = (
        _agreeing(path, "scheduler.mode", model.scheduler.mode, ("mode", model.mode)) or model.mode or "max"
    )
    reference = _reference(path, model.reference, search)
    decide = _decide(path, model, search, reference)
    return SweepSpec(
        path=path,
        name=model.name or path.stem,
        base_config=base,
        overrides=dict(model.overrides),
        search=search,
        scheduler=_scheduler(path, model.scheduler, max_iters),
        metric=metric,
        mode=mode,
        target=target,
        max_iters=max_iters,
        eval_interval=eval_interval,
        backbone=str(dotted_get(template, "model.backbone", _trainer_default("model.backbone"))),
        cpu=model.resources.cpu,
        gpu=model.resources.gpu,
        max_concurrent_trials=model.max_concurrent_trials,
        storage_path=model.storage_path,
        max_failures=model.failure.max_failures,
        num_to_keep=model.checkpoint.num_to_keep,
        callbacks={k: ({} if v is True else dict(v)) for k, v in model.callbacks.items() if v is not False},
        path_map=_path_map(path, model.path_map),
        raw=dict(raw),
        autoscaling=model.resources.autoscaling,
        cluster_gpus=model.resources.cluster_gpus,
        reference=reference,
        decide=decide,
    )


def _reference(
    path: Path, entry: ReferenceEntry | None, search: GridSearch | OptunaSearch
) -> Configuration | None:
    """The grid's configuration the sweep file's `reference:` names (default: the baseline, if there)."""
    if entry is None:
        if isinstance(search, GridSearch):
            return next((c for c in search.configurations if c.variant == BASELINE_VARIANT), None)
        baseline = BASELINE_VARIANT in search.variants
        return make_configuration(BASELINE_VARIANT, None, None) if baseline else None
    _check_variant(path, "reference.variant", entry.variant)
    if entry.lambda_scale is not None and entry.lambdas is not None:
        raise _fail(path, "reference", "give either lambda_scale or explicit lambdas, not both")
    if not isinstance(search, GridSearch):
        raise _fail(path, "reference", "a reference other than the default needs a grid search")
    matches = [c for c in search.configurations if c.variant == entry.variant]
    if entry.lambdas is not None or entry.lambda_scale is not None:
        try:
            wanted = make_configuration(entry.variant, entry.lambda_scale, entry.lambdas)
        except KeyError as exc:
            raise _fail(path, "reference.lambdas", str(exc.args[0])) from None
        matches = [c for c in matches if c.key == wanted.key]
    if not matches:
        named = " ".join(str(part) for part in (entry.variant, entry.lambda_scale or entry.lambdas) if part)
        raise _fail(path, "reference", f"{named} is not a configuration of search.grid; valid: "
                    f"{[c.label for c in search.configurations]}")
    if len(matches) > 1:
        raise _fail(path, "reference", f"the grid has {entry.variant} at {len(matches)} settings "
                    f"({', '.join(c.label for c in matches)}); name one with lambda_scale or lambdas")
    return matches[0]


def _decide(path: Path, model: SweepFile, search: GridSearch | OptunaSearch,
            reference: Configuration | None) -> DecideSpec | None:
    """The `decide:` section checked against the rest of the sweep (tune.decision's rules need a grid, a
    reference in it, whole groups of initial seeds and a scheduler that judges configurations on their
    mean over seeds)."""
    if model.decide is None:
        return None
    section = model.decide
    try:
        spec = DecideSpec(**section.model_dump())
    except ValueError as exc:
        raise _fail(path, "decide", str(exc).removeprefix("decide: ")) from None
    if not isinstance(search, GridSearch):
        raise _fail(path, "decide", "needs search.grid (fresh seeds are added to the grid's configurations)")
    if reference is None:
        raise _fail(path, "reference", "decide: compares every configuration with a reference; add variant "
                    "none to search.grid.variants or name one with reference:")
    if len(search.configurations) < 2:
        raise _fail(path, "search.grid.variants", "decide: needs a configuration besides the reference")
    try:
        spec.check_initial(len(search.seeds))
    except ValueError as exc:
        raise _fail(path, "decide.max_seeds" if len(search.seeds) >= 2 else "search.grid.seeds",
                    str(exc).removeprefix("decide: ")) from None
    if model.scheduler.type == "asha":
        raise _fail(path, "scheduler.type", "decide: needs per_config_asha or none: plain asha stops "
                    "single seeds, which biases the residuals the decision pools (docs/ARCHITECTURE.md)")
    slots = model.max_concurrent_trials  # `auto`: checked once the driver knows the cluster (tune.driver)
    if isinstance(slots, int) and slots < len(search.seeds):
        raise _fail(path, "max_concurrent_trials", f"decide: a configuration's {len(search.seeds)} seeds run "
                    f"together; give at least {len(search.seeds)} slots")
    return spec


def _path_map(path: Path, raw: dict[str, str]) -> dict[str, str]:
    return parse_path_map(raw, str(path))


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file (numbers such as 6e-5 are numbers: cmda.io.load_yaml)."""
    path = Path(path).expanduser().resolve()
    try:
        raw = load_yaml(path)
    except YAMLFileError as exc:
        raise SweepError(str(exc)) from None
    return parse_sweep(raw, path)


def describe(spec: SweepSpec) -> str:
    search = spec.search
    varied = f" varying {', '.join(search.space.keys)}" if search.space.entries else ""
    if isinstance(search, GridSearch):
        return (
            f"grid of {len(search.configurations)} configurations{varied} x {len(search.seeds)} seeds = "
            f"{search.num_trials} trials; metric {spec.metric} ({spec.mode})"
        )
    return (
        f"optuna: {search.num_samples} configurations{varied} x {len(search.seeds)} seeds, up to "
        f"{search.num_trials} trials; metric {spec.metric} ({spec.mode})"
    )

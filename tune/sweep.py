"""Sweep files: YAML schema, validation before Ray starts, and the Ray Tune search space they describe.

A sweep file names a trainer config, dotted overrides shared by every trial, and either an ablation
grid (variant x lambda x seed) or an Optuna budget. Everything is validated here, without Ray, so a
typo costs a second instead of a cluster allocation; every error names the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BASELINE_VARIANT = "none"
SCHEDULER_TYPES = ("asha", "per_config_asha", "none")
ASHA_TYPES = ("asha", "per_config_asha")
CALLBACK_TYPES = ("wandb", "mlflow")

_TOP_KEYS = {
    "name", "base_config", "overrides", "search", "scheduler", "resources", "max_concurrent_trials",
    "storage_path", "failure", "checkpoint", "callbacks", "path_map",
}
_GRID_KEYS = {"variants", "lambdas", "seeds"}
_GRID_ENTRY_KEYS = {"variant", "lambdas", "terms"}
_OPTUNA_KEYS = {"variants", "lambda", "num_samples", "seed", "trial_seed"}
_OPTUNA_ENTRY_KEYS = {"variant", "lambda", "terms"}
_RANGE_KEYS = {"low", "high"}
_ASHA_KEYS = {"type", "metric", "mode", "time_attr", "grace_period", "reduction_factor", "max_t"}
_RESOURCE_KEYS = {"cpu", "gpu"}
_FAILURE_KEYS = {"max_failures"}
_CHECKPOINT_KEYS = {"num_to_keep"}


class SweepError(ValueError):
    """A sweep file that cannot run; the message names the file and the offending field."""


@dataclass(frozen=True)
class AblationPoint:
    """One cell of the ablation: a feature-loss variant, its global lambda and per-term overrides."""

    variant: str
    weight: float | None
    lambdas: dict[str, float] = field(default_factory=dict)

    def as_param(self) -> dict[str, Any]:
        """The `ablation` entry of a trial's param_space (ARCHITECTURE.md, tune section)."""
        return {"variant": self.variant, "lambda": self.weight, "lambdas": dict(self.lambdas)}


@dataclass(frozen=True)
class LambdaRange:
    """Log-uniform range Optuna samples lambda from."""

    low: float
    high: float


@dataclass(frozen=True)
class GridSearch:
    """Explicit ablation cells, each run once per seed."""

    points: tuple[AblationPoint, ...]
    seeds: tuple[int, ...]

    @property
    def num_trials(self) -> int:
        return len(self.points) * len(self.seeds)


@dataclass(frozen=True)
class OptunaSpec:
    """Optuna search: a variant choice plus a log-uniform lambda (global or per variant)."""

    variants: tuple[str, ...]
    ranges: dict[str, LambdaRange]  # variant -> range; the baseline has none
    terms: dict[str, dict[str, float]]
    num_samples: int
    seed: int
    trial_seed: int


@dataclass(frozen=True)
class SchedulerSpec:
    """Early stopping: `asha` (Ray's ASHAScheduler), `per_config_asha` (tune.schedulers) or `none`."""

    type: str = "none"
    metric: str = "miou18"
    mode: str = "max"
    time_attr: str = "iteration"
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_t: int = 1


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file; paths are absolute."""

    path: Path
    name: str
    base_config: Path
    overrides: dict[str, Any]
    search: GridSearch | OptunaSpec
    scheduler: SchedulerSpec
    cpu: float
    gpu: float
    max_concurrent_trials: int | None
    storage_path: str
    max_failures: int
    num_to_keep: int | None
    callbacks: dict[str, dict[str, Any]]
    metric: str = "miou18"
    mode: str = "max"
    path_map: dict[str, str] = field(default_factory=dict)
    """Driver folder -> folder the cluster's nodes mount it as (tune.paths)."""


def valid_variants() -> tuple[str, ...]:
    """Variant names the trainer knows, read from the trainer itself so the two can never drift apart."""
    from cmda.uda.feature_losses import VARIANTS

    return tuple(VARIANTS)


def _fail(path: Path, fieldname: str, message: str) -> SweepError:
    return SweepError(f"{path}: field '{fieldname}': {message}")


def _mapping(path: Path, fieldname: str, value: Any, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, fieldname, f"expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(path, fieldname, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return value


def _number(path: Path, fieldname: str, value: Any, *, minimum: float = 0.0, integer: bool = False) -> float:
    """A finite number >= minimum (booleans rejected: `true` is not a lambda)."""
    ok_type = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(float(value)):
        kind = "an integer" if integer else "a number"
        raise _fail(path, fieldname, f"expected {kind}, got {value!r}")
    if value < minimum:
        raise _fail(path, fieldname, f"must be >= {minimum}, got {value!r}")
    return value


def _variant(path: Path, fieldname: str, value: Any, known: Sequence[str]) -> str:
    if value not in known:
        raise _fail(path, fieldname, f"unknown variant {value!r}; valid variants: {list(known)}")
    return str(value)


def _terms(path: Path, fieldname: str, value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(path, fieldname, f"expected a mapping term -> lambda, got {value!r}")
    return {str(k): float(_number(path, f"{fieldname}.{k}", v)) for k, v in value.items()}


def _lambda_list(path: Path, fieldname: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(path, fieldname, f"expected a non-empty list of lambdas, got {value!r}")
    return tuple(float(_number(path, f"{fieldname}[{i}]", v)) for i, v in enumerate(value))


def _parse_grid(path: Path, raw: Any, known: Sequence[str]) -> GridSearch:
    grid = _mapping(path, "search.grid", raw, _GRID_KEYS)
    if "variants" not in grid or not isinstance(grid["variants"], list) or not grid["variants"]:
        raise _fail(path, "search.grid.variants", "expected a non-empty list of variants")
    global_lambdas = _lambda_list(path, "search.grid.lambdas", grid["lambdas"]) if "lambdas" in grid else None
    seeds_raw = grid.get("seeds", [0])
    if not isinstance(seeds_raw, list) or not seeds_raw:
        raise _fail(path, "search.grid.seeds", f"expected a non-empty list of integers, got {seeds_raw!r}")
    seeds = tuple(int(_number(path, f"search.grid.seeds[{i}]", s, integer=True))
                  for i, s in enumerate(seeds_raw))
    if len(set(seeds)) != len(seeds):
        raise _fail(path, "search.grid.seeds", f"duplicate seeds in {list(seeds)}")
    points: list[AblationPoint] = []
    for i, entry in enumerate(grid["variants"]):
        where = f"search.grid.variants[{i}]"
        if isinstance(entry, Mapping):
            entry = _mapping(path, where, entry, _GRID_ENTRY_KEYS)
            if "variant" not in entry:
                raise _fail(path, f"{where}.variant", "missing")
            name = _variant(path, f"{where}.variant", entry["variant"], known)
            lambdas = (_lambda_list(path, f"{where}.lambdas", entry["lambdas"]) if "lambdas" in entry
                       else global_lambdas)
            terms = _terms(path, f"{where}.terms", entry.get("terms"))
        else:
            name = _variant(path, where, entry, known)
            lambdas, terms = global_lambdas, {}
        if name == BASELINE_VARIANT:
            # The baseline has no feature loss: one run per seed, never one per lambda.
            points.append(AblationPoint(name, None, {}))
        elif lambdas is None:
            points.append(AblationPoint(name, None, terms))  # the variant's default lambdas
        else:
            points.extend(AblationPoint(name, lam, terms) for lam in lambdas)
    if len(set(points_key(p) for p in points)) != len(points):
        raise _fail(path, "search.grid.variants", "the grid repeats a (variant, lambda) cell")
    return GridSearch(tuple(points), seeds)


def points_key(point: AblationPoint) -> tuple[str, float | None, tuple[tuple[str, float], ...]]:
    """Hashable identity of a cell (used to reject duplicate cells)."""
    return point.variant, point.weight, tuple(sorted(point.lambdas.items()))


def _range(path: Path, fieldname: str, raw: Any) -> LambdaRange:
    rng = _mapping(path, fieldname, raw, _RANGE_KEYS)
    if set(rng) != _RANGE_KEYS:
        raise _fail(path, fieldname, "expected both 'low' and 'high'")
    low = float(_number(path, f"{fieldname}.low", rng["low"]))
    high = float(_number(path, f"{fieldname}.high", rng["high"]))
    if low <= 0 or high <= low:
        raise _fail(path, fieldname, f"log-uniform range needs 0 < low < high, got low={low}, high={high}")
    return LambdaRange(low, high)


def _parse_optuna(path: Path, raw: Any, known: Sequence[str]) -> OptunaSpec:
    opt = _mapping(path, "search.optuna", raw, _OPTUNA_KEYS)
    if "variants" not in opt or not isinstance(opt["variants"], list) or not opt["variants"]:
        raise _fail(path, "search.optuna.variants", "expected a non-empty list of variants")
    for key in ("variants", "lambda"):
        if _contains_grid(opt.get(key)):
            raise _fail(path, f"search.optuna.{key}",
                        "Optuna cannot take grid entries; use search.grid for an exhaustive grid")
    global_range = _range(path, "search.optuna.lambda", opt["lambda"]) if "lambda" in opt else None
    names: list[str] = []
    ranges: dict[str, LambdaRange] = {}
    terms: dict[str, dict[str, float]] = {}
    for i, entry in enumerate(opt["variants"]):
        where = f"search.optuna.variants[{i}]"
        if isinstance(entry, Mapping):
            entry = _mapping(path, where, entry, _OPTUNA_ENTRY_KEYS)
            name = _variant(path, f"{where}.variant", entry.get("variant"), known)
            rng = _range(path, f"{where}.lambda", entry["lambda"]) if "lambda" in entry else global_range
            terms[name] = _terms(path, f"{where}.terms", entry.get("terms"))
        else:
            name = _variant(path, where, entry, known)
            rng = global_range
        if name in names:
            raise _fail(path, where, f"variant {name!r} listed twice")
        names.append(name)
        if name != BASELINE_VARIANT:
            if rng is None:
                raise _fail(path, "search.optuna.lambda",
                            f"variant {name!r} needs a lambda range (global or per variant)")
            ranges[name] = rng
    num_samples = int(_number(path, "search.optuna.num_samples", opt.get("num_samples"), minimum=1,
                              integer=True))
    seed = int(_number(path, "search.optuna.seed", opt.get("seed", 0), integer=True))
    trial_seed = int(_number(path, "search.optuna.trial_seed", opt.get("trial_seed", 0), integer=True))
    return OptunaSpec(tuple(names), ranges, terms, num_samples, seed, trial_seed)


def _contains_grid(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "grid_search" in value or "grid" in value or any(_contains_grid(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_grid(v) for v in value)
    return False


def _parse_scheduler(path: Path, raw: Any) -> SchedulerSpec:
    if raw is None:
        return SchedulerSpec()
    if not isinstance(raw, Mapping) or raw.get("type") not in SCHEDULER_TYPES:
        got = raw.get("type") if isinstance(raw, Mapping) else raw
        raise _fail(path, "scheduler.type", f"expected one of {list(SCHEDULER_TYPES)}, got {got!r}")
    if raw["type"] == "none":
        _mapping(path, "scheduler", raw, {"type"})
        return SchedulerSpec()
    sched = _mapping(path, "scheduler", raw, _ASHA_KEYS)
    metric = sched.get("metric")
    if not isinstance(metric, str) or not metric:
        raise _fail(path, "scheduler.metric",
                    f"{raw['type']} needs the metric it compares trials on (e.g. miou18)")
    mode = sched.get("mode")
    if mode not in ("max", "min"):
        raise _fail(path, "scheduler.mode", f"expected 'max' or 'min', got {mode!r}")
    time_attr = sched.get("time_attr", "iteration")
    if not isinstance(time_attr, str):
        raise _fail(path, "scheduler.time_attr", f"expected a metric name, got {time_attr!r}")
    for key in ("grace_period", "max_t"):
        if key not in sched:
            raise _fail(path, f"scheduler.{key}", f"required for {raw['type']}")
    grace = int(_number(path, "scheduler.grace_period", sched["grace_period"], minimum=1, integer=True))
    max_t = int(_number(path, "scheduler.max_t", sched["max_t"], minimum=1, integer=True))
    if grace > max_t:
        raise _fail(path, "scheduler.grace_period", f"grace_period {grace} exceeds max_t {max_t}")
    factor = float(_number(path, "scheduler.reduction_factor", sched.get("reduction_factor", 2)))
    if factor <= 1:
        raise _fail(path, "scheduler.reduction_factor", f"must be > 1, got {factor}")
    return SchedulerSpec(str(raw["type"]), metric, mode, time_attr, grace, factor, max_t)


def _parse_callbacks(path: Path, raw: Any) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    cbs = _mapping(path, "callbacks", raw, set(CALLBACK_TYPES))
    out: dict[str, dict[str, Any]] = {}
    for name, options in cbs.items():
        if options is None or options is False:
            continue
        if options is True:
            options = {}
        if not isinstance(options, Mapping):
            raise _fail(path, f"callbacks.{name}", f"expected a mapping of options or true, got {options!r}")
        out[name] = dict(options)
    return out


def _resolve_base_config(path: Path, value: Any) -> Path:
    """Relative to the sweep file first (sweeps travel with their configs), then to the cwd."""
    if not isinstance(value, str) or not value:
        raise _fail(path, "base_config", "expected the path of a trainer config")
    candidate = Path(value).expanduser()
    if candidate.is_absolute():
        options = [candidate]
    else:
        options = [path.parent / candidate, Path.cwd() / candidate]
    for option in options:
        if option.is_file():
            return option.resolve()
    raise _fail(path, "base_config", f"no such file; looked at {[str(o) for o in options]}")


def parse_sweep(raw: Any, path: Path, *, known_variants: Sequence[str] | None = None) -> SweepSpec:
    """Validate a loaded sweep mapping; `path` is where it came from (for messages and relative paths)."""
    known = tuple(known_variants) if known_variants is not None else valid_variants()
    top = _mapping(path, "<top level>", raw, _TOP_KEYS)
    for key in ("base_config", "search"):
        if key not in top:
            raise _fail(path, key, "required")
    name = top.get("name", path.stem)
    if not isinstance(name, str) or not name or "/" in name:
        raise _fail(path, "name", f"expected a folder name without '/', got {name!r}")
    overrides = top.get("overrides") or {}
    if not isinstance(overrides, Mapping) or not all(isinstance(k, str) and k for k in overrides):
        raise _fail(path, "overrides", "expected a mapping of dotted config keys to values")
    search_raw = _mapping(path, "search", top["search"], {"grid", "optuna"})
    if len(search_raw) != 1:
        raise _fail(path, "search", "give exactly one of 'grid' or 'optuna'")
    search: GridSearch | OptunaSpec
    if "grid" in search_raw:
        search = _parse_grid(path, search_raw["grid"], known)
    else:
        search = _parse_optuna(path, search_raw["optuna"], known)
    scheduler = _parse_scheduler(path, top.get("scheduler"))
    if scheduler.type == "per_config_asha" and not isinstance(search, GridSearch):
        raise _fail(path, "scheduler.type",
                    "per_config_asha groups the seeds of grid cells; it needs search.grid")
    resources = _mapping(path, "resources", top.get("resources") or {}, _RESOURCE_KEYS)
    cpu = float(_number(path, "resources.cpu", resources.get("cpu", 1)))
    gpu = float(_number(path, "resources.gpu", resources.get("gpu", 0)))
    if cpu <= 0:
        raise _fail(path, "resources.cpu", "a trial needs a positive CPU share")
    mct = top.get("max_concurrent_trials")
    if mct is not None:
        mct = int(_number(path, "max_concurrent_trials", mct, minimum=1, integer=True))
    storage = top.get("storage_path", "~/ray_results")
    if not isinstance(storage, str) or not storage:
        raise _fail(path, "storage_path", f"expected a folder or URI, got {storage!r}")
    failure = _mapping(path, "failure", top.get("failure") or {}, _FAILURE_KEYS)
    max_failures = int(_number(path, "failure.max_failures", failure.get("max_failures", 0), minimum=-1,
                               integer=True))
    ckpt = _mapping(path, "checkpoint", top.get("checkpoint") or {}, _CHECKPOINT_KEYS)
    num_to_keep = ckpt.get("num_to_keep")
    if num_to_keep is not None:
        num_to_keep = int(_number(path, "checkpoint.num_to_keep", num_to_keep, minimum=1, integer=True))
    metric, mode = (scheduler.metric, scheduler.mode) if scheduler.type in ASHA_TYPES else ("miou18", "max")
    return SweepSpec(
        path=path, name=name, base_config=_resolve_base_config(path, top["base_config"]),
        overrides=dict(overrides), search=search, scheduler=scheduler, cpu=cpu, gpu=gpu,
        max_concurrent_trials=mct, storage_path=storage, max_failures=max_failures,
        num_to_keep=num_to_keep, callbacks=_parse_callbacks(path, top.get("callbacks")),
        metric=metric, mode=mode, path_map=_parse_path_map(path, top.get("path_map")),
    )


def _parse_path_map(path: Path, raw: Any) -> dict[str, str]:
    from tune.paths import parse_path_map  # tune.paths builds on this module's SweepError

    return parse_path_map(raw, str(path))


def load_sweep(path: str | Path, *, known_variants: Sequence[str] | None = None) -> SweepSpec:
    """Read and validate a sweep file."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise SweepError(f"{path}: sweep file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML: {exc}") from exc
    return parse_sweep(raw, path, known_variants=known_variants)


def common_params(spec: SweepSpec) -> dict[str, Any]:
    """Entries every trial shares: the base config, the overrides and the backbone (informative)."""
    backbone = spec.overrides.get("model.backbone")
    if backbone is None:
        base = yaml.safe_load(spec.base_config.read_text()) or {}
        model = base.get("model") if isinstance(base, dict) else None
        backbone = model.get("backbone", "unknown") if isinstance(model, dict) else "unknown"
    return {"base_config": str(spec.base_config), "overrides": dict(spec.overrides),
            "backbone": str(backbone)}


def grid_param_space(spec: SweepSpec) -> dict[str, Any]:
    """Ray param_space of a grid sweep: one trial per (cell, seed); the baseline cell has no lambda."""
    from ray import tune

    if not isinstance(spec.search, GridSearch):
        raise TypeError("grid_param_space needs a grid sweep")
    return {
        "ablation": tune.grid_search([p.as_param() for p in spec.search.points]),
        "seed": tune.grid_search(list(spec.search.seeds)),
        **common_params(spec),
    }

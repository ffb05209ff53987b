"""What a sweep's trials are, when its scheduler decides, and what their reports carry: one definition each.

Everything that names, groups, schedules or reads trials (the searchers, the schedulers, plan, status, the
live table, the experiment reader and the analysis) imports these rules from here instead of writing its
own copy. Plain data only: no Ray, no torch, so the commands that only read files stay fast. The map of who
uses what is docs/ARCHITECTURE.md (tune).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BASELINE_VARIANT = "none"
"""The variant without a feature-alignment term: the configuration the others are compared with."""
LAMBDA_DIGITS = 12
"""Significant digits lambdas (and other float settings) are rounded to: 0.1 * 0.2 is 0.020000000000000004."""
SLUG_LENGTH = 120
"""Longest configuration part of a trial folder name (file systems cap a name at 255 bytes)."""


# -- a configuration: identity, key and label -----------------------------------------------------------


def round_value(value: float) -> float:
    """A float as configurations store it (LAMBDA_DIGITS significant digits), so equal settings compare
    equal however they were computed."""
    return float(f"{value:.{LAMBDA_DIGITS}g}")


def _frozen(value: Any) -> Any:
    """A setting's value in a hashable, canonical form (floats rounded, lists as tuples)."""
    if isinstance(value, float):
        return round_value(value)
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    return value


def _text(value: Any) -> str:
    """A setting's value as a label shows it: 6e-05, 0.5, [1, 2], true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return str(value)


def _plain(value: Any) -> Any:
    """A frozen value back as JSON-ready data (tuples as lists)."""
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Configuration:
    """One cell of the study: what a configuration's seeds share and are judged together on.

    The identity is (variant, lambdas, params): `lambdas` are the RESOLVED per-term lambdas that train,
    `params` any other trainer setting that varies between configurations (dotted key -> value), both sorted,
    floats rounded to LAMBDA_DIGITS. `lambda_scale` is the grid's scale that produced the lambdas (None for
    the baseline and for explicit lambdas): it names the configuration in labels but is not its identity.
    Mappings are accepted for `lambdas` and `params` and stored as sorted tuples.
    """

    variant: str
    lambdas: tuple[tuple[str, float], ...] = ()
    params: tuple[tuple[str, Any], ...] = ()
    lambda_scale: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        lambdas = self.lambdas.items() if isinstance(self.lambdas, Mapping) else self.lambdas
        params = self.params.items() if isinstance(self.params, Mapping) else self.params
        lambdas = tuple(sorted((str(k), round_value(float(v))) for k, v in lambdas))
        object.__setattr__(self, "lambdas", lambdas)
        object.__setattr__(self, "params", tuple(sorted((str(k), _frozen(v)) for k, v in params)))
        if self.lambda_scale is not None:
            object.__setattr__(self, "lambda_scale", float(self.lambda_scale))

    # -- identity -------------------------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """The configuration as one canonical string: what seeds are grouped by everywhere."""
        return json.dumps([self.variant, dict(self.lambdas), self._settings()], separators=(",", ":"))

    @property
    def setting_key(self) -> str:
        """The non-ablation setting alone (its `params`): a configuration's reference is the reference
        variant at the same setting."""
        return json.dumps(self._settings(), separators=(",", ":"))

    def _settings(self) -> dict[str, Any]:
        return {key: _plain(value) for key, value in self.params}

    # -- names ----------------------------------------------------------------------------------------------
    @property
    def lambda_label(self) -> str:
        """The lambda part of the label: the grid's scale ("x0.5"), else the per-term lambdas
        ("event_st=0.05,rgb_st=0.1"); empty for a variant without terms."""
        if not self.lambdas:
            return ""
        if self.lambda_scale is not None:
            return f"x{self.lambda_scale:g}"
        return ",".join(f"{term}={value:g}" for term, value in self.lambdas)

    @property
    def params_label(self) -> str:
        """The setting part of the label: "optim.lr=6e-05 train.batch_size=2"; empty without params."""
        return " ".join(f"{key}={_text(value)}" for key, value in self.params)

    @property
    def label(self) -> str:
        """How tables, plan, status and the report name the configuration: "fusion_st x0.5",
        "rgb_st+event_st event_st=0.2,rgb_st=0.1", "none", "fusion_st x1 optim.lr=6e-05"."""
        return " ".join(part for part in (self.variant, self.lambda_label, self.params_label) if part)

    @property
    def slug(self) -> str:
        """The label as a file-system-safe folder name part ("fusion_st_x0.5")."""
        return re.sub(r"[^A-Za-z0-9._+=,-]", "_", self.label)[:SLUG_LENGTH]

    # -- trial params ---------------------------------------------------------------------------------------
    def as_param(self) -> dict[str, Any]:
        """The `ablation` entry of a trial's params (params.json; docs/ARCHITECTURE.md, tune). `params`
        appears only when the configuration varies other settings."""
        entry: dict[str, Any] = {
            "variant": self.variant,
            "lambda_scale": self.lambda_scale,
            "lambdas": dict(self.lambdas),
        }
        if self.params:
            entry["params"] = self._settings()
        return entry

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Configuration:
        """The configuration of a trial's params (what params.json holds), strictly: a missing or malformed
        field is a ValueError naming it. (`analysis.cells` reads old or damaged folders leniently.)"""
        ablation = params.get("ablation") if isinstance(params, Mapping) else None
        if not isinstance(ablation, Mapping):
            raise ValueError(f"trial params: field 'ablation': expected a mapping, got {ablation!r}")
        variant = ablation.get("variant")
        if not isinstance(variant, str) or not variant:
            raise ValueError(f"trial params: field 'ablation.variant': expected a variant name, "
                             f"got {variant!r}")
        lambdas = _numbers(ablation.get("lambdas") or {}, "ablation.lambdas")
        scale = ablation.get("lambda_scale")
        if scale is not None and _number(scale) is None:
            raise ValueError(f"trial params: field 'ablation.lambda_scale': expected a number or null, "
                             f"got {scale!r}")
        settings = ablation.get("params") or {}
        if not isinstance(settings, Mapping):
            raise ValueError(f"trial params: field 'ablation.params': expected a mapping of dotted trainer "
                             f"keys, got {settings!r}")
        return cls(variant, lambdas, settings, scale)


def _number(value: Any) -> float | None:
    """A real number (not a bool) as float; None for anything else, NaN included."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _numbers(raw: Any, where: str) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"trial params: field '{where}': expected a mapping of term -> lambda, got {raw!r}")
    out = {}
    for term, value in raw.items():
        number = _number(value)
        if number is None:
            raise ValueError(f"trial params: field '{where}.{term}': expected a number, got {value!r}")
        out[str(term)] = number
    return out


def trial_name(configuration: Configuration, seed: int, trial_id: str) -> str:
    """A trial's folder name: "fusion_st_x0.5_s0_3f2a1_00004" (configuration slug, seed, Ray's trial id)."""
    return f"{configuration.slug}_s{seed}_{trial_id}"


def trial_label(configuration: Configuration, seed: Any) -> str:
    """A trial in a sentence: "fusion_st x0.5, seed 0"."""
    return f"{configuration.label}, seed {seed}"


# -- the rung ladder -----------------------------------------------------------------------------------------


def first_evaluation(at: float, eval_interval: int, max_iters: int) -> int:
    """The first evaluation at or after iteration `at`: the trainer evaluates every `eval_interval`
    iterations and at its last one."""
    step = int(eval_interval)
    count = math.ceil(at / step)
    while count * step < at:  # exact comparisons, as Ray compares a report with a milestone
        count += 1
    while count > 1 and (count - 1) * step >= at:
        count -= 1
    return min(int(max_iters), count * step)


@dataclass(frozen=True)
class Ladder:
    """Asynchronous successive halving's rungs, exactly as Ray's ASHAScheduler (one bracket) places them.

    Ray keeps the milestones as floats (grace_period * reduction_factor^k) and judges a trial at its first
    report at or after each; a milestone at or past max_t is never judged (the trial ends there).
    """

    grace_period: float
    reduction_factor: float
    max_t: float

    def __post_init__(self) -> None:
        if not self.grace_period >= 1 or not self.max_t >= self.grace_period:
            raise ValueError(f"need 1 <= grace_period <= max_t, got grace_period={self.grace_period}, "
                             f"max_t={self.max_t}")
        if not self.reduction_factor > 1:
            raise ValueError(f"reduction_factor must be > 1, got {self.reduction_factor}")

    @property
    def milestones(self) -> tuple[float, ...]:
        """The rungs in time units, Ray's formula to the bit (its `_Bracket`), without the inert ones at
        or past max_t."""
        count = int(np.log(self.max_t / self.grace_period) / np.log(self.reduction_factor) + 1)
        rungs = (self.grace_period * self.reduction_factor**k for k in range(count))
        return tuple(float(m) for m in rungs if m < self.max_t)

    def decision_points(self, eval_interval: int, max_iters: int) -> tuple[int, ...]:
        """The iteration at which each milestone is judged: the first evaluation at or after it (two
        milestones between two evaluations are judged at the same one)."""
        return tuple(first_evaluation(m, eval_interval, max_iters) for m in self.milestones)

    def misaligned(self, eval_interval: int) -> tuple[float, ...]:
        """Milestones that are not a multiple of the evaluation interval (judged later than they say)."""
        return tuple(m for m in self.milestones if m % eval_interval != 0)


# -- the result schema ---------------------------------------------------------------------------------------

ITERATION = "iteration"
"""Trainer iterations done (continues across retries and resumes): the schedulers' time attribute."""
MAX_ITERS = "max_iters"
"""The trial's budget (train.max_iters)."""
RAY_ITERATION = "training_iteration"
"""Ray's count of reports; read where a report has no ITERATION (a report from another trainable)."""
TIMESTAMP = "timestamp"
TIME_TOTAL = "time_total_s"
DONE = "done"
"""Ray's own fields besides RAY_ITERATION: when the report arrived, the trial's wall time, the last report."""


def report_number(report: Mapping[str, Any], key: str) -> float | None:
    """A numeric field of a report; None when absent, not a number, or NaN."""
    return _number(report.get(key))


def report_iteration(report: Mapping[str, Any]) -> int | None:
    """The iteration a report was made at: ITERATION, else Ray's RAY_ITERATION."""
    value = _number(report.get(ITERATION, report.get(RAY_ITERATION)))
    return None if value is None else int(value)


def report_max_iters(report: Mapping[str, Any]) -> int | None:
    value = report_number(report, MAX_ITERS)
    return None if value is None else int(value)


@dataclass(frozen=True)
class ResultLines:
    """result.json read as JSON lines: the reports in file order, and the lines that were not a report.

    A driver or node killed while Ray appends a report leaves the last line cut: `cut_last_line` says so, so
    that a reader can tell "its last report is lost" from "it stopped there"."""

    rows: tuple[dict[str, Any], ...]
    bad_lines: tuple[int, ...] = ()
    """1-based numbers of the non-empty lines that are not a JSON object (skipped)."""
    last_line: int = 0
    """Number of the last non-empty line (0 for an empty file)."""

    @property
    def cut_last_line(self) -> bool:
        return bool(self.bad_lines) and self.bad_lines[-1] == self.last_line


def read_result_lines(text: str | Iterable[str]) -> ResultLines:
    """Parse result.json text (one JSON object per line); bad lines are skipped and listed."""
    lines = text.splitlines() if isinstance(text, str) else list(text)
    rows: list[dict[str, Any]] = []
    bad: list[int] = []
    last = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad.append(number)
    return ResultLines(tuple(rows), tuple(bad), last)

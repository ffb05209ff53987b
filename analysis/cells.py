"""A trial's configuration read leniently from its params.json, and readable unique names for configurations.

The analysis must load whatever a sweep left behind, a damaged params.json included, so it reads the
`ablation` entry field by field and lists what was odd instead of raising (the sweep's own reader,
`Configuration.from_params`, is strict). What it builds is the same `tune.configuration.Configuration` the
sweep grouped seeds by, so keys and labels agree with plan, status and the live table.
See docs/ARCHITECTURE.md (analysis).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from tune.configuration import Configuration

UNKNOWN_VARIANT = "unknown"


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def read_configuration(params: Mapping[str, Any]) -> tuple[Configuration, tuple[str, ...]]:
    """(the trial's configuration, what was odd in its params); never raises."""
    ablation = params.get("ablation") if isinstance(params, Mapping) else None
    if not isinstance(ablation, Mapping):
        return Configuration(UNKNOWN_VARIANT), ("params.json has no 'ablation' mapping",)
    problems: list[str] = []
    variant = ablation.get("variant")
    if not isinstance(variant, str) or not variant:
        problems.append("params.json has no ablation.variant")
        variant = UNKNOWN_VARIANT
    raw = ablation.get("lambdas") or {}
    lambdas: dict[str, float] = {}
    if isinstance(raw, Mapping):
        for term, value in raw.items():
            number = _float(value)
            if number is None:
                problems.append(f"ablation.lambdas.{term} is {value!r}, not a number")
            else:
                lambdas[str(term)] = number
    else:
        problems.append(f"ablation.lambdas is {type(raw).__name__}, expected a mapping of term -> lambda")
    settings = ablation.get("params") or {}
    if not isinstance(settings, Mapping):
        problems.append(f"ablation.params is {type(settings).__name__}, expected a mapping of dotted keys")
        settings = {}
    configuration = Configuration(variant, lambdas, settings, _float(ablation.get("lambda_scale")))
    return configuration, tuple(problems)


def configuration_names(configurations: Mapping[str, Configuration]) -> dict[str, str]:
    """Configuration key -> a readable unique name: its label ("fusion_st x0.5", "none").

    A scale label names its resolved lambdas unambiguously within one set of default lambdas; should two
    configurations still share a label (defaults changed between experiments), their lambdas are spelled out.
    """
    names = {key: c.label for key, c in configurations.items()}
    taken: dict[str, int] = {}
    for name in names.values():
        taken[name] = taken.get(name, 0) + 1
    spelled = {key: dataclasses.replace(c, lambda_scale=None).label for key, c in configurations.items()}
    return {key: name if taken[name] == 1 else spelled[key] for key, name in names.items()}

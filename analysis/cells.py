"""A trial's ablation cell and the configuration it belongs to.

A trial's params hold `ablation: {variant, lambda_scale, lambdas}` where `lambdas` are the RESOLVED per-term
lambdas it trained with and `lambda_scale` the grid's scale (None for the baseline or a cell given explicit
lambdas). Seeds are grouped by configuration = (variant, resolved lambdas): two cells that trained with the
same lambdas are one configuration, however the sweep file spelled them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


@dataclass(frozen=True)
class Cell:
    """One trial's ablation cell, read leniently from params.json (`problems` says what was odd)."""

    variant: str
    lambda_scale: float | None = None
    lambdas: dict[str, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Cell:
        ablation = params.get("ablation")
        problems: list[str] = []
        if not isinstance(ablation, Mapping):
            return cls(variant="unknown", problems=("params.json has no 'ablation' mapping",))
        variant = ablation.get("variant")
        if not isinstance(variant, str) or not variant:
            problems.append("params.json has no ablation.variant")
            variant = "unknown"
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
        if "lambda_scale" not in ablation and _float(ablation.get("lambda")) is not None and not lambdas:
            # Experiments run before the lambda_scale contract hold one global weight for every term: keep
            # cells with different weights apart instead of merging them into one configuration.
            lambdas = {"weight": _float(ablation["lambda"])}
            problems.append("params.json has the old ablation.lambda (one weight for every term) instead of "
                            "lambda_scale and resolved lambdas; labelled 'weight=...'")
        return cls(variant=variant, lambda_scale=_float(ablation.get("lambda_scale")),
                   lambdas=dict(sorted(lambdas.items())), problems=tuple(problems))

    @property
    def key(self) -> str:
        """The configuration this cell belongs to, as one string (variant + sorted resolved lambdas)."""
        return json.dumps([self.variant, sorted(self.lambdas.items())])

    @property
    def lambdas_text(self) -> str:
        """"rgb_st=0.1, event_st=0.05" (terms sorted); empty for a cell without terms."""
        return ", ".join(f"{term}={value:g}" for term, value in sorted(self.lambdas.items()))

    @property
    def label(self) -> str:
        """What people call the cell's lambdas: the grid's scale ("x0.5") or the explicit per-term values."""
        if self.lambda_scale is not None:
            return f"x{self.lambda_scale:g}"
        return self.lambdas_text


def configuration_names(cells: Mapping[str, Cell]) -> dict[str, str]:
    """Configuration key -> a readable unique name ("fusion_st x0.5", "none").

    A scale label names its resolved lambdas unambiguously within one set of default lambdas; should two
    configurations still share a name (defaults changed between experiments), the lambdas are spelled out.
    """
    names = {key: " ".join(p for p in (cell.variant, cell.label) if p) for key, cell in cells.items()}
    taken: dict[str, int] = {}
    for name in names.values():
        taken[name] = taken.get(name, 0) + 1
    return {key: (name if taken[name] == 1 else f"{cells[key].variant} {cells[key].lambdas_text}".strip())
            for key, name in names.items()}

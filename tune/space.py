"""The search space beside the ablation grid: any dotted trainer key, in Ray Tune's own forms.

```yaml
search:
  grid: {variants: [none, fusion_st], seeds: [0, 1]}
  space:                                     # dotted trainer keys
    optim.lr: {grid: [6.0e-5, 1.2e-4]}       # every value: multiplies the configurations
    uda.pseudo_threshold: {uniform: [0.9, 0.99]}
    data.batch_size: {choice: [1, 2]}
    optim.weight_decay: {loguniform: [1.0e-3, 1.0e-1]}
  num_samples: 2                             # draws of the sampled entries per grid point
  sampler_seed: 0
```

A *setting* is one value of every space key. On a grid search the settings are every grid point times
`num_samples` draws of the sampled entries (Ray Tune's `Domain.sample` on a generator seeded with
`sampler_seed`, so `plan` and the sweep draw the same values), and every ablation cell runs at every
setting: each configuration is drawn once and shared by its seeds (seeds stay paired), and each has its
reference, the baseline variant at the same setting (`Configuration.setting_key`). Under Optuna the sampled
entries become Optuna distributions that TPE samples with the variant and the lambda scale.

Forms and bounds follow Ray Tune: `randint: [low, high]` excludes `high`, `qrandint: [low, high, q]`
includes it (both multiples of q, so Ray and Optuna draw from the same values). Keys are checked here for
shape; `check_against_trainer` validates every key and value (range ends and one draw for sampled entries)
with the trainer's own schema before Ray starts. See docs/ARCHITECTURE.md (tune).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FORMS = ("grid", "choice", "uniform", "loguniform", "randint", "qrandint")
"""The entry forms, named as Ray Tune names them (`tune.grid_search`, `tune.choice`, ...)."""
SAMPLED_FORMS = FORMS[1:]
FIXED_KEYS = {
    "name": "it names the run",
    "train.work_dir": "each trial gets its own",
    "train.resume": "Ray resumes trials",
    "train.max_iters": "the scheduler's rungs and the plan assume one budget",
    "train.eval_interval": "the scheduler decides at evaluations shared by every trial",
    "data.target.name": "the sweep's metric is the target's",
}
"""Keys a search space may not vary, and why (paths neither: `tune.paths.PATH_KEYS`)."""
DRAW_ATTEMPTS = 100
"""Draws per wanted setting before a space too small for `num_samples` distinct settings is refused."""


class SpaceError(ValueError):
    """A search-space problem at a dotted field of the sweep file (`tune.sweep` adds the file's name)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field '{field}': {message}")
        self.field, self.message = field, message


def _plain(value: Any) -> Any:
    """numpy scalars (what Ray's samplers return) as plain Python numbers, for params.json and YAML."""
    return value.item() if hasattr(value, "item") and not isinstance(value, list | tuple | dict) else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SpaceEntry:
    """One dotted key and its form: `values` are the grid / choice values, else the form's bounds."""

    key: str
    form: str
    values: tuple[Any, ...]

    @property
    def sampled(self) -> bool:
        return self.form != "grid"

    @property
    def where(self) -> str:
        return f"search.space.{self.key}"

    def domain(self) -> Any:
        """The entry as Ray Tune's search-space object (`tune.uniform(...)` etc.)."""
        from ray import tune

        if self.form == "choice":
            return tune.choice(list(self.values))
        if self.form == "uniform":
            return tune.uniform(*self.values)
        if self.form == "loguniform":
            return tune.loguniform(*self.values)
        if self.form == "randint":
            return tune.randint(*self.values)
        if self.form == "qrandint":
            return tune.qrandint(*self.values)
        raise TypeError(f"{self.where}: a grid entry is enumerated, not sampled")

    def suggest(self, trial: Any) -> Any:
        """Optuna's draw for this entry (its own distributions, bounds as Ray's: randint excludes high)."""
        if self.form == "choice":
            index = trial.suggest_categorical(self.key, list(range(len(self.values))))
            return self.values[index]  # by index: Optuna's categories must be plain scalars, values may not
        if self.form in ("uniform", "loguniform"):
            low, high = self.values
            return trial.suggest_float(self.key, low, high, log=self.form == "loguniform")
        if self.form == "randint":
            low, high = self.values
            return trial.suggest_int(self.key, low, high - 1)
        if self.form == "qrandint":
            low, high, q = self.values
            return trial.suggest_int(self.key, low, high, step=q)
        raise TypeError(f"{self.where}: Optuna samples; a grid entry cannot be given to it")

    def checked_values(self) -> list[Any]:
        """What the trainer's schema must accept before any draw: every grid/choice value, else the range's
        ends (the largest integer a randint can give, not its exclusive bound)."""
        if self.form in ("grid", "choice"):
            return list(self.values)
        if self.form == "randint":
            return [self.values[0], self.values[1] - 1]
        return list(self.values[:2])


@dataclass(frozen=True)
class Space:
    """The parsed `search.space` (entries in file order) with `num_samples` and `sampler_seed`."""

    entries: tuple[SpaceEntry, ...] = ()
    num_samples: int = 1
    sampler_seed: int = 0

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(e.key for e in self.entries)

    @property
    def grid_entries(self) -> tuple[SpaceEntry, ...]:
        return tuple(e for e in self.entries if not e.sampled)

    @property
    def sampled_entries(self) -> tuple[SpaceEntry, ...]:
        return tuple(e for e in self.entries if e.sampled)

    def settings(self) -> list[dict[str, Any]]:
        """Every setting of a grid search, in order: each grid point, then its `num_samples` draws (distinct;
        drawn with Ray's samplers from one generator seeded by `sampler_seed`). [{}] for an empty space."""
        import numpy as np

        grid = self.grid_entries
        sampled = self.sampled_entries
        rng = np.random.default_rng(self.sampler_seed)
        domains = [(e.key, e.domain()) for e in sampled]
        out: list[dict[str, Any]] = []
        for point in itertools.product(*(e.values for e in grid)):
            fixed = dict(zip((e.key for e in grid), point))
            if not sampled:
                out.append(fixed)
                continue
            seen: set[str] = set()
            for _ in range(self.num_samples * DRAW_ATTEMPTS):
                draw = {key: _plain(domain.sample(random_state=rng)) for key, domain in domains}
                marker = repr(sorted(draw.items()))
                if marker not in seen:
                    seen.add(marker)
                    out.append({**fixed, **draw})
                if len(seen) == self.num_samples:
                    break
            else:
                raise SpaceError("search.num_samples", f"{self.num_samples} distinct settings were asked "
                                 f"for, but the sampled entries gave only {len(seen)} in "
                                 f"{self.num_samples * DRAW_ATTEMPTS} draws; lower num_samples or widen the "
                                 "space")
        return out

    def as_json(self) -> dict[str, Any]:
        """The space as the sweep file gives it ({key: {form: values}}): what `plan --json` shows."""
        return {e.key: {e.form: list(e.values)} for e in self.entries}

    def describe(self) -> list[str]:
        """One line per entry for `plan`: "optim.lr grid [6e-05, 0.00012]"."""
        return [f"{e.key} {e.form} [{', '.join(f'{v:g}' if _is_number(v) else repr(v) for v in e.values)}]"
                for e in self.entries]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """One setting drawn by an Optuna trial (a search under Optuna has sampled entries only)."""
        return {e.key: _plain(e.suggest(trial)) for e in self.entries}

    def one_draw(self) -> dict[str, Any]:
        """A setting of the sampled entries drawn with `sampler_seed` (what pre-flight validates)."""
        import numpy as np

        rng = np.random.default_rng(self.sampler_seed)
        return {e.key: _plain(e.domain().sample(random_state=rng)) for e in self.sampled_entries}


EMPTY = Space()


# -- parsing (shape only: no trainer imports) ------------------------------------------------------------


def _bounds(where: str, form: str, raw: Any) -> tuple[Any, ...]:
    if form in ("grid", "choice"):
        if not isinstance(raw, list) or not raw:
            raise SpaceError(where, f"{form} expects a non-empty list of values, got {raw!r}")
        markers = [repr(v) for v in raw]
        if len(set(markers)) != len(markers):
            raise SpaceError(where, f"duplicate values in {raw!r}: a configuration would run twice")
        return tuple(raw)
    size = 3 if form == "qrandint" else 2
    shape = "[low, high, q]" if form == "qrandint" else "[low, high]"
    if not isinstance(raw, list) or len(raw) != size:
        raise SpaceError(where, f"{form} expects {shape}, got {raw!r}")
    if form in ("uniform", "loguniform"):
        if not all(_is_number(v) for v in raw):
            raise SpaceError(where, f"{form} expects finite numbers {shape}, got {raw!r}")
        low, high = (float(v) for v in raw)
        if not low < high:
            raise SpaceError(where, f"{form} needs low < high, got {raw!r}")
        if form == "loguniform" and not low > 0:
            raise SpaceError(where, f"loguniform needs 0 < low, got {raw!r}")
        return low, high
    if not all(_is_int(v) for v in raw):
        raise SpaceError(where, f"{form} expects integers {shape}, got {raw!r}")
    if form == "randint":
        if not raw[0] < raw[1]:
            raise SpaceError(where, f"randint [low, high] draws low..high-1 (as Ray's tune.randint), needs "
                             f"low < high, got {raw!r}")
        return tuple(raw)
    low, high, q = raw
    if q < 1 or not low <= high:
        raise SpaceError(where, f"qrandint needs q >= 1 and low <= high, got {raw!r}")
    if low % q or high % q:
        raise SpaceError(where, f"qrandint [low, high, q] draws multiples of q from low to high (both "
                         f"included); low and high must be multiples of q, got {raw!r}")
    return tuple(raw)


def _check_key(where: str, key: Any, reserved: Mapping[str, str]) -> None:
    if not isinstance(key, str) or not key or key.startswith(".") or key.endswith(".") or ".." in key:
        raise SpaceError("search.space", f"expected dotted trainer keys such as 'optim.lr', got {key!r}")
    if key in reserved:
        raise SpaceError(where, reserved[key])


def _reserved() -> dict[str, str]:
    from tune.paths import PATH_KEYS

    reasons = {key: f"cannot vary between configurations: {why}" for key, why in FIXED_KEYS.items()}
    reasons.update({key: "a path cannot vary between configurations (every node must see each one); give "
                    "it in overrides" for key in PATH_KEYS})
    return reasons


def overlapping(a: str, b: str) -> bool:
    """Whether two dotted keys address the same setting (equal, or one inside the other)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def parse_space(
    raw: Any,
    *,
    num_samples: int | None,
    sampler_seed: int | None,
    optuna: bool,
    overrides: Sequence[str],
    trial_keys: Sequence[str],
) -> Space:
    """The `search.space` mapping (plus `search.num_samples` / `search.sampler_seed`) as a Space; every
    problem is a SpaceError naming the dotted field of the sweep file."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise SpaceError("search.space", f"expected a mapping of dotted trainer keys to forms, got {raw!r}")
    reserved = {key: "set per trial by the sweep itself (variants, lambdas, seeds)" for key in trial_keys}
    reserved.update(_reserved())
    entries = []
    for key, spec in raw.items():
        where = f"search.space.{key}"
        _check_key(where, key, reserved)
        if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in FORMS:
            raise SpaceError(where, f"expected one of {{{', '.join(f'{f}: [...]' for f in FORMS)}}}, "
                             f"got {spec!r}")
        form, values = next(iter(spec.items()))
        if optuna and form == "grid":
            raise SpaceError(where, "Optuna samples every entry; use {choice: [...]} instead of grid "
                             "(or search.grid for an exhaustive grid)")
        entries.append(SpaceEntry(key, form, _bounds(f"{where}.{form}", form, values)))
    keys = [e.key for e in entries]
    for a, b in itertools.combinations(keys, 2):
        if overlapping(a, b):
            raise SpaceError(f"search.space.{b}", f"overlaps search.space.{a}; give each setting once")
    for key in keys:
        for override in overrides:
            if overlapping(key, override):
                raise SpaceError(f"overrides.{override}", f"also set by search.space.{key}; a key is either "
                                 "shared by every trial (overrides) or varied (search.space), not both")
    if optuna:
        if num_samples is not None:
            raise SpaceError("search.num_samples", "an Optuna search counts its configurations in "
                             "search.optuna.num_samples")
        if sampler_seed is not None:
            raise SpaceError("search.sampler_seed",
                             "an Optuna search is seeded by search.optuna.sampler_seed")
    space = Space(tuple(entries), num_samples if num_samples is not None else 1,
                  sampler_seed if sampler_seed is not None else 0)
    if space.num_samples > 1 and not space.sampled_entries:
        raise SpaceError("search.num_samples", "draws the sampled entries of search.space (choice, uniform, "
                         "...) and there are none: every draw would be the same configuration")
    return space


# -- the trainer's schema ----------------------------------------------------------------------------------


def check_against_trainer(space: Space, template: Mapping[str, Any], trial_overrides: Mapping[str, Any],
                          reject: Callable[[str, str], Exception]) -> None:
    """Every key and value of the space validated by the trainer's own schema (`cmda.config`), one value at a
    time on top of a representative trial's config: grid and choice values all, sampled entries at their
    range's ends and one draw. `reject(field, message)` builds the error to raise (the sweep's SweepError)."""
    from cmda.config import config_from_dict
    from cmda.overrides import apply_overrides

    draw = space.one_draw()
    for entry in space.entries:
        kind = "the range end" if entry.sampled else "the value"
        values = [(kind, value) for value in entry.checked_values()]
        if entry.key in draw:
            values.append(("the draw", draw[entry.key]))
        for what, value in values:
            data = apply_overrides(dict(template), {**trial_overrides, entry.key: value})
            try:
                config_from_dict(data, "trainer config")
            except ValueError as error:
                raise reject(entry.where, f"the trainer rejects {what} {value!r}: {error}") from None

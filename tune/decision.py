"""The rules of a decision: each configuration against the reference, decided better, worse or equivalent
with a family-wise error under `alpha`, on seeds spent only where the answer is still open.

A study runs in two phases. The early-stopping phase trains every configuration on the initial seeds and
lets the scheduler stop the weak ones (the reference is never stopped). Its full-budget numbers cannot decide
anything: the configurations that survived were picked on those very seeds, so their differences to the
reference are biased upwards. The decision therefore rests on FRESH seeds, given only to the survivors (and
to the reference, which runs each fresh seed once for all comparisons):

- the family is the survivors ranked by their first-stage paired difference (initial seeds only), cut to
  the longest prefix whose fresh seeds fit `budget` (the rest: undecided, out of budget); it is fixed when
  the early-stopping phase ends, from stage-1 data alone; Bonferroni over it;
- fresh seeds come in whole groups of the initial seeds' size; the first look waits for two groups, then
  one look follows each group; the looks share `alpha` by Bonferroni with O'Brien-Fleming-shaped weights
  (Lan-DeMets spending at the looks' information fractions: little early, most at the last look), so
  clear cases stop early and nothing is spent twice;
- at a look, a comparison is the reference-adjusted contrast of a two-way model (configuration + seed,
  the seed effect shared by every configuration) fitted on data whose shape does not depend on earlier
  looks: every survivor and the reference on the initial seeds (configuration effects of their own: only
  the residuals are used: this needs a scheduler that judges a configuration on its mean over seeds, as
  per-configuration ASHA does), every survivor and the reference on the first wave, and the compared
  configuration and the reference on the later waves. The residual variance is pooled over all of it;
- better: the two-sided interval at level 1 - a/C excludes 0 on the good side (a = alpha spent at the look,
  C = family size); worse: on the bad side; equivalent: the one-sided bounds at a/C (the TOST interval,
  level 1 - 2a/C) lie within +-effect. Each wrong claim needs the true difference outside one of these
  bounds on one side, so each comparison errs with probability at most a/C at each look;
- after the last look (max_seeds, reference included) an open comparison is undecided.

Why this holds and what it costs (measured on the study's shape) is in docs/ARCHITECTURE.md and
benchmarks/README.md (`benchmarks/decision_simulation.py`). No Ray, no torch: the sweep (which seeds to
launch next) and the analysis (comparisons.csv's `decision`) call the same functions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from scipy import stats

K = TypeVar("K", bound=Hashable)

BETTER, WORSE, EQUIVALENT, UNDECIDED, STOPPED = "better", "worse", "equivalent", "undecided", "stopped"
DECISIONS = (BETTER, WORSE, EQUIVALENT, UNDECIDED, STOPPED)
"""The values of comparisons.csv's `decision` column."""
OUT_OF_SEEDS, OUT_OF_BUDGET = "out of seeds", "out of budget"
"""Why a final decision is `undecided`: max_seeds was reached, or the budget left no room for its seeds."""
FITS = ("worst", "expected")


# -- the sweep file's `decide:` section ------------------------------------------------------------------
@dataclass(frozen=True)
class DecideSpec:
    """What a decision asks for: the smallest difference worth finding (`effect`, in points of the headline
    metric), the power to find it, the family-wise error `alpha` over the comparisons that decide, and the
    most seeds a configuration may get (`max_seeds`, the reference included)."""

    effect: float
    power: float = 0.8
    alpha: float = 0.05
    max_seeds: int = 12
    budget: float = 1.0
    """The most the whole sweep may spend, as a share of the fixed-seed full grid (every configuration on
    its initial seeds to the full budget)."""
    fit: str = "worst"
    """How the family is fitted into the budget: "worst" (each member and its reference may run to
    max_seeds) or "expected" (the expected fresh seeds fit; later waves are cut when the budget runs out)."""

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.effect, int | float) and math.isfinite(self.effect) and self.effect > 0):
            problems.append(f"effect must be a positive number of metric points, got {self.effect!r}")
        if not (isinstance(self.power, int | float) and 0.5 <= self.power < 1):
            problems.append(f"power must be in [0.5, 1), got {self.power!r}")
        if not (isinstance(self.alpha, int | float) and 0 < self.alpha <= 0.2):
            problems.append(f"alpha must be in (0, 0.2], got {self.alpha!r}")
        if isinstance(self.max_seeds, bool) or not isinstance(self.max_seeds, int) or self.max_seeds < 2:
            problems.append(f"max_seeds must be an integer >= 2, got {self.max_seeds!r}")
        if not (isinstance(self.budget, int | float) and not isinstance(self.budget, bool)
                and math.isfinite(self.budget) and self.budget > 0):
            problems.append(f"budget must be a positive share of the fixed-seed grid, got {self.budget!r}")
        if self.fit not in FITS:
            problems.append(f"fit must be one of {FITS}, got {self.fit!r}")
        if problems:
            raise ValueError("decide: " + "; ".join(problems))

    def check_initial(self, initial: int) -> None:
        """The initial seeds must leave room for at least one whole wave of fresh seeds."""
        if initial < 2:
            raise ValueError(f"decide: needs at least 2 initial seeds per configuration, got {initial}")
        if self.max_seeds < 2 * initial:
            raise ValueError(f"decide: max_seeds ({self.max_seeds}) must be at least twice the initial seeds "
                             f"({initial}): fresh seeds come in whole groups of {initial}")

    def looks(self, initial: int) -> tuple[int, ...]:
        """Fresh seeds per compared configuration at each look: waves are whole groups of `initial`
        seeds; the first look waits for two groups where max_seeds allows (a look after one group
        decides almost nothing at a few seeds' variance, and each look costs alpha)."""
        self.check_initial(initial)
        groups = (self.max_seeds - initial) // initial
        first = min(2, groups)
        return tuple(initial * k for k in range(first, groups + 1))

    def spending(self, initial: int) -> tuple[float, ...]:
        """Alpha spent at each look (they add up to alpha): increments of the Lan-DeMets O'Brien-Fleming
        function 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)) at the looks' information fractions t."""
        looks = np.asarray(self.looks(initial), dtype=float)
        fractions = looks / looks[-1]
        cumulative = 2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - self.alpha / 2) / np.sqrt(fractions))
        spent = np.diff(np.concatenate([[0.0], cumulative]))
        return tuple(float(a) for a in spent * self.alpha / cumulative[-1])


def fresh_seeds(initial: Sequence[int], count: int) -> tuple[int, ...]:
    """The fresh seeds, in launch order: the integers after the largest initial seed."""
    start = max(initial) + 1 if len(initial) else 0
    return tuple(range(start, start + count))


# -- one contrast: estimate, interval and p from one t distribution ---------------------------------------
@dataclass(frozen=True)
class Contrast:
    """An estimated difference with its standard error and degrees of freedom: its intervals and its
    p-value come from the same t distribution, so a (1 - a) interval excludes 0 exactly when p < a."""

    estimate: float
    se: float
    df: float
    n: int = 0  # pairs (seeds with both values) behind the estimate

    @property
    def defined(self) -> bool:
        return math.isfinite(self.estimate) and math.isfinite(self.se) and self.se > 0 and self.df > 0

    @property
    def p_value(self) -> float:
        """Two-sided p of the hypothesis of no difference."""
        if not self.defined:
            return math.nan
        return float(2 * stats.t.sf(abs(self.estimate) / self.se, self.df))

    def interval(self, alpha: float) -> tuple[float, float]:
        """Two-sided (1 - alpha) interval."""
        if not self.defined:
            return math.nan, math.nan
        half = float(stats.t.isf(alpha / 2, self.df)) * self.se
        return self.estimate - half, self.estimate + half


def paired_contrast(treated: Sequence[float], base: Sequence[float]) -> Contrast:
    """The paired t contrast of one configuration with the reference over seeds both have (NaN skipped)."""
    diffs = np.asarray(treated, dtype=float) - np.asarray(base, dtype=float)
    diffs = diffs[np.isfinite(diffs)]
    n = int(diffs.size)
    if n < 2:
        return Contrast(float(diffs.mean()) if n else math.nan, math.nan, 0, n)
    sd = float(diffs.std(ddof=1))
    if sd <= 1e-12 * max(1.0, float(np.abs(diffs).max())):
        sd = 0.0  # identical differences (up to float rounding): no spread, no test
    return Contrast(float(diffs.mean()), sd / math.sqrt(n), n - 1, n)


def block_contrast(rows: Sequence[tuple[Hashable, Hashable, float]], config: Hashable,
                   reference: Hashable) -> Contrast:
    """Least squares on `value ~ block + seed` over (block, seed, value) rows, block = a configuration
    (or a configuration in one phase): the contrast `config - reference` with its standard error from the
    residual variance pooled over every row, and the residual degrees of freedom."""
    rows = [(b, s, float(v)) for b, s, v in rows if math.isfinite(float(v))]
    blocks = list(dict.fromkeys(b for b, _, _ in rows))
    seeds = list(dict.fromkeys(s for _, s, _ in rows))
    if config not in blocks or reference not in blocks:
        return Contrast(math.nan, math.nan, 0)
    column = {b: i for i, b in enumerate(blocks)}
    design = np.zeros((len(rows), len(blocks) + len(seeds)))
    for r, (b, s, _) in enumerate(rows):
        design[r, column[b]] = 1.0
        design[r, len(blocks) + seeds.index(s)] = 1.0
    values = np.array([v for _, _, v in rows])
    inverse = np.linalg.pinv(design)
    rank = int(np.linalg.matrix_rank(design))
    contrast = np.zeros(design.shape[1])
    contrast[column[config]], contrast[column[reference]] = 1.0, -1.0
    weights = contrast @ inverse  # the estimate is weights @ values
    pairs = len({s for b, s, _ in rows if b == config} & {s for b, s, _ in rows if b == reference})
    if not np.allclose(weights @ design, contrast, atol=1e-8):
        return Contrast(math.nan, math.nan, 0, pairs)  # not estimable: no seed with both values
    residual_df = len(rows) - rank
    estimate = float(weights @ values)
    if residual_df <= 0:
        return Contrast(estimate, math.nan, 0, pairs)
    residuals = values - design @ (inverse @ values)
    variance = float(residuals @ residuals) / residual_df
    return Contrast(estimate, math.sqrt(variance * float(weights @ weights)), residual_df, pairs)


# -- a study's results and its decisions ---------------------------------------------------------------
@dataclass(frozen=True)
class Results:
    """What a decision reads: per configuration, per seed, the full-budget metric (NaN: that seed ended
    without one, e.g. it failed; absent: not finished yet), which configurations the scheduler stopped,
    and which are still in the early-stopping phase.

    Every configuration is compared with its reference: `references[c]` where given (one reference per
    setting when a sweep varies other trainer settings), else `reference`. `max_iters` and
    `early_iterations` (the iterations the initial seeds' trials reported, stopped ones included) let the
    decision fit its fresh seeds into the spec's budget; without them no budget applies.
    """

    reference: Hashable
    initial_seeds: tuple[int, ...]
    values: Mapping[Hashable, Mapping[int, float]]
    stopped: frozenset = frozenset()
    pending: frozenset = frozenset()
    mode: str = "max"
    references: Mapping[Hashable, Hashable] = dataclasses.field(default_factory=dict)
    max_iters: int | None = None
    early_iterations: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        stopped = self.reference_set & set(self.stopped)
        if stopped:
            raise ValueError(f"the reference {sorted(stopped, key=str)[0]!r} cannot have been stopped early")

    @property
    def reference_set(self) -> set[Hashable]:
        """Every reference (one per setting)."""
        return {self.reference, *self.references.values()}

    def reference_of(self, config: Hashable) -> Hashable:
        return self.references.get(config, self.reference)

    @property
    def configurations(self) -> list[Hashable]:
        """Every configuration but the references, in the order first seen."""
        seen = [*self.values, *sorted(self.stopped, key=str), *sorted(self.pending, key=str),
                *self.references]
        references = self.reference_set
        return [c for c in dict.fromkeys(seen) if c not in references]

    def has(self, config: Hashable, seeds: Sequence[int]) -> bool:
        """Every one of `seeds` has ended for `config` (with a value or NaN)."""
        mine = self.values.get(config, {})
        return all(seed in mine for seed in seeds)

    def first_stage_delta(self, config: Hashable) -> float:
        """Mean over the initial seeds of config - its reference, paired by seed (NaN without a pair): what
        ranks the survivors for the budget. Used for nothing else: these seeds were selected on."""
        mine, ref = self.values.get(config, {}), self.values.get(self.reference_of(config), {})
        diffs = [mine[s] - ref[s] for s in self.initial_seeds if s in mine and s in ref]
        diffs = [d for d in diffs if math.isfinite(d)]
        return float(np.mean(diffs)) if diffs else math.nan

    @property
    def grid_iterations(self) -> float | None:
        """The fixed-seed full grid: every configuration and reference on the initial seeds to max_iters."""
        if self.max_iters is None:
            return None
        count = len(self.configurations) + len(self.reference_set)
        return float(count * len(self.initial_seeds) * self.max_iters)


@dataclass(frozen=True)
class Decision:
    """One configuration's decision with the interval it was taken on (`level`: its confidence level;
    better and worse use the two-sided interval, equivalent the narrower TOST interval). `reason` says
    why a final `undecided` is undecided (OUT_OF_SEEDS, OUT_OF_BUDGET); `rank` is its place in the
    first-stage ranking of the survivors (1 = best; 0 when not ranked)."""

    config: Hashable
    outcome: str
    final: bool  # False while more seeds may change it
    delta: float = math.nan  # configuration - reference, in metric points
    low: float = math.nan
    high: float = math.nan
    level: float = math.nan
    p_value: float = math.nan  # two-sided, unadjusted
    p_adjusted: float = math.nan  # Bonferroni over the family and the looks: < alpha exactly when it decides
    seeds: int = 0  # fresh seeds paired with the reference behind the decision
    look: int = 0  # 1-based; 0 before any look
    reason: str = ""
    rank: int = 0


@dataclass(frozen=True)
class Verdict:
    """Decisions so far, and the seeds every configuration should have by now (`wanted`: initial seeds
    plus the fresh waves it was given; a reference's are the union over its family members). The sweep
    launches what is wanted and does not exist yet, a configuration's seeds together, the references'
    first. `family`: the survivors that get fresh seeds, best first-stage Δ first; `ranking`: every
    survivor in that order (those after the family are undecided, out of budget)."""

    decisions: dict[Hashable, Decision]
    wanted: dict[Hashable, tuple[int, ...]]
    family: tuple[Hashable, ...] = ()
    done: bool = False  # every decision is final: nothing more to launch
    ranking: tuple[Hashable, ...] = ()
    references: tuple[Hashable, ...] = ()

    def fresh_wanted(self, results: Results) -> dict[Hashable, tuple[int, ...]]:
        """Fresh seeds wanted that have not ended yet, per configuration, the references first (the sweep
        launches those it has not launched)."""
        order = sorted(self.wanted, key=lambda c: c not in self.references)
        initial = set(results.initial_seeds)
        ended = {c: set(results.values.get(c, {})) | initial for c in order}
        launch = {c: tuple(s for s in self.wanted[c] if s not in ended[c]) for c in order}
        return {c: seeds for c, seeds in launch.items() if seeds}

    def fresh_count(self, initial: Sequence[int]) -> int:
        """Fresh trials wanted so far (each runs to the full budget)."""
        first = set(initial)
        return sum(sum(s not in first for s in seeds) for seeds in self.wanted.values())


def _rows(results: Results, config: Hashable, family: Sequence[Hashable], first: Sequence[int],
          later: Sequence[int]) -> list[tuple[Hashable, Hashable, float]]:
    """The look's data (module doc): the family and the references on the initial seeds and on the first
    wave, the compared configuration and its reference on the later waves. Initial-seed blocks get
    configuration effects of their own (their means were used to select; only their residuals count);
    seed effects are per setting (a seed is labelled with its configuration's reference)."""
    rows = []
    members = [*family, *dict.fromkeys(results.reference_of(c) for c in family)]
    for c in members:
        setting = results.reference_of(c) if c not in results.reference_set else c
        mine = results.values.get(c, {})
        rows += [(("initial", c), (setting, "initial", s), mine[s]) for s in results.initial_seeds
                 if s in mine]
        rows += [(c, (setting, s), mine[s]) for s in first if s in mine]
    reference = results.reference_of(config)
    for c in (config, reference):
        mine = results.values.get(c, {})
        rows += [(c, (reference, s), mine[s]) for s in later if s in mine]
    return rows


def classify(contrast: Contrast, spec: DecideSpec, *, alpha: float, family: int, mode: str = "max",
             final_look: bool = False) -> Decision:
    """The decision one contrast supports at a look that spends `alpha` over a family of `family`
    comparisons; an open comparison is undecided, final only at the last look (`config` and `look` are
    left for the caller)."""
    sign = 1.0 if mode == "max" else -1.0
    level = alpha / family
    p = contrast.p_value
    common = dict(delta=contrast.estimate, p_value=p, seeds=contrast.n,
                  p_adjusted=min(1.0, p / level * spec.alpha) if math.isfinite(p) else math.nan)
    low, high = contrast.interval(level)
    if contrast.defined:
        gain_low, gain_high = sorted((sign * low, sign * high))
        if gain_low > 0 or gain_high < 0:
            outcome = BETTER if gain_low > 0 else WORSE
            return Decision(None, outcome, True, low=low, high=high, level=1 - level, **common)
        tost_low, tost_high = contrast.interval(2 * level)
        if -spec.effect < tost_low and tost_high < spec.effect:
            return Decision(None, EQUIVALENT, True, low=tost_low, high=tost_high, level=1 - 2 * level,
                            **common)
    return Decision(None, UNDECIDED, final_look, low=low, high=high, level=1 - level,
                    reason=OUT_OF_SEEDS if final_look else "", **common)


def rank_survivors(results: Results, survivors: Sequence[Hashable]) -> tuple[Hashable, ...]:
    """Survivors best first by their first-stage paired Δ (in the metric's direction); a survivor without
    one last; ties keep the order given."""
    sign = 1.0 if results.mode == "max" else -1.0

    def key(config: Hashable) -> tuple[bool, float]:
        delta = results.first_stage_delta(config)
        return (not math.isfinite(delta), -sign * delta if math.isfinite(delta) else 0.0)

    return tuple(sorted(survivors, key=key))


class _Budget:
    """Fresh seeds priced in trainer iterations against what the spec's budget leaves after the early
    phase (each fresh seed runs to the full budget). Unlimited when the results do not say what the grid
    and the early phase cost."""

    def __init__(self, results: Results, spec: DecideSpec) -> None:
        self.results, self.initial = results, len(results.initial_seeds)
        grid = results.grid_iterations
        if grid is None or results.early_iterations is None:
            self.left = math.inf
        else:
            self.left = spec.budget * grid - float(results.early_iterations)
        self.per_seed = float(results.max_iters or 0)

    def cost(self, fresh: Mapping[Hashable, float]) -> float:
        """`fresh` = fresh seeds per configuration; each reference pays for the most any of its members
        gets (it runs each fresh seed once for all of them)."""
        total = 0.0
        by_reference: dict[Hashable, float] = {}
        for config, count in fresh.items():
            reference = self.results.reference_of(config)
            by_reference[reference] = max(by_reference.get(reference, 0.0), count)
            total += count
        return (total + sum(by_reference.values())) * self.per_seed

    def fits(self, fresh: Mapping[Hashable, float]) -> bool:
        return self.cost(fresh) <= self.left + 1e-9


def _residual_sd(results: Results, configs: Sequence[Hashable]) -> float:
    """The paired seed-to-seed SD (sqrt(2) x the residual SD of `value ~ configuration + seed`) on the
    initial seeds of `configs` and their references; NaN without residual degrees of freedom."""
    rows = []
    for c in [*configs, *dict.fromkeys(results.reference_of(c) for c in configs)]:
        setting = results.reference_of(c) if c not in results.reference_set else c
        mine = results.values.get(c, {})
        rows += [(c, (setting, s), float(mine[s])) for s in results.initial_seeds
                 if s in mine and math.isfinite(float(mine[s]))]
    return _two_way_paired_sd(rows)[0]


def paired_seed_sd(values: Mapping[Hashable, Mapping[int, float]]) -> tuple[float, int]:
    """(paired seed-to-seed SD, its degrees of freedom) of an earlier study's full-budget values (per
    configuration, per seed; non-finite values left out): what `cmda-tune plan --from` plans with. The seed
    effect every configuration shares is removed as the decision removes it; (NaN, 0) without residual
    degrees of freedom (no configuration with two seeds besides another on the same seeds)."""
    rows = [(c, s, float(v)) for c, by_seed in values.items() for s, v in by_seed.items()
            if math.isfinite(float(v))]
    return _two_way_paired_sd(rows)


def _two_way_paired_sd(rows: Sequence[tuple[Hashable, Hashable, float]]) -> tuple[float, int]:
    """sqrt(2) x the residual SD of the least-squares fit `value ~ block + seed` over rows (block, seed,
    value), with the residual degrees of freedom; (NaN, 0) when there are none."""
    if not rows:
        return math.nan, 0
    blocks = list(dict.fromkeys(b for b, _, _ in rows))
    seeds = list(dict.fromkeys(s for _, s, _ in rows))
    design = np.zeros((len(rows), len(blocks) + len(seeds)))
    for r, (b, s, _) in enumerate(rows):
        design[r, blocks.index(b)] = design[r, len(blocks) + seeds.index(s)] = 1.0
    values = np.array([v for _, _, v in rows])
    df = len(rows) - int(np.linalg.matrix_rank(design))
    if df <= 0:
        return math.nan, 0
    residuals = values - design @ (np.linalg.pinv(design) @ values)
    return math.sqrt(2 * float(residuals @ residuals) / df), df


@functools.lru_cache(maxsize=256)
def _expected_fresh(spec: DecideSpec, initial: int, family: int, sd: float) -> tuple[float, float]:
    """(expected fresh seeds of a member without effect, of the reference) for a family of `family`."""
    if not (math.isfinite(sd) and sd > 0):
        looks = spec.looks(initial)
        return float(looks[-1]), float(looks[-1])
    oc = operating_characteristics(spec, initial=initial, deltas=[0.0] * family, sd=sd, draws=1000, seed=0)
    return float(oc.fresh_seeds.mean()), float(oc.reference_seeds)


def choose_family(results: Results, spec: DecideSpec, ranking: Sequence[Hashable]) -> tuple[Hashable, ...]:
    """The longest prefix of the ranking that fits the budget: with `fit="worst"` every member and its
    reference may run to max_seeds; with `fit="expected"` their expected fresh seeds (at the paired SD
    the initial seeds show, for members without effect) fit, and `decide` cuts later waves that would
    not. A function of the early phase alone, so the family is fixed before any fresh seed exists."""
    budget = _Budget(results, spec)
    initial = len(results.initial_seeds)
    last = spec.looks(initial)[-1]
    sd = _residual_sd(results, list(ranking)) if spec.fit == "expected" else math.nan
    family: list[Hashable] = []
    for config in ranking:
        candidate = [*family, config]
        if spec.fit == "worst":
            fresh = {c: float(last) for c in candidate}
        else:
            member, _ = _expected_fresh(spec, initial, len(candidate), sd)
            fresh = {c: member for c in candidate}
        if not budget.fits(fresh):
            break
        family = candidate
    return tuple(family)


def decide(results: Results, spec: DecideSpec) -> Verdict:
    """Replay every look the results allow, in order, and say what is decided and which seeds to run next.

    A pure function of the results: after a resume or in the analysis it gives the same decisions. Nothing
    is decided, and no fresh seed is wanted, before the early-stopping phase ends: the family (the ranked
    survivors that fit the budget) is fixed then.
    """
    initial = tuple(results.initial_seeds)
    looks, spent = spec.looks(len(initial)), spec.spending(len(initial))
    fresh = fresh_seeds(initial, looks[-1])
    references = tuple(sorted(results.reference_set, key=str))
    decisions: dict[Hashable, Decision] = {}
    wanted: dict[Hashable, tuple[int, ...]] = {r: initial for r in references}
    survivors = []
    for c in results.configurations:
        wanted[c] = initial
        if c in results.stopped:
            decisions[c] = Decision(c, STOPPED, True)
        elif c in results.pending:
            decisions[c] = Decision(c, UNDECIDED, False)
        else:
            survivors.append(c)
    if results.pending:
        for c in survivors:
            decisions[c] = Decision(c, UNDECIDED, False)
        return Verdict(decisions, wanted, (), False, (), references)
    ranking = rank_survivors(results, survivors)
    family = list(choose_family(results, spec, ranking))
    rank = {c: i for i, c in enumerate(ranking, start=1)}
    for c in ranking[len(family):]:
        decisions[c] = Decision(c, UNDECIDED, True, reason=OUT_OF_BUDGET, rank=rank[c])
    budget = _Budget(results, spec)
    active = list(family)
    latest: dict[Hashable, Decision] = {}
    given: dict[Hashable, float] = {}  # fresh seeds given so far per member
    for look, (count, alpha) in enumerate(zip(looks, spent), start=1):
        for c in list(active):  # in rank order: the lowest-ranked open comparisons are cut first
            if budget.fits({**given, c: float(count)}):
                given[c] = float(count)
                wanted[c] = initial + fresh[:count]
            else:
                active.remove(c)
                previous = latest.get(c, Decision(c, UNDECIDED, True))
                decisions[c] = dataclasses.replace(previous, final=True, reason=OUT_OF_BUDGET)
        needed = [*active, *dict.fromkeys(results.reference_of(c) for c in active)]
        if not all(results.has(c, fresh[:count]) for c in needed):
            break
        for c in list(active):
            rows = _rows(results, c, family, fresh[: looks[0]], fresh[looks[0]:count])
            contrast = block_contrast(rows, c, results.reference_of(c))
            decision = classify(contrast, spec, alpha=alpha, family=len(family), mode=results.mode,
                                final_look=look == len(looks))
            decision = dataclasses.replace(decision, config=c, look=look)
            if decision.final:
                decisions[c] = decision
                active.remove(c)
            else:
                latest[c] = decision
        if not active:
            break
    for c in active:
        decisions[c] = latest.get(c, Decision(c, UNDECIDED, False))
    for c in family:
        decisions[c] = dataclasses.replace(decisions[c], rank=rank[c])
    for reference in references:
        members = [wanted[c] for c in family if results.reference_of(c) == reference]
        wanted[reference] = max(members, key=len, default=initial)
    done = all(d.final for d in decisions.values())
    return Verdict(decisions, wanted, tuple(family), done, ranking, references)


# -- from trials to Results, and the record of the decisions taken ---------------------------------------
COMPLETE, EARLY_STOP, FAILED, LIVE = "complete", "stopped", "failed", "live"
RUN_STATES = (COMPLETE, EARLY_STOP, FAILED, LIVE)


@dataclass(frozen=True)
class SeedRun:
    """One trial as a decision sees it: `state` COMPLETE (reached the full budget; `value` its final metric,
    NaN when it has none), EARLY_STOP (the scheduler stopped it before), FAILED (for good) or LIVE."""

    config: Hashable
    seed: int
    state: str
    value: float = math.nan
    iterations: float = 0.0


def best_by_delta(deltas: Mapping[K, float], mode: str = "max") -> list[K]:
    """The report's rule for a best without a decision: the largest paired difference to the reference
    (the reference itself at 0), never raw means over different sets of seeds; every key at that value, in
    the order given. NaN differences take no part; [] when none is finite."""
    sign = -1.0 if mode == "min" else 1.0
    finite = {k: sign * d for k, d in deltas.items() if isinstance(d, int | float) and math.isfinite(d)}
    if not finite:
        return []
    top = max(finite.values())
    return [k for k, v in finite.items() if v == top]


def seed_run(config: Hashable, seed: int, *, status: str, iteration: float | None, max_iters: float | None,
             value: Any = None) -> SeedRun:
    """The one rule from a trial's state to a SeedRun: ERROR -> FAILED; reached max_iters -> COMPLETE (its
    final metric, NaN when it has none); ended before -> EARLY_STOP; anything else is LIVE."""
    reached = float(iteration) if iteration is not None else 0.0
    if str(status).upper() == "ERROR":
        return SeedRun(config, int(seed), FAILED, math.nan, reached)
    if max_iters is not None and iteration is not None and reached >= float(max_iters):
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
        return SeedRun(config, int(seed), COMPLETE, number, reached)
    if str(status).upper() == "TERMINATED":
        return SeedRun(config, int(seed), EARLY_STOP, math.nan, reached)
    return SeedRun(config, int(seed), LIVE, math.nan, reached)


def collect(runs: Sequence[SeedRun], *, configurations: Sequence[Hashable], reference: Hashable,
            initial_seeds: Sequence[int], mode: str = "max", max_iters: int | None = None) -> Results:
    """The Results of a sweep's trials (the sweep and the analysis build them the same way): a configuration
    is stopped when the scheduler stopped one of its initial seeds, pending while an initial seed has not
    ended (or has no trial yet); a failed seed counts as NaN; `early_iterations` sums what the initial
    seeds' trials trained."""
    initial = tuple(int(s) for s in initial_seeds)
    values: dict[Hashable, dict[int, float]] = {}
    ended: dict[Hashable, set[int]] = {}
    stopped: set[Hashable] = set()
    early = 0.0
    for run in runs:
        if run.state not in RUN_STATES:
            raise ValueError(f"unknown run state {run.state!r}; expected one of {RUN_STATES}")
        if run.seed in initial:
            early += float(run.iterations)
        if run.state == LIVE:
            continue
        ended.setdefault(run.config, set()).add(run.seed)
        if run.state == EARLY_STOP:
            if run.seed in initial and run.config != reference:
                stopped.add(run.config)
            continue
        values.setdefault(run.config, {})[run.seed] = float(run.value) if run.state == COMPLETE else math.nan
    pending = {c for c in configurations
               if c not in stopped and not set(initial) <= ended.get(c, set())}
    for config in configurations:
        values.setdefault(config, {})
    return Results(reference, initial, values, frozenset(stopped), frozenset(pending), mode,
                   max_iters=max_iters, early_iterations=early if max_iters is not None else None)


def record(verdict: Verdict, spec: DecideSpec, results: Results, sequence: int,
           labels: Mapping[Hashable, str] | None = None) -> dict[str, Any]:
    """The decisions taken so far as plain JSON (the experiment's decisions.json); `sequence` grows by one
    with every change, so a reader orders records without clocks."""
    labels = labels or {}

    def plain(decision: Decision) -> dict[str, Any]:
        row = dataclasses.asdict(decision)
        row["config"] = str(decision.config)
        row["label"] = labels.get(decision.config, str(decision.config))
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}

    return {
        "sequence": int(sequence),
        "spec": dataclasses.asdict(spec),
        "reference": str(results.reference),
        "reference_label": labels.get(results.reference, str(results.reference)),
        "initial_seeds": list(results.initial_seeds),
        "done": verdict.done,
        "family": [str(c) for c in verdict.family],
        "ranking": [str(c) for c in verdict.ranking],
        "decisions": {str(c): plain(d) for c, d in verdict.decisions.items()},
        "wanted": {str(c): list(seeds) for c, seeds in verdict.wanted.items()},
    }


def taken(recorded: Mapping[str, Any] | None) -> dict[str, Decision]:
    """The final decisions of a record (decisions.json): they stand, whatever a later look would say."""
    out: dict[str, Decision] = {}
    for key, row in dict((recorded or {}).get("decisions", {})).items():
        if not row.get("final"):
            continue
        fields = {f.name for f in dataclasses.fields(Decision)}
        values = {k: (math.nan if v is None else v) for k, v in row.items() if k in fields}
        out[key] = Decision(**{**values, "config": key})
    return out


def keep_taken(verdict: Verdict, kept: Mapping[str, Decision],
               recorded_wanted: Mapping[str, Sequence[int]] = ()) -> Verdict:
    """The verdict with the decisions taken before (a resume) standing: a final decision is never revised
    and gets no seed beyond those it had; the references keep the seeds their members want."""
    if not kept:
        return verdict
    decisions = dict(verdict.decisions)
    wanted = dict(verdict.wanted)
    recorded_wanted = dict(recorded_wanted or {})
    for config in list(decisions):
        decision = kept.get(str(config))
        if decision is None:
            continue
        decisions[config] = dataclasses.replace(decision, config=config)
        if str(config) in recorded_wanted:
            wanted[config] = tuple(int(s) for s in recorded_wanted[str(config)])
    for reference in verdict.references:
        members = [seeds for c, seeds in wanted.items() if c not in verdict.references]
        wanted[reference] = max([wanted.get(reference, ()), *members], key=len)
    done = all(d.final for d in decisions.values())
    return dataclasses.replace(verdict, decisions=decisions, wanted=wanted, done=done)


def fixed_outcome(*, status_stopped: bool, significant: bool, delta: float, mode: str = "max") -> str:
    """The decision of a sweep without `decide:` (the seeds it ran, the report's correction): better or
    worse only where the corrected test rejects, never equivalent (nothing sized the seeds for it)."""
    if status_stopped:
        return STOPPED
    if significant and math.isfinite(delta) and delta != 0:
        return BETTER if (delta > 0) == (mode == "max") else WORSE
    return UNDECIDED


# -- what `plan` needs: the procedure's operating characteristics at a stated seed-to-seed SD -----------
@dataclass(frozen=True)
class Characteristics:
    """Per compared configuration (in the order of `deltas`): the chance of each final outcome and the
    expected fresh seeds it gets; `reference_seeds`: the reference's expected fresh seeds (it runs each
    fresh seed any comparison needs)."""

    better: np.ndarray
    worse: np.ndarray
    equivalent: np.ndarray
    undecided: np.ndarray
    fresh_seeds: np.ndarray
    reference_seeds: float


def operating_characteristics(spec: DecideSpec, *, initial: int, deltas: Sequence[float], sd: float,
                              draws: int = 4000, seed: int = 0) -> Characteristics:
    """Monte Carlo of the fresh-seed phase for survivors whose true differences to the reference are
    `deltas` (in the direction of improvement), with paired seed-to-seed SD `sd` (the SD of one seed's
    configuration-minus-reference difference). The same looks, data and rules as `decide`, on normal
    data with a seed effect shared by every configuration (it cancels); a fixed seed makes it
    reproducible. The chance to survive the early-stopping phase is not in it."""
    looks, spent = spec.looks(initial), spec.spending(initial)
    family = len(deltas)
    if family == 0:
        empty = np.zeros(0)
        return Characteristics(empty, empty, empty, empty, empty, 0.0)
    rng = np.random.default_rng(seed)
    k = family + 1  # configurations in the model, the reference (index 0) included
    sigma = sd / math.sqrt(2)  # per-configuration noise around the shared seed effect
    noise = rng.normal(0.0, sigma, size=(draws, k, looks[-1]))
    diffs = noise[:, 1:, :] - noise[:, :1, :] + np.asarray(deltas, dtype=float)[None, :, None]
    first = looks[0]
    early_df = (k - 1) * (initial - 1)
    early_ss = sigma**2 * rng.chisquare(early_df, size=(draws, 1))
    wave = noise[:, :, :first]
    two_way = wave - wave.mean(axis=2, keepdims=True) - wave.mean(axis=1, keepdims=True) + wave.mean(
        axis=(1, 2), keepdims=True)
    wave_ss = (two_way**2).sum(axis=(1, 2))[:, None]
    pair_ss_first = ((diffs[:, :, :first] - diffs[:, :, :first].mean(axis=2, keepdims=True)) ** 2).sum(2) / 2
    outcome = np.full((draws, family), "", dtype=object)
    used = np.full((draws, family), looks[-1])
    for count, alpha in zip(looks, spent):
        part = diffs[:, :, :count]
        estimate = part.mean(axis=2)
        pair_ss = ((part - estimate[:, :, None]) ** 2).sum(axis=2) / 2
        df = early_df + (k - 1) * (first - 1) - (first - 1) + (count - 1)
        se = np.sqrt((early_ss + wave_ss - pair_ss_first + pair_ss) / df * 2 / count)
        level = alpha / family
        two_sided, one_sided = stats.t.isf(level / 2, df), stats.t.isf(level, df)
        open_ = outcome == ""
        better = open_ & (estimate - two_sided * se > 0)
        worse = open_ & (estimate + two_sided * se < 0)
        equivalent = (open_ & ~better & ~worse & (estimate - one_sided * se > -spec.effect)
                      & (estimate + one_sided * se < spec.effect))
        outcome[better], outcome[worse], outcome[equivalent] = BETTER, WORSE, EQUIVALENT
        used[better | worse | equivalent] = count
    return Characteristics(
        better=(outcome == BETTER).mean(axis=0), worse=(outcome == WORSE).mean(axis=0),
        equivalent=(outcome == EQUIVALENT).mean(axis=0), undecided=(outcome == "").mean(axis=0),
        fresh_seeds=used.mean(axis=0), reference_seeds=float(used.max(axis=1).mean()))


@dataclass(frozen=True)
class DecidePlan:
    """What `cmda-tune plan` says about a `decide:` sweep at a stated seed-to-seed SD (and a plausible
    range of it): the power to decide a configuration `effect` points better once it reached the full
    budget, the chance that a configuration without effect is decided equivalent, and the seeds and
    iterations to expect when no survivor differs from the reference (the common case), with the cap."""

    spec: DecideSpec
    initial: int
    survivors: int
    sd: float
    sd_range: tuple[float, float]
    expected_power: float
    power_range: tuple[float, float]  # at the high and the low end of sd_range
    equivalent: float
    expected_seeds: float  # per surviving configuration, initial seeds included
    expected_iterations: float
    worst_iterations: float
    seeds_for_power: int | None  # the max_seeds that would reach `spec.power` at `sd`

    def as_json(self) -> dict[str, Any]:
        """The `decide` object of `plan --json`."""
        return {"effect": self.spec.effect, "power": self.spec.power, "alpha": self.spec.alpha,
                "max_seeds": self.spec.max_seeds, "expected_seeds": round(self.expected_seeds, 2),
                "expected_iterations": round(self.expected_iterations),
                "worst_iterations": round(self.worst_iterations), "seed_sd": self.sd,
                "seed_sd_range": list(self.sd_range), "expected_power": round(self.expected_power, 3),
                "expected_power_range": [round(p, 3) for p in self.power_range],
                "survivors": self.survivors, "seeds_for_power": self.seeds_for_power}


def decide_power(spec: DecideSpec, *, initial: int, survivors: int, sd: float) -> float:
    """Chance that a survivor `effect` points better is decided better, the others without effect."""
    deltas = [spec.effect] + [0.0] * (max(survivors, 1) - 1)
    return float(operating_characteristics(spec, initial=initial, deltas=deltas, sd=sd).better[0])


def seeds_for_power(spec: DecideSpec, *, initial: int, survivors: int, sd: float,
                    limit: int = 60) -> int | None:
    """The smallest max_seeds (initial seeds plus whole groups) whose power reaches `spec.power`."""
    for max_seeds in range(2 * initial, limit + 1, initial):
        candidate = dataclasses.replace(spec, max_seeds=max_seeds)
        if decide_power(candidate, initial=initial, survivors=survivors, sd=sd) >= spec.power:
            return max_seeds
    return None


def plan_decision(spec: DecideSpec, *, initial: int, configurations: int, survivors: int, max_iters: int,
                  early_iterations: float, sd: float,
                  sd_range: tuple[float, float] | None = None) -> DecidePlan:
    """The plan of a `decide:` sweep: `configurations` counts the reference, `survivors` the configurations
    expected to reach the full budget in the early-stopping phase (other than the reference), and
    `early_iterations` what that phase is expected to spend."""
    spec.check_initial(initial)
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"the seed-to-seed SD must be a positive number, got {sd!r}")
    low, high = sd_range or (sd, sd)
    survivors = max(int(survivors), 1)
    null = operating_characteristics(spec, initial=initial, deltas=[0.0] * survivors, sd=sd)
    fresh = float(null.fresh_seeds.sum()) + null.reference_seeds
    power = decide_power(spec, initial=initial, survivors=survivors, sd=sd)
    return DecidePlan(
        spec=spec, initial=initial, survivors=survivors, sd=sd, sd_range=(low, high), expected_power=power,
        power_range=(decide_power(spec, initial=initial, survivors=survivors, sd=high),
                     decide_power(spec, initial=initial, survivors=survivors, sd=low)),
        equivalent=float(null.equivalent.mean()),
        expected_seeds=initial + float(null.fresh_seeds.mean()),
        expected_iterations=early_iterations + fresh * max_iters,
        worst_iterations=float(configurations * spec.max_seeds * max_iters),
        seeds_for_power=seeds_for_power(spec, initial=initial, survivors=survivors, sd=sd))

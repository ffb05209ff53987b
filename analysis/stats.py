"""Statistics over seeds, from kept libraries: scipy (t intervals and tests, chi-square) and statsmodels
(multiple-comparison corrections, t-test power).

Seeds are few (3 to 5), so every function says what it cannot estimate (NaN) instead of pretending: one
seed has no spread, identical paired differences have no test. The interval of a paired difference and its
p-value come from one paired t distribution (`tune.decision.Contrast`), so the (1 - alpha) interval excludes
0 exactly when p < alpha; under normal seed-to-seed noise it covers at its level at any number of pairs.

There is no rank test: with 3 to 5 seeds the exact Wilcoxon signed-rank test cannot reach p < 0.05 (its
smallest two-sided p is 2 / 2^n: 0.25 at 3 pairs, 0.0625 at 5), so it could never mark a difference, and
the interval that inverts it does not exist at 95% below 6 pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from tune.decision import Contrast, paired_contrast

CORRECTIONS = {"holm": "holm", "bh": "fdr_bh"}
"""Our option name -> statsmodels' method name."""
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg"}
LEVEL = 0.95
POWER = 0.8


def mean_ci(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, sample std, half-width of the t confidence interval); std and half-width NaN below 2 values."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    if data.size < 2:
        return float(data.mean()), math.nan, math.nan
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, data.size - 1) * std / math.sqrt(data.size))
    return float(data.mean()), std, half


def paired_test(treated: Sequence[float], base: Sequence[float]) -> Contrast:
    """The paired t contrast of a configuration with the baseline, seed by seed: its `p_value` and its
    `interval(alpha)` agree (see module doc)."""
    return paired_contrast(treated, base)


def paired_p_value(treated: Sequence[float], base: Sequence[float]) -> float:
    """Two-sided p of a paired t-test; NaN where it is undefined (fewer than two pairs, or differences
    without any spread)."""
    return paired_test(treated, base).p_value


def paired_ci(treated: Sequence[float], base: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The paired t interval of the mean difference at `level`; NaN where the test is undefined."""
    return paired_test(treated, base).interval(1 - level)


def adjust_p_values(p_values: Sequence[float], correction: str = "holm",
                    alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(adjusted p, rejected) over the finite p-values, which form the family; NaN stays NaN, not rejected."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {tuple(CORRECTIONS)}, got {correction!r}")
    raw = np.asarray(p_values, dtype=float)
    adjusted = np.full(raw.shape, np.nan)
    rejected = np.zeros(raw.shape, dtype=bool)
    finite = np.isfinite(raw)
    if finite.any():
        reject, corrected, _, _ = multipletests(raw[finite], alpha=alpha, method=CORRECTIONS[correction])
        adjusted[finite], rejected[finite] = corrected, reject
    return adjusted, rejected


def pooled_sd(sds: Sequence[float], ns: Sequence[int]) -> tuple[float, int]:
    """(pooled standard deviation, degrees of freedom) of several groups' paired differences."""
    pairs = [(s, n) for s, n in zip(sds, ns) if n >= 2 and np.isfinite(s)]
    dof = sum(n - 1 for _, n in pairs)
    if dof == 0:
        return math.nan, 0
    return math.sqrt(sum((n - 1) * s * s for s, n in pairs) / dof), dof


def _power_of(effect: float, n: int, alpha: float) -> float:
    """Power of a two-sided paired t-test at level `alpha`, counted in the effect's direction.

    statsmodels' two-sided power adds the opposite tail through scipy's noncentral t, which returns NaN
    for the large effects few seeds need; that tail is below 1e-6 wherever power is near 80%, so the
    one-sided power at alpha/2 (the same critical value) is used.
    """
    return float(TTestPower().power(effect_size=effect, nobs=n, alpha=alpha / 2, alternative="larger"))


def detectable_difference(sd: float, n: int, alpha: float, power: float = POWER) -> float:
    """Smallest true mean difference a two-sided paired t-test on `n` pairs finds with `power`."""
    if n < 2 or not np.isfinite(sd):
        return math.nan
    effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha / 2, power=power,
                                      alternative="larger")
    return float(effect) * sd


def seeds_needed(difference: float, sd: float, alpha: float, power: float = POWER) -> int | None:
    """Seeds (pairs) a two-sided paired t-test needs to find `difference` with `power`."""
    if not np.isfinite(sd) or difference <= 0:
        return None
    if sd == 0:
        return 2
    n = 2
    while n < 10_000:  # power grows with n: the first n that reaches it (exact, no root finder)
        if _power_of(difference / sd, n, alpha) >= power:
            return n
        n += 1 if n < 100 else max(1, n // 50)
    return None


def sd_range(sd: float, dof: int, level: float = LEVEL) -> tuple[float, float]:
    """The chi-square confidence interval of a standard deviation estimated with `dof` degrees of freedom:
    how far the true seed-to-seed SD may be from the few seeds' estimate."""
    if dof < 1 or not np.isfinite(sd):
        return math.nan, math.nan
    tail = (1 - level) / 2
    return (sd * math.sqrt(dof / stats.chi2.isf(tail, dof)), sd * math.sqrt(dof / stats.chi2.ppf(tail, dof)))


@dataclass(frozen=True)
class PowerNote:
    """What the seed-to-seed variance of one table allows, as numbers and as one sentence: at the pooled SD
    and over its 95% interval (`*_range`: at the low and the high end of the SD's interval)."""

    sd: float
    dof: int
    n: int
    alpha: float
    comparisons: int
    detectable: float
    effect: float
    seeds_for_effect: int | None
    text: str
    sd_range: tuple[float, float] = (math.nan, math.nan)
    detectable_range: tuple[float, float] = (math.nan, math.nan)
    seeds_range: tuple[int | None, int | None] = (None, None)


def _seeds(needed: int | None) -> str:
    return f"{needed}" if needed is not None else "more than 10,000"


def power_note(sds: Sequence[float], ns: Sequence[int], *, comparisons: int, effect: float,
               metric: str, alpha: float = 0.05, power: float = POWER) -> PowerNote:
    """A short power statement for a table: the pooled SD of its paired differences with its interval, the
    difference its typical number of pairs detects and the seeds `effect` would need, each as a range over
    that interval (a few seeds pin the SD down poorly: one number would pretend otherwise).

    The significance level is the bar the strongest of `comparisons` tests must pass after Holm or
    Benjamini-Hochberg correction (alpha / m): a lone real effect is found only if it clears that bar.
    """
    sd, dof = pooled_sd(sds, ns)
    counted = [n for n in ns if n >= 2]
    n = int(np.median(counted)) if counted else max(ns, default=0)
    level = alpha / max(comparisons, 1)
    bar = (f"α = {alpha:g}" if comparisons <= 1 else
           f"α = {alpha:g}/{comparisons} (the bar the strongest of {comparisons} comparisons must pass)")
    if dof == 0:
        text = ("Power: with at most one seed per configuration paired with the baseline, the seed-to-seed "
                "variance cannot be estimated, so there are no p-values; run at least 3 seeds per "
                "configuration to test differences.")
        return PowerNote(sd, dof, n, level, comparisons, math.nan, effect, None, text)
    low, high = sd_range(sd, dof)
    detectable = detectable_difference(sd, n, level, power)
    found = (detectable_difference(low, n, level, power), detectable_difference(high, n, level, power))
    needed = seeds_needed(effect, sd, level, power)
    seeds = (seeds_needed(effect, low, level, power), seeds_needed(effect, high, level, power))
    text = (f"Power: the paired differences vary by {sd:.2f} {metric} points from seed to seed (pooled SD, "
            f"{dof} degree{'s' * (dof != 1)} of freedom; 95% interval {low:.2f} to {high:.2f}). With {n} "
            f"seeds and {bar}, a true difference of {found[0]:.2f} to {found[1]:.2f} points is found with "
            f"{power:.0%} power ({detectable:.2f} at the pooled SD); a difference of {effect:g} "
            f"point{'s' * (effect != 1)} would need {_seeds(seeds[0])} to {_seeds(seeds[1])} seeds "
            f"({_seeds(needed)} at the pooled SD).")
    return PowerNote(sd, dof, n, level, comparisons, detectable, effect, needed, text, (low, high), found,
                     seeds)

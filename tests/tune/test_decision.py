"""The rules of tune.decision on crafted results: the sweep file's `decide:` section, contrasts whose interval
and p agree, the two-way pooled contrast against statsmodels, decisions and the fresh seeds each look asks
for, and what `plan` reads. The family-wise error and the power are measured by
benchmarks/decision_simulation.py, not here."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from tune.decision import (
    BETTER,
    EQUIVALENT,
    OUT_OF_BUDGET,
    STOPPED,
    UNDECIDED,
    WORSE,
    Contrast,
    DecideSpec,
    Results,
    block_contrast,
    classify,
    decide,
    decide_power,
    fresh_seeds,
    operating_characteristics,
    paired_contrast,
    plan_decision,
    seeds_for_power,
)

SPEC = DecideSpec(effect=1.0, power=0.8, alpha=0.05, max_seeds=12)
INITIAL = (0, 1, 2)


def study(effects: dict[str, float], *, noise: float = 0.1, seeds: int = 12, seed: int = 0,
          stopped: tuple[str, ...] = (), pending: tuple[str, ...] = (), mode: str = "max") -> Results:
    """Every configuration in `effects` (the reference "ref" at 0) with values on `seeds` seeds: 50 + effect
    + a seed effect shared by all + independent noise of SD `noise`."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 1, seeds)
    values = {c: {s: 50 + mu + shared[s] + rng.normal(0, noise) for s in range(seeds)}
              for c, mu in {"ref": 0.0, **effects}.items()}
    return Results("ref", INITIAL, values, frozenset(stopped), frozenset(pending), mode)


def truncated(results: Results, seeds: dict[str, int]) -> Results:
    """The same study with only the first `seeds[config]` seeds of each configuration ended."""
    values = {c: {s: v for s, v in vals.items() if s < seeds.get(c, 3)} for c, vals in results.values.items()}
    return Results(results.reference, results.initial_seeds, values, results.stopped, results.pending,
                   results.mode)


# -- the `decide:` section -----------------------------------------------------------------------------------
def test_the_spec_rejects_what_cannot_decide_and_names_the_field():
    for bad, field in ((dict(effect=0), "effect"), (dict(effect=1, power=1.0), "power"),
                       (dict(effect=1, alpha=0.5), "alpha"), (dict(effect=1, max_seeds=1), "max_seeds"),
                       (dict(effect=float("nan")), "effect"), (dict(effect=1, max_seeds=True), "max_seeds")):
        with pytest.raises(ValueError, match=f"decide: {field} must"):
            DecideSpec(**bad)
    with pytest.raises(ValueError, match=r"max_seeds \(5\) must be at least twice the initial seeds \(3\)"):
        DecideSpec(effect=1, max_seeds=5).looks(3)


def test_looks_are_whole_groups_and_spend_alpha_steeply():
    assert SPEC.looks(3) == (6, 9)  # first look after two groups, then every group
    assert DecideSpec(effect=1, max_seeds=15).looks(3) == (6, 9, 12)
    assert DecideSpec(effect=1, max_seeds=6).looks(3) == (3,)  # room for one group only
    assert DecideSpec(effect=1, max_seeds=13).looks(3) == (6, 9)  # a partial group is never launched
    spent = DecideSpec(effect=1, max_seeds=15).spending(3)
    assert sum(spent) == pytest.approx(0.05) and spent[0] < spent[1] < spent[2]
    # Lan-DeMets O'Brien-Fleming at information 2/3 of the last look: 2 - 2 Phi(1.96 / sqrt(2/3))
    first = 2 - 2 * stats.norm.cdf(stats.norm.ppf(0.975) / math.sqrt(2 / 3))
    assert SPEC.spending(3)[0] == pytest.approx(first)
    assert DecideSpec(effect=1, max_seeds=6).spending(3) == (pytest.approx(0.05),)
    assert fresh_seeds((0, 1, 2), 4) == (3, 4, 5, 6) and fresh_seeds((7, 42), 2) == (43, 44)


# -- contrasts -------------------------------------------------------------------------------------------
def test_a_contrast_interval_excludes_zero_exactly_when_p_is_below_alpha():
    rng = np.random.default_rng(0)
    for _ in range(100):
        contrast = Contrast(rng.normal(0, 2), rng.uniform(0.1, 2), int(rng.integers(1, 40)))
        for alpha in (0.001, 0.01, 0.05):
            low, high = contrast.interval(alpha)
            assert (low > 0 or high < 0) == (contrast.p_value < alpha)
    assert math.isnan(Contrast(1.0, 0.0, 5).p_value)  # no spread, no test
    assert all(math.isnan(v) for v in Contrast(1.0, math.nan, 0).interval(0.05))


def test_the_paired_contrast_is_scipys_paired_t_test():
    treated, base = [31.0, 29.5, 30.7, 32.0], [30.0, 29.0, 30.5, 30.0]
    contrast = paired_contrast(treated, base)
    result = stats.ttest_rel(treated, base)
    assert contrast.p_value == pytest.approx(result.pvalue)
    assert contrast.interval(0.05) == pytest.approx(tuple(result.confidence_interval(0.95)))
    assert (contrast.n, contrast.df) == (4, 3)
    assert paired_contrast([1.0, math.nan, 3.0], [0.0, 0.0, 1.0]).n == 2  # a missing seed is left out
    assert not paired_contrast([1.0], [0.0]).defined


def test_the_block_contrast_is_the_two_way_least_squares_contrast():
    rng = np.random.default_rng(1)
    rows = [(c, s, 50 + i + 0.3 * s + rng.normal(0, 1)) for i, c in enumerate("abcd") for s in range(5)]
    rows += [("a", 7, 51.2), ("b", 7, 52.9), ("c", 9, 53.0), ("b", 3, math.nan)]  # unbalanced, a NaN
    contrast = block_contrast(rows, "c", "a")
    frame = pd.DataFrame([r for r in rows if math.isfinite(r[2])], columns=["block", "seed", "value"])
    fit = smf.ols("value ~ C(block) + C(seed)", frame).fit()
    test = fit.t_test("C(block)[T.c] = 0")
    assert contrast.estimate == pytest.approx(float(test.effect[0]))
    assert contrast.se == pytest.approx(float(test.sd[0, 0]))
    assert contrast.df == fit.df_resid and contrast.n == 5
    assert not block_contrast([("a", 0, 1.0), ("b", 1, 2.0)], "b", "a").defined  # no shared seed


# -- decisions -------------------------------------------------------------------------------------------
def test_clear_cases_are_decided_at_the_first_look_on_fresh_seeds():
    results = study({"up": 2.0, "down": -2.0, "same": 0.0}, stopped=("weak",))
    verdict = decide(truncated(results, {c: 9 for c in results.values}), SPEC)
    got = {c: (d.outcome, d.final, d.look, d.seeds) for c, d in verdict.decisions.items()}
    assert got == {"up": (BETTER, True, 1, 6), "down": (WORSE, True, 1, 6), "same": (EQUIVALENT, True, 1, 6),
                   "weak": (STOPPED, True, 0, 0)}
    assert verdict.family == ("up", "same", "down") and verdict.done  # best first-stage Δ first
    up = verdict.decisions["up"]
    assert up.low > 0 and up.level == pytest.approx(1 - SPEC.spending(3)[0] / 3)
    assert up.p_adjusted == pytest.approx(up.p_value * 3 * 0.05 / SPEC.spending(3)[0])
    same = verdict.decisions["same"]  # equivalence is read on the one-sided (TOST) bounds
    assert -1 < same.low < same.high < 1 and same.level == pytest.approx(1 - 2 * SPEC.spending(3)[0] / 3)
    assert verdict.fresh_wanted(truncated(results, {c: 9 for c in results.values})) == {}


def test_the_fresh_seeds_of_a_look_decide_not_the_selected_initial_ones():
    """Initial seeds that flatter a configuration (as selection does) do not move its decision: only their
    residual variance counts."""
    results = study({"a": 0.0, "b": 0.0})
    flattered = {c: dict(v) for c, v in results.values.items()}
    for s in INITIAL:
        flattered["a"][s] += 5.0
    lucky = Results("ref", INITIAL, flattered)
    seeds = {c: 9 for c in results.values}
    flattering, plain = (decide(truncated(r, seeds), SPEC).decisions["a"] for r in (lucky, results))
    assert flattering.outcome == plain.outcome == EQUIVALENT
    assert (flattering.delta, flattering.low, flattering.high) == pytest.approx((plain.delta, plain.low,
                                                                                 plain.high))


def test_an_open_comparison_gets_the_next_group_and_ends_undecided_at_max_seeds():
    results = study({"a": 0.6, "b": 0.0}, noise=1.2, seed=3)
    first = truncated(results, {c: 9 for c in results.values})
    verdict = decide(first, SPEC)
    assert all(d.outcome == UNDECIDED and not d.final and d.look == 1 for d in verdict.decisions.values())
    assert verdict.fresh_wanted(first) == {"ref": (9, 10, 11), "a": (9, 10, 11), "b": (9, 10, 11)}
    assert list(verdict.fresh_wanted(first))[0] == "ref"  # the reference's seeds launch first
    final = decide(results, SPEC)
    assert [(d.outcome, d.final, d.look, d.seeds) for d in final.decisions.values()] == [
        (UNDECIDED, True, 2, 9)] * 2
    assert final.done and final.fresh_wanted(results) == {}
    assert final.decisions["a"].low < 0 < final.decisions["a"].high


def test_decided_configurations_stop_getting_seeds_and_the_reference_runs_each_seed_once():
    results = study({"up": 3.0, "open": 0.5}, noise=0.5, seed=2)
    after_first = truncated(results, {c: 9 for c in results.values})
    verdict = decide(after_first, SPEC)
    assert verdict.decisions["up"].outcome == BETTER and not verdict.decisions["open"].final
    assert verdict.fresh_wanted(after_first) == {"ref": (9, 10, 11), "open": (9, 10, 11)}
    assert verdict.wanted["up"] == tuple(range(9)) and verdict.wanted["ref"] == tuple(range(12))
    # a replay with more data (seeds run anyway) decides the same at the same look
    assert decide(results, SPEC).decisions["up"] == verdict.decisions["up"]


def test_nothing_is_decided_and_no_fresh_seed_wanted_before_the_early_stopping_phase_ends():
    """The family (ranked survivors that fit the budget) is fixed only when every configuration has left
    the early phase: a fresh seed launched before would let a late survivor change who gets seeds."""
    results = truncated(study({"a": 2.0, "b": 0.0}, pending=("late",)), {"ref": 9, "a": 9, "b": 9})
    verdict = decide(results, SPEC)
    assert all(not d.final for d in verdict.decisions.values()) and not verdict.done
    assert verdict.family == ()
    assert verdict.wanted == {"ref": INITIAL, "a": INITIAL, "b": INITIAL, "late": INITIAL}
    assert verdict.fresh_wanted(results) == {}
    ended = truncated(study({"a": 2.0, "b": 0.0}), {})
    assert decide(ended, SPEC).fresh_wanted(ended) == {c: tuple(range(3, 9)) for c in ("ref", "a", "b")}


def test_the_budget_confirms_the_best_ranked_survivors_that_fit_and_reports_the_rest_out_of_budget():
    """4 configurations x 3 seeds x 1 iteration = a grid of 12; the early phase spent all of it. A budget of
    2.5 grids leaves 18: one member and the reference at 9 fresh seeds each (the worst case), so only the
    best first-stage survivor is confirmed; the ranking uses the initial seeds only."""
    full = study({"a": 0.5, "b": 2.0, "c": -1.0})
    spec = DecideSpec(effect=1.0, max_seeds=12, budget=2.5)

    def priced(results: Results) -> Results:
        return Results("ref", INITIAL, results.values, mode="max", max_iters=1, early_iterations=12.0)

    early = priced(truncated(full, {}))
    verdict = decide(early, spec)
    assert verdict.ranking == ("b", "a", "c") and verdict.family == ("b",)
    for config in ("a", "c"):
        decision = verdict.decisions[config]
        assert (decision.outcome, decision.final, decision.reason) == (UNDECIDED, True, OUT_OF_BUDGET)
    assert verdict.fresh_wanted(early) == {"ref": tuple(range(3, 9)), "b": tuple(range(3, 9))}
    assert verdict.fresh_count(INITIAL) == 12  # first look: 6 for b, 6 for the reference
    done = decide(priced(truncated(full, {"ref": 9, "b": 9})), spec)
    assert done.decisions["b"].outcome == BETTER and done.done
    assert decide(priced(truncated(full, {})), DecideSpec(effect=1.0, budget=1.0)).family == ()


def test_a_look_waits_for_every_seed_of_its_wave_and_a_failed_seed_is_left_out():
    results = study({"a": 2.0, "b": 0.0})
    waiting = truncated(results, {"ref": 9, "a": 9, "b": 8})
    assert all(not d.final for d in decide(waiting, SPEC).decisions.values())
    values = {c: dict(v) for c, v in truncated(results, {c: 9 for c in results.values}).values.items()}
    values["b"][8] = math.nan  # ended without a result
    verdict = decide(Results("ref", INITIAL, values), SPEC)
    assert verdict.decisions["a"].outcome == BETTER and verdict.decisions["b"].seeds == 5


def test_lower_is_better_flips_better_and_worse():
    results = study({"up": 2.0, "down": -2.0}, mode="min")
    verdict = decide(truncated(results, {c: 9 for c in results.values}), SPEC)
    assert verdict.decisions["up"].outcome == WORSE and verdict.decisions["down"].outcome == BETTER
    assert verdict.decisions["up"].delta > 0  # delta stays configuration - reference


def test_the_bar_rises_with_the_family():
    contrast = Contrast(0.9, 0.3, 30)  # p = 0.0055
    assert classify(contrast, SPEC, alpha=0.05, family=1).outcome == BETTER
    assert classify(contrast, SPEC, alpha=0.05, family=10).outcome == UNDECIDED
    assert not classify(contrast, SPEC, alpha=0.05, family=10).final
    assert classify(contrast, SPEC, alpha=0.05, family=10, final_look=True).final
    near = Contrast(0.3, 0.25, 30)  # two-sided interval at 0.05 reaches 0.81, the TOST one 0.72
    assert classify(near, SPEC, alpha=0.05, family=1).outcome == EQUIVALENT


def test_the_reference_cannot_be_stopped():
    with pytest.raises(ValueError, match="reference"):
        Results("ref", INITIAL, {}, stopped=frozenset({"ref"}))


# -- what plan reads -------------------------------------------------------------------------------------
def test_operating_characteristics_are_reproducible_and_behave():
    spec = DecideSpec(effect=1.0, max_seeds=12)
    one = operating_characteristics(spec, initial=3, deltas=[1.0, 0.0, 0.0], sd=0.8, draws=2000)
    again = operating_characteristics(spec, initial=3, deltas=[1.0, 0.0, 0.0], sd=0.8, draws=2000)
    assert np.array_equal(one.better, again.better) and one.reference_seeds == again.reference_seeds
    totals = one.better + one.worse + one.equivalent + one.undecided
    np.testing.assert_allclose(totals, 1.0)
    assert one.better[1:].max() + one.worse[1:].max() < 0.05  # no effect: hardly ever better or worse
    assert 6 <= one.fresh_seeds.min() and one.fresh_seeds.max() <= 9 and one.reference_seeds <= 9
    assert one.reference_seeds >= one.fresh_seeds.max()
    low = decide_power(spec, initial=3, survivors=4, sd=1.0)
    high = decide_power(spec, initial=3, survivors=4, sd=0.5)
    more = decide_power(DecideSpec(effect=1.0, max_seeds=18), initial=3, survivors=4, sd=1.0)
    assert low < high and low < more


def test_the_plan_gives_the_contract_fields_and_the_seeds_that_reach_the_power():
    plan = plan_decision(SPEC, initial=3, configurations=25, survivors=4, max_iters=40000,
                         early_iterations=1.3e6, sd=0.8, sd_range=(0.5, 1.0))
    fields = plan.as_json()
    assert {"effect", "power", "alpha", "max_seeds", "expected_seeds", "expected_iterations",
            "worst_iterations"} <= set(fields)
    assert fields["worst_iterations"] == 25 * 12 * 40000  # nothing stopped, every configuration to max_seeds
    assert 9 <= plan.expected_seeds <= 12
    assert 1.3e6 + 4 * 6 * 40000 < plan.expected_iterations <= 1.3e6 + 5 * 9 * 40000
    assert plan.power_range[0] < plan.expected_power < plan.power_range[1]
    needed = plan.seeds_for_power
    assert needed is not None and needed % 3 == 0
    reach = DecideSpec(effect=1.0, max_seeds=needed)
    assert decide_power(reach, initial=3, survivors=4, sd=0.8) >= 0.8
    if needed > 6:
        short = DecideSpec(effect=1.0, max_seeds=needed - 3)
        assert decide_power(short, initial=3, survivors=4, sd=0.8) < 0.8
    assert seeds_for_power(SPEC, initial=3, survivors=4, sd=50.0, limit=12) is None
    with pytest.raises(ValueError, match="SD"):
        plan_decision(SPEC, initial=3, configurations=25, survivors=4, max_iters=1, early_iterations=0,
                      sd=0.0)

"""Does a study's decision hold? The adaptive-seed design (tune/decision.py) against today's fixed 3-seed
design, on the same simulated studies of the real study's shape, through the real code: the early-stopping
phase runs `tune.schedulers.GroupASHA` via `tune.simulation.run_sweep`; the new design decides with
`tune.decision.decide` and launches the fresh seeds it asks for; today's design is read by
`analysis.compare.comparisons` (paired t, Holm over every comparison) with the percentile-bootstrap
interval it used to report.

    python benchmarks/decision_simulation.py [--replicates 200] [--workers 2] [--quick]

Shape (issue 17): the reference `none` + 24 configurations, 3 initial seeds, an evaluation every 4k of 40k
iterations, rungs at 8k/16k/32k keeping 1/2, per-configuration ASHA. Of the 24, 20 have no effect, one is
+1.0 mIoU better than the reference and three are 1, 2 and 3 points worse, in a random launch order (the
reference first). A trial's metric at iteration t is q * g(t) + e_t with g rising to 1 at 40k
(1 - exp(-t/8000), rescaled), q = 50 + effect + a seed effect shared by every configuration (SD 0.7) +
a configuration-by-seed effect, and e_t evaluation noise; the last two carry 80% and 20% of the variance of
one configuration's final value around its seed's, so the paired (configuration - reference) SD of a final
value is the row's SD. Each trial trains at its own speed (uniform 0.9..1.1).

New design: the reference is protected from the scheduler, a configuration's seeds launch together (only when
all fit, the reference's first), `decide: {effect: 1.0, power: 0.8, alpha: 0.05, max_seeds: 12}`; fresh
seeds run to the full budget (their values drawn from the same model). Today: nothing protected, seeds launch
one by one into free slots, every configuration compared with the baseline at the largest iteration both
reached, Holm over all comparisons at alpha 0.05. Every replicate is seeded by its number (and the row's SD
index): the same studies feed both designs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scipy import stats  # noqa: E402

from analysis.compare import Options, comparisons  # noqa: E402
from analysis.load import Loaded  # noqa: E402
from analysis.setting import Setting  # noqa: E402
from analysis.stats import paired_test  # noqa: E402
from tune.configuration import Configuration  # noqa: E402
from tune.decision import (  # noqa: E402
    BETTER,
    EQUIVALENT,
    OUT_OF_BUDGET,
    WORSE,
    DecideSpec,
    Results,
    decide,
    plan_decision,
)
from tune.experiment import TERMINATED  # noqa: E402
from tune.schedulers import GroupASHA  # noqa: E402
from tune.simulation import SimTrial, run_sweep  # noqa: E402

SEEDS, EVAL, MAX_ITERS, GRACE, RF, TAU = 3, 4000, 40000, 8000, 2, 8000
EFFECTS = (0.0,) * 20 + (1.0, -1.0, -2.0, -3.0)
CONFIGS = len(EFFECTS) + 1  # the reference is configuration 0
SEED_SD, PERSISTENT = 0.7, 0.8
SPEC = DecideSpec(effect=1.0, power=0.8, alpha=0.05, max_seeds=12, budget=1.0)
FRESH_DRAWN = 12  # fresh seeds drawn per configuration: enough for max_seeds up to 15
GRID = CONFIGS * SEEDS * MAX_ITERS  # the fixed 3-seed full grid: 3.0 M iterations
UNLIMITED = 10**6
SDS = (0.5, 0.8, 1.0)
SLOTS = (UNLIMITED, 8, 32)
MAIN_SLOTS = 8
REFERENCE = Configuration("none").key


@dataclass
class Study:
    """One simulated study: the truth and every random number either design may draw."""

    sd: float
    effects: list[float]  # per configuration index, the reference (0) first; launch order = index order
    quality: np.ndarray  # (config, seed) final quality of the initial seeds
    eval_noise: np.ndarray  # (config, seed, evaluation)
    speed: np.ndarray  # (config, seed)
    fresh: np.ndarray  # (config, fresh seed) final value of fresh seeds

    @classmethod
    def draw(cls, replicate: int, sd_index: int, sd: float, spread: float = 0.0) -> Study:
        """`spread` > 0: each configuration's noise SD is scaled by its own uniform(1 - spread, 1 + spread)
        factor (the pooled variance assumes one SD for all)."""
        rng = np.random.default_rng([replicate, sd_index])
        effects = [0.0] + [EFFECTS[i] for i in rng.permutation(len(EFFECTS))]
        sigma = sd / math.sqrt(2)  # per configuration around its seed; paired differences: sd
        if spread:
            sigma = sigma * np.random.default_rng([replicate, sd_index, 11]).uniform(
                1 - spread, 1 + spread, (CONFIGS, 1))
        persistent, transient = sigma * math.sqrt(PERSISTENT), sigma * math.sqrt(1 - PERSISTENT)
        fresh_count = FRESH_DRAWN
        seeds = rng.normal(0, SEED_SD, SEEDS + fresh_count)
        base = 50 + np.asarray(effects)[:, None]
        quality = base + seeds[None, :SEEDS] + rng.normal(0, persistent, (CONFIGS, SEEDS))
        evals = MAX_ITERS // EVAL
        eval_noise = rng.normal(0, 1, (CONFIGS, SEEDS, evals)) * np.reshape(transient, (-1, 1, 1))
        speed = rng.uniform(0.9, 1.1, (CONFIGS, SEEDS))
        fresh = (base + seeds[None, SEEDS:] + rng.normal(0, persistent, (CONFIGS, fresh_count))
                 + rng.normal(0, transient, (CONFIGS, fresh_count)))
        return cls(sd, effects, quality, eval_noise, speed, fresh)

    def metric(self, config: int, seed: int, iteration: int) -> float:
        rise = (1 - math.exp(-iteration / TAU)) / (1 - math.exp(-MAX_ITERS / TAU))
        return float(self.quality[config, seed] * rise + self.eval_noise[config, seed, iteration // EVAL - 1])

    def true_delta(self, config: int, iteration: int) -> float:
        rise = (1 - math.exp(-iteration / TAU)) / (1 - math.exp(-MAX_ITERS / TAU))
        return self.effects[config] * rise


def _trial(config: int, seed: int) -> SimTrial:
    ablation = ({"variant": "none", "lambdas": {}} if config == 0 else
                {"variant": "fusion_st", "lambdas": {"fusion_st": 0.01 * config}})
    return SimTrial(f"c{config}_s{seed}", {"ablation": ablation, "seed": seed})


def _ids(trial_id: str) -> tuple[int, int]:
    config, seed = trial_id[1:].split("_s")
    return int(config), int(seed)


@dataclass
class EarlyPhase:
    """The early-stopping phase as run: per trial its last reported iteration and metric history."""

    iterations: float  # trained, also past the last report
    last: dict[tuple[int, int], int]
    history: dict[tuple[int, int], dict[int, float]] = field(default_factory=dict)


def early_phase(study: Study, *, protect: bool, together: bool, slots: int, rf: float = RF) -> EarlyPhase:
    scheduler = GroupASHA(metric="miou18", mode="max", grace_period=GRACE, max_t=MAX_ITERS,
                          reduction_factor=rf, group_by="configuration", group_size=SEEDS,
                          protected={REFERENCE} if protect else (), wait_at_rungs=together)
    history: dict[tuple[int, int], dict[int, float]] = {}

    def curve(trial: SimTrial, iteration: int) -> float:
        config, seed = _ids(trial.trial_id)
        value = study.metric(config, seed, iteration)
        history.setdefault((config, seed), {})[iteration] = value
        return value

    trials = [_trial(c, s) for c in range(CONFIGS) for s in range(SEEDS)]
    outcome = run_sweep(scheduler, trials, curve, max_iters=MAX_ITERS, eval_interval=EVAL, concurrency=slots,
                        speed=lambda t: float(study.speed[_ids(t.trial_id)]),
                        launch_group=(lambda t: _ids(t.trial_id)[0]) if together else None)
    last = {_ids(t): it for t, it in outcome.last_report.items()}
    return EarlyPhase(sum(outcome.iterations.values()), last, history)


def survivors(phase: EarlyPhase) -> set[int]:
    return {c for c in range(CONFIGS) if all(phase.last.get((c, s)) == MAX_ITERS for s in range(SEEDS))}


def uneven(phase: EarlyPhase) -> tuple[int, int]:
    """Configurations whose seeds ended at different iterations, and those ended at least 8k apart (a seed
    ran past a rung its sibling was judged at)."""
    ends = [[phase.last.get((c, s), 0) for s in range(SEEDS)] for c in range(CONFIGS)]
    return sum(len(set(e)) > 1 for e in ends), sum(max(e) - min(e) >= 2 * EVAL for e in ends)


# -- the new design --------------------------------------------------------------------------------------
def initial_coverage(study: Study, phase: EarlyPhase) -> float:
    """Coverage of the analysis' paired-t intervals on the initial seeds, each comparison at its budget."""
    frame = comparisons(loaded_from(phase), Options(correction="holm", alpha=0.05))
    covered = [row["ci_low"] <= _truth(study, row) <= row["ci_high"] for _, row in frame.iterrows()
               if math.isfinite(row["ci_low"])]
    return float(np.mean(covered)) if covered else math.nan


def _truth(study: Study, row: pd.Series) -> float:
    return study.true_delta(int(row["lambda"][1:]), int(row["budget"]))


def new_design(study: Study, phase: EarlyPhase, spec: DecideSpec = SPEC) -> dict[str, Any]:
    alive = survivors(phase)
    values = {c: {s: phase.history[(c, s)][MAX_ITERS] for s in range(SEEDS)} for c in alive}
    stopped = frozenset(c for c in range(1, CONFIGS) if c not in alive)
    fresh_trials = 0
    while True:
        results = Results(0, tuple(range(SEEDS)), values, stopped=stopped, max_iters=MAX_ITERS,
                          early_iterations=phase.iterations)
        verdict = decide(results, spec)
        launch = verdict.fresh_wanted(results)
        if not launch:
            break
        for config, seeds in launch.items():
            for seed in seeds:
                values[config][seed] = float(study.fresh[config, seed - SEEDS])
                fresh_trials += 1
    decisions = verdict.decisions
    outcome = {c: decisions[c].outcome for c in range(1, CONFIGS)}
    wrong = [c for c in range(1, CONFIGS) if _wrong(outcome[c], study.effects[c], spec.effect)]
    covered = [decisions[c].low <= study.effects[c] <= decisions[c].high for c in verdict.family
               if decisions[c].outcome in (BETTER, WORSE, EQUIVALENT)]
    plus = study.effects.index(1.0)
    return {
        "false_null": any(outcome[c] in (BETTER, WORSE) for c in range(1, CONFIGS) if study.effects[c] == 0),
        "wrong": bool(wrong), "power": outcome[plus] == BETTER,
        "equivalent_null": np.mean([outcome[c] == EQUIVALENT for c in verdict.family
                                    if study.effects[c] == 0]) if any(
            study.effects[c] == 0 for c in verdict.family) else math.nan,
        "decision_coverage": covered, "survivors": len(verdict.ranking), "family": len(verdict.family),
        "compute": (phase.iterations + fresh_trials * MAX_ITERS) / GRID,
        "early_compute": phase.iterations / GRID, "fresh_trials": fresh_trials,
        "undecided": sum(outcome[c] == "undecided" for c in verdict.family),
        "out_of_budget": sum(decisions[c].reason == OUT_OF_BUDGET for c in range(1, CONFIGS)),
        "plus_out_of_budget": decisions[plus].reason == OUT_OF_BUDGET,
    }


def _wrong(outcome: str, effect: float, margin: float) -> bool:
    """A claim the truth contradicts: better/worse against the sign of the effect (or without one),
    equivalent although the effect is at least the margin."""
    if outcome == BETTER:
        return effect <= 0
    if outcome == WORSE:
        return effect >= 0
    if outcome == EQUIVALENT:
        return abs(effect) >= margin
    return False


# -- today's design ----------------------------------------------------------------------------------------
def loaded_from(phase: EarlyPhase) -> Loaded:
    """The frames `analysis.load` builds from an experiment folder, for the simulated early phase."""
    trials, history = [], []
    for c in range(CONFIGS):
        variant = "none" if c == 0 else "fusion_st"
        label = None if c == 0 else f"x{c}"
        config = "none" if c == 0 else f"fusion_st {label}"
        for s in range(SEEDS):
            last = phase.last.get((c, s))
            trials.append({"trial": f"c{c}_s{s}", "config": config, "variant": variant, "lambda": label,
                           "lambda_scale": None if c == 0 else float(c), "seed": s, "state": TERMINATED,
                           "started": True, "iterations": last, "max_iters": MAX_ITERS,
                           "stopped_early": last is not None and last < MAX_ITERS})
            history += [{"trial": f"c{c}_s{s}", "config": config, "seed": s, "iteration": it, "miou18": v}
                        for it, v in sorted(phase.history.get((c, s), {}).items())]
    setting = Setting(metric="miou18", mode="max", max_iters=MAX_ITERS, scheduler="per_config_asha",
                      rungs=(8000, 16000, 32000))
    return Loaded(pd.DataFrame(trials), pd.DataFrame(history), pd.DataFrame(columns=["trial", "iteration"]),
                  setting, ["simulated"])


def bootstrap_interval(diffs: np.ndarray) -> tuple[float, float]:
    """Today's reported interval: the 95% percentile bootstrap over seeds, 9999 resamples, seed 0."""
    if diffs.size < 2:
        return math.nan, math.nan
    if np.ptp(diffs) == 0:
        return float(diffs[0]), float(diffs[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.bootstrap((diffs,), np.mean, n_resamples=9999, method="percentile",
                                 rng=np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def todays_design(study: Study, phase: EarlyPhase) -> dict[str, Any]:
    frame = comparisons(loaded_from(phase), Options(correction="holm", alpha=0.05))
    outcome, boot = {}, []
    for _, row in frame.iterrows():
        c = int(row["lambda"][1:])
        significant = bool(row["significant"])
        outcome[c] = (BETTER if row["delta"] > 0 else WORSE) if significant else "undecided"
        budget = int(row["budget"])
        reached = [s for s in range(SEEDS)
                   if budget in phase.history.get((c, s), {}) and budget in phase.history.get((0, s), {})]
        diffs = np.array([phase.history[(c, s)][budget] - phase.history[(0, s)][budget] for s in reached])
        truth = _truth(study, row)
        low, high = bootstrap_interval(diffs)
        if math.isfinite(low):
            boot.append(low <= truth <= high)
    plus = study.effects.index(1.0)
    return {
        "false_null": any(outcome.get(c) in (BETTER, WORSE) for c in range(1, CONFIGS)
                          if study.effects[c] == 0),
        "wrong": any(_wrong(outcome.get(c, ""), study.effects[c], math.inf) for c in range(1, CONFIGS)),
        "power": outcome.get(plus) == BETTER, "reference_stopped": phase.last.get((0, 0)) != MAX_ITERS,
        "bootstrap_coverage": float(np.mean(boot)) if boot else math.nan,
        "compute": phase.iterations / GRID, "survivors": len(survivors(phase) - {0}),
    }


def interval_alone(replicate: int, sd_index: int, sd: float) -> tuple[float, float]:
    """Coverage of each interval on 24 comparisons of 3 independent pairs, no selection (same truth)."""
    rng = np.random.default_rng([replicate, sd_index, 7])
    diffs = rng.normal(1.0, sd, (len(EFFECTS), SEEDS))
    boot = [low <= 1.0 <= high for low, high in map(bootstrap_interval, diffs)]
    intervals = (paired_test(d, np.zeros(SEEDS)).interval(0.05) for d in diffs)
    tint = [low <= 1.0 <= high for low, high in intervals]
    return float(np.mean(boot)), float(np.mean(tint))


def replicate(args: tuple[int, int, str]) -> dict[str, Any]:
    replicate_index, sd_index, fit = args
    spec = dataclasses.replace(SPEC, fit=fit)
    sd = SDS[sd_index]
    study = Study.draw(replicate_index, sd_index, sd)
    out: dict[str, Any] = {"sd": sd}
    for slots in SLOTS:
        if sd != 0.8 and slots != MAIN_SLOTS:
            continue
        new_phase = early_phase(study, protect=True, together=True, slots=slots)
        today_phase = early_phase(study, protect=False, together=False, slots=slots)
        out[("new", slots)] = new_design(study, new_phase, spec)
        if slots == MAIN_SLOTS:
            out[("new", slots)]["initial_coverage"] = initial_coverage(study, new_phase)
        out[("today", slots)] = todays_design(study, today_phase) if slots == MAIN_SLOTS else {
            "compute": today_phase.iterations / GRID}
        out[("new", slots)]["uneven"], out[("new", slots)]["apart"] = uneven(new_phase)
        out[("today", slots)]["uneven"], out[("today", slots)]["apart"] = uneven(today_phase)
    out["alone"] = interval_alone(replicate_index, sd_index, sd)
    return out


def _share(values: list[bool]) -> str:
    return f"{np.mean(values):.1%}"


def table(results: list[dict[str, Any]], replicates: int) -> str:
    lines = []
    by_sd = {sd: [r for r in results if r["sd"] == sd] for sd in SDS}
    main = MAIN_SLOTS
    lines.append(f"{replicates} replicates per SD; `max_concurrent_trials` {main} unless a row says "
                 "otherwise.\n")
    lines.append("| property | goal | paired SD | new design | today (fixed 3 seeds) |")
    lines.append("| --- | --- | ---: | ---: | ---: |")
    def per_sd(label: str, goal: str, cells: Any) -> None:
        for sd, rows in by_sd.items():
            new, old = [r[("new", main)] for r in rows], [r[("today", main)] for r in rows]
            lines.append(f"| {label} | {goal} | {sd} | " + " | ".join(cells(new, old, rows)) + " |")

    def mean(results: list[dict[str, Any]], key: str) -> float:
        return float(np.nanmean([r[key] for r in results]))

    per_sd("family-wise false positives, 20 null configurations", "<= 5%",
           lambda new, old, _: [_share([r["false_null"] for r in rs]) for rs in (new, old)])
    per_sd("any wrong claim (also: wrong sign, equivalent at >= effect)", "<= 5%",
           lambda new, old, _: [_share([r["wrong"] for r in rs]) for rs in (new, old)])
    per_sd("power: the +1.0 configuration declared better", ">= 80% at SD 0.8",
           lambda new, old, _: [_share([r["power"] for r in rs]) for rs in (new, old)])
    per_sd("interval coverage, 3 pairs, no selection (new: paired t; today: bootstrap)", ">= 93%",
           lambda new, old, rows: [f"{np.mean([r['alone'][i] for r in rows]):.1%}" for i in (1, 0)])
    per_sd("interval coverage, 3 seeds, each comparison at its budget after early stopping (new: paired t; "
           "today: bootstrap)", ">= 93%",
           lambda new, old, _: [f"{mean(new, 'initial_coverage'):.1%}",
                                f"{mean(old, 'bootstrap_coverage'):.1%}"])
    per_sd("decisions whose interval covers the true difference (fresh seeds)", "–",
           lambda new, old, _: [_share([c for n in new for c in n["decision_coverage"]]), "–"])
    per_sd("total compute / fixed 3-seed full grid (3.0 M iterations)", "<= 1.0",
           lambda new, old, _: [f"{mean(new, 'compute'):.3f} (early phase {mean(new, 'early_compute'):.3f})",
                                f"{mean(old, 'compute'):.3f}"])
    rows = by_sd[0.8]
    for design, key in (("new", "early_compute"), ("today", "compute"), ("new", "compute")):
        label = {"early_compute": "early phase, new (a configuration's seeds launch together)",
                 "compute": "early phase, today (seeds launched one by one)" if design == "today" else
                 "total, new (fresh seeds included)"}[key]
        unlimited = np.mean([r[(design, UNLIMITED)][key] for r in rows])
        shares = [np.mean([r[(design, s)][key] for r in rows]) for s in (8, 32)]
        cells = [f"{unlimited:.3f}"] + [f"{v:.3f} ({100 * (v - unlimited):+.1f} points)" for v in shares]
        lines.append(f"| compute at slots unlimited / 8 / 32: {label} | within 3 points | 0.8 | "
                     f"{' / '.join(cells)} | |")
    lines.append("\n| more, at paired SD 0.8 and 8 slots | new design | today |")
    lines.append("| --- | ---: | ---: |")
    new, old = [r[("new", main)] for r in rows], [r[("today", main)] for r in rows]
    lines.append(f"| reference stopped early | 0.0% | {_share([o['reference_stopped'] for o in old])} |")
    lines.append(f"| survivors of the early phase (mean) | {np.mean([n['survivors'] for n in new]):.2f} | "
                 f"{np.mean([o['survivors'] for o in old]):.2f} |")
    lines.append("| survivors, unlimited / 32 slots (mean) | " + " / ".join(
        f"{np.mean([r[('new', s)]['survivors'] for r in rows]):.2f}" for s in (UNLIMITED, 32)) + " | |")
    fresh = np.mean([n["fresh_trials"] for n in new])
    equivalent = np.nanmean([n["equivalent_null"] for n in new])
    lines.append(f"| fresh trials (mean, reference included) | {fresh:.1f} | – |")
    lines.append(f"| null survivors decided equivalent | {equivalent:.1%} | – |")
    lines.append(f"| survivors confirmed on fresh seeds within the budget (mean per study) | "
                 f"{np.mean([n['family'] for n in new]):.2f} | – |")
    lines.append(f"| survivors left undecided at max_seeds (mean per study) | "
                 f"{np.mean([n['undecided'] for n in new]):.2f} | – |")
    lines.append(f"| survivors left undecided, out of budget (mean per study) | "
                 f"{np.mean([n['out_of_budget'] for n in new]):.2f} | – |")
    lines.append(f"| the +1.0 configuration undecided, out of budget | "
                 f"{_share([n['plus_out_of_budget'] for n in new])} | – |")
    for slots in SLOTS:
        name = "unlimited" if slots == UNLIMITED else str(slots)
        lines.append(f"| configurations whose seeds ended at different iterations, {name} slots (mean per "
                     f"study; >= 8k apart) | {np.mean([r[('new', slots)]['uneven'] for r in rows]):.2f} "
                     f"({np.mean([r[('new', slots)]['apart'] for r in rows]):.2f}) | "
                     f"{np.mean([r[('today', slots)]['uneven'] for r in rows]):.2f} "
                     f"({np.mean([r[('today', slots)]['apart'] for r in rows]):.2f}) |")
    survivors_mean = int(round(np.mean([n["survivors"] for n in new])))
    early = np.mean([n["early_compute"] for n in new]) * GRID
    plan = plan_decision(SPEC, initial=SEEDS, configurations=CONFIGS, survivors=survivors_mean,
                         max_iters=MAX_ITERS, early_iterations=early, sd=0.8, sd_range=(0.5, 1.0))
    lines.append(f"\n`tune.decision.plan_decision` at SD 0.8 with {survivors_mean} survivors and the "
                 f"simulated early phase: power {plan.expected_power:.1%} once the +1.0 configuration "
                 f"survived "
                 f"({plan.power_range[0]:.1%} to {plan.power_range[1]:.1%} over SD 1.0 to 0.5), expected "
                 f"compute {plan.expected_iterations / GRID:.3f} of the grid if no survivor differs, "
                 f"max_seeds {plan.seeds_for_power} would reach 80% power.")
    return "\n".join(lines)


ALTERNATIVES = ((9, 2, 0.0), (12, 2, 0.0), (15, 2, 0.0), (9, 3, 0.0), (12, 3, 0.0), (12, 2, 0.5))
"""(max_seeds, reduction factor, noise spread) of the trade-off table: the new design only, paired SD 0.8,
8 slots; spread 0.5 gives every configuration its own noise SD, 0.5 to 1.5 times the common one."""


def alternative(args: tuple[int, int, int, float, int]) -> dict[str, Any]:
    replicate_index, max_seeds, rf, spread, sd_index = args
    study = Study.draw(replicate_index, sd_index, SDS[sd_index], spread)
    phase = early_phase(study, protect=True, together=True, slots=MAIN_SLOTS, rf=rf)
    spec = dataclasses.replace(SPEC, max_seeds=max_seeds)
    return {"key": (max_seeds, rf, spread, sd_index), **new_design(study, phase, spec)}


def _rate(values: list[bool]) -> str:
    """A share with its 95% Clopper-Pearson interval."""
    k, n = int(sum(values)), len(values)
    interval = stats.binomtest(k, n).proportion_ci(0.95)
    return f"{k / n:.1%} [{interval.low:.1%}, {interval.high:.1%}]"


def alternatives_table(results: list[dict[str, Any]], replicates: int) -> str:
    lines = [f"{replicates} replicates each, paired SD 0.8, 8 slots, the new design:\n",
             "| max_seeds | reduction factor (rungs) | noise SD per configuration | family-wise false "
             "positives | any wrong claim | power (+1.0 better) | survivors | total compute / grid |",
             "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for max_seeds, rf, spread in ALTERNATIVES:
        rows = [r for r in results if r["key"] == (max_seeds, rf, spread, 1)]
        rungs = "8k/16k/32k" if rf == 2 else "8k/24k"
        noise = "one SD" if not spread else f"x {1 - spread:g} to {1 + spread:g}"
        survivors_mean = np.mean([r["survivors"] for r in rows])
        lines.append(f"| {max_seeds} | {rf} ({rungs}) | {noise} | {_rate([r['false_null'] for r in rows])} | "
                     f"{_rate([r['wrong'] for r in rows])} | {_share([r['power'] for r in rows])} | "
                     f"{survivors_mean:.2f} | {np.mean([r['compute'] for r in rows]):.3f} |")
    return "\n".join(lines)


def error_table(results: list[dict[str, Any]], replicates: int) -> str:
    lines = [f"The error rows again on {replicates} replicates (the first 200 are the main table's), the new "
             "design, 8 slots, with 95% Clopper-Pearson intervals:\n",
             "| paired SD | family-wise false positives | any wrong claim | power (+1.0 better) |",
             "| ---: | ---: | ---: | ---: |"]
    for index, sd in enumerate(SDS):
        rows = [r for r in results if r["key"][3] == index]
        cells = [_rate([r[key] for r in rows]) for key in ("false_null", "wrong", "power")]
        lines.append(f"| {sd} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _run(function: Any, jobs: list, workers: int) -> list:
    if workers <= 1:
        return [function(job) for job in jobs]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(function, jobs, chunksize=4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="40 replicates (about a fifth of the time)")
    parser.add_argument("--alternatives", action="store_true",
                        help="also the trade-off table: max_seeds, the reduction factor, unequal noise")
    parser.add_argument("--error-replicates", type=int, default=0,
                        help="also the error rows of the new design alone on this many replicates per SD")
    parser.add_argument("--fit", choices=("worst", "expected"), default="worst",
                        help="decide.fit: how the confirmed survivors are fitted into decide.budget")
    args = parser.parse_args()
    replicates = 40 if args.quick else args.replicates
    start = time.time()
    jobs = [(r, i, args.fit) for i in range(len(SDS)) for r in range(replicates)]
    print(table(_run(replicate, jobs, args.workers), replicates))
    if args.alternatives:
        jobs = [(r, m, rf, spread, 1) for m, rf, spread in ALTERNATIVES for r in range(replicates)]
        print("\n" + alternatives_table(_run(alternative, jobs, args.workers), replicates))
    if args.error_replicates:
        spec = (SPEC.max_seeds, RF, 0.0)
        jobs = [(r, *spec, i) for i in range(len(SDS)) for r in range(args.error_replicates)]
        print("\n" + error_table(_run(alternative, jobs, args.workers), args.error_replicates))
    print(f"\n(decide.fit {args.fit}, budget {SPEC.budget}; {time.time() - start:.0f} s, {args.workers} "
          "worker(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())

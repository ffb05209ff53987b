"""Each configuration against the baseline, at the budget where the evidence is.

Early stopping leaves configurations of unequal length. Reading every trial at the iteration all of them
reached compares them at the first rung; reading final numbers compares survivors' 40k-iteration results
with stopped configurations' 4k ones. Instead each configuration is compared with the baseline PAIRED BY
SEED at the largest evaluated iteration both reached (with a search space over other trainer keys, the
baseline at the configuration's own setting: `reference_configurations`):

- a configuration that ran to the end is compared at full budget (the headline);
- a configuration the scheduler stopped is compared at the rung where it stopped, and its standing there
  among every configuration evaluated at that rung (the decision the scheduler took) is kept with it;
- with Ray's plain ASHA, seeds of one configuration stop independently: the comparison uses the seeds that
  reached the budget, and `note` says which did not and why.

`comparisons()` returns one row per configuration (the baseline excluded) with the columns of
`comparisons.csv`; `ladder()` the mean and CI of every configuration at every evaluated iteration. Tables
and figures are drawn from these two frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.load import PARAM_PREFIX, Loaded
from analysis.stats import adjust_p_values, mean_ci, paired_test
from tune.configuration import BASELINE_VARIANT
from tune.decision import (
    DecideSpec,
    Decision,
    Results,
    Verdict,
    collect,
    decide,
    fixed_outcome,
    keep_taken,
    seed_run,
    taken,
)
from tune.experiment import ERROR, TERMINATED

COMPLETE, STOPPED, RUNNING, ERRORED, NO_RESULTS = "complete", "stopped", "running", "errored", "no results"
CSV_COLUMNS = ("variant", "lambda", "budget", "delta", "ci_low", "ci_high", "n_pairs", "p_value",
               "p_adjusted", "stopped_at")
"""The columns `comparisons.csv` promises, in this order (more follow them)."""
EXTRA_COLUMNS = ("decision", "config", "status", "lambda_scale", "reached", "max_iters", "mean", "sd", "n",
                 "baseline_mean", "sd_diff", "significant", "note", "rank_at_stop", "rung_size",
                 "survivors_low", "survivors_high")
"""What follows them (then one `lambda/<term>` column per term of the experiment and one `param/<key>`
column per search-space key)."""
INTEGER_COLUMNS = ("budget", "stopped_at", "n_pairs", "n", "reached", "max_iters", "rank_at_stop",
                   "rung_size")


@dataclass(frozen=True)
class Options:
    """How comparisons are tested: multiple-comparison correction and level (paired t-test, its interval at
    1 - alpha)."""

    correction: str = "holm"
    alpha: float = 0.05


def seed_values(loaded: Loaded) -> pd.DataFrame:
    """The headline metric per (config, seed) and evaluated iteration (columns), NaN where not reached.

    Two trials of one configuration and seed (e.g. from two experiments) are averaged; `load` lists them.
    """
    metric = loaded.setting.metric
    history = loaded.history
    if metric not in history.columns or history[metric].notna().sum() == 0:
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=["config", "seed"]))
    values = history.dropna(subset=[metric])
    return values.pivot_table(index=["config", "seed"], columns="iteration", values=metric, aggfunc="mean")


def configuration_status(trials: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: status (complete / stopped / running / errored / no results), where it stopped,
    the furthest iteration any of its seeds reached, its full budget and its seeds."""
    rows = []
    for config, group in trials.groupby("config", sort=False):
        max_iters = group["max_iters"].max()
        reached = group["iterations"].max()
        states = set(group["state"])
        full = pd.notna(max_iters) and (group["iterations"] >= max_iters).any()
        stopped = group[group["stopped_early"]]
        stopped_at = None
        if full or (pd.isna(max_iters) and TERMINATED in states):
            status = COMPLETE
        elif states - {TERMINATED, ERROR}:
            status = RUNNING
        elif len(stopped):
            status, stopped_at = STOPPED, int(stopped["iterations"].max())
        elif ERROR in states:
            status = ERRORED
        else:
            status = NO_RESULTS
        rows.append({
            "config": config,
            "variant": group["variant"].iloc[0],
            "lambda": group["lambda"].iloc[0],
            "lambda_scale": group["lambda_scale"].iloc[0],
            "setting": group["setting"].iloc[0] if "setting" in group else "{}",
            "status": status,
            "stopped_at": stopped_at,
            "reached": None if pd.isna(reached) else int(reached),
            "max_iters": None if pd.isna(max_iters) else int(max_iters),
            "seeds": sorted(group["seed"].dropna().unique().tolist()),
        })
    return pd.DataFrame(rows).set_index("config")


def reference_configurations(status: pd.DataFrame) -> dict[str, str]:
    """Setting (`Configuration.setting_key`) -> the baseline configuration at that setting: what every
    configuration at the setting is compared with (one baseline without a search space)."""
    references: dict[str, str] = {}
    for config in status.index:
        if status.loc[config, "variant"] == BASELINE_VARIANT:
            references.setdefault(status.loc[config, "setting"], config)
    return references


def _seed_row(values: pd.DataFrame, config: str) -> pd.DataFrame:
    return values.xs(config, level="config") if config in values.index.get_level_values(0) else (
        pd.DataFrame(columns=values.columns))


def seed_fates(trials: pd.DataFrame, metric: str = "the metric") -> dict[tuple[str, object], str]:
    """(config, seed) -> how that seed's trial ended, in words ("stopped at 20", "errored at 40", ...): a
    last report without a value and a result file cut short are named as what they are."""
    fates = {}
    for _, trial in trials.iterrows():
        reached = trial["iterations"]
        at = f" at {int(reached)}" if pd.notna(reached) else ""
        if bool(trial.get("cut_last_line", False)) and trial["state"] != ERROR:
            fate = (f"reported up to {int(reached)}; its next report was cut short in result.json (lost), "
                    "so where it ended is unknown" if at else "has only a report cut short in result.json")
        elif bool(trial.get("final_nan", False)) and trial["state"] == TERMINATED and at:
            fate = f"ended at {int(reached)} with a NaN {metric} (no value to compare)"
        elif trial["state"] == ERROR:
            fate = f"errored{at}" if at else "errored before its first report"
        elif trial["stopped_early"]:
            fate = f"was stopped{at}"
        elif trial["state"] == TERMINATED:
            fate = f"finished{at}" if at else "finished without a result"
        elif not trial["started"]:
            fate = "has not started"
        else:
            fate = f"is still running{at}" if at else "is running, no result yet"
        fates[(trial["config"], trial["seed"])] = fate
    return fates


def _standing(values: pd.DataFrame, status: pd.DataFrame, config: str, iteration: int,
              mode: str) -> dict[str, float | int | None]:
    """Where a configuration stood at a rung: its rank among every configuration evaluated there, and the
    range of the survivors' (configurations that ran to the end) means at that rung."""
    if iteration not in values.columns:
        return {}
    means = values[iteration].groupby(level="config").mean().dropna()
    if config not in means.index:
        return {}
    ascending = mode == "min"
    rank = int(means.rank(ascending=ascending, method="min")[config])
    survivors = means[[c for c in means.index if status.loc[c, "status"] == COMPLETE and c != config]]
    return {"rank_at_stop": rank, "rung_size": len(means),
            "survivors_low": float(survivors.min()) if len(survivors) else None,
            "survivors_high": float(survivors.max()) if len(survivors) else None}


def _unpaired_note(config: str, baseline: str | None, mine: pd.DataFrame, base_row: pd.DataFrame,
                   budget: int, paired: list, seeds: list, fates: dict) -> str:
    """Which seeds of the configuration were left out of the comparison at `budget`, and why."""
    reasons = []
    for seed in seeds:
        if seed in paired:
            continue
        if seed not in mine.index or pd.isna(mine.loc[seed].get(budget, np.nan)):
            reasons.append(f"seed {seed} {fates.get((config, seed), 'has no result')}")
        elif seed not in base_row.index:
            reasons.append(f"the baseline has no seed {seed}")
        else:
            reasons.append(f"the baseline's seed {seed} {fates.get((baseline, seed), 'has no result')}")
    if not reasons:
        return ""
    return f"paired on {len(paired)} of {len(seeds)} seeds at {budget}: " + "; ".join(reasons)


def largest_common_budget(mine: pd.DataFrame, base: pd.DataFrame) -> tuple[int | None, list]:
    """The largest evaluated iteration at which some seed has a value in both frames (seed x iteration),
    and those seeds: where a configuration is compared with the baseline."""
    for iteration in sorted((it for it in mine.columns if it in base.columns), reverse=True):
        both = mine[iteration].dropna().index.intersection(base[iteration].dropna().index)
        if len(both):
            return int(iteration), sorted(both)
    return None, []


def comparisons(loaded: Loaded, options: Options = Options()) -> pd.DataFrame:
    """One row per configuration other than the baseline: CSV_COLUMNS, then status, the configuration's
    and the baseline's means at the budget, the SD of the paired differences, the significance marker, the
    standing at the rung of a stopped configuration and a note on unpaired seeds."""
    trials = loaded.trials
    status = configuration_status(trials)
    values = seed_values(loaded)
    references = reference_configurations(status)
    terms = [c for c in trials.columns if c.startswith(("lambda/", PARAM_PREFIX))]
    fates = seed_fates(trials, loaded.setting.metric_label)
    rows = []
    for config, info in status.iterrows():
        if info["variant"] == BASELINE_VARIANT:
            continue
        mine = _seed_row(values, config)
        reference = references.get(info["setting"])
        base_row = _seed_row(values, reference) if reference else pd.DataFrame(columns=values.columns)
        row = {"variant": info["variant"], "lambda": info["lambda"], "budget": None, "delta": math.nan,
               "ci_low": math.nan, "ci_high": math.nan, "n_pairs": 0, "p_value": math.nan,
               "p_adjusted": math.nan, "stopped_at": info["stopped_at"], "config": config,
               "status": info["status"], "lambda_scale": info["lambda_scale"], "reached": info["reached"],
               "max_iters": info["max_iters"], "mean": math.nan, "sd": math.nan, "n": 0,
               "baseline_mean": math.nan, "sd_diff": math.nan, "significant": False, "note": ""}
        first = trials[trials["config"] == config].iloc[0]
        row.update({term: first[term] for term in terms})
        budget, paired = largest_common_budget(mine, base_row)
        if budget is None:
            row["note"] = ("no baseline results to compare with" if base_row.empty else
                           "no result at an iteration the baseline also reached" if len(mine) else
                           "no results")
            rows.append(row)
            continue
        treated = mine.loc[paired, budget].to_numpy(dtype=float)
        base = base_row.loc[paired, budget].to_numpy(dtype=float)
        diffs = treated - base
        mean, sd, _ = mean_ci(mine[budget].dropna().to_numpy(dtype=float))
        test = paired_test(treated, base)
        low, high = test.interval(options.alpha)
        row.update(budget=budget, delta=float(diffs.mean()), ci_low=low, ci_high=high, n_pairs=len(paired),
                   p_value=test.p_value, mean=mean, sd=sd,
                   n=int(mine[budget].notna().sum()), baseline_mean=float(base_row[budget].dropna().mean()),
                   sd_diff=float(diffs.std(ddof=1)) if len(diffs) > 1 else math.nan)
        notes = [_unpaired_note(config, reference, mine, base_row, budget, paired,
                                info["seeds"], fates)]
        if info["status"] == COMPLETE and info["max_iters"] and budget < info["max_iters"]:
            notes.append(f"ran to {info['max_iters']} but the baseline's paired seeds reached only {budget}")
        if info["status"] == STOPPED:
            row.update(_standing(values, status, config, info["stopped_at"], loaded.setting.mode))
        row["note"] = "; ".join(n for n in notes if n)
        rows.append(row)
    frame = pd.DataFrame(rows).reindex(columns=[*CSV_COLUMNS, *EXTRA_COLUMNS, *terms])
    if frame.empty:
        return frame
    adjusted, rejected = adjust_p_values(frame["p_value"].to_numpy(dtype=float), options.correction,
                                         options.alpha)
    frame["p_adjusted"], frame["significant"] = adjusted, rejected
    order = {COMPLETE: 0, STOPPED: 1, RUNNING: 2, ERRORED: 3, NO_RESULTS: 4}
    sign = 1.0 if loaded.setting.mode == "min" else -1.0
    frame["stopped_at"] = pd.to_numeric(frame["stopped_at"], errors="coerce")
    frame = frame.assign(_order=frame["status"].map(order), _stop=-frame["stopped_at"].fillna(math.inf),
                         _delta=sign * frame["delta"].fillna(sign * math.inf))
    frame = frame.sort_values(["_order", "_stop", "_delta", "config"]).drop(columns=["_order", "_stop",
                                                                                     "_delta"])
    for column in INTEGER_COLUMNS:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame = frame.reset_index(drop=True)
    study = study_decision(loaded)
    if study is not None:
        frame["decision"] = [study.outcome_of(c) for c in frame["config"]]
    else:
        frame["decision"] = [fixed_outcome(status_stopped=r["status"] == STOPPED,
                                           significant=bool(r["significant"]), delta=float(r["delta"]),
                                           mode=loaded.setting.mode) for _, r in frame.iterrows()]
    return frame


@dataclass(frozen=True)
class StudyDecision:
    """A `decide:` sweep's decisions, taken by tune.decision on the experiment's trials (the decisions the
    sweep recorded stand), keyed by the configurations' names."""

    verdict: Verdict
    results: Results
    spec: DecideSpec
    names: dict[str, str]  # Configuration.key -> the name the analysis gives it
    reference: str  # its name

    def outcome_of(self, name: str) -> str:
        decision = self.decision_of(name)
        return decision.outcome if decision is not None else ""

    def decision_of(self, name: str) -> Decision | None:
        keys = {v: k for k, v in self.names.items()}
        return self.verdict.decisions.get(keys.get(name))


def study_decision(loaded: Loaded) -> StudyDecision | None:
    """The decisions of a `decide:` sweep from its trials (None for a sweep without one)."""
    if loaded.decide is None or not len(loaded.trials) or "config_key" not in loaded.trials:
        return None
    fields = {f for f in DecideSpec.__dataclass_fields__}
    try:
        spec = DecideSpec(**{k: v for k, v in loaded.decide.items() if k in fields})
    except (TypeError, ValueError):
        return None
    trials = loaded.trials.dropna(subset=["seed"])
    names = dict(zip(trials["config_key"], trials["config"]))
    runs = []
    for _, t in trials.iterrows():
        value = math.nan if bool(t.get("final_nan", False)) or pd.isna(t["final"]) else float(t["final"])
        iteration = None if pd.isna(t["iterations"]) else float(t["iterations"])
        max_iters = None if pd.isna(t["max_iters"]) else float(t["max_iters"])
        runs.append(seed_run(t["config_key"], int(t["seed"]), status=str(t["state"]), iteration=iteration,
                             max_iters=max_iters, value=value))
    reference = loaded.reference_key or ""
    initial = loaded.initial_seeds or tuple(sorted({int(s) for s in trials["seed"]}))
    max_iters = loaded.setting.max_iters
    results = collect(runs, configurations=list(names), reference=reference, initial_seeds=initial,
                      mode=loaded.setting.mode, max_iters=int(max_iters) if max_iters else None)
    recorded = loaded.recorded or {}
    verdict = keep_taken(decide(results, spec), taken(recorded), recorded.get("wanted", {}))
    return StudyDecision(verdict, results, spec, names, names.get(reference, str(reference)))


def reference_gaps(loaded: Loaded) -> list[str]:
    """The baseline's seeds without a value at the full budget, in words ("seed 2 errored at 40", ...):
    the comparisons on those seeds have no pair, so the report says so first and ranks nothing."""
    trials = loaded.trials
    mine = trials[trials["variant"] == BASELINE_VARIANT] if len(trials) else trials
    fates = seed_fates(mine, loaded.setting.metric_label)
    gaps = []
    for _, t in mine.iterrows():
        full = (t["state"] == TERMINATED and pd.notna(t["iterations"]) and pd.notna(t["max_iters"])
                and t["iterations"] >= t["max_iters"] and not bool(t.get("final_nan", False)))
        if not full:
            gaps.append(f"seed {t['seed']} {fates.get((t['config'], t['seed']), 'has no result')}")
    return gaps


def baseline_summary(loaded: Loaded) -> dict[str, float | int | None]:
    """The baseline's mean, SD and seeds at the furthest iteration it reached (what the headline shows)."""
    status = configuration_status(loaded.trials)
    baseline = [c for c in status.index if status.loc[c, "variant"] == BASELINE_VARIANT]
    values = seed_values(loaded)
    if not baseline or baseline[0] not in values.index.get_level_values(0):
        return {}
    row = _seed_row(values, baseline[0])
    budget = max(int(it) for it in row.columns if row[it].notna().any())
    mean, sd, _ = mean_ci(row[budget].dropna().to_numpy(dtype=float))
    first = loaded.trials[loaded.trials["config"] == baseline[0]].iloc[0]
    return {"config": baseline[0], "budget": budget, "mean": mean, "sd": sd,
            "n": int(row[budget].notna().sum()), "status": status.loc[baseline[0], "status"],
            "stopped_at": status.loc[baseline[0], "stopped_at"],
            **{c: first[c] for c in loaded.trials.columns if c.startswith(PARAM_PREFIX)}}


def ladder(loaded: Loaded) -> pd.DataFrame:
    """Every configuration's mean and t confidence interval over seeds at every evaluated iteration it
    reached; `end` marks its last point (where a stopped configuration was stopped)."""
    status = configuration_status(loaded.trials)
    values = seed_values(loaded)
    rows = []
    for config in values.index.get_level_values(0).unique():
        row = _seed_row(values, config)
        points = [(int(it), row[it].dropna().to_numpy(dtype=float)) for it in row.columns]
        points = [(it, v) for it, v in points if v.size]
        for index, (iteration, data) in enumerate(points):
            mean, sd, half = mean_ci(data)
            rows.append({"config": config, "variant": status.loc[config, "variant"],
                         "lambda": status.loc[config, "lambda"], "status": status.loc[config, "status"],
                         "iteration": iteration, "mean": mean, "sd": sd, "ci_low": mean - half,
                         "ci_high": mean + half, "n": int(data.size), "end": index == len(points) - 1})
    columns = ["config", "variant", "lambda", "status", "iteration", "mean", "sd", "ci_low", "ci_high", "n",
               "end"]
    return pd.DataFrame(rows, columns=columns)

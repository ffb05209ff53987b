"""Aggregates over seeds and the comparison against the `none` baseline, censoring-aware.

ASHA stops weak trials early, so their final numbers come from fewer iterations than the survivors'.
Comparing final numbers would reward configurations for having been allowed to train longer. The
default budget is therefore EQUAL: every trial is read at the largest iteration that all compared
trials reached (their last report at or before it). `budget="final"` uses the last report of trials that
ran to max_iters, for a comparison among survivors only.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

GROUP = ["variant", "lambda"]


def _lambda_key(value) -> str:
    """Lambdas as labels ("default" for the variant's own per-term lambdas, e.g. the baseline)."""
    return (
        "default"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{float(value):g}"
    )


def trial_scores(
    trials: pd.DataFrame, history: pd.DataFrame, budget: str = "equal", metric: str = "miou18"
) -> tuple[pd.DataFrame, int | None]:
    """One score per trial (columns trial, variant, lambda, seed, score) and the iteration budget used."""
    if budget not in ("equal", "final"):
        raise ValueError(f"budget must be 'equal' or 'final', got {budget!r}")
    frame = trials[trials["iterations"] > 0].copy()
    if budget == "final":
        frame = frame[(frame["state"] == "TERMINATED") & ~frame["stopped_early"].fillna(False).astype(bool)]
        frame["score"] = frame[metric]
        limit = None
    else:
        limit = int(frame["iterations"].min()) if len(frame) else None
        reached = history[history["iteration"] <= limit] if limit is not None else history.iloc[0:0]
        at_budget = reached.sort_values("iteration").groupby("trial")[metric].last()
        frame["score"] = frame["trial"].map(at_budget)
    frame["lambda"] = frame["lambda"].map(_lambda_key)
    return frame[["trial", "variant", "lambda", "seed", "score"]].dropna(subset=["score"]), limit


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Per variant x lambda: mean, std, n and the 95% confidence half-width (t distribution)."""
    rows = []
    for (variant, lam), group in scores.groupby(GROUP, sort=False):
        values = group["score"].to_numpy(dtype=float)
        n = len(values)
        std = float(values.std(ddof=1)) if n > 1 else float("nan")
        half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else float("nan")
        rows.append(
            {
                "variant": variant,
                "lambda": lam,
                "mean": float(values.mean()),
                "std": std,
                "n": n,
                "ci95": half,
            }
        )
    return pd.DataFrame(rows)


def compare_to_baseline(scores: pd.DataFrame, baseline: str = "none", test: str = "ttest") -> pd.DataFrame:
    """Difference to the baseline PAIRED BY SEED, with a paired t-test (or Wilcoxon signed-rank)."""
    base = scores[scores["variant"] == baseline].groupby("seed")["score"].mean()
    rows = []
    for (variant, lam), group in scores.groupby(GROUP, sort=False):
        if variant == baseline:
            continue
        paired = (
            group.groupby("seed")["score"].mean().to_frame("score").join(base.rename("base"), how="inner")
        )
        diff = paired["score"] - paired["base"]
        p_value = float("nan")
        if len(diff) > 1 and np.any(diff.to_numpy() != diff.to_numpy()[0]):
            if test == "wilcoxon":
                p_value = float(stats.wilcoxon(paired["score"], paired["base"]).pvalue)
            else:
                p_value = float(stats.ttest_rel(paired["score"], paired["base"]).pvalue)
        rows.append(
            {
                "variant": variant,
                "lambda": lam,
                "delta": float(diff.mean()) if len(diff) else float("nan"),
                "n_pairs": len(diff),
                "p_value": p_value,
            }
        )
    return pd.DataFrame(rows, columns=["variant", "lambda", "delta", "n_pairs", "p_value"])


def best_lambda(summary: pd.DataFrame) -> pd.DataFrame:
    """The lambda with the highest mean per variant."""
    if summary.empty:
        return summary
    return summary.loc[summary.groupby("variant", sort=False)["mean"].idxmax()].reset_index(drop=True)

"""Figures (PNG + SVG), each drawn from the frames the tables use and returning the data it plotted, so
tests and readers can check the picture against the numbers. One colour per variant everywhere.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.compare import COMPLETE, STOPPED  # noqa: E402
from analysis.setting import Setting  # noqa: E402
from cmda.data import CLASSES  # noqa: E402
from cmda.io import write_atomic  # noqa: E402
from tune.sweep import BASELINE_VARIANT  # noqa: E402

VARIANT_ORDER = (
    "none",
    "src_rgb_event",
    "src_rgb_event+fusion_st",
    "fusion_st",
    "rgb_st+event_s_rgb_t",
    "rgb_st+event_st",
    "rgb_st+event_s_rgb_t+masked_event",
)
MARKERS = "osD^v<>ph*"


def variant_colors(variants) -> dict[str, tuple]:
    """A stable colour per variant: known variants keep their slot, others follow."""
    cmap = plt.get_cmap("tab10")
    extra = sorted(set(variants) - set(VARIANT_ORDER))
    return {name: cmap(i % 10) for i, name in enumerate(list(VARIANT_ORDER) + extra)}


def save(fig, out_dir: Path, name: str) -> list[Path]:
    """PNG and SVG, each written atomically (a reader never sees half a file)."""
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    for path in paths:
        write_atomic(path, lambda handle, fmt=path.suffix[1:]: fig.savefig(
            handle, dpi=110, bbox_inches="tight", format=fmt))
    plt.close(fig)
    return paths


def _legend(ax, **kwargs) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, **kwargs)


def ladder_figure(ladder: pd.DataFrame, setting: Setting, colors: dict, out_dir: Path) -> pd.DataFrame:
    """Every configuration's mean and 95% CI at every evaluated iteration, ending where it stopped (x);
    the scheduler's rungs as dotted lines, the published number where the setting matches."""
    data = ladder.sort_values(["config", "iteration"])
    fig, ax = plt.subplots(figsize=(10, 5.5))
    labels = {v: 0 for v in data["variant"].unique()}
    for config, group in data.groupby("config", sort=True):
        variant = group["variant"].iloc[0]
        marker = MARKERS[labels[variant] % len(MARKERS)]
        labels[variant] += 1
        color = colors[variant]
        yerr = [group["mean"] - group["ci_low"].fillna(group["mean"]),
                group["ci_high"].fillna(group["mean"]) - group["mean"]]
        ax.errorbar(group["iteration"], group["mean"], yerr=yerr, color=color, marker=marker, ms=4,
                    capsize=2, lw=1.2, alpha=0.9, label=config,
                    ls="--" if group["status"].iloc[0] == STOPPED else "-")
        if group["status"].iloc[0] == STOPPED:
            last = group[group["end"]]
            ax.plot(last["iteration"], last["mean"], "x", color=color, ms=10, mew=2)
    for rung in setting.rungs:
        ax.axvline(rung, color="0.6", ls=":", lw=1)
    if setting.reference is not None:
        ref = setting.reference
        ax.axhline(ref.value, color="k", ls="-.", lw=1, label=f"{ref.label}: {ref.value:.2f}")
    if setting.rungs:
        ax.plot([], [], color="0.6", ls=":", label="scheduler rungs")
    if (data["status"] == STOPPED).any():
        ax.plot([], [], "k--x", label="stopped early (x: where)")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{setting.metric_label} (%) — mean over seeds, 95% CI")
    ax.set_title("Every configuration at every evaluation")
    ax.grid(ls="--", alpha=0.4)
    _legend(ax)
    save(fig, out_dir, "ladder")
    return data.reset_index(drop=True)


def delta_figure(comparisons: pd.DataFrame, setting: Setting, colors: dict, out_dir: Path) -> pd.DataFrame:
    """Each configuration's paired difference to the baseline with its bootstrap CI, at its budget; hollow
    markers for configurations stopped early (compared at their rung), * for what survives correction."""
    data = comparisons.dropna(subset=["delta"])[["config", "variant", "status", "budget", "delta", "ci_low",
                                                 "ci_high", "n_pairs", "significant"]]
    data = data.iloc[::-1].reset_index(drop=True)  # first row on top
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(data) + 1.6))
    for y, row in data.iterrows():
        color = colors[row["variant"]]
        low = row["delta"] - row["ci_low"] if pd.notna(row["ci_low"]) else 0
        high = row["ci_high"] - row["delta"] if pd.notna(row["ci_high"]) else 0
        face = color if row["status"] == COMPLETE else "white"
        ax.errorbar([row["delta"]], [y], xerr=[[low], [high]], color=color, capsize=3, fmt="none")
        ax.plot([row["delta"]], [y], "o", color=color, mfc=face, ms=7)
        if row["significant"]:
            ax.annotate("*", (row["ci_high"] if pd.notna(row["ci_high"]) else row["delta"], y),
                        xytext=(4, -4), textcoords="offset points", fontsize=12)
    names = [f"{r['config']} (at {r['budget']}, n={r['n_pairs']})" for _, r in data.iterrows()]
    ax.set_yticks(range(len(data)), names, fontsize=8)
    ax.axvline(0, color="k", lw=1)
    ax.set_xlabel(f"Δ {setting.metric_label} vs {BASELINE_VARIANT} (points), paired by seed, "
                  "95% bootstrap CI")
    ax.set_title("Difference to the baseline (filled: ran to the end; hollow: stopped early)")
    ax.grid(axis="x", ls="--", alpha=0.4)
    save(fig, out_dir, "deltas")
    return data


def loss_figure(train_log: pd.DataFrame, history: pd.DataFrame, colors: dict, out_dir: Path) -> pd.DataFrame:
    """Every raw loss term against iterations, one panel per variant, mean over its trials, log y.

    Drawn from the trainer's own log.csv (every logged iteration); trials without one contribute their
    evaluation reports' means instead.
    """
    logged = set(train_log["trial"]) if len(train_log) else set()
    fallback = history[~history["trial"].isin(logged)] if len(history) else history
    frames = [f for f in (train_log, fallback) if len(f)]
    if not frames:
        return pd.DataFrame(columns=["variant", "term", "iteration", "value"])
    source = pd.concat(frames, ignore_index=True)
    terms = [c for c in source.columns
             if c.startswith("loss/") and not c.endswith("_weighted") and source[c].notna().any()]
    if not terms:
        return pd.DataFrame(columns=["variant", "term", "iteration", "value"])
    data = source.melt(id_vars=["trial", "variant", "iteration"], value_vars=terms, var_name="term").dropna()
    data = data.groupby(["variant", "term", "iteration"], as_index=False)["value"].mean()
    variants = [v for v in variant_colors(data["variant"]) if v in set(data["variant"])]
    fig, axes = plt.subplots(len(variants), 1, figsize=(9, 2.4 * len(variants)), squeeze=False,
                             sharex=True)
    fig.subplots_adjust(hspace=0.35)
    for ax, variant in zip(axes[:, 0], variants):
        for term, group in data[data["variant"] == variant].groupby("term"):
            positive = group[group["value"] > 0]
            if len(positive):
                ax.plot(positive["iteration"], positive["value"], lw=1, label=term.removeprefix("loss/"))
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(variant, color=colors[variant], fontsize=10)
        ax.grid(ls="--", alpha=0.4)
        _legend(ax)
    axes[-1, 0].set_xlabel("iteration")
    save(fig, out_dir, "loss_curves")
    return data


def class_figure(history: pd.DataFrame, comparisons: pd.DataFrame, baseline: dict, setting: Setting,
                 out_dir: Path) -> pd.DataFrame:
    """Mean per-class IoU of each configuration at the iteration it was compared at (the classes of the
    headline metric), configurations stopped early labelled with their rung."""
    classes = [CLASSES[i] for i in (setting.classes or range(len(CLASSES)))]
    columns = [f"iou/{c}" for c in classes if f"iou/{c}" in history.columns]
    points = [(r["config"], r["budget"], r["status"]) for _, r in comparisons.iterrows()
              if pd.notna(r["budget"])]
    if baseline:
        points.insert(0, (baseline["config"], baseline["budget"], baseline["status"]))
    rows = {}
    for config, budget, status in points:
        at = history[(history["config"] == config) & (history["iteration"] == budget)]
        if columns and len(at):
            suffix = f" (stopped, at {budget})" if status == STOPPED else f" (at {budget})"
            rows[f"{config}{suffix}"] = at[columns].mean()
    data = pd.DataFrame(rows).T.rename(columns=lambda c: c.removeprefix("iou/"))
    if data.empty or data.isna().all().all():
        return data
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(data) + 2))
    image = ax.imshow(data.to_numpy(dtype=float), aspect="auto", cmap="viridis")
    ax.set_xticks(range(data.shape[1]), data.columns, rotation=60, ha="right")
    ax.set_yticks(range(len(data)), data.index, fontsize=8)
    fig.colorbar(image, ax=ax, label="IoU (%)")
    ax.set_title(f"Per-class IoU (the {len(columns)} classes of {setting.metric_label})")
    save(fig, out_dir, "class_iou")
    return data


def lambda_figure(comparisons: pd.DataFrame, setting: Setting, colors: dict, out_dir: Path) -> pd.DataFrame:
    """Difference to the baseline against the λ scale, one line per variant (hollow: stopped early)."""
    columns = ["variant", "lambda_scale", "status", "budget", "delta", "ci_low", "ci_high"]
    if comparisons.empty:
        return pd.DataFrame(columns=columns)
    data = comparisons.dropna(subset=["lambda_scale", "delta"])[columns].reset_index(drop=True)
    if data["lambda_scale"].nunique() < 2:
        return data
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for variant, group in data.groupby("variant", sort=False):
        group = group.sort_values("lambda_scale")
        color = colors[variant]
        ax.plot(group["lambda_scale"], group["delta"], color=color, lw=1, label=variant)
        for _, row in group.iterrows():
            err = [[row["delta"] - row["ci_low"]], [row["ci_high"] - row["delta"]]] if pd.notna(
                row["ci_low"]) else None
            ax.errorbar([row["lambda_scale"]], [row["delta"]], yerr=err, fmt="o", color=color, capsize=3,
                        mfc=color if row["status"] == COMPLETE else "white")
    ax.axhline(0, color="k", lw=1)
    if data["lambda_scale"].min() > 0:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(sorted(data["lambda_scale"].unique()))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"x{value:g}"))
    ax.set_xlabel("λ scale (x the variant's default lambdas)")
    ax.set_ylabel(f"Δ {setting.metric_label} vs {BASELINE_VARIANT} (points)")
    ax.set_title("Sensitivity to λ (hollow: stopped early, compared at its rung)")
    ax.grid(ls="--", alpha=0.4)
    _legend(ax)
    save(fig, out_dir, "lambda_sensitivity")
    return data.reset_index(drop=True)


def cost_figure(trials: pd.DataFrame, setting: Setting, colors: dict, out_dir: Path) -> pd.DataFrame:
    """Best metric per trial against what it cost (GPU-hours; wall hours when the sweep used no GPUs)."""
    gpu = setting.gpus_per_trial > 0
    data = trials.dropna(subset=["best", "wall_s"]).copy()
    data["cost"] = data["gpu_hours"] if gpu else data["wall_s"] / 3600
    data = data[["trial", "variant", "stopped_early", "cost", "best"]]
    if data.empty:
        return data
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for variant, group in data.groupby("variant", sort=False):
        for number, (stopped, part) in enumerate(group.groupby("stopped_early")):
            ax.scatter(part["cost"], part["best"], edgecolors=[colors[variant]],
                       facecolors="white" if stopped else [colors[variant]],
                       label=variant if number == 0 else None)
    ax.set_xlabel("GPU-hours" if gpu else "wall-clock hours (no GPUs in this sweep)")
    ax.set_ylabel(f"best {setting.metric_label} (%)")
    ax.set_title("What each trial cost (hollow: stopped early)")
    ax.grid(ls="--", alpha=0.4)
    _legend(ax)
    save(fig, out_dir, "cost")
    return data.reset_index(drop=True)

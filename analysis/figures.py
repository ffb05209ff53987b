"""Comparison figures (PNG + SVG). Every function returns the DataFrame it plotted, so tests and readers
can check the picture against the numbers. One colour per variant everywhere (`variant_colors`)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from cmda.data import CLASSES, DSEC_EXCLUDED_CLASS  # noqa: E402

VARIANT_ORDER = (
    "none",
    "src_rgb_event",
    "src_rgb_event+fusion_st",
    "fusion_st",
    "rgb_st+event_s_rgb_t",
    "rgb_st+event_st",
    "rgb_st+event_s_rgb_t+masked_event",
)


def variant_colors(variants) -> dict[str, tuple]:
    """A stable colour per variant: known variants keep their slot, others follow."""
    cmap = plt.get_cmap("tab10")
    extra = sorted(set(variants) - set(VARIANT_ORDER))
    return {name: cmap(i % 10) for i, name in enumerate(list(VARIANT_ORDER) + extra)}


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    """PNG and SVG, each written to a temporary name and renamed, so a reader never sees half a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    for path in paths:
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix[1:])
        os.replace(tmp, path)
    plt.close(fig)
    return paths


def final_miou_bars(summary: pd.DataFrame, out_dir: Path, colors: dict) -> pd.DataFrame:
    """mIoU18 per variant (best lambda) with 95% confidence intervals."""
    data = summary.loc[summary.groupby("variant", sort=False)["mean"].idxmax()].sort_values("mean")
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(data) + 1.5))
    errors = data["ci95"].fillna(0).to_numpy()
    ax.barh(data["variant"], data["mean"], xerr=errors, color=[colors[v] for v in data["variant"]], capsize=3)
    ax.set_xlabel("mIoU18 (%)  —  mean over seeds, best λ, 95% CI")
    ax.set_title("Feature-alignment variants")
    _save(fig, out_dir, "final_miou")
    return data.reset_index(drop=True)


def miou_curves(history: pd.DataFrame, trials: pd.DataFrame, out_dir: Path, colors: dict) -> pd.DataFrame:
    """mIoU18 against iterations for every trial; ASHA-stopped trials dashed, ending in an x."""
    data = history.dropna(subset=["miou18"])[["trial", "variant", "iteration", "miou18"]]
    stopped = set(trials.loc[trials.get("stopped_early", False) == True, "trial"])  # noqa: E712
    fig, ax = plt.subplots(figsize=(8, 5))
    for trial, group in data.groupby("trial"):
        group = group.sort_values("iteration")
        variant = group["variant"].iloc[0]
        early = trial in stopped
        ax.plot(
            group["iteration"], group["miou18"], color=colors[variant], ls="--" if early else "-", alpha=0.8
        )
        if early:
            ax.plot(group["iteration"].iloc[-1], group["miou18"].iloc[-1], "x", color=colors[variant])
    for variant in data["variant"].unique():
        ax.plot([], [], color=colors[variant], label=variant)
    ax.plot([], [], "k--x", label="stopped early (ASHA)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mIoU18 (%)")
    ax.legend(fontsize=7)
    _save(fig, out_dir, "miou_curves")
    return data.reset_index(drop=True)


def loss_curves(history: pd.DataFrame, out_dir: Path, colors: dict) -> pd.DataFrame:
    """Every loss term against iterations, one panel per variant, log y (as the L2 study plotted them)."""
    columns = [c for c in history.columns if c.startswith("loss/")]
    data = history.melt(
        id_vars=["trial", "variant", "iteration"], value_vars=columns, var_name="term"
    ).dropna()
    data = data.groupby(["variant", "term", "iteration"], as_index=False)["value"].mean()
    variants = list(data["variant"].unique())
    if not variants:  # no loss terms were reported: nothing to draw
        return data
    fig, axes = plt.subplots(len(variants), 1, figsize=(8, 3 * max(len(variants), 1)), squeeze=False)
    for ax, variant in zip(axes[:, 0], variants):
        for term, group in data[data["variant"] == variant].groupby("term"):
            if (group["value"] > 0).any():
                ax.plot(group["iteration"], group["value"], marker=".", label=term.removeprefix("loss/"))
        ax.set_yscale("log")
        ax.set_title(variant, color=colors[variant])
        ax.set_xlabel("iteration")
        ax.grid(ls="--", alpha=0.5)
        ax.legend(fontsize=6, ncol=3)
    _save(fig, out_dir, "loss_curves")
    return data


def class_heatmap(trials: pd.DataFrame, out_dir: Path) -> pd.DataFrame:
    """Mean final per-class IoU (variants x the 18 DSEC-Night classes, truck left out)."""
    classes = [c for i, c in enumerate(CLASSES) if i != DSEC_EXCLUDED_CLASS]
    columns = [f"iou/{c}" for c in classes]
    data = trials.groupby("variant", sort=False)[columns].mean().rename(columns=lambda c: c[4:])
    fig, ax = plt.subplots(figsize=(12, 0.5 * len(data) + 2))
    image = ax.imshow(data.to_numpy(dtype=float), aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    ax.set_yticks(range(len(data)), data.index)
    fig.colorbar(image, ax=ax, label="IoU (%)")
    _save(fig, out_dir, "class_iou")
    return data


def lambda_sensitivity(summary: pd.DataFrame, out_dir: Path, colors: dict) -> pd.DataFrame:
    """mIoU18 against lambda per variant (the baseline as a horizontal band)."""
    numeric = summary[summary["lambda"] != "default"].copy()
    numeric["lambda"] = numeric["lambda"].astype(float)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant, group in numeric.groupby("variant", sort=False):
        group = group.sort_values("lambda")
        ax.errorbar(
            group["lambda"],
            group["mean"],
            yerr=group["ci95"].fillna(0),
            marker="o",
            capsize=3,
            color=colors[variant],
            label=variant,
        )
    base = summary[summary["variant"] == "none"]
    if len(base):
        ax.axhline(base["mean"].iloc[0], color=colors["none"], ls=":", label="none (baseline)")
    if len(numeric) and numeric["lambda"].min() > 0:
        ax.set_xscale("log")
    ax.set_xlabel("λ")
    ax.set_ylabel("mIoU18 (%)")
    ax.legend(fontsize=7)
    _save(fig, out_dir, "lambda_sensitivity")
    return numeric.reset_index(drop=True)


def miou_vs_cost(trials: pd.DataFrame, out_dir: Path, colors: dict, gpu: bool) -> pd.DataFrame:
    """Best mIoU18 per trial against what it cost (GPU-hours, or wall hours on a CPU-only sweep)."""
    cost = "gpu_hours" if gpu else "wall_hours"
    data = trials.dropna(subset=["best_miou18"]).copy()
    data["wall_hours"] = data["wall_s"] / 3600
    data = data[["trial", "variant", cost, "best_miou18"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant, group in data.groupby("variant", sort=False):
        ax.scatter(group[cost], group["best_miou18"], color=colors[variant], label=variant)
    ax.set_xlabel("GPU-hours" if gpu else "wall-clock hours (no GPUs in this sweep)")
    ax.set_ylabel("best mIoU18 (%)")
    ax.legend(fontsize=7)
    _save(fig, out_dir, "miou_vs_cost")
    return data.reset_index(drop=True)

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
from cmda.uda.variant_names import VARIANT_NAMES  # noqa: E402
from tune.configuration import BASELINE_VARIANT  # noqa: E402

MARKERS = "osD^v<>ph*"


def variant_colors(variants) -> dict[str, tuple]:
    """A stable colour per variant: known variants keep their slot, others follow."""
    cmap = plt.get_cmap("tab10")
    extra = sorted(set(variants) - set(VARIANT_NAMES))
    return {name: cmap(i % 10) for i, name in enumerate(list(VARIANT_NAMES) + extra)}


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


def _bottom_axes(axes, used: int) -> list:
    """Hide the grid's unused panels; the lowest panel of each column gets the iteration axis."""
    nrows, ncols = axes.shape
    bottoms = []
    for column in range(ncols):
        rows = [r for r in range(nrows) if r * ncols + column < used]
        for row in range(nrows):
            if row not in rows:
                axes[row, column].set_visible(False)
        if rows:
            ax = axes[rows[-1], column]
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("iteration")
            bottoms.append(ax)
    return bottoms


def _ladder_line(ax, group: pd.DataFrame, color, label: str, marker: str = "o") -> None:
    stopped = group["status"].iloc[0] == STOPPED
    yerr = [group["mean"] - group["ci_low"].fillna(group["mean"]),
            group["ci_high"].fillna(group["mean"]) - group["mean"]]
    ax.errorbar(group["iteration"], group["mean"], yerr=yerr, color=color, marker=marker, ms=3.5, capsize=2,
                lw=1.2, alpha=0.9, label=label, ls="--" if stopped else "-")
    if stopped:
        last = group[group["end"]]
        ax.plot(last["iteration"], last["mean"], "x", color=color, ms=9, mew=2)


def ladder_figure(ladder: pd.DataFrame, setting: Setting, colors: dict, out_dir: Path) -> pd.DataFrame:
    """Every configuration's mean and 95% CI at every evaluated iteration, ending where it stopped (x).

    One panel per variant (its λ settings in shades of a colour map), the baseline in grey in every panel,
    the scheduler's rungs as dotted lines and the published number where the setting matches: two dozen
    configurations stay readable.
    """
    data = ladder.sort_values(["config", "iteration"]).reset_index(drop=True)
    base = data[data["variant"] == BASELINE_VARIANT]
    variants = [v for v in variant_colors(data["variant"]) if v in set(data["variant"]) - {BASELINE_VARIANT}]
    panels = variants or [BASELINE_VARIANT]
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False, sharex=True,
                             sharey=True)
    shades = plt.get_cmap("viridis")
    for ax, variant in zip(axes.flat, panels):
        if len(base):
            _ladder_line(ax, base, "0.45", BASELINE_VARIANT, marker="s")
        configs = [] if variant == BASELINE_VARIANT else list(data[data["variant"] == variant].groupby(
            "config", sort=False))
        for number, (config, group) in enumerate(configs):
            shade = shades(0.85 * number / max(len(configs) - 1, 1))
            _ladder_line(ax, group, shade, group["lambda"].iloc[0] or config, MARKERS[number % len(MARKERS)])
        for rung in setting.rungs:
            ax.axvline(rung, color="0.6", ls=":", lw=1)
        if setting.reference is not None:
            ref = setting.reference
            ax.axhline(ref.value, color="k", ls="-.", lw=1, label=f"published CMDA {ref.value:.2f}")
        ax.set_title(variant, color=colors.get(variant, "k"), fontsize=10)
        ax.grid(ls="--", alpha=0.4)
        ax.legend(fontsize=7, loc="lower right", frameon=False)
    for ax in _bottom_axes(axes, len(panels)):
        if len(data) and data["iteration"].max() >= 10_000:
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{setting.metric_label} (%)")
    fig.suptitle(f"Every configuration at every evaluation: mean over seeds, 95% CI "
                 f"(dashed, x: stopped early{'; dotted: rungs' if setting.rungs else ''})", fontsize=11)
    save(fig, out_dir, "ladder")
    return data


def delta_figure(comparisons: pd.DataFrame, setting: Setting, colors: dict, out_dir: Path) -> pd.DataFrame:
    """Each configuration's paired difference to the baseline with its paired-t CI, at its budget; hollow
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
                  "paired-t CI")
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
    ncols = min(2, len(variants))
    nrows = -(-len(variants) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 3.2 * nrows), squeeze=False, sharex=True)
    for ax, variant in zip(axes.flat, variants):
        for term, group in data[data["variant"] == variant].groupby("term"):
            positive = group[group["value"] > 0]
            if len(positive):
                ax.plot(positive["iteration"], positive["value"], lw=1, label=term.removeprefix("loss/"))
        ax.set_yscale("log")
        ax.set_title(variant, color=colors[variant], fontsize=10)
        ax.grid(ls="--", alpha=0.4)
        ax.legend(fontsize=7, loc="upper right", frameon=False)
    _bottom_axes(axes, len(variants))
    fig.tight_layout()
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
    """Difference to the baseline against the λ scale, per variant.

    Lines join only configurations compared at full budget; a configuration stopped early is a hollow
    marker (compared at its rung, see the table), never joined to the others. Variants are nudged
    sideways so their intervals do not hide each other.
    """
    columns = ["variant", "lambda_scale", "status", "budget", "delta", "ci_low", "ci_high"]
    if comparisons.empty:
        return pd.DataFrame(columns=columns)
    data = comparisons.dropna(subset=["lambda_scale", "delta"])[columns].reset_index(drop=True)
    if data["lambda_scale"].nunique() < 2:
        return data
    log = data["lambda_scale"].min() > 0
    fig, ax = plt.subplots(figsize=(9, 4.8))
    variants = list(data["variant"].unique())
    for number, variant in enumerate(variants):
        group = data[data["variant"] == variant].sort_values("lambda_scale")
        color = colors[variant]
        nudge = 0.025 * (number - (len(variants) - 1) / 2)
        x = group["lambda_scale"] * (1 + nudge) if log else group["lambda_scale"] + nudge
        full = group["status"] == COMPLETE
        ax.plot(x[full], group["delta"][full], color=color, lw=1, label=variant)
        for position, (_, row) in zip(x, group.iterrows()):
            err = ([[row["delta"] - row["ci_low"]], [row["ci_high"] - row["delta"]]]
                   if pd.notna(row["ci_low"]) else None)
            ax.errorbar([position], [row["delta"]], yerr=err, fmt="o", color=color, capsize=3,
                        mfc=color if row["status"] == COMPLETE else "white")
    ax.axhline(0, color="k", lw=1)
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(sorted(data["lambda_scale"].unique()))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"x{value:g}"))
    ax.set_xlabel("λ scale (x the variant's default lambdas)")
    ax.set_ylabel(f"Δ {setting.metric_label} vs {BASELINE_VARIANT} (points)")
    ax.set_title("Sensitivity to λ (lines join full-budget results; hollow: stopped early, at its rung)")
    ax.grid(ls="--", alpha=0.4)
    _legend(ax)
    save(fig, out_dir, "lambda_sensitivity")
    return data


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

"""Experiment folders -> comparisons.csv, tables (Markdown, LaTeX), figures and one self-contained HTML page.

Every table and figure is drawn from the same three frames (`load.Loaded`, `compare.comparisons`,
`compare.ladder`), which are also written as CSV so the page's numbers can be checked and reused.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import figures
from analysis.compare import (
    Options,
    baseline_summary,
    comparisons,
    configuration_status,
    ladder,
    reference_gaps,
    study_decision,
)
from analysis.load import Loaded, load
from analysis.stats import CORRECTION_NAMES
from analysis.tables import (
    Table,
    decision_table,
    headline_table,
    stopped_table,
    to_html,
    to_latex,
    to_markdown,
    trial_table,
    unfinished_table,
)
from cmda.io import write_text_atomic
from tune.experiment import ERROR, PENDING, RUNNING, TERMINATED
from tune.sweep import ASHA_TYPES

FIGURES = {
    "ladder": "Every configuration at every evaluation",
    "deltas": "Difference to the baseline",
    "loss_curves": "Training losses at every logged iteration",
    "class_iou": "Per-class IoU",
    "lambda_sensitivity": "Sensitivity to the λ scale",
    "params": "The metric against each varied setting",
    "cost": "What each trial cost",
}
"""Figure file name -> its heading in the report, in page order."""


@dataclass
class Report:
    """What `build` produced: the page, the frames it was drawn from and the tables as built."""

    index: Path
    loaded: Loaded
    comparisons: pd.DataFrame
    ladder: pd.DataFrame
    tables: list[Table]
    figures: dict[str, pd.DataFrame]
    """Figure name -> the data it plotted, for every figure on the page."""

    @property
    def markdown(self) -> str:
        return (self.index.parent / "ablation.md").read_text()


def _summary(loaded: Loaded) -> str:
    """One paragraph: how many trials in what state, what was measured, how it was scheduled."""
    trials, setting = loaded.trials, loaded.setting
    counts = {
        "ran to the end": int(((trials["state"] == TERMINATED) & ~trials["stopped_early"]).sum()),
        "stopped early": int(trials["stopped_early"].sum()),
        "errored": int((trials["state"] == ERROR).sum()),
        "running": int((trials["state"] == RUNNING).sum()),
        "pending": int((trials["state"] == PENDING).sum()),
    }
    states = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    configs = trials["config"].nunique()
    parts = [f"{len(trials)} trials in {configs} configurations ({states})."]
    parts.append(f"Headline metric: {setting.metric_label} ({'lower' if setting.mode == 'min' else 'higher'} "
                 f"is better) on the target {setting.target}.")
    if setting.backbone:
        parts.append(f"Backbone {setting.backbone}.")
    if setting.max_iters:
        parts.append(f"Full budget {setting.max_iters} iterations.")
    if setting.scheduler in ASHA_TYPES:
        rungs = ", ".join(map(str, setting.rungs)) or "unknown"
        kind = ("per-configuration ASHA (all seeds of a configuration stop together)"
                if setting.scheduler == "per_config_asha" else
                "Ray's ASHA (each seed stops on its own; comparisons use the seeds that reached the budget)")
        parts.append(f"Early stopping: {kind}, rungs at {rungs}.")
    elif setting.scheduler == "none":
        parts.append("No early stopping.")
    return " ".join(parts)


def _figure_captions(loaded: Loaded, options: Options) -> dict[str, str]:
    setting = loaded.setting
    ladder_text = ("Mean over seeds with its 95% t-interval at every evaluated iteration. A configuration "
                   "stopped early is dashed and ends with an x where the scheduler stopped it; dotted lines "
                   "mark the scheduler's rungs.")
    if setting.scheduler == "asha":
        ladder_text += (" With Ray's ASHA the seeds of one configuration stop independently, so a point "
                        "averages the seeds that reached it.")
    if setting.reference is not None:
        ladder_text += f" Dash-dotted: the {setting.reference.label}, {setting.reference.value:.2f}."
    logged = loaded.train_log["trial"].nunique() if len(loaded.train_log) else 0
    started = int((loaded.trials["iterations"].notna()).sum())
    loss_text = ("Raw (unweighted) loss terms, mean over each variant's trials, from the trainer's own "
                 f"log.csv at every logged iteration ({logged} of {started} trials have one")
    loss_text += ")." if logged == started else "; the others contribute their evaluation reports' means)."
    return {
        "ladder": ladder_text,
        "deltas": (f"Mean paired difference to the baseline with its {1 - options.alpha:.0%} paired-t "
                   "interval over seeds (unadjusted), at the iteration each configuration was compared at; "
                   f"* survives the {CORRECTION_NAMES[options.correction]} correction."),
        "loss_curves": loss_text,
        "class_iou": "Mean IoU per class over seeds, at the iteration each configuration was compared at.",
        "lambda_sensitivity": ("Difference to the baseline against the grid's λ scale, with paired-t CIs; "
                               "lines join only configurations compared at full budget."),
        "params": ("Mean over seeds with its 95% t-interval at the last iteration each configuration "
                   "reached, against each numeric key of the search space; a line joins configurations "
                   "that differ only in that key; hollow: stopped early."),
        "cost": "Best value of the headline metric per trial against its cost.",
    }


def _documents_html(loaded: Loaded) -> str:
    if not loaded.documents:
        return "<p>Neither a sweep.yaml nor a resolved trainer config was found in the experiment.</p>"
    return "".join(f"<h3>{html.escape(title)}</h3><pre>{html.escape(text)}</pre>"
                   for title, text in loaded.documents)


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
caption{caption-side:top;text-align:left;padding:0.4em 0;color:#444;max-width:1100px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}
td.w,th{text-align:left}
p.note{color:#444;font-size:0.9em;margin:0.3em 0}
figure{margin:1em 0}figcaption{color:#444;font-size:0.9em}img{max-width:100%}
pre{background:#f6f6f6;padding:0.8em;overflow-x:auto;font-size:0.85em}
ul.missing li{margin:0.2em 0;font-size:0.9em}
"""


Locations = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def build(locations: Locations, out_dir: str | os.PathLike[str], options: Options = Options(), *,
          effect: float = 1.0, gpus: float = 0.0) -> Report:
    """Load, compare, and write everything into `out_dir`. `effect` is the difference (metric points) the
    power notes size the seeds for."""
    loaded = load(locations, gpus=gpus)
    out = Path(out_dir)
    frame = comparisons(loaded, options)
    steps = ladder(loaded)
    baseline = baseline_summary(loaded)
    setting = loaded.setting
    gaps = reference_gaps(loaded)
    tables = [decision_table(frame, study_decision(loaded), baseline, setting, options, gaps),
              headline_table(frame, baseline, setting, options, effect, gaps),
              stopped_table(frame, setting, options, effect),
              unfinished_table(frame, setting, options)]
    trials_table = trial_table(loaded.trials, setting)

    write_text_atomic(out / "comparisons.csv", frame.to_csv(index=False))
    write_text_atomic(out / "trials.csv", loaded.trials.to_csv(index=False))
    write_text_atomic(out / "history.csv", loaded.history.to_csv(index=False))
    write_text_atomic(out / "train_log.csv", loaded.train_log.to_csv(index=False))
    write_text_atomic(out / "ladder.csv", steps.to_csv(index=False))
    write_text_atomic(out / "configurations.csv", configuration_status(loaded.trials).to_csv())
    write_text_atomic(out / "missing.json", json.dumps(loaded.missing, indent=1))
    summary = _summary(loaded)
    markdown = [f"# CMDA feature-alignment ablation\n\n{summary}\n"]
    markdown += [to_markdown(t) for t in tables if not t.empty]
    if loaded.missing:
        markdown.append("### What is missing and why\n\n" + "".join(f"- {m}\n" for m in loaded.missing))
    write_text_atomic(out / "ablation.md", "\n".join(markdown))
    write_text_atomic(out / "ablation.tex", "\n".join(to_latex(t) for t in tables[:3] if not t.empty))

    colors = figures.variant_colors(loaded.trials["variant"].dropna().unique())
    fig_dir = out / "figures"
    for name in FIGURES:  # a figure this run does not draw must not survive from an earlier run
        for suffix in (".png", ".svg"):
            (fig_dir / f"{name}{suffix}").unlink(missing_ok=True)
    plotted = {}
    if len(steps):
        plotted["ladder"] = figures.ladder_figure(steps, setting, colors, fig_dir)
    if frame["delta"].notna().any():
        plotted["deltas"] = figures.delta_figure(frame, setting, colors, fig_dir)
    plotted["loss_curves"] = figures.loss_figure(loaded.train_log, loaded.history, colors, fig_dir)
    if len(loaded.history):
        plotted["class_iou"] = figures.class_figure(loaded.history, frame, baseline, setting, fig_dir)
    if len(frame):
        plotted["lambda_sensitivity"] = figures.lambda_figure(frame, setting, colors, fig_dir)
    if len(steps):
        plotted["params"] = figures.params_figure(steps, loaded.trials, setting, colors, fig_dir)
    plotted["cost"] = figures.cost_figure(loaded.trials, setting, colors, fig_dir)
    captions = _figure_captions(loaded, options)

    sources = ", ".join(loaded.locations)
    sections = [f"<h1>CMDA feature-alignment ablation</h1><p>{html.escape(sources)}</p>"
                f"<p>{html.escape(summary)}</p>"]
    sections.append(f"<h2>{html.escape(tables[0].title)}</h2>{to_html(tables[0])}")  # the answer first
    if loaded.missing:
        items = "".join(f"<li>{html.escape(m)}</li>" for m in loaded.missing)
        sections.append(f"<h2>What is missing and why</h2><ul class='missing'>{items}</ul>")
    for table in tables[1:]:
        if not table.empty or table is tables[1]:
            sections.append(f"<h2>{html.escape(table.title)}</h2>{to_html(table)}")
    for name, title in FIGURES.items():
        png = fig_dir / f"{name}.png"
        if png.is_file():
            data = base64.b64encode(png.read_bytes()).decode()
            sections.append(f"<h2>{html.escape(title)}</h2><figure><img alt='{name}' "
                            f"src='data:image/png;base64,{data}'><figcaption>{html.escape(captions[name])}"
                            "</figcaption></figure>")
    sections.append(f"<h2>{trials_table.title}</h2>{to_html(trials_table)}")
    sections.append(f"<h2>How the experiment was set up</h2>{_documents_html(loaded)}")
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>CMDA ablation report</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(sections) + "</body></html>\n")
    index = write_text_atomic(out / "index.html", page)
    drawn = {name: plotted[name] for name in FIGURES if (fig_dir / f"{name}.png").is_file()}
    return Report(index=index, loaded=loaded, comparisons=frame, ladder=steps, tables=tables, figures=drawn)


def build_report(locations, out_dir, **options) -> Path:
    """`build` for callers that want only the page's path (the demo); keyword options as in `Options`
    plus `effect` and `gpus`."""
    extra = {k: options.pop(k) for k in ("effect", "gpus") if k in options}
    return build(locations, out_dir, Options(**options), **extra).index

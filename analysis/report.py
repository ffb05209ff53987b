"""Experiment folders -> figures, Markdown/LaTeX tables and one self-contained HTML report."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

from analysis import figures
from analysis.load import load_experiments
from analysis.stats import best_lambda, compare_to_baseline, summarize, trial_scores
from analysis.tables import ablation_table, to_latex, to_markdown

FIGURES = ("final_miou", "miou_curves", "loss_curves", "class_iou", "lambda_sensitivity", "miou_vs_cost")


def build_report(
    experiment_dirs, out_dir, budget: str = "equal", gpus: float = 0.0, test: str = "ttest"
) -> Path:
    """Write every figure and table into `out_dir` and return the path of `index.html`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    experiment = load_experiments(experiment_dirs, gpus=gpus)
    trials, history = experiment.trials, experiment.history
    scores, limit = trial_scores(trials, history, budget=budget)
    summary = summarize(scores)
    comparison = compare_to_baseline(scores, test=test)
    table = ablation_table(summary, comparison)
    note = (
        f"Compared at an equal budget of {limit} iterations (the furthest every trial reached)."
        if budget == "equal"
        else "Final numbers of finished trials only."
    )
    write_atomic(out / "ablation.md", to_markdown(table, note))
    write_atomic(out / "ablation.tex", to_latex(table))
    write_atomic(out / "best_lambda.csv", best_lambda(summary).to_csv(index=False))
    write_atomic(out / "trials.csv", trials.to_csv(index=False))
    write_atomic(out / "history.csv", history.to_csv(index=False))

    colors = figures.variant_colors(trials["variant"].dropna().unique())
    fig_dir = out / "figures"
    if len(summary):
        figures.final_miou_bars(summary, fig_dir, colors)
        figures.lambda_sensitivity(summary, fig_dir, colors)
    if not history.empty:
        figures.miou_curves(history, trials, fig_dir, colors)
        figures.loss_curves(history, fig_dir, colors)
    if "iou/road" in trials and trials["iou/road"].notna().any():
        figures.class_heatmap(trials.dropna(subset=["iou/road"]), fig_dir)
        figures.miou_vs_cost(trials, fig_dir, colors, gpu=bool(trials["gpu_hours"].fillna(0).sum() > 0))

    sources = html.escape(", ".join(map(str, _as_list(experiment_dirs))))
    sections = [f"<h1>CMDA feature-alignment ablation</h1><p>{sources} — {len(trials)} trials.</p>"]
    if experiment.warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in experiment.warnings)
        sections.append(f"<h2>Missing or incomplete</h2><ul>{items}</ul>")
    sections.append(f"<h2>Ablation table</h2><p>{html.escape(note)}</p>{_markdown_table_html(table)}")
    for name in FIGURES:
        png = fig_dir / f"{name}.png"
        if png.is_file():
            data = base64.b64encode(png.read_bytes()).decode()
            sections.append(
                f'<h2>{name.replace("_", " ")}</h2><img alt="{name}" src="data:image/png;base64,{data}">'
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>cmda-tune report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}"
        "</style></head><body>" + "\n".join(sections) + "</body></html>"
    )
    index = out / "index.html"
    write_atomic(index, page)
    write_atomic(out / "warnings.json", json.dumps(experiment.warnings, indent=1))
    return index


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _as_list(dirs) -> list:
    return [dirs] if isinstance(dirs, str | Path) else list(dirs)


def _markdown_table_html(table) -> str:
    header = ("variant", "λ", "mean", "std", "n", "Δ vs none", "p")
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]
    for _, r in table.iterrows():
        cells = [
            r["variant"],
            r["lambda"],
            f"{r['mean']:.2f}",
            f"{r['std']:.2f}",
            int(r["n"]),
            "" if r.get("delta") != r.get("delta") else f"{r['delta']:+.2f}",
            "" if r.get("p_value") != r.get("p_value") else f"{r['p_value']:.3f}",
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return "".join(rows) + "</table>"

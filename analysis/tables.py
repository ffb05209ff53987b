"""Markdown and LaTeX (booktabs) tables for an ablation section: mean ± std, n, Δ vs baseline, p."""

from __future__ import annotations

import math

import pandas as pd


def ablation_table(summary: pd.DataFrame, comparison: pd.DataFrame) -> pd.DataFrame:
    """One row per variant x lambda with the numbers both formats print."""
    table = summary.merge(comparison, on=["variant", "lambda"], how="left")
    return table.sort_values("mean", ascending=False).reset_index(drop=True)


def _fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _cells(row: pd.Series) -> list[str]:
    spread = "" if math.isnan(row["std"]) else f" ± {row['std']:.2f}"
    delta = row.get("delta", float("nan"))
    signed = "–" if pd.isna(delta) else f"{delta:+.2f}"
    return [
        str(row["variant"]),
        str(row["lambda"]),
        f"{row['mean']:.2f}{spread}",
        str(int(row["n"])),
        signed,
        _fmt(row.get("p_value", float("nan")), 3),
    ]


HEADER = ["variant", "λ", "mIoU18 (mean ± std)", "n", "Δ vs none", "p"]


def to_markdown(table: pd.DataFrame, budget_note: str = "") -> str:
    """A GitHub-flavoured Markdown table; the best mean is in bold."""
    lines = ["| " + " | ".join(HEADER) + " |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    best = table["mean"].max() if len(table) else None
    for _, row in table.iterrows():
        cells = _cells(row)
        if row["mean"] == best:
            cells[2] = f"**{cells[2]}**"
        lines.append("| " + " | ".join(cells) + " |")
    if budget_note:
        lines.append("")
        lines.append(budget_note)
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, repl in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#")):
        text = text.replace(char, repl)
    return text


def to_latex(
    table: pd.DataFrame, caption: str = "Feature-alignment ablation on DSEC-Night (mIoU, 18 classes)."
) -> str:
    """A booktabs table (\\toprule, \\midrule, \\bottomrule); the best mean in bold."""
    best = table["mean"].max() if len(table) else None
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{llrrrr}",
        r"\toprule",
        r"Variant & $\lambda$ & mIoU$_{18}$ & $n$ & $\Delta$ vs none & $p$ \\",
        r"\midrule",
    ]
    for _, row in table.iterrows():
        cells = [_latex_escape(c).replace("±", r"$\pm$").replace("–", "--") for c in _cells(row)]
        if row["mean"] == best:
            cells[2] = rf"\textbf{{{cells[2]}}}"
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_latex_escape(caption)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"

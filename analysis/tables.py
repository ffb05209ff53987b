"""The report's tables, drawn from the comparison frame: built once as cells of text, rendered as Markdown,
LaTeX (booktabs) and HTML. A missing number is written `–`, never `nan`.

Three comparison tables, never mixed into one ranking: configurations that ran to the end (at full budget,
the headline), configurations stopped early (at their rung, with the scheduler's view of that rung), and
configurations still running or failed. Plus one row per trial.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis.compare import COMPLETE, STOPPED, Options, StudyDecision
from analysis.load import PARAM_PREFIX
from analysis.setting import Setting
from analysis.stats import CORRECTION_NAMES, PowerNote, power_note
from tune.configuration import BASELINE_VARIANT
from tune.decision import BETTER, EQUIVALENT, OUT_OF_BUDGET, OUT_OF_SEEDS, UNDECIDED, WORSE, best_by_delta
from tune.experiment import ERROR, PAUSED, PENDING, RUNNING, TERMINATED

DASH = "–"


def missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any, digits: int = 2, signed: bool = False) -> str:
    """A number for people: fixed digits, `–` when there is none."""
    if missing(value):
        return DASH
    return f"{float(value):+.{digits}f}" if signed else f"{float(value):.{digits}f}"


def fmt_int(value: Any) -> str:
    return DASH if missing(value) else str(int(value))


def fmt_p(value: Any) -> str:
    if missing(value):
        return DASH
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def fmt_mean(mean: Any, sd: Any, n: Any) -> str:
    """"34.00 ± 1.00 (n=3)"; the spread is left out for one seed, where it does not exist."""
    if missing(mean):
        return DASH
    spread = "" if missing(sd) else f" ± {sd:.2f}"
    return f"{mean:.2f}{spread} (n={fmt_int(n)})"


def fmt_delta(row: pd.Series) -> str:
    """"+4.00 [+3.00, +5.00] *": mean paired difference, paired-t interval, marker if significant after
    correction."""
    if missing(row["delta"]):
        return DASH
    text = fmt(row["delta"], signed=True)
    if not missing(row["ci_low"]):
        text += f" [{fmt(row['ci_low'], signed=True)}, {fmt(row['ci_high'], signed=True)}]"
    return text + (" *" if bool(row.get("significant")) else "")


@dataclass
class Table:
    """Cells of text plus what the renderers need: a caption, notes under the table, bold cells."""

    title: str
    frame: pd.DataFrame
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    bold: set[tuple[int, str]] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return self.frame.empty


def _correction(options: Options) -> str:
    return CORRECTION_NAMES[options.correction]


def _delta_header(options: Options) -> list[str]:
    level = f"{1 - options.alpha:.0%}"
    return [f"Δ vs {BASELINE_VARIANT} [{level} CI]", "Pairs", "p", f"p ({_correction(options)})"]


def param_columns(frame: pd.DataFrame) -> list[str]:
    """The search-space keys an experiment varies (`param/<key>` columns): each gets a column of its own."""
    return [c for c in frame.columns if c.startswith(PARAM_PREFIX)]


def _param_header(columns: list[str]) -> list[str]:
    return [c[len(PARAM_PREFIX):] for c in columns]


def _param_cells(row: Any, columns: list[str]) -> list[str]:
    values = [row.get(c) for c in columns]
    return [DASH if missing(v) else f"{v:g}" if isinstance(v, float) else str(v) for v in values]


def _delta_cells(row: pd.Series) -> list[str]:
    return [fmt_delta(row), fmt_int(row["n_pairs"]), fmt_p(row["p_value"]), fmt_p(row["p_adjusted"])]


def family_size(comparisons: pd.DataFrame) -> int:
    """How many comparisons the correction adjusts over: every one with a p-value."""
    return int(comparisons["p_value"].notna().sum()) if len(comparisons) else 0


def _power(rows: pd.DataFrame, comparisons: pd.DataFrame, setting: Setting, options: Options,
           effect: float) -> PowerNote:
    return power_note(rows["sd_diff"].to_numpy(dtype=float), rows["n_pairs"].fillna(0).astype(int).tolist(),
                      comparisons=family_size(comparisons), effect=effect, metric=setting.metric_label,
                      alpha=options.alpha)


def _test_sentence(comparisons: pd.DataFrame, options: Options) -> str:
    m = family_size(comparisons)
    alpha = f"{options.alpha:g}"
    return (f"Δ is the mean paired difference (configuration − {BASELINE_VARIANT}, same seed) with its "
            f"{1 - options.alpha:.0%} paired-t interval over seeds; p from the same two-sided paired t-test, "
            f"so the interval excludes 0 exactly when p < {alpha}. Interval and p are per comparison, "
            f"unadjusted; p ({_correction(options)}) is adjusted over the {m} comparison(s) that have a "
            f"p-value (every configuration against the baseline, stopped ones included), and * marks what "
            f"remains significant at α = {alpha} after that correction: an interval that excludes 0 "
            f"without * is not significant once the comparisons are counted.")


def headline_table(comparisons: pd.DataFrame, baseline: dict[str, Any], setting: Setting,
                   options: Options, effect: float, gaps: list[str] | None = None) -> Table:
    """Configurations that ran to the end, at full budget, the baseline first; the best by paired Δ bold."""
    metric = setting.metric_label
    rows = comparisons[comparisons["status"] == COMPLETE] if len(comparisons) else comparisons
    params = param_columns(comparisons)
    header = ["Variant", "λ", *_param_header(params), "Compared at", f"{metric} (mean ± SD)",
              *_delta_header(options), "Decision"]
    cells = []
    if baseline:
        mean = fmt_mean(baseline["mean"], baseline["sd"], baseline["n"])
        cells.append([BASELINE_VARIANT, DASH, *_param_cells(baseline, params),
                      fmt_int(baseline["budget"]), mean, "(baseline)", DASH, DASH, DASH, "(reference)"])
    for _, row in rows.iterrows():
        cells.append([row["variant"], row["lambda"] or DASH, *_param_cells(row, params),
                      fmt_int(row["budget"]), fmt_mean(row["mean"], row["sd"], row["n"]), *_delta_cells(row),
                      row.get("decision") or DASH])
    frame = pd.DataFrame(cells, columns=header)
    bold = set()
    reference_complete = bool(baseline) and baseline.get("status") == COMPLETE and not gaps
    # the best by its paired difference to the reference (0 for the reference itself), never by raw means
    # over different sets of seeds; no ranking when the reference did not reach the full budget
    deltas = ([0.0] if baseline else []) + rows["delta"].tolist()
    best = best_by_delta(dict(enumerate(deltas)), setting.mode) if reference_complete else []
    if best:
        reference_best = bool(baseline) and 0 in best
        column = header[3 + len(params)] if reference_best else header[4 + len(params)]
        bold = {(i, column) for i in best}
    budget = f"{setting.max_iters} iterations" if setting.max_iters else "their last iteration"
    caption = (f"Configurations that ran to the end ({budget}), each compared with the baseline at the "
               f"largest iteration both reached, paired by seed; in bold the best by that paired difference "
               f"(the baseline when none is better). " + _test_sentence(comparisons, options))
    if setting.mode == "min":
        caption += f" Lower {metric} is better."
    if setting.reference is not None:
        ref = setting.reference
        caption += f" For reference, the {ref.label} reports {ref.value:.2f} {metric}."
    notes = []
    if params:
        notes.append(f"Each configuration is compared with the baseline at its own setting of "
                     f"{', '.join(_param_header(params))} (paired by seed); the first row is the baseline at "
                     "the first setting.")
    if baseline and baseline.get("status") != COMPLETE:
        notes.append(f"The baseline did not run to the end (it reached {baseline['budget']}): every "
                     "configuration is compared with it at most there.")
    notes += [f"{r['config']}: {r['note']}" for _, r in rows.iterrows() if r["note"]]
    if len(rows):
        notes.append(_power(rows, comparisons, setting, options, effect).text)
    return Table("Configurations that ran to the end", frame, caption, notes, bold)


DECISION_WORDS = {BETTER: "better", WORSE: "worse", EQUIVALENT: "equivalent", UNDECIDED: "undecided",
                  STOPPED: "stopped early"}


def decision_table(comparisons: pd.DataFrame, study: StudyDecision | None, baseline: dict[str, Any],
                   setting: Setting, options: Options, gaps: list[str] | None = None) -> Table:
    """The study's answer, first on the page: each configuration decided better, worse or equivalent,
    undecided (out of seeds or budget, or still open), or stopped early, with Δ and its interval."""
    metric = setting.metric_label
    header = ["Configuration", "Decision", "Δ vs reference [interval]", "Level", "Fresh seeds", "Why"]
    cells = []
    notes = []
    if study is not None:
        spec = study.spec
        for config, decision in study.verdict.decisions.items():
            name = study.names.get(config, str(config))
            outcome = DECISION_WORDS.get(decision.outcome, decision.outcome)
            if decision.outcome == UNDECIDED:
                outcome += f" ({decision.reason})" if decision.reason else " (still open)"
            interval = DASH
            if not missing(decision.delta):
                interval = fmt(decision.delta, signed=True)
                if not missing(decision.low):
                    interval += f" [{fmt(decision.low, signed=True)}, {fmt(decision.high, signed=True)}]"
            why = {OUT_OF_SEEDS: f"max_seeds {spec.max_seeds} reached",
                   OUT_OF_BUDGET: f"decide.budget {spec.budget:g} spent on better-ranked survivors",
                   }.get(decision.reason, "")
            if decision.look:
                looked = f"look {decision.look}, p (adjusted) {fmt_p(decision.p_adjusted)}"
                why = f"{looked}; {why}" if why else looked
            level = DASH if missing(decision.level) else f"{decision.level:.1%}"
            cells.append([name, outcome, interval, level, fmt_int(decision.seeds) if decision.seeds else DASH,
                          why or DASH])
        caption = (
            f"Decided on fresh seeds against {study.reference} (decide: effect {spec.effect:g} {metric}, "
            f"power {spec.power:g}, family-wise alpha {spec.alpha:g}, max_seeds {spec.max_seeds}, "
            f"budget {spec.budget:g} of the fixed-seed grid). Better/worse: the interval at the level "
            "shown (Bonferroni over the family and the looks) excludes 0; equivalent: the TOST interval "
            f"lies within ±{spec.effect:g}; the family-wise error of these claims is at most "
            f"{spec.alpha:g} (docs/ARCHITECTURE.md). Undecided (out of seeds): max_seeds was reached; "
            "(out of budget): ranked below the survivors the budget confirms; (still open): more seeds "
            "are wanted. The initial seeds' numbers, which selected the survivors, are in the tables "
            "below and decide nothing.")
        if not study.verdict.done:
            notes.append("The study is not finished: some decisions are still open.")
    else:
        for _, row in comparisons.iterrows():
            outcome = DECISION_WORDS.get(row["decision"], row["decision"])
            cells.append([row["config"], outcome, fmt_delta(row), f"{1 - options.alpha:.0%}", DASH,
                          f"at {fmt_int(row['budget'])}" if not missing(row["budget"]) else DASH])
        caption = (f"This sweep had no decide: section. Better/worse: significant after the "
                   f"{_correction(options)} correction on the seeds it ran; nothing is called equivalent, "
                   "since no seed count was sized for it. Add decide: to the sweep file to run the study "
                   "until each comparison is decided.")
    if baseline and baseline.get("status") != COMPLETE:
        notes.insert(0, f"The reference did not reach the full budget (it reached {baseline['budget']}): "
                        "nothing is ranked; a missing reference seed leaves its comparisons without pairs.")
    elif gaps:
        notes.insert(0, "A reference seed has no value at the full budget (" + "; ".join(gaps) + "): "
                        "nothing is ranked; the comparisons on that seed have no pair.")
    return Table("Decision", pd.DataFrame(cells, columns=header), caption, notes)


def stopped_table(comparisons: pd.DataFrame, setting: Setting, options: Options, effect: float) -> Table:
    """Configurations stopped early, each at its rung, with the scheduler's view of that rung."""
    metric = setting.metric_label
    rows = comparisons[comparisons["status"] == STOPPED] if len(comparisons) else comparisons
    params = param_columns(comparisons)
    header = ["Variant", "λ", *_param_header(params), "Stopped at", f"{metric} there (mean ± SD)",
              "Rank at that rung", "Survivors there", *_delta_header(options)]
    cells = []
    for _, row in rows.iterrows():
        rank = DASH if missing(row.get("rank_at_stop")) else f"{row['rank_at_stop']} of {row['rung_size']}"
        low, high = row.get("survivors_low"), row.get("survivors_high")
        survivors = DASH if missing(low) else (fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}")
        cells.append([row["variant"], row["lambda"] or DASH, *_param_cells(row, params),
                      fmt_int(row["stopped_at"]),
                      fmt_mean(row["mean"], row["sd"], row["n"]), rank, survivors, *_delta_cells(row)])
    caption = (f"Configurations the scheduler stopped early, at the rung where it stopped them: their "
               f"{metric} there, their rank among every configuration evaluated at that rung, the range of "
               f"the survivors' means at that rung (the decision the scheduler took) and their difference to "
               f"the baseline there. These numbers come from fewer iterations than the table above and are "
               f"not ranked with it. " + _test_sentence(comparisons, options))
    notes = [f"{r['config']}: {r['note']}" for _, r in rows.iterrows() if r["note"]]
    if len(rows):
        notes.append(_power(rows, comparisons, setting, options, effect).text)
    return Table("Configurations stopped early", pd.DataFrame(cells, columns=header), caption, notes)


def unfinished_table(comparisons: pd.DataFrame, setting: Setting, options: Options) -> Table:
    """Configurations still running, errored or without results: compared as far as they got."""
    rows = comparisons[~comparisons["status"].isin([COMPLETE, STOPPED])] if len(comparisons) else comparisons
    params = param_columns(comparisons)
    header = ["Variant", "λ", *_param_header(params), "Status", "Reached", "Compared at",
              f"{setting.metric_label} (mean ± SD)", *_delta_header(options), "Note"]
    cells = [[r["variant"], r["lambda"] or DASH, *_param_cells(r, params), r["status"], fmt_int(r["reached"]),
              fmt_int(r["budget"]), fmt_mean(r["mean"], r["sd"], r["n"]), *_delta_cells(r), r["note"] or DASH]
             for _, r in rows.iterrows()]
    caption = ("Configurations still running or whose trials failed, compared with the baseline as far as "
               "they got; provisional.")
    return Table("Configurations still running or failed", pd.DataFrame(cells, columns=header), caption)


STATE_WORDS = {TERMINATED: "finished", ERROR: "errored", RUNNING: "running", PENDING: "pending",
               PAUSED: "paused"}


def trial_table(trials: pd.DataFrame, setting: Setting) -> Table:
    """One row per trial: state, seed, iterations, best and final metric, error."""
    metric = setting.metric_label
    params = param_columns(trials)
    header = ["Trial", "Variant", "λ", *_param_header(params), "Seed", "State", "Iterations",
              f"Best {metric} (at)", f"Final {metric}", "Error"]
    cells = []
    for _, t in trials.sort_values(["config", "seed", "trial"], na_position="last").iterrows():
        state = STATE_WORDS.get(t["state"], str(t["state"]).lower())
        if t["stopped_early"]:
            state = "stopped early"
        if not t["started"]:
            state += " (not started)"
        iterations = fmt_int(t["iterations"])
        if not missing(t["max_iters"]) and iterations != DASH:
            iterations += f" of {int(t['max_iters'])}"
        best = DASH if missing(t["best"]) else f"{fmt(t['best'])} ({fmt_int(t['best_iteration'])})"
        error = DASH
        if not missing(t["error"]) and t["error"]:
            error = f"{t['error']} — {t['error_file']}"
            if t["state"] != ERROR:
                error = f"recovered after {t['num_failures']} failure(s); last: {error}"
        cells.append([t["trial"], t["variant"], t["lambda"] or DASH, *_param_cells(t, params),
                      fmt_int(t["seed"]), state, iterations, best, fmt(t["final"]), error])
    return Table("Every trial", pd.DataFrame(cells, columns=header))


# -- renderers -------------------------------------------------------------------------------------------
def _cell(table: Table, index: int, column: str, wrap: tuple[str, str]) -> str:
    value = str(table.frame.at[index, column])
    return f"{wrap[0]}{value}{wrap[1]}" if (index, column) in table.bold else value


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table with its caption and notes."""
    if table.empty:
        return f"### {table.title}\n\n(none)\n"
    columns = list(table.frame.columns)
    lines = [f"### {table.title}", "", "| " + " | ".join(columns) + " |",
             "| " + " | ".join("---" if i < 2 else "---:" for i in range(len(columns))) + " |"]
    for index in table.frame.index:
        cells = [_cell(table, index, c, ("**", "**")).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *(f"{text}\n" for text in [table.caption, *table.notes] if text)]
    return "\n".join(lines).rstrip() + "\n"


def _latex_escape(text: str) -> str:
    for char, repl in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
                       ("±", r"$\pm$"), ("–", "--"), ("−", "$-$"), ("Δ", r"$\Delta$"), ("λ", r"$\lambda$"),
                       ("α", r"$\alpha$")):
        text = text.replace(char, repl)
    return text


def to_latex(table: Table) -> str:
    """A booktabs table (\\toprule, \\midrule, \\bottomrule) with the caption; bold cells in \\textbf."""
    columns = list(table.frame.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "ll" + "r" * (len(columns) - 2) + "}", r"\toprule",
             " & ".join(_latex_escape(c) for c in columns) + r" \\", r"\midrule"]
    for index in table.frame.index:
        cells = [_latex_escape(_cell(table, index, c, ("\x00", "\x01"))) for c in columns]
        lines.append(" & ".join(c.replace("\x00", r"\textbf{").replace("\x01", "}") for c in cells) + r" \\")
    caption = " ".join([table.caption, *table.notes]).strip()
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_latex_escape(caption)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _td(value: str) -> str:
    """Numbers right-aligned (the stylesheet's default), words left-aligned."""
    numeric = value.removeprefix("<b>")[:1] in "0123456789+-–(<."
    return f"<td>{value}</td>" if numeric else f"<td class='w'>{value}</td>"


def to_html(table: Table) -> str:
    """An HTML table with its caption and the notes under it (escaped)."""
    if table.empty:
        return "<p>None.</p>"
    columns = list(table.frame.columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for index in table.frame.index:
        cells = [html.escape(str(table.frame.at[index, c])) for c in columns]
        cells = [f"<b>{v}</b>" if (index, c) in table.bold else v for v, c in zip(cells, columns)]
        body.append("<tr>" + "".join(_td(v) for v in cells) + "</tr>")
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in table.notes)
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{notes}"

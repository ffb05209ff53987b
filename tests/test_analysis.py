"""Analysis from a fixture experiment folder written in Ray Tune's on-disk format with known numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import figures
from analysis.load import ExperimentError, load_experiments
from analysis.report import FIGURES, build_report
from analysis.stats import best_lambda, compare_to_baseline, summarize, trial_scores
from analysis.tables import ablation_table, to_latex, to_markdown
from cmda.data import CLASSES

# miou18 at iterations 10, 20, 30 per (variant, lambda, seed); fusion_st@0.5 seed 2 is stopped at 10
CURVES = {
    ("none", None, 0): [10.0, 20.0, 30.0],
    ("none", None, 1): [11.0, 21.0, 29.0],
    ("none", None, 2): [12.0, 22.0, 31.0],
    ("fusion_st", 0.1, 0): [12.0, 24.0, 33.0],
    ("fusion_st", 0.1, 1): [13.0, 23.0, 34.0],
    ("fusion_st", 0.1, 2): [12.5, 26.0, 35.0],
    ("fusion_st", 0.5, 0): [9.0, 18.0, 25.0],
    ("fusion_st", 0.5, 1): [8.0, 17.0, 26.0],
    ("fusion_st", 0.5, 2): [7.0],
}


def write_trial(
    root: Path, name: str, variant, lam, seed, curve, done=True, error=False, gpu_state="TERMINATED"
):
    folder = root / name
    folder.mkdir(parents=True)
    params = {
        "ablation": {"variant": variant, "lambda": lam, "lambdas": {}},
        "seed": seed,
        "backbone": "mit_b2",
        "base_config": "configs/cmda_cs2dsec_b2.yaml",
        "overrides": {},
    }
    (folder / "params.json").write_text(json.dumps(params))
    lines = []
    for index, value in enumerate(curve):
        iteration = 10 * (index + 1)
        row = {
            "iteration": iteration,
            "max_iters": 30,
            "miou18": value,
            "miou19": value * 18 / 19,
            "loss/src_fusion": 1.0 / iteration,
            "loss/fusion_st": 0.1 / iteration if variant != "none" else None,
            "time/train_s": 60.0 * iteration,
            "training_iteration": index + 1,
            "time_total_s": 65.0 * iteration,
            "done": done and index == len(curve) - 1,
            "trial_id": name,
            "config": params,
        }
        row.update({f"iou/{c}": value + i for i, c in enumerate(CLASSES)})
        row = {k: v for k, v in row.items() if v is not None}
        lines.append(json.dumps(row))
    (folder / "result.json").write_text("\n".join(lines) + ("\n" if lines else ""))
    if error:
        (folder / "error.txt").write_text("Traceback: NonFiniteLossError")
    return {"relative_logdir": name, "status": "ERROR" if error else gpu_state}


@pytest.fixture()
def experiment(tmp_path) -> Path:
    root = tmp_path / "sweep"
    root.mkdir()
    trial_data = []
    for i, ((variant, lam, seed), curve) in enumerate(CURVES.items()):
        status = write_trial(root, f"{variant}_{lam}_s{seed}_{i:05d}", variant, lam, seed, curve)
        trial_data.append([json.dumps(status), json.dumps({})])
    (root / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": trial_data}))
    (root / "sweep.yaml").write_text("resources: {cpu: 4, gpu: 0.5}\n")
    return root


def test_loader_builds_one_row_per_trial_with_censoring(experiment):
    trials, history = load_experiments(experiment)
    assert len(trials) == 9 and set(trials["variant"]) == {"none", "fusion_st"}
    stopped = trials[trials["stopped_early"]]
    assert stopped["trial"].tolist() == ["fusion_st_0.5_s2_00008"] and stopped["iterations"].item() == 10
    row = trials[trials["trial"] == "none_None_s0_00000"].iloc[0]
    assert row["best_miou18"] == 30.0 and row["iou/road"] == 30.0
    assert row["gpu_hours"] == pytest.approx(65.0 * 30 * 0.5 / 3600)  # 0.5 GPU per trial from sweep.yaml
    assert len(history) == 25 and set(history.columns) >= {"trial", "iteration", "miou18", "loss/src_fusion"}


def test_equal_budget_aggregates_equal_hand_computed_values(experiment):
    trials, history = load_experiments(experiment)
    scores, limit = trial_scores(trials, history, budget="equal")
    assert limit == 10  # the stopped trial reached only iteration 10
    summary = summarize(scores).set_index(["variant", "lambda"])
    values = np.array([12.0, 13.0, 12.5])
    row = summary.loc[("fusion_st", "0.1")]
    assert row["mean"] == pytest.approx(values.mean()) and row["std"] == pytest.approx(values.std(ddof=1))
    assert row["ci95"] == pytest.approx(scipy_stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3))
    final_scores, _ = trial_scores(trials, history, budget="final")
    final = summarize(final_scores).set_index(["variant", "lambda"])
    assert final.loc[("fusion_st", "0.5"), "n"] == 2  # the stopped trial is excluded from finals


def test_paired_test_against_the_baseline(experiment):
    trials, history = load_experiments(experiment)
    scores, _ = trial_scores(trials, history, budget="final")
    comparison = compare_to_baseline(scores).set_index(["variant", "lambda"])
    treated, base = np.array([33.0, 34.0, 35.0]), np.array([30.0, 29.0, 31.0])
    row = comparison.loc[("fusion_st", "0.1")]
    assert row["delta"] == pytest.approx((treated - base).mean()) and row["n_pairs"] == 3
    assert row["p_value"] == pytest.approx(scipy_stats.ttest_rel(treated, base).pvalue)
    assert best_lambda(summarize(scores)).set_index("variant").loc["fusion_st", "lambda"] == "0.1"


def test_tables_carry_the_numbers(experiment):
    trials, history = load_experiments(experiment)
    scores, _ = trial_scores(trials, history, budget="final")
    table = ablation_table(summarize(scores), compare_to_baseline(scores))
    markdown = to_markdown(table)
    assert "| fusion_st | 0.1 | **34.00 ± 1.00** | 3 | +4.00 |" in markdown
    assert "| none | default | 30.00 ± 1.00 | 3 | – | – |" in markdown
    latex = to_latex(table)
    assert all(rule in latex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert r"fusion\_st & 0.1 & \textbf{34.00 $\pm$ 1.00}" in latex


def test_figures_plot_the_dataframes_data(experiment, tmp_path):
    trials, history = load_experiments(experiment)
    scores, _ = trial_scores(trials, history, budget="final")
    summary = summarize(scores)
    colors = figures.variant_colors(trials["variant"].unique())
    out = tmp_path / "figs"
    bars = figures.final_miou_bars(summary, out, colors)
    assert bars.set_index("variant")["mean"].to_dict() == pytest.approx({"none": 30.0, "fusion_st": 34.0})
    curves = figures.miou_curves(history, trials, out, colors)
    pd.testing.assert_series_equal(
        curves["miou18"],
        history.dropna(subset=["miou18"])["miou18"].reset_index(drop=True),
        check_names=False,
    )
    losses = figures.loss_curves(history, out, colors)
    assert set(losses["term"]) == {"loss/src_fusion", "loss/fusion_st"}
    heat = figures.class_heatmap(trials, out)
    assert heat.shape == (2, 18) and "truck" not in heat.columns
    assert heat.loc["none", "road"] == pytest.approx(trials[trials["variant"] == "none"]["iou/road"].mean())
    sensitivity = figures.lambda_sensitivity(summary, out, colors)
    assert sorted(sensitivity["lambda"]) == [0.1, 0.5]
    cost = figures.miou_vs_cost(trials, out, colors, gpu=True)
    assert cost["gpu_hours"].tolist() == trials["gpu_hours"].tolist()
    for name in FIGURES:
        assert (out / f"{name}.png").is_file() and (out / f"{name}.svg").is_file()


def test_html_report_embeds_every_figure(experiment, tmp_path):
    index = build_report([experiment], tmp_path / "report", budget="equal")
    page = index.read_text()
    assert page.count("data:image/png;base64,") == len(FIGURES)
    assert all(f'alt="{name}"' in page for name in FIGURES)
    assert "equal budget of 10 iterations" in page and (tmp_path / "report" / "ablation.tex").is_file()


def test_partial_folder_is_analysed_with_what_exists(tmp_path):
    root = tmp_path / "partial"
    root.mkdir()
    write_trial(root, "none_s0", "none", None, 0, [10.0, 20.0, 30.0])
    write_trial(root, "fusion_s0", "fusion_st", 0.1, 0, [12.0], done=False)
    write_trial(root, "fusion_s1", "fusion_st", 0.1, 1, [11.0, 19.0], done=False, error=True)
    write_trial(root, "fusion_s2", "fusion_st", 0.1, 2, [], done=False)
    result = load_experiments(root)
    states = result.trials.set_index("trial")["state"].to_dict()
    assert states == {
        "fusion_s0": "RUNNING",
        "fusion_s1": "ERROR",
        "fusion_s2": "PENDING",
        "none_s0": "TERMINATED",
    }
    text = "\n".join(result.warnings)
    assert "fusion_s0: still running at iteration 10" in text
    assert "fusion_s1: errored at iteration 20" in text and "fusion_s2: no results yet" in text
    page = build_report(root, tmp_path / "report").read_text()
    assert "Missing or incomplete" in page and "fusion_s1: errored" in page


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(ExperimentError, match="not a folder"):
        load_experiments(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExperimentError, match="no trial folders with params.json"):
        load_experiments(empty)
    (empty / "t0").mkdir()
    (empty / "t0" / "params.json").write_text("{not json")
    with pytest.raises(ExperimentError, match=r"t0/params.json: cannot read JSON"):
        load_experiments(empty)


def test_wilcoxon_option_and_pending_trials_without_a_folder(experiment):
    trials, history = load_experiments(experiment)
    scores, _ = trial_scores(trials, history, budget="final")
    comparison = compare_to_baseline(scores, test="wilcoxon").set_index(["variant", "lambda"])
    treated, base = np.array([33.0, 34.0, 35.0]), np.array([30.0, 29.0, 31.0])
    expected = scipy_stats.wilcoxon(treated, base).pvalue
    assert comparison.loc[("fusion_st", "0.1"), "p_value"] == pytest.approx(expected)
    state = experiment / "experiment_state-2026-01-01_00-00-00.json"
    data = json.loads(state.read_text())
    data["trial_data"].append([json.dumps({"relative_logdir": "queued_00009", "status": "PENDING"}), "{}"])
    state.write_text(json.dumps(data))
    assert "trial queued_00009: not started yet (pending), no folder" in load_experiments(experiment).warnings


def test_cli_writes_the_report_and_rejects_a_bad_folder(experiment, tmp_path, capsys):
    from analysis.cli import main

    assert main([str(experiment), "--out", str(tmp_path / "r"), "--budget", "final"]) == 0
    assert "| fusion_st | 0.1 | **34.00 ± 1.00** |" in capsys.readouterr().out
    assert (tmp_path / "r" / "index.html").is_file()
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")]) == 2
    assert "not a folder" in capsys.readouterr().err

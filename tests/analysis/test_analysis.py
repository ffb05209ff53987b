"""The analysis of an early-stopped, multi-seed ablation, from folders in Ray Tune's on-disk format with
known numbers (tests/analysis/analysis_fixtures.py): the budget of each comparison, corrected p-values,
paired-t intervals, power notes, comparisons.csv and the report page."""

from __future__ import annotations

import csv
import dataclasses
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import STUDY_SWEEP, Trial, study_trials, write_experiment
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from analysis.cells import configuration_names, read_configuration
from analysis.compare import CSV_COLUMNS, EXTRA_COLUMNS, Options, comparisons
from analysis.load import load
from analysis.report import FIGURES, build
from analysis.setting import PUBLISHED_CMDA, Setting
from analysis.stats import (
    adjust_p_values,
    detectable_difference,
    paired_ci,
    paired_test,
    pooled_sd,
    power_note,
    sd_range,
    seeds_needed,
)
from analysis.tables import headline_table, to_markdown
from cmda.data import targets
from tune.configuration import Configuration
from tune.experiment import ExperimentError

RESOLVED = "data:\n  target: {name: dsec_night}\nmodel: {backbone: mit_b0}\ntrain: {max_iters: 80}\n"
BASE = {0: [10, 20, 25, 30], 1: [11, 21, 26, 29], 2: [12, 22, 27, 31]}


def curve(values, step=20):
    return {step * (i + 1): float(v) for i, v in enumerate(values)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Per-configuration ASHA, grace 20 of 80, 3 seeds: two configurations ran to the end, one was stopped
    at the first rung (20), one at the second (40)."""
    root = tmp_path_factory.mktemp("exp") / "study"
    return write_experiment(root, study_trials(), sweep=STUDY_SWEEP, resolved=RESOLVED)


@pytest.fixture(scope="module")
def report(study, tmp_path_factory):
    return build(study, tmp_path_factory.mktemp("report"))


def rows(frame: pd.DataFrame) -> dict[str, pd.Series]:
    return {row["config"]: row for _, row in frame.iterrows()}


# -- where each configuration is compared ----------------------------------------------------------------
def test_survivors_are_compared_at_full_budget_and_stopped_configurations_at_their_rung(report):
    got = rows(report.comparisons)
    expected = {  # config: (budget, stopped_at, status, paired differences)
        "fusion_st x1": (80, None, "complete", [4.0, 4.1, 3.9]),
        "src_rgb_event x1": (80, None, "complete", [0.5, 0.0, 0.5]),
        "rgb_st+event_st x1": (40, 40, "stopped", [-1.0, -0.5, -1.0]),
        "fusion_st x0.5": (20, 20, "stopped", [-1.0, -3.0, -5.0]),
    }
    assert list(got) == list(expected)  # survivors first, then stopped configurations, later rungs first
    for config, (budget, stopped_at, status, diffs) in expected.items():
        row = got[config]
        assert (row["budget"], row["status"], row["n_pairs"]) == (budget, status, 3)
        assert (pd.isna(row["stopped_at"]) if stopped_at is None else row["stopped_at"] == stopped_at)
        assert row["delta"] == pytest.approx(np.mean(diffs))
        assert row["sd_diff"] == pytest.approx(np.std(diffs, ddof=1))
    assert got["fusion_st x1"]["mean"] == pytest.approx(34.0) and got["fusion_st x1"]["baseline_mean"] == 30.0
    # the scheduler's view of the rung where a configuration was stopped
    at_40 = got["rgb_st+event_st x1"]  # means at 40: fusion_st x1 24.33, none 21, src 21, itself 20.17
    assert (at_40["rank_at_stop"], at_40["rung_size"]) == (4, 4)
    assert (at_40["survivors_low"], at_40["survivors_high"]) == pytest.approx((21.0, 73 / 3))
    at_20 = got["fusion_st x0.5"]  # five configurations reached 20; it had the lowest mean (8)
    assert (at_20["rank_at_stop"], at_20["rung_size"]) == (5, 5)
    assert (at_20["survivors_low"], at_20["survivors_high"]) == pytest.approx((11.0, 12.5))


def test_plain_asha_compares_the_seeds_that_reached_the_budget_and_says_so(tmp_path):
    trials = [Trial("none", s, curve(v)) for s, v in BASE.items()]
    trials += [Trial("fusion_st", 0, curve([12, 24, 30, 34])), Trial("fusion_st", 1, curve([13])),
               Trial("fusion_st", 2, curve([12.5]))]
    root = write_experiment(tmp_path / "asha", trials, sweep=STUDY_SWEEP.replace("per_config_asha", "asha"))
    loaded = load(root)
    row = comparisons(loaded).iloc[0]
    assert (row["status"], row["budget"], row["n_pairs"], row["delta"]) == ("complete", 80, 1, 4.0)
    assert math.isnan(row["p_value"]) and math.isnan(row["ci_low"]) and math.isnan(row["sd"])
    assert row["note"] == "paired on 1 of 3 seeds at 80: seed 1 was stopped at 20; seed 2 was stopped at 20"
    table = headline_table(comparisons(loaded), {}, loaded.setting, Options(), effect=1.0)
    text = to_markdown(table)
    # no baseline summary given: nothing to rank against, so nothing in bold
    assert "| fusion_st | x1 | 80 | 34.00 (n=1) | +4.00 | 1 | – | – | undecided |" in text
    assert "paired on 1 of 3 seeds" in text and "nan" not in text.lower()
    assert "there are no p-values" in text  # the power note for a table without spread


# -- significance ------------------------------------------------------------------------------------------
def test_holm_and_benjamini_hochberg_match_statsmodels(study):
    loaded = load(study)
    raw = comparisons(loaded)["p_value"].to_numpy()
    pairs = {"fusion_st x1": ([34, 33.1, 34.9], [30, 29, 31]), "fusion_st x0.5": ([9, 8, 7], [10, 11, 12])}
    by_config = rows(comparisons(loaded))
    for config, (treated, base) in pairs.items():
        assert by_config[config]["p_value"] == pytest.approx(scipy_stats.ttest_rel(treated, base).pvalue)
    for option, method in (("holm", "holm"), ("bh", "fdr_bh")):
        frame = comparisons(loaded, Options(correction=option))
        reject, adjusted, _, _ = multipletests(raw, alpha=0.05, method=method)
        np.testing.assert_allclose(frame["p_adjusted"], adjusted)
        assert frame["significant"].tolist() == reject.tolist()
    # by hand: Holm multiplies the k-th smallest by (m - k + 1) and keeps the sequence monotone
    holm, _ = adjust_p_values([0.01, 0.04, 0.03, math.nan], "holm")
    bh, _ = adjust_p_values([0.01, 0.04, 0.03, math.nan], "bh")
    np.testing.assert_allclose(holm[:3], [0.03, 0.06, 0.06]) and math.isnan(holm[3])
    np.testing.assert_allclose(bh[:3], [0.03, 0.04, 0.04])


def test_the_marker_is_only_on_what_survives_correction(report):
    text = report.markdown
    significant = rows(report.comparisons)["fusion_st x1"]
    assert significant["significant"] and significant["p_value"] < 0.05 / 4
    assert "| fusion_st | x1 | 80 | 34.00 ± 0.90 (n=3) | **+4.00 [+3.75, +4.25] *** |" in text  # by paired Δ
    # rgb_st+event_st has p < 0.05 uncorrected, but not after Holm over 4 comparisons: no marker
    rgb = rows(report.comparisons)["rgb_st+event_st x1"]
    assert rgb["p_value"] < 0.05 < rgb["p_adjusted"] and not rgb["significant"]
    assert text.count(" * |") == 1
    assert "p (Holm) is adjusted over the 4 comparison(s)" in text
    assert "Interval and p are per comparison, unadjusted" in text  # the marker is the adjusted decision


def test_the_interval_is_the_paired_t_interval_and_agrees_with_its_p_value(report):
    treated, base = [9, 8, 7], [10, 11, 12]
    diffs = np.subtract(treated, base)
    low, high = paired_ci(treated, base)
    expected = scipy_stats.ttest_rel(treated, base).confidence_interval(0.95)
    assert (low, high) == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert low < diffs.mean() < high
    row = rows(report.comparisons)["fusion_st x0.5"]
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert all(math.isnan(v) for v in paired_ci([2.0], [0.0]))  # one pair: no interval
    assert all(math.isnan(v) for v in paired_ci([2.0, 2.0, 2.0], [0.0, 0.0, 0.0]))  # no spread: no test
    rng = np.random.default_rng(0)
    for _ in range(200):  # the interval excludes 0 exactly when p < alpha, at every alpha
        n = int(rng.integers(2, 8))
        treated, base = rng.normal(0.7, 1, n), rng.normal(0, 1, n)
        test = paired_test(treated, base)
        for alpha in (0.01, 0.05, 0.2):
            low, high = test.interval(alpha)
            assert (low > 0 or high < 0) == (test.p_value < alpha)
    for _, row in report.comparisons.dropna(subset=["p_value"]).iterrows():
        assert (row["ci_low"] > 0 or row["ci_high"] < 0) == (row["p_value"] < 0.05)


def test_the_paired_t_interval_covers_at_three_pairs():
    """Normal seed noise: the 95% interval over 3 pairs covers the true difference 95% of the time."""
    rng = np.random.default_rng(1)
    diffs = rng.normal(1.0, 0.8, size=(1000, 3))
    covered = [low <= 1.0 <= high for low, high in (paired_ci(d, np.zeros(3)) for d in diffs)]
    assert 0.93 <= np.mean(covered) <= 0.97


def _power(d: float, n: int, alpha: float) -> float:
    """Power of a two-sided one-sample (paired) t-test, from the noncentral t (independent of statsmodels)."""
    critical = scipy_stats.t.ppf(1 - alpha / 2, n - 1)
    nc = d * math.sqrt(n)
    opposite = scipy_stats.nct.cdf(-critical, n - 1, nc)  # NaN in scipy where it underflows
    return scipy_stats.nct.sf(critical, n - 1, nc) + np.nan_to_num(opposite)


def test_power_note_on_a_known_variance():
    sd, alpha = 2.0, 0.05 / 4
    assert pooled_sd([1.0, 3.0], [3, 3]) == (pytest.approx(math.sqrt(5.0)), 4)
    detectable = detectable_difference(sd, 3, alpha)
    assert _power(detectable / sd, 3, alpha) == pytest.approx(0.8, abs=1e-6)
    needed = seeds_needed(1.0, sd, alpha)
    assert _power(1.0 / sd, needed, alpha) >= 0.8 > _power(1.0 / sd, needed - 1, alpha)
    note = power_note([sd, sd], [3, 3], comparisons=4, effect=1.0, metric="mIoU18")
    assert (note.sd, note.dof, note.n, note.alpha) == (pytest.approx(2.0), 4, 3, alpha)
    assert note.detectable == pytest.approx(detectable) and note.seeds_for_effect == needed
    low, high = sd_range(2.0, 4)  # the chi-square interval of an SD estimated with 4 degrees of freedom
    assert (low, high) == (pytest.approx(2.0 * math.sqrt(4 / scipy_stats.chi2.ppf(0.975, 4))),
                           pytest.approx(2.0 * math.sqrt(4 / scipy_stats.chi2.ppf(0.025, 4))))
    assert note.sd_range == (low, high)
    found = (detectable_difference(low, 3, alpha), detectable_difference(high, 3, alpha))
    assert note.detectable_range == found and found[0] < detectable < found[1]
    seeds = (seeds_needed(1.0, low, alpha), seeds_needed(1.0, high, alpha))
    assert note.seeds_range == seeds and seeds[0] < needed < seeds[1]
    assert f"95% interval {low:.2f} to {high:.2f}" in note.text
    assert (f"a true difference of {found[0]:.2f} to {found[1]:.2f} points is found with 80% power "
            f"({detectable:.2f} at the pooled SD)") in note.text
    assert f"a difference of 1 point would need {seeds[0]} to {seeds[1]} seeds ({needed} at" in note.text
    assert "α = 0.05/4" in note.text
    lone = power_note([math.nan], [1], comparisons=0, effect=1.0, metric="mIoU18")
    assert lone.dof == 0 and "cannot be estimated" in lone.text


# -- what is written -----------------------------------------------------------------------------------
def test_comparisons_csv_has_the_promised_columns(report):
    path = report.index.parent / "comparisons.csv"
    with path.open() as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0])[: len(CSV_COLUMNS)] == list(CSV_COLUMNS) == [
        "variant", "lambda", "budget", "delta", "ci_low", "ci_high", "n_pairs", "p_value", "p_adjusted",
        "stopped_at"]
    by_name = {(r["variant"], r["lambda"]): r for r in table}
    assert len(table) == 4 and ("none", "") not in by_name  # one row per compared configuration
    survivor, stopped = by_name[("fusion_st", "x1")], by_name[("rgb_st+event_st", "x1")]
    assert (survivor["budget"], survivor["stopped_at"], survivor["n_pairs"]) == ("80", "", "3")
    assert (stopped["budget"], stopped["stopped_at"]) == ("40", "40")
    assert float(survivor["delta"]) == pytest.approx(4.0) and float(survivor["lambda/fusion_st"]) == 0.05


def test_tables_and_figures_are_drawn_from_the_same_frames(report):
    frame = report.comparisons
    deltas = report.figures["deltas"]
    assert sorted(deltas["delta"]) == pytest.approx(sorted(frame["delta"]))
    ladder = report.figures["ladder"]
    stopped = ladder[(ladder["config"] == "fusion_st x0.5")]
    assert stopped[["iteration", "mean", "n"]].values.tolist() == [[20, 8.0, 3]] and stopped["end"].all()
    assert ladder[ladder["config"] == "none"]["iteration"].tolist() == [20, 40, 60, 80]
    # per-iteration loss curves come from the trainer's log.csv (every 10 iterations), not the 20-step reports
    losses = report.figures["loss_curves"]
    none = losses[(losses["variant"] == "none") & (losses["term"] == "loss/src_fusion")]
    assert none["iteration"].tolist() == list(range(10, 81, 10))
    assert none["value"].tolist() == pytest.approx([2.0 / i for i in range(10, 81, 10)])
    heat = report.figures["class_iou"]
    assert heat.shape == (5, 18) and "truck" not in heat.columns
    assert heat.loc["fusion_st x0.5 (stopped, at 20)", "road"] == pytest.approx(8.0)
    assert sorted(report.figures["lambda_sensitivity"]["lambda_scale"]) == [0.5, 1.0, 1.0, 1.0]


def page_text(index: Path) -> str:
    """The page without its embedded images, with a check that no number reads `nan`."""
    text = re.sub(r"data:image/png;base64,[^']*", "", index.read_text())
    assert not re.search(r"\bnan\b(?! at iteration)", text, flags=re.I)  # (the fixture's error message)
    return text


def test_report_page_is_readable(report):
    page = report.index.read_text()
    text = page_text(report.index)
    for heading in ("Configurations that ran to the end", "Configurations stopped early", "Every trial",
                    "Every configuration at every evaluation", "Training losses at every logged iteration",
                    "How the experiment was set up"):
        assert f"<h2>{heading}</h2>" in text
    assert "–" in text
    drawn = set(FIGURES) - {"params"}  # the study varies no search-space key
    assert page.count("data:image/png;base64,") == len(drawn) == len(report.figures)
    assert "scheduler: {type: per_config_asha" in text  # the sweep file
    assert "Trainer config as resolved for trial none_s0_00000" in text and "max_iters: 80" in text
    for trial in report.loaded.trials["trial"]:
        assert f"<td class='w'>{trial}</td>" in text
    assert "<td class='w'>stopped early</td><td>20 of 80</td><td>9.00 (20)</td><td>9.00</td>" in text
    assert "60.05" not in text  # mit_b0 on 80 iterations is not the published setting
    latex = (report.index.parent / "ablation.tex").read_text()
    assert all(rule in latex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert r"fusion\_st & x1 & 80 & 34.00 $\pm$ 0.90 (n=3) & \textbf{+4.00" in latex


# -- the setting comes from the experiment ----------------------------------------------------------------
def test_headline_metric_comes_from_the_sweep_or_the_targets_registry(tmp_path, monkeypatch):
    trials = [Trial("none", 0, curve([10, 20])), Trial("fusion_st", 0, curve([12, 24]))]
    sweep = write_experiment(tmp_path / "a", trials, sweep="name: a\nmetric: miou19\n")
    loaded = load(sweep)
    assert (loaded.setting.metric, loaded.setting.metric_label) == ("miou19", "mIoU19")
    assert comparisons(loaded)["delta"].iloc[0] == pytest.approx(4.0 * 18 / 19)
    night = targets.TARGETS["dsec_night"]
    monkeypatch.setitem(targets.TARGETS, "other_night", dataclasses.replace(
        night, name="other_night", headline_metric="miou19", metrics={"miou19": night.metrics["miou19"]}))
    resolved = write_experiment(tmp_path / "b", trials, resolved="data: {target: {name: other_night}}\n")
    setting = load(resolved).setting
    assert (setting.metric, setting.target, setting.classes) == ("miou19", "other_night", tuple(range(19)))
    bare = load(write_experiment(tmp_path / "c", trials))
    assert bare.setting.metric == "miou18" and any("assuming 'dsec_night'" in m for m in bare.missing)
    with pytest.raises(ExperimentError, match=r"metric is 'miou19' but .* uses 'miou18'"):
        load([bare.locations[0], sweep])


def test_published_cmda_number_only_in_its_setting():
    exact = Setting(metric="miou18", target="dsec_night", backbone="mit_b5", max_iters=40000)
    assert exact.reference is PUBLISHED_CMDA and PUBLISHED_CMDA.value == 60.05
    for other in ({"backbone": "mit_b2"}, {"max_iters": 4000}, {"metric": "miou19"}, {"target": "x"}):
        assert Setting(**{**exact.__dict__, **other}).reference is None
    frame = pd.DataFrame(columns=[*CSV_COLUMNS, *EXTRA_COLUMNS])
    caption = headline_table(frame, {}, exact, Options(), 1.0).caption
    assert "published CMDA (ICCV 2023, MiT-B5, 40k iterations) reports 60.05 mIoU18" in caption


def test_configuration_is_variant_and_resolved_lambdas_with_a_readable_label():
    def read(ablation):
        return read_configuration({"ablation": ablation})[0]

    scaled = read({"variant": "fusion_st", "lambda_scale": 1.0, "lambdas": {"fusion_st": 0.05}})
    explicit = read({"variant": "fusion_st", "lambda_scale": None, "lambdas": {"fusion_st": 0.05}})
    pair = read({"variant": "rgb_st+event_st", "lambdas": {"rgb_st": 0.1, "event_st": 0.05}})
    assert scaled.key == explicit.key
    assert (scaled.lambda_label, explicit.lambda_label) == ("x1", "fusion_st=0.05")
    assert pair.lambda_label == "event_st=0.05,rgb_st=0.1"  # the sweep's spelling (tune.configuration)
    assert read({"variant": "none", "lambdas": {}}).lambda_label == ""
    half = read({"variant": "fusion_st", "lambda_scale": 0.5, "lambdas": {"fusion_st": 0.025}})
    twin = Configuration("fusion_st", {"fusion_st": 0.03}, lambda_scale=0.5)  # same scale, other defaults
    assert configuration_names({half.key: half, twin.key: twin}) == {
        half.key: "fusion_st fusion_st=0.025", twin.key: "fusion_st fusion_st=0.03"}
    broken, problems = read_configuration({"seed": 0})
    assert broken.variant == "unknown" and problems
    odd, problems = read_configuration({"ablation": {"variant": "fusion_st", "lambdas": {"fusion_st": "x"}}})
    assert odd.variant == "fusion_st" and problems == ("ablation.lambdas.fusion_st is 'x', not a number",)


# -- what Ray leaves behind ----------------------------------------------------------------------------------
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from analysis.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_nothing_to_analyse_exits_nonzero_with_one_message(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, str(empty), "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and "not a Ray Tune experiment folder" in err
    no_trials = write_experiment(tmp_path / "none_started", [])
    code, _, err = run_cli(capsys, str(no_trials), "--out", str(tmp_path / "r"))
    assert code == 2 and err.strip() == f"cmda-analyze: {no_trials}: no trials (Ray has not started any); " \
                                        "nothing to analyse"
    assert not (tmp_path / "r" / "index.html").exists()


def test_every_trial_errored_gives_a_report_that_names_each_error(tmp_path, capsys):
    trials = [Trial("none", 0, {}, status="ERROR", error=True),
              Trial("fusion_st", 0, {}, status="ERROR", error=True),
              Trial("fusion_st", 1, {}, status="PENDING", started=False)]
    root = write_experiment(tmp_path / "errored", trials, sweep=STUDY_SWEEP)
    code, out, err = run_cli(capsys, str(root), "--out", str(tmp_path / "r"), "--correction", "bh")
    assert code == 0 and "no trial has reported a result yet" in err
    page = page_text(tmp_path / "r" / "index.html")
    for folder in ("none_s0_00000", "fusion_st_x1_s0_00001"):
        assert f"trial {folder} (" in page and str(root / folder / "error.txt") in page
    assert page.count("errored before its first report after 1 failure(s): cmda.uda.dacs.NonFiniteLossError: "
                      "loss &#x27;fusion_st&#x27; is nan at iteration 30") == 2
    with (tmp_path / "r" / "comparisons.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [(r["variant"], r["budget"], r["n_pairs"]) for r in table] == [("fusion_st", "", "0")]


def test_running_trial_and_truncated_result_file_are_analysed_as_far_as_they_go(tmp_path):
    trials = [Trial("none", s, curve(v)) for s, v in BASE.items()]
    trials[0].extra_lines = ['{"iteration": 100, "miou1']  # cut mid-line by a crash
    trials += [Trial("fusion_st", 0, curve([12, 24]), status="RUNNING"),
               Trial("fusion_st", 1, {}, status="PENDING", started=False),
               Trial("rgb_st+event_st", 0, {}, status="RUNNING")]
    root = write_experiment(tmp_path / "running", trials, sweep=STUDY_SWEEP)
    loaded = load(root)
    frame = comparisons(loaded)
    assert frame["config"].tolist() == ["fusion_st x1", "rgb_st+event_st x1"]  # no result yet: last
    assert frame["note"].iloc[1] == "no results" and frame["status"].iloc[1] == "running"
    row = frame.iloc[0]
    assert (row["status"], row["budget"], row["reached"], row["n_pairs"]) == ("running", 40, 40, 1)
    assert row["delta"] == pytest.approx(24 - 20)
    notes = "\n".join(loaded.missing)
    assert "fusion_st_x1_s0_00003 (fusion_st x1, seed 0): still running at iteration 40 of 80" in notes
    assert "fusion_st_x1_s1_00004 (fusion_st x1, seed 1): pending, not started yet (no trial folder)" in notes
    assert f"{root / 'none_s0_00000' / 'result.json'}: line 5 is not valid JSON" in notes
    assert loaded.trials.set_index("trial").loc["none_s0_00000", "final"] == 30.0


def test_retried_trial_keeps_the_last_report_of_each_iteration(tmp_path):
    first = Trial("none", 0, curve([10, 20, 25, 30]))
    retried = Trial("fusion_st", 0, {20: 5.0, 40: 6.0})
    # the retry resumed from the checkpoint at 20 and reported 40, 60 and 80 again
    retried.extra_lines = ['{"iteration": 40, "max_iters": 80, "miou18": 24.0}',
                           '{"iteration": 60, "max_iters": 80, "miou18": 30.0}',
                           '{"iteration": 80, "max_iters": 80, "miou18": 34.0}']
    retried.log_text = ("iteration,loss/src_fusion\n10,1.0\n20,0.9\n30,0.8\n40,0.7\n"  # crashed after 40
                        "30,0.75\n40,0.65\n50,0.6\n")  # resumed from 20
    root = write_experiment(tmp_path / "retried", [first, retried], sweep=STUDY_SWEEP)
    loaded = load(root)
    history = loaded.history[loaded.history["config"] == "fusion_st x1"]
    assert history[["iteration", "miou18"]].values.tolist() == [[20, 5.0], [40, 24.0], [60, 30.0], [80, 34.0]]
    log = loaded.train_log[loaded.train_log["config"] == "fusion_st x1"]
    assert log[["iteration", "loss/src_fusion"]].values.tolist() == [
        [10, 1.0], [20, 0.9], [30, 0.75], [40, 0.65], [50, 0.6]]
    assert any("1 repeated iteration(s) from a retry" in m for m in loaded.missing)
    assert any("2 repeated iteration(s) from a resumed run" in m for m in loaded.missing)
    assert comparisons(loaded).iloc[0]["delta"] == pytest.approx(4.0)


def test_analysis_imports_neither_ray_nor_torch():
    code = ("import sys, analysis.cli, analysis.report; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')); "
            "print(heavy[:5]); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_experiments_given_as_uris_or_in_parts_are_analysed_as_one(study, tmp_path):
    by_path = comparisons(load(study))
    by_uri = comparisons(load(f"file://{study}"))  # the same pyarrow.fs path an s3:// location takes
    pd.testing.assert_frame_equal(by_path, by_uri)
    # a study run in two sweeps: seeds 0-1 in one experiment, seed 2 (and a repeat of seed 1) in another
    trials = study_trials()
    first = write_experiment(tmp_path / "first", [t for t in trials if t.seed < 2], sweep=STUDY_SWEEP)
    second = write_experiment(tmp_path / "second", [t for t in trials if t.seed >= 1], sweep=STUDY_SWEEP)
    loaded = load([first, second])
    assert loaded.trials["trial"].str.startswith(("first/", "second/")).all()
    assert any("configuration none, seed 1: 2 trials" in m for m in loaded.missing)
    combined = comparisons(loaded).set_index("config")
    pd.testing.assert_series_equal(combined["delta"], by_path.set_index("config")["delta"])


def test_a_search_space_is_grouped_labelled_and_plotted_by_its_keys(tmp_path):
    """lr x 2 variants x 2 seeds: each configuration is compared with the baseline at its own lr, the lr has
    a column in every table, and the params figure plots the metric against it."""
    lrs = {6e-5: 0.0, 1.2e-4: 5.0}  # the larger lr adds 5 points to every configuration
    trials = [Trial(variant, seed, curve([v + lrs[lr] + (2.0 if variant == "fusion_st" else 0.0)
                                          for v in BASE[seed]]), settings={"optim.lr": lr})
              for lr in lrs for variant in ("none", "fusion_st") for seed in (0, 1)]
    report = build(write_experiment(tmp_path / "exp", trials, sweep=STUDY_SWEEP), tmp_path / "out")
    frame = report.comparisons
    assert list(frame["config"]) == ["fusion_st x1 optim.lr=0.00012", "fusion_st x1 optim.lr=6e-05"]
    assert frame["delta"].tolist() == pytest.approx([2.0, 2.0])  # against its own lr's baseline, not +7/-3
    assert sorted(frame["param/optim.lr"]) == [6e-5, 1.2e-4]
    headline = report.tables[1].frame  # after the decision section
    assert "optim.lr" in headline.columns and set(headline["optim.lr"]) == {"6e-05", "0.00012"}
    trial_rows = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert trial_rows["param/optim.lr"].nunique() == 2 and trial_rows["config"].nunique() == 4
    plotted = report.figures["params"]
    assert set(plotted["key"]) == {"optim.lr"} and set(plotted["series"]) == {"none", "fusion_st x1"}
    fusion = plotted[plotted["series"] == "fusion_st x1"].sort_values("value")
    assert fusion["mean"].tolist() == pytest.approx([np.mean([32, 31]), np.mean([37, 36])])
    assert (tmp_path / "out" / "figures" / "params.png").is_file()
    assert "optim.lr" in report.markdown


def test_a_nan_final_metric_and_a_cut_last_line_are_named_as_what_they_are(tmp_path):
    """Seed 1's last report (at 80) has NaN; seed 2's result.json ends in a report cut short after 60 and
    Ray's state has nothing newer: neither is 'finished at 80' nor 'stopped at 60' (60 is not a rung)."""
    trials = [Trial("none", s, curve(v)) for s, v in BASE.items()]
    trials += [Trial("fusion_st", 0, curve([12, 24, 30, 34])),
               Trial("fusion_st", 1, {20: 13.0, 40: 25.0, 60: 31.0, 80: math.nan}),
               Trial("fusion_st", 2, curve([12.5, 24.5, 30.5]))]
    trials[-1].extra_lines = ['{"iteration": 80, "miou1']
    root = write_experiment(tmp_path / "odd", trials, sweep=STUDY_SWEEP)
    loaded = load(root)
    row = comparisons(loaded).iloc[0]
    assert (row["status"], row["budget"], row["n_pairs"]) == ("complete", 80, 1)
    assert "seed 1 ended at 80 with a NaN mIoU18 (no value to compare)" in row["note"]
    assert ("seed 2 reported up to 60; its next report was cut short in result.json (lost), so where it "
            "ended is unknown") in row["note"]
    assert "finished at 80" not in row["note"] and "stopped at 60" not in row["note"]
    trial = loaded.trials.set_index("seed").loc[2]
    assert not trial[trial["variant"] == "fusion_st"]["stopped_early"].any()


DECIDE_SWEEP = STUDY_SWEEP + """search: {grid: {variants: [none, fusion_st, src_rgb_event], seeds: [0, 1, 2]}}
decide: {effect: 1.0, max_seeds: 6, budget: 2.0}
"""


def test_the_decision_of_a_decide_sweep_is_the_reports_first_section_and_a_column(tmp_path):
    """Initial seeds 0-2, one wave of fresh seeds 3-5 for the survivor and the reference: fusion_st is +4
    better on the fresh seeds; src_rgb_event was stopped at the first rung."""
    noise = [0.3, -0.2, 0.1, -0.3, 0.2, 0.0]
    trials = [Trial("none", s, {20: 10 + n, 40: 20 + n, 60: 25 + n, 80: 30 + n}) for s, n in enumerate(noise)]
    trials += [Trial("fusion_st", s, {20: 12 + n, 40: 24 + n, 60: 30 + n, 80: 34 + n + noise[5 - s] / 2})
               for s, n in enumerate(noise)]
    trials += [Trial("src_rgb_event", s, {20: 5.0 + noise[s]}) for s in range(3)]
    root = write_experiment(tmp_path / "decide", trials, sweep=DECIDE_SWEEP)
    out = tmp_path / "report"
    result = build(root, out)
    first = result.tables[0]
    assert first.title == "Decision"
    rows = dict(zip(first.frame["Configuration"], first.frame["Decision"]))
    assert rows == {"fusion_st x1": "better", "src_rgb_event x1": "stopped early"}
    with (out / "comparisons.csv").open() as handle:
        decisions = {r["config"]: r["decision"] for r in csv.DictReader(handle)}
    assert decisions == {"fusion_st x1": "better", "src_rgb_event x1": "stopped"}
    page = page_text(result.index)
    assert page.index("Decision") < page.index("Configurations that ran to the end")
    assert "Decided on fresh seeds against none" in page


def test_a_reference_stopped_early_is_said_at_the_top_and_nothing_is_ranked(tmp_path):
    trials = [Trial("none", s, curve(v[:2])) for s, v in BASE.items()]  # the baseline stopped at 40
    trials += [Trial("fusion_st", s, curve([12 + s, 24 + s, 30 + s, 34 + s])) for s in range(3)]
    root = write_experiment(tmp_path / "ref_stopped", trials, sweep=STUDY_SWEEP)
    result = build(root, tmp_path / "report")
    assert result.tables[0].notes[0].startswith("The reference did not reach the full budget (it reached 40)")
    assert not result.tables[1].bold  # no best without a reference at full budget


def test_a_reference_seed_that_failed_is_said_at_the_top_and_nothing_is_ranked(tmp_path):
    trials = [Trial("none", s, curve(v)) for s, v in BASE.items()]
    trials[2] = Trial("none", 2, curve(BASE[2][:2]), status="ERROR", error=True)  # failed at 40
    trials += [Trial("fusion_st", s, curve([12 + s, 24 + s, 30 + s, 34 + s])) for s in range(3)]
    root = write_experiment(tmp_path / "ref_failed", trials, sweep=STUDY_SWEEP)
    result = build(root, tmp_path / "report")
    assert result.tables[0].notes[0].startswith("A reference seed has no value at the full budget (seed 2 "
                                                "errored at 40)")
    assert not result.tables[1].bold

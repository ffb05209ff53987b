"""`cmda-tune plan`: launch order, compute to the end and under the rungs, GPU-hours, checkpoint storage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import write_finished_study

from tune.cli import main
from tune.plan import checkpoint_bytes, expected_iterations_per_trial, make_plan
from tune.sweep import load_sweep

REPO = Path(__file__).resolve().parents[2]
STUDY = REPO / "configs" / "sweeps" / "l2_ablation_b2.yaml"


def test_plan_json_lists_trials_in_launch_order_with_totals(capsys) -> None:
    assert main(["plan", str(STUDY), "--json", "--sec-per-iter", "0.6"]) == 0
    plan = json.loads(capsys.readouterr().out)
    trials = plan["trials"]
    assert len(trials) == plan["count"] == 75 and plan["configurations"] == 25
    assert trials[0] == {"variant": "none", "lambdas": {}, "params": {}, "seed": 0}
    assert [t["seed"] for t in trials[:6]] == [0, 1, 2, 0, 1, 2]  # a configuration's seeds side by side
    assert trials[3]["lambdas"] == {"rgb_event_src": 0.01}  # scale 0.1 of the fork's 0.1
    fork = {"variant": "rgb_st+event_st", "lambdas": {"event_st": 0.05, "rgb_st": 0.1}, "params": {},
            "seed": 1}
    assert fork in trials
    assert plan["iterations_to_end"] == 75 * 40000
    # rungs at 8k, 16k, 32k each keep 1/2: 8000 + 8000/2 + 16000/4 + 8000/8 = 17000 per trial
    assert plan["iterations_expected"] == 75 * 17000
    assert plan["gpu_hours_to_end"] == pytest.approx(75 * 40000 * 0.6 / 3600)  # 500 GPU-hours
    assert plan["gpu_hours_expected"] == pytest.approx(75 * 17000 * 0.6 / 3600)
    assert plan["kept_checkpoints_per_trial"] == 2  # the best by miou18 and the latest
    assert plan["checkpoint_storage_bytes"] == 75 * 2 * plan["checkpoint_bytes"]
    assert 0.9e9 < plan["checkpoint_bytes"] < 1.2e9  # MiT-B2 x 2 backbones, with EMA teacher and AdamW


def test_plan_text_and_optuna(capsys) -> None:
    assert main(["plan", str(REPO / "configs" / "sweeps" / "l2_optuna_b2.yaml")]) == 0
    out = capsys.readouterr().out
    assert "sampled at run time" in out and "trials: 48 (at most)" in out and "--sec-per-iter" in out
    assert main(["plan", str(STUDY), "--sec-per-iter", "0"]) == 2


def test_expected_compute_rounds_rungs_up_to_evaluations(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"train": {"max_iters": 100, "eval_interval": 30}}))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "base_config": "base.yaml",
                "search": {"grid": {"variants": ["none"]}},
                "scheduler": {"type": "asha", "grace_period": 20, "reduction_factor": 3},
            }
        )
    )
    spec = load_sweep(sweep)
    # rungs 20, 60 -> first evaluations at 30 and 60; trials end at 100: 30 + 30/3 + 40/9
    assert expected_iterations_per_trial(spec) == pytest.approx(30 + 30 / 3 + 40 / 9)
    assert make_plan(spec, ckpt_bytes=10).expected_share == pytest.approx((30 + 10 + 40 / 9) / 100)


@pytest.fixture()
def tiny_sweep(tmp_path: Path, synthetic_root: Path) -> Path:
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "base_config": str(REPO / "configs" / "demo.yaml"),
                "overrides": {
                    "data.source.root": str(synthetic_root / "cityscapes"),
                    "data.target.root": str(synthetic_root / "DSEC_Night"),
                    "data.batch_size": 1,
                    "model.decoder_channels": 32,
                    "train.max_iters": 2,
                    "train.eval_interval": 2,
                },
                "search": {"grid": {"variants": ["fusion_st"], "seeds": [0]}},
            }
        )
    )
    return sweep


def test_checkpoint_size_estimate_matches_a_real_checkpoint(tiny_sweep: Path, tmp_path: Path) -> None:
    from cmda.train import run
    from tune.preflight import check_trial_configs

    (config,) = check_trial_configs(load_sweep(tiny_sweep))
    config["train"].update(work_dir=str(tmp_path / "run"), progress_bar=False, tensorboard=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine a second thread only spins
    try:
        run(config)
    finally:
        torch.set_num_threads(threads)
    (real,) = (tmp_path / "run" / "checkpoints").glob("iter_*/checkpoint.pt")
    estimate = checkpoint_bytes(config)
    assert abs(estimate - real.stat().st_size) / real.stat().st_size < 0.05, (estimate, real.stat().st_size)


def test_measure_times_a_training_step(tiny_sweep: Path, capsys) -> None:
    assert main(["plan", str(tiny_sweep), "--measure", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert 0 < plan["sec_per_iter"] < 60
    assert plan["trial_hours_to_end"] == pytest.approx(2 * plan["sec_per_iter"] / 3600)


def test_plan_rejects_a_trial_config_the_trainer_would_reject(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "typo.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "base_config": str(REPO / "configs" / "demo.yaml"),
                "overrides": {"train.max_iter": 10},
                "search": {"grid": {"variants": ["none"]}},
            }
        )
    )
    assert main(["plan", str(sweep), "--json"]) == 2
    err = capsys.readouterr().err
    assert "max_iter" in err and str(sweep) in err and "trial none" in err


def test_plan_memory_fields_are_present_and_monotone(tiny_sweep: Path, capsys) -> None:
    """`--memory --json` carries the budget of the first trial; checkpointing and accumulation lower it."""
    spec = yaml.safe_load(tiny_sweep.read_text())
    spec["overrides"]["data.batch_size"] = 2
    tiny_sweep.write_text(yaml.safe_dump(spec))
    assert main(["plan", str(tiny_sweep), "--json", "--memory"]) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    for key in ("weights", "optimizer", "teacher", "activations", "peak", "fits_gb"):
        assert key in memory
    assert memory["optimizer"] == 2 * memory["gradients"] and memory["teacher"] == memory["weights"]
    assert memory["fits_gb"] and memory["peak"] >= memory["weights"] + memory["activations"]
    settings = {
        (a["activation_checkpointing"], a["batch_size"], a["accumulate"]): a for a in memory["alternatives"]
    }
    off, blocks, stages = (settings[(mode, 2, 1)] for mode in ("off", "blocks", "stages"))
    assert memory["peak"] == off["peak"]

    def working(budget: dict) -> int:  # at toy size the optimizer step's own peak may be the larger
        return budget["activations"] + budget["transient"]

    assert stages["activations"] < blocks["activations"] < off["activations"]
    assert working(blocks) < working(off) and blocks["peak"] <= off["peak"]
    halves = settings[("off", 1, 2)]  # batch 1 x accumulate 2: the same effective batch
    assert halves["activations"] < off["activations"] and working(halves) < working(off)
    assert main(["plan", str(tiny_sweep)]) == 0
    assert "GPU memory of a training step: give --memory" in capsys.readouterr().out


def test_plan_gpus_gives_the_concurrency_and_the_wall_clock(capsys) -> None:
    """The study on 4 nodes x 8 GPUs: 32 GPUs, one trial each, in whole groups of 3 seeds = 30 at once."""
    assert main(["plan", str(STUDY), "--json", "--sec-per-iter", "0.6", "--gpus", "32"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["concurrency"] == 30 and isinstance(plan["concurrency"], int) and plan["gpus"] == 32
    assert plan["wall_hours_to_end"] == pytest.approx(3 * 40000 * 0.6 / 3600)  # 75 trials = 3 waves of 30
    assert plan["wall_hours_expected"] == pytest.approx(plan["trial_hours_expected"] / 30)
    assert main(["plan", str(STUDY), "--gpus", "8"]) == 0
    assert "concurrency: 6 trials at once on 8 GPUs" in capsys.readouterr().out
    assert main(["plan", str(STUDY), "--gpus", "0"]) == 2


def test_plan_warns_about_what_sweep_would_refuse(tmp_path: Path, capsys) -> None:
    """A missing data root and an unwritable storage path are warnings in the plan (often made on a laptop
    without the data), errors in `sweep`; a rung between two evaluations is a warning in both."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    raw = yaml.safe_load(STUDY.read_text())
    raw.update(base_config=str(STUDY.parent / raw["base_config"]), storage_path=str(blocker / "results"))
    raw["overrides"].update({"data.target.root": str(tmp_path / "nowhere"), "train.eval_interval": 3000})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["plan", str(path), "--sec-per-iter", "0.6"]) == 0
    out = capsys.readouterr().out
    assert f"warning: {path}: field 'overrides.data.target.root'" in out and "nowhere does not exist" in out
    assert "field 'storage_path': cannot write" in out
    assert "rung(s) at iteration 8000, 16000, 32000 are no multiple of train.eval_interval=3000" in out


def test_plan_shows_the_decision_design_in_text_and_json(tmp_path: Path, capsys) -> None:
    raw = yaml.safe_load(STUDY.read_text())
    raw["base_config"] = str((STUDY.parent / raw["base_config"]).resolve())
    raw["scheduler"]["type"] = "per_config_asha"
    raw["max_concurrent_trials"] = 8
    raw["decide"] = {"effect": 1.0, "power": 0.8, "alpha": 0.05, "max_seeds": 12}
    sweep = tmp_path / "decide.yaml"
    sweep.write_text(yaml.safe_dump(raw))
    assert main(["plan", str(sweep), "--json", "--seed-sd", "0.8", "--sec-per-iter", "0.6"]) == 0
    plan = json.loads(capsys.readouterr().out)
    decide = plan["decide"]
    for key in ("effect", "power", "alpha", "max_seeds", "expected_seeds", "expected_iterations",
                "worst_iterations"):
        assert key in decide
    assert decide["seed_sd"] == 0.8 and not decide["seed_sd_assumed"] and decide["budget"] == 1.0
    assert decide["early_iterations"] == plan["iterations_expected"]  # 75 x 17000
    assert decide["grid_iterations"] == 75 * 40000
    assert decide["early_iterations"] < decide["expected_iterations"] <= decide["grid_iterations"]
    assert 0 < decide["expected_power"] <= 1 and decide["survivors"] == 3  # 24 / 2^3
    assert plan["slots"] == {"max_concurrent_trials": 8, "seeds_per_configuration": 3,
                             "configurations_at_once": 2, "seeds_together": True, "waits_at_rungs": True}
    assert main(["plan", str(sweep), "--sec-per-iter", "0.6"]) == 0
    text = capsys.readouterr().out
    assert "decide: effect 1, power 0.8" in text and "assumed equal to the effect" in text
    worst = decide["worst_iterations"]
    assert "worst case 12 (the reference too)" in text
    assert f"worst case {worst:,}, {worst * 0.6 / 3600:,.1f} GPU-hours" in text
    assert "8 slots: 2 configuration(s) at a time; a configuration's 3 seeds start together" in text
    assert main(["plan", str(sweep), "--seed-sd", "-1"]) == 2
    del raw["decide"]
    raw["max_concurrent_trials"] = 2  # fewer slots than seeds: said, not hidden
    sweep.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["plan", str(sweep), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert not plan["slots"]["seeds_together"] and not plan["slots"]["waits_at_rungs"]
    assert plan["decide"] is None
    assert main(["plan", str(sweep)]) == 0
    assert "2 slots for 3 seeds: a configuration's seeds cannot run together" in capsys.readouterr().out


def test_plan_takes_the_seed_sd_from_an_earlier_experiment(tmp_path: Path, capsys) -> None:
    """--from: the paired SD of the full-budget values with the shared seed effect removed; stopped seeds,
    NaN values and configurations on one seed left out."""
    finals = {("none", 0.0): [30.0, 29.0, 31.0], ("fusion_st", 0.05): [34.0, 33.1, 34.9],
              ("fusion_st", 0.1): [30.5, 29.0, float("nan")], ("fusion_st", 0.5): [None, None, None],
              ("fusion_st", 0.2): [31.0, None, None]}
    earlier = write_finished_study(tmp_path / "earlier", finals)
    full = np.array([[30.0, 29.0, 31.0], [34.0, 33.1, 34.9]])  # what counts: two configurations x 3 seeds,
    # plus fusion_st 0.1 on seeds 0 and 1 (fusion_st 0.2's one seed adds no degree of freedom)
    rows = [("none", s, v) for s, v in enumerate(full[0])] + [("a", s, v) for s, v in enumerate(full[1])]
    rows += [("b", 0, 30.5), ("b", 1, 29.0)]
    blocks, seeds = ["none", "a", "b"], [0, 1, 2]
    design = np.array([[b == x for x in blocks] + [s == y for y in seeds] for b, s, _ in rows], dtype=float)
    y = np.array([v for _, _, v in rows])
    residuals = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    dof = len(rows) - 5
    expected = float(np.sqrt(2 * residuals @ residuals / dof))
    assert dof == 3 and expected > 0

    raw = yaml.safe_load(STUDY.read_text())
    raw["base_config"] = str((STUDY.parent / raw["base_config"]).resolve())
    raw["scheduler"]["type"] = "per_config_asha"
    raw["decide"] = {"effect": 1.0, "max_seeds": 12}
    sweep = tmp_path / "decide.yaml"
    sweep.write_text(yaml.safe_dump(raw))
    assert main(["plan", str(sweep), "--json", "--from", str(earlier)]) == 0
    decide = json.loads(capsys.readouterr().out)["decide"]
    assert decide["seed_sd"] == pytest.approx(expected) and decide["seed_sd_dof"] == 3
    assert decide["seed_sd_from"] == str(earlier) and not decide["seed_sd_assumed"]
    low, high = decide["seed_sd_range"]  # the 95% chi-square interval at 3 degrees of freedom
    assert low == pytest.approx(expected * 0.56649, rel=1e-4)
    assert high == pytest.approx(expected * 3.72855, rel=1e-4)
    assert decide["expected_power_range"][0] <= decide["expected_power"] <= decide["expected_power_range"][1]
    assert main(["plan", str(sweep), "--from", str(earlier)]) == 0
    assert f"(measured in {earlier}, 3 degrees of freedom)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # one or the other (argparse's usage error, exit 2)
        main(["plan", str(sweep), "--from", str(earlier), "--seed-sd", "0.8"])
    capsys.readouterr()
    lone = write_finished_study(tmp_path / "lone", {("none", 0.0): [30.0], ("fusion_st", 0.05): [31.0]})
    assert main(["plan", str(sweep), "--from", str(lone)]) == 2
    assert "too few seeds reached the full budget" in capsys.readouterr().err

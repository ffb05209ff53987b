"""tune.configuration: a configuration's identity and label, the rung ladder, and the result schema."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tune.configuration import (
    Configuration,
    Ladder,
    read_result_lines,
    report_iteration,
    report_max_iters,
    trial_label,
    trial_name,
)


def test_identity_is_variant_resolved_lambdas_and_settings_not_the_scale() -> None:
    scaled = Configuration("rgb_st+event_st", {"rgb_st": 0.1, "event_st": 0.1 * 0.5}, lambda_scale=1.0)
    explicit = Configuration("rgb_st+event_st", (("rgb_st", 0.1), ("event_st", 0.05)))
    assert scaled == explicit and scaled.key == explicit.key and hash(scaled) == hash(explicit)
    assert scaled.lambdas == (("event_st", 0.05), ("rgb_st", 0.1))  # sorted and rounded
    assert Configuration("fusion_st", {"fusion_st": 0.1 * 0.2}).lambdas == (("fusion_st", 0.02),)
    assert scaled.key == '["rgb_st+event_st",{"event_st":0.05,"rgb_st":0.1},{}]'
    lr = Configuration("fusion_st", {"fusion_st": 0.05}, {"optim.lr": 6e-5, "data.crop": [512, 512]})
    assert lr != Configuration("fusion_st", {"fusion_st": 0.05}) and lr.params[0] == ("data.crop", (512, 512))
    assert lr.setting_key == '{"data.crop":[512,512],"optim.lr":6e-05}'
    assert Configuration("none").setting_key == Configuration("fusion_st", {"fusion_st": 1.0}).setting_key


def test_one_label_and_a_folder_safe_slug() -> None:
    assert Configuration("fusion_st", {"fusion_st": 0.025}, lambda_scale=0.5).label == "fusion_st x0.5"
    pair = Configuration("rgb_st+event_st", {"rgb_st": 0.1, "event_st": 0.2})
    assert pair.label == "rgb_st+event_st event_st=0.2,rgb_st=0.1"
    assert Configuration("none", lambda_scale=1.0).label == "none"  # no terms: no lambda part
    settings = {"optim.lr": 6e-5, "uda.blur": False}
    lr = Configuration("fusion_st", {"fusion_st": 0.05}, settings, lambda_scale=1)
    assert lr.label == "fusion_st x1 optim.lr=6e-05 uda.blur=false"
    assert (lr.lambda_label, lr.params_label) == ("x1", "optim.lr=6e-05 uda.blur=false")
    assert trial_name(lr, 2, "ab12c_00003") == "fusion_st_x1_optim.lr=6e-05_uda.blur=false_s2_ab12c_00003"
    assert trial_name(pair, 0, "x") == "rgb_st+event_st_event_st=0.2,rgb_st=0.1_s0_x"
    assert trial_label(pair, 1) == "rgb_st+event_st event_st=0.2,rgb_st=0.1, seed 1"
    many = {"data.root": "/mnt/a b", **{f"k{i}": i for i in range(40)}}
    odd = Configuration("fusion_st", {"fusion_st": 0.05}, many)
    assert re.fullmatch(r"[A-Za-z0-9._+=,-]+", odd.slug) and len(odd.slug) <= 120


def test_params_round_trip_and_strict_reading_names_the_field() -> None:
    lr = Configuration("fusion_st", {"fusion_st": 0.05}, {"optim.lr": 6e-5}, lambda_scale=1.0)
    assert lr.as_param() == {"variant": "fusion_st", "lambda_scale": 1.0, "lambdas": {"fusion_st": 0.05},
                             "params": {"optim.lr": 6e-5}}
    assert "params" not in Configuration("none").as_param()  # params.json unchanged for ablation-only sweeps
    back = Configuration.from_params({"ablation": lr.as_param(), "seed": 0})
    assert back == lr and back.label == lr.label
    bad = [({}, "field 'ablation'"), ({"ablation": {"lambdas": {}}}, "field 'ablation.variant'"),
           ({"ablation": {"variant": "x", "lambdas": {"a": "0.1"}}}, "field 'ablation.lambdas.a'"),
           ({"ablation": {"variant": "x", "lambda_scale": "big"}}, "field 'ablation.lambda_scale'"),
           ({"ablation": {"variant": "x", "params": [1]}}, "field 'ablation.params'")]
    for params, fragment in bad:
        with pytest.raises(ValueError, match=re.escape(fragment)):
            Configuration.from_params(params)


def test_the_ladder_is_rays_float_milestones_judged_at_the_next_evaluation() -> None:
    """Issue 22: grace 3, factor 1.5, max_t 10 has milestones 3, 4.5, 6.75; judged at 3, 5 and 7 when every
    iteration is evaluated (the scheduler used to round 4.5 to 4)."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    for grace, rf, max_t in [(3, 1.5, 10), (8000, 2, 40000), (2, 3, 16), (2, 2, 8), (1, 3, 243), (5, 2, 5)]:
        ray_rungs = sorted(m for m, _ in _Bracket(grace, max_t, rf, s=0)._rungs if m < max_t)
        assert list(Ladder(grace, rf, max_t).milestones) == ray_rungs, (grace, rf, max_t)
    ladder = Ladder(3, 1.5, 10)
    assert ladder.milestones == (3.0, 4.5, 6.75)
    assert ladder.decision_points(1, 10) == (3, 5, 7)
    assert ladder.decision_points(2, 10) == (4, 6, 8)
    assert ladder.decision_points(4, 10) == (4, 8, 8)  # 4.5 and 6.75 both wait for the evaluation at 8
    assert ladder.misaligned(1) == (4.5, 6.75) and Ladder(8000, 2, 40000).misaligned(4000) == ()
    assert Ladder(20, 3, 100).decision_points(30, 100) == (30, 60)
    assert Ladder(8000, 2, 40000).decision_points(12000, 20000) == (12000, 20000, 20000)  # capped at the end
    for grace, rf, max_t in [(0, 2, 10), (5, 2, 4), (1, 1.0, 10)]:
        with pytest.raises(ValueError):
            Ladder(grace, rf, max_t)


def test_scheduler_plan_and_analysis_decide_at_the_same_iterations(tmp_path) -> None:
    """One ladder: the scheduler's stops, plan's rungs and the analysis' rungs agree."""
    import yaml

    from analysis.setting import scheduler_rungs
    from tune.plan import make_plan
    from tune.schedulers import build_scheduler
    from tune.simulation import SimController, SimTrial
    from tune.sweep import load_sweep

    section = {"type": "asha", "grace_period": 3, "reduction_factor": 1.5, "max_t": 10}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"train": {"max_iters": 10, "eval_interval": 1}}))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(
        {"base_config": "base.yaml", "search": {"grid": {"variants": ["none"]}}, "scheduler": section}))
    plan = make_plan(load_sweep(tmp_path / "s.yaml"), ckpt_bytes=1)
    assert plan.rungs == [3, 5, 7] and plan.as_json()["rungs"] == [3, 5, 7]
    assert scheduler_rungs(section, 10, 1) == (3, 5, 7)
    # the scheduler: a second trial always worse than the first is stopped at each rung's decision point
    stopped_at = []
    for rung in range(3):
        scheduler = build_scheduler("asha", metric="m", mode="max", grace_period=3, max_t=10,
                                    reduction_factor=1.5)
        ctl = SimController(scheduler)
        good, bad = (ctl.add(SimTrial(name, {"ablation": {"variant": "none"}, "seed": 0})) for name in "gb")
        for iteration in range(1, 11):
            ctl.report(good, {"iteration": iteration, "m": 1.0})
            worse = 0.0 if iteration >= plan.rungs[rung] else 2.0  # below the first trial from this rung on
            if ctl.report(bad, {"iteration": iteration, "m": worse}) == "STOP":
                stopped_at.append(iteration)
                break
    assert stopped_at == [3, 5, 7]


def test_result_lines_flag_a_cut_last_line() -> None:
    cut = read_result_lines('{"iteration": 1}\n{"iteration": 2}\n{"iterat')
    assert [r["iteration"] for r in cut.rows] == [1, 2] and cut.bad_lines == (3,) and cut.cut_last_line
    damaged = read_result_lines('{"iteration": 1}\nnot json\n[1]\n{"iteration": 3}\n\n')
    assert damaged.bad_lines == (2, 3) and not damaged.cut_last_line and len(damaged.rows) == 2
    assert read_result_lines("") == read_result_lines([]) and not read_result_lines("").cut_last_line


def test_a_reports_iteration_falls_back_on_rays_count() -> None:
    assert report_iteration({"iteration": 40, "training_iteration": 2}) == 40
    assert report_iteration({"training_iteration": 2}) == 2
    assert report_iteration({"iteration": float("nan")}) is None and report_iteration({}) is None
    assert report_max_iters({"max_iters": 80.0}) == 80 and report_max_iters({"max_iters": True}) is None


def test_the_module_imports_neither_ray_nor_torch() -> None:
    code = ("import sys, tune.configuration, tune.sweep, tune.experiment, tune.status, tune.plan, "
            "analysis.load; print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

"""tune.experiment: the one reader of Ray Tune experiment folders, on fixtures in Ray's on-disk format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tune.configuration import read_result_lines
from tune.experiment import (
    ERROR,
    PENDING,
    TERMINATED,
    ExperimentError,
    error_summary,
    open_experiment,
    parse_results,
)

ERROR_TEXT = """Failure # 1 (occurred at 2026-11-25_14-12-20)
ray::ImplicitFunc.train() (pid=1, ip=1.2.3.4, repr=fn)
  File "/x/trainable.py", line 329, in train
    raise skipped from exception_cause(skipped)
RuntimeError: first failure
Failure # 2 (occurred at 2026-11-25_14-12-22)
ray::ImplicitFunc.train() (pid=2, ip=1.2.3.4, repr=fn)
  File "/x/train.py", line 12, in run
    raise NonFiniteLossError(...)
cmda.uda.dacs.NonFiniteLossError: loss 'rgb_st' is nan at iteration 40
"""


def write_trial(exp: Path, name: str, params: dict, results: list[dict | str],
                error: str | None = None) -> None:
    folder = exp / name
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params))
    lines = [r if isinstance(r, str) else json.dumps(r) for r in results]
    (folder / "result.json").write_text("".join(f"{line}\n" for line in lines))
    if error is not None:
        (folder / "error.txt").write_text(error)


def write_state(exp: Path, trials: list[tuple[str, str, str, int]],
                stamp: str = "2026-11-25_10-00-00") -> None:
    """trials: (dirname, trial_id, status, num_failures)."""
    data = [
        [json.dumps({"trial_id": tid, "status": status, "relative_logdir": name, "config": {"seed": 0}}),
         json.dumps({"num_failures": failures, "last_result": {}})]
        for name, tid, status, failures in trials
    ]
    (exp / f"experiment_state-{stamp}.json").write_text(json.dumps({"trial_data": data, "runner_data": {}}))


@pytest.fixture()
def experiment(tmp_path: Path) -> Path:
    exp = tmp_path / "cmda_demo"
    params = {"ablation": {"variant": "none", "lambda_scale": None, "lambdas": {}}, "seed": 0}
    write_trial(exp, "none_s0_a", params, [
        {"iteration": 20, "max_iters": 80, "miou18": 10.0},
        {"iteration": 40, "max_iters": 80, "miou18": 12.0},
    ])
    # a retried trial: iterations 20 and 40 reported twice, the file cut in the middle of a line
    write_trial(exp, "fusion_st_x1_s0_b", {**params, "ablation": {"variant": "fusion_st"}}, [
        {"iteration": 20, "miou18": 1.0}, {"iteration": 40, "miou18": 2.0},
        {"iteration": 20, "miou18": 3.0}, {"iteration": 40, "miou18": 4.0}, '{"iteration": 60, "miou1',
    ], error=ERROR_TEXT)
    write_state(exp, [("none_s0_a", "a", "RUNNING", 0)], stamp="2026-11-25_09-00-00")  # older, ignored
    write_state(exp, [("none_s0_a", "a", TERMINATED, 0), ("fusion_st_x1_s0_b", "b", ERROR, 2),
                      ("rgb_st_x1_s0_c", "c", PENDING, 0)])
    (exp / "sweep.yaml").write_text("name: cmda_demo\nmetric: miou18\noptim_lr: 6e-5\n")
    return exp


def test_trials_merge_state_and_folders(experiment: Path) -> None:
    trials = {t.dirname: t for t in open_experiment(experiment).trials()}
    assert sorted(trials) == ["fusion_st_x1_s0_b", "none_s0_a", "rgb_st_x1_s0_c"]
    done = trials["none_s0_a"]
    assert (done.status, done.iteration, done.max_iters, done.stopped_early) == (TERMINATED, 40, 80, True)
    pending = trials["rgb_st_x1_s0_c"]
    assert (pending.status, pending.started, pending.results) == (PENDING, False, [])


def test_retried_trial_keeps_the_last_report_per_iteration_and_names_its_error(experiment: Path) -> None:
    trial = {t.dirname: t for t in open_experiment(experiment).trials()}["fusion_st_x1_s0_b"]
    assert [(r["iteration"], r["miou18"]) for r in trial.results] == [(20, 3.0), (40, 4.0)]
    assert trial.num_failures == 2 and trial.status == ERROR
    assert trial.error == "cmda.uda.dacs.NonFiniteLossError: loss 'rgb_st' is nan at iteration 40"
    assert trial.error_file == str(experiment / "fusion_st_x1_s0_b" / "error.txt")
    assert any("not valid JSON" in p for p in trial.problems)
    assert any("repeated iteration" in p for p in trial.problems)


def test_sweep_copy_reads_numbers_as_people_write_them(experiment: Path) -> None:
    assert open_experiment(experiment).sweep()["optim_lr"] == pytest.approx(6e-5)


def test_locations_that_are_not_experiments_are_named(tmp_path: Path, experiment: Path) -> None:
    with pytest.raises(ExperimentError, match="no such experiment folder"):
        open_experiment(tmp_path / "missing")
    with pytest.raises(ExperimentError, match="not a Ray Tune experiment folder"):
        open_experiment(experiment.parent)
    (experiment / "experiment_state-2026-11-25_11-00-00.json").write_text('{"trial_data": [')
    with pytest.raises(ExperimentError, match=r"experiment_state-2026-11-25_11-00-00\.json: not valid JSON"):
        open_experiment(experiment).trials()


def test_error_summary_without_exception_line_falls_back_to_last_line() -> None:
    assert error_summary("Failure # 1 (occurred at x)\nkilled by the memory monitor\n") == (
        "killed by the memory monitor")
    assert error_summary("") == ""


def test_parse_results_without_iterations_keeps_report_order() -> None:
    rows, problems = parse_results(read_result_lines('{"a": 1}\n{"a": 2}\n'), "r.json")
    assert [r["a"] for r in rows] == [1, 2] and problems == []


def test_resume_refuses_a_state_file_cut_short(experiment: Path) -> None:
    """A driver killed while Ray uploads its state can leave it empty; Ray would then silently start a new
    experiment with one empty trial, so `resume` stops first (before any Ray starts) and says why."""
    from tune.driver import resume_sweep

    (experiment / "tuner.pkl").write_bytes(b"")
    (experiment / "experiment_state-2026-11-25_12-00-00.json").write_text("")
    with pytest.raises(ExperimentError) as error:
        resume_sweep(experiment)
    message = str(error.value)
    assert "experiment_state-2026-11-25_12-00-00.json: not valid JSON" in message
    assert "Ray cannot resume from it" in message and f"cmda-tune status {experiment}" in message

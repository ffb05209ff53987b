"""The Ray Tune driver end to end on a real (local, simulated two-node) Ray cluster.

Most tests drive a small stand-in trainer that follows `cmda.train.run`'s contract exactly (metrics with
`iteration`, a complete checkpoint directory per evaluation, `resume_from`), so that ASHA decisions, retries
and resumes are deterministic and fast; `test_real_trainer_on_synthetic_data` runs the real trainer.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray import cloudpickle, tune

from tune.driver import experiment_dir, experiment_status, resume_sweep, run_sweep
from tune.sweep import load_sweep

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests folder

VARIANTS = ("none", "src_rgb_event", "fusion_st", "rgb_st+event_st")


def contract_trainer(config: dict[str, Any], report: Any = None, resume_from: str | None = None) -> dict:
    """Stand-in for cmda.train.run: deterministic mIoU from (variant, lambda), checkpoint per evaluation.

    `config["test"]` steers it: `sleep_s` per evaluation, `fail_marker` (raise once, after the 2nd
    evaluation, when the file is absent), `log` (append every call's start iteration to this file).
    """
    options = config.get("test", {})
    max_iters, interval = config["train"]["max_iters"], config["train"]["eval_interval"]
    start = 0
    if resume_from is not None:
        start = json.loads((Path(resume_from) / "state.json").read_text())["iteration"]
        assert (Path(resume_from) / "resolved_config.yaml").is_file()
    if options.get("log"):
        with open(options["log"], "a") as handle:
            handle.write(f"{config['name']} {start}\n")
    weight = config["uda"]["feature_loss"]["weight"]
    quality = 0.2 if weight is None else 1.0 - weight
    train_s = 0.0
    sleep_s = options.get("sleep_s", 0.0) * (1 + 3 * (weight or 0.0) * options.get("slow_by_weight", 0))
    for iteration in range(start + interval, max_iters + 1, interval):
        time.sleep(sleep_s)
        train_s += sleep_s
        with tempfile.TemporaryDirectory() as ckpt:
            (Path(ckpt) / "state.json").write_text(json.dumps({"iteration": iteration}))
            report({"iteration": iteration, "max_iters": max_iters, "miou18": quality * iteration / max_iters,
                    "time/train_s": train_s}, ckpt)
        marker = options.get("fail_marker")
        if marker and iteration == start + 2 * interval and not os.path.exists(marker):
            Path(marker).touch()
            raise RuntimeError("injected failure (fail marker)")
    return {"iteration": max_iters}


@pytest.fixture(scope="module")
def cluster():
    """One simulated cluster for the module: a 2-CPU head; tests may add and remove worker nodes."""
    from ray.cluster_utils import Cluster

    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = "0.1"
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    if ray.is_initialized():
        ray.shutdown()
    sim = Cluster(initialize_head=True, connect=True,
                  head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        yield sim
    finally:
        ray.shutdown()
        sim.shutdown()


@pytest.fixture(autouse=True)
def _known_variants(monkeypatch: pytest.MonkeyPatch) -> None:
    """`resume` re-reads the saved sweep with the trainer's variant list; pin it to the names used here."""
    monkeypatch.setattr("tune.sweep.valid_variants", lambda: VARIANTS)


def write_sweep(tmp_path: Path, name: str, **fields: Any) -> Path:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"name": "t", "seed": 0, "model": {"backbone": "mit_b0"},
                                    "train": {"max_iters": 8, "eval_interval": 2}}))
    raw: dict[str, Any] = {
        "name": name, "base_config": "base.yaml", "overrides": {"test.sleep_s": 0.05},
        "search": {"grid": {"variants": ["none", "fusion_st"], "lambdas": [0.1, 0.5, 0.9], "seeds": [0]}},
        "scheduler": {"type": "none"}, "resources": {"cpu": 1}, "max_concurrent_trials": 2,
        "storage_path": str(tmp_path / "results"), "failure": {"max_failures": 1},
        "checkpoint": {"num_to_keep": 2},
    }
    raw.update(fields)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def result_rows(trial_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line]


def trial_dirs(exp: Path) -> dict[str, Path]:
    return {p.name: p for p in exp.iterdir() if (p / "params.json").is_file()}


def test_asha_grid_stops_weak_trials_and_keeps_the_best(cluster, tmp_path: Path, capsys) -> None:
    asha = {"type": "asha", "metric": "miou18", "mode": "max", "time_attr": "iteration",
            "grace_period": 2, "reduction_factor": 2, "max_t": 8}
    spec = load_sweep(write_sweep(tmp_path, "asha", scheduler=asha), known_variants=VARIANTS)
    grid = run_sweep(spec, train_fn=contract_trainer, verbose=0)
    assert grid.num_errors == 0 and len(grid) == 4
    final = {(r.config["ablation"]["variant"], r.config["ablation"]["lambda"]): r.metrics["iteration"]
             for r in grid}
    assert final[("fusion_st", 0.1)] == 8, final  # the best cell always reaches max_t
    assert min(final.values()) < 8, final  # ...and ASHA stopped at least one weak cell early
    exp = Path(experiment_dir(spec))
    for name, trial_dir in trial_dirs(exp).items():
        iterations = [row["iteration"] for row in result_rows(trial_dir)]
        assert iterations == list(range(2, iterations[-1] + 1, 2)), name
        assert (trial_dir / "resolved_config.yaml").is_file()
    rows = experiment_status(exp)
    assert rows[0].variant == "fusion_st" and rows[0].weight == 0.1 and rows[0].iteration == 8
    assert {r.state for r in rows} == {"TERMINATED"}
    from tune.cli import main

    capsys.readouterr()
    assert main(["status", str(exp)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:6] == [rows[0].name, "fusion_st", "0.1", "0", "TERMINATED", "8/8"]
    assert "TERMINATED*" in "\n".join(table)  # stopped-early trials are marked


def test_optuna_sweep_samples_variants_and_log_uniform_lambdas(cluster, tmp_path: Path) -> None:
    optuna = {"variants": ["none", {"variant": "fusion_st", "lambda": {"low": 0.01, "high": 0.1}}],
              "num_samples": 4, "seed": 1}
    spec = load_sweep(write_sweep(tmp_path, "optuna", search={"optuna": optuna}), known_variants=VARIANTS)
    grid = run_sweep(spec, train_fn=contract_trainer, verbose=0)
    assert len(grid) == 4 and grid.num_errors == 0
    for result in grid:
        ablation = result.config["ablation"]
        if ablation["variant"] == "none":
            assert ablation["lambda"] is None
        else:
            assert ablation["variant"] == "fusion_st" and 0.01 <= ablation["lambda"] <= 0.1
        assert result.metrics["iteration"] == 8


def test_failed_trial_resumes_from_its_checkpoint(cluster, tmp_path: Path) -> None:
    overrides = {"test.sleep_s": 0.05, "test.fail_marker": str(tmp_path / "failed_once"),
                 "test.log": str(tmp_path / "starts.log")}
    grid = {"grid": {"variants": ["fusion_st"], "lambdas": [0.1], "seeds": [0]}}
    spec = load_sweep(write_sweep(tmp_path, "retry", overrides=overrides, search=grid),
                      known_variants=VARIANTS)
    result = run_sweep(spec, train_fn=contract_trainer, verbose=0)
    assert result.num_errors == 0
    (trial_dir,) = trial_dirs(Path(experiment_dir(spec))).values()
    iterations = [row["iteration"] for row in result_rows(trial_dir)]
    assert iterations == [2, 4, 6, 8]  # continued after the failure at 4: no second report of 2
    starts = [int(line.split()[1]) for line in (tmp_path / "starts.log").read_text().splitlines()]
    assert starts == [0, 4]  # restarted once, from the checkpoint of iteration 4
    assert experiment_status(Path(experiment_dir(spec)))[0].num_failures == 1


class InterruptOnce(tune.Callback):
    """Kills the driver after `after` results, once (a marker file keeps the restored run going)."""

    def __init__(self, marker: str, after: int) -> None:
        self.marker, self.after, self.seen = marker, after, 0

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:  # noqa: ANN001
        self.seen += 1
        if self.seen >= self.after and not os.path.exists(self.marker):
            Path(self.marker).touch()
            raise RuntimeError("driver interrupted by the test")


def test_interrupted_driver_resumes_without_rerunning_finished_trials(cluster, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "interrupt", max_concurrent_trials=1,
                       search={"grid": {"variants": ["fusion_st"], "lambdas": [0.1, 0.5, 0.9], "seeds": [0]}})
    spec = load_sweep(path, known_variants=VARIANTS)
    with pytest.raises(Exception, match="driver interrupted"):
        run_sweep(spec, train_fn=contract_trainer, verbose=0,
                  extra_callbacks=[InterruptOnce(str(tmp_path / "interrupted"), after=6)])
    exp = Path(experiment_dir(spec))
    before = {r.name: r.state for r in experiment_status(exp)}
    finished = [name for name, state in before.items() if state == "TERMINATED"]
    assert finished, before
    kept = {name: result_rows(trial_dirs(exp)[name]) for name in finished}

    resumed = resume_sweep(exp, train_fn=contract_trainer)
    assert resumed.num_errors == 0 and len(resumed) == 3
    after = experiment_status(exp)
    assert {r.state for r in after} == {"TERMINATED"} and {r.iteration for r in after} == {8}
    for name, rows in kept.items():
        assert result_rows(trial_dirs(exp)[name]) == rows, name  # finished trials were not re-run


def test_sweep_survives_losing_a_worker_node(cluster, tmp_path: Path) -> None:
    worker = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    overrides = {"test.sleep_s": 0.4}
    spec = load_sweep(write_sweep(tmp_path, "nodeloss", overrides=overrides, resources={"cpu": 2},
                                  failure={"max_failures": 2},
                                  search={"grid": {"variants": ["fusion_st"], "lambdas": [0.1, 0.5],
                                                   "seeds": [0]}}),
                      known_variants=VARIANTS)
    exp = Path(experiment_dir(spec))

    def remove_worker_when_both_trials_report() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            dirs = list(exp.glob("*/result.json")) if exp.exists() else []
            if len(dirs) == 2 and all(p.stat().st_size > 0 for p in dirs):
                cluster.remove_node(worker)
                return
            time.sleep(0.1)

    remover = threading.Thread(target=remove_worker_when_both_trials_report)
    remover.start()
    result = run_sweep(spec, train_fn=contract_trainer, verbose=0)
    remover.join()
    assert len(ray.nodes()) >= 2 and sum(n["Alive"] for n in ray.nodes()) == 1  # the worker is gone
    assert result.num_errors == 0
    rows = experiment_status(exp)
    assert {r.iteration for r in rows} == {8}
    assert sum(r.num_failures for r in rows) == 1  # exactly the trial that ran on the lost node retried


class FakeTrial:
    def __init__(self, trial_id: str, variant: str, weight: float | None, seed: int) -> None:
        self.trial_id = trial_id
        self.config = {"ablation": {"variant": variant, "lambda": weight, "lambdas": {}}, "seed": seed}


def test_per_config_asha_decides_on_the_mean_over_seeds() -> None:
    from ray.tune.schedulers import TrialScheduler

    from tune.schedulers import PerConfigASHA

    sched = PerConfigASHA(grace_period=2, max_t=8, reduction_factor=2, seeds_per_config=2)
    assert sched.set_search_properties("miou18", "max")
    assert sched.milestones == [2, 4]
    a0, a1 = FakeTrial("a0", "fusion_st", 0.1, 0), FakeTrial("a1", "fusion_st", 0.1, 1)
    b0, b1 = FakeTrial("b0", "fusion_st", 0.9, 0), FakeTrial("b1", "fusion_st", 0.9, 1)
    c0, c1 = FakeTrial("c0", "none", None, 0), FakeTrial("c1", "none", None, 1)
    go, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP

    def res(trial: FakeTrial, iteration: int, miou: float) -> str:
        return sched.on_trial_result(None, trial, {"iteration": iteration, "miou18": miou})

    assert res(a0, 2, 0.5) == go and res(a1, 2, 0.7) == go  # first configuration at the rung: kept
    # Ray's ASHA would stop b0 alone here (0.1 < 0.6); we wait for its sibling seed.
    assert res(b0, 2, 0.1) == go
    assert res(b1, 2, 0.2) == stop  # mean 0.15 < cutoff 0.6: the whole configuration stops
    assert res(b0, 4, 0.9) == stop  # ...including the sibling, whatever it reports next
    sched.on_trial_error(None, c0)  # a crashed seed does not block its configuration's decisions
    assert res(c1, 2, 0.9) == go
    assert res(a0, 4, 0.8) == go and res(a1, 4, 0.8) == go
    assert res(a0, 8, 0.9) == stop  # max_t reached
    assert sched.on_trial_result(None, a1, {"iteration": 6}) == go  # no metric: no decision
    assert "3 configurations x 2 seeds, 1 stopped" in sched.debug_string()

    minimize = PerConfigASHA(metric="miou18", mode="min", grace_period=1, max_t=4, reduction_factor=2)
    assert minimize.on_trial_result(None, a0, {"iteration": 1, "miou18": 0.2}) == go
    assert minimize.on_trial_result(None, b0, {"iteration": 1, "miou18": 0.9}) == stop  # larger is worse
    with pytest.raises(ValueError, match="grace_period"):
        PerConfigASHA(grace_period=5, max_t=4)


def test_per_config_asha_sweep_stops_seeds_of_a_configuration_together(cluster, tmp_path: Path) -> None:
    scheduler = {"type": "per_config_asha", "metric": "miou18", "mode": "max", "time_attr": "iteration",
                 "grace_period": 2, "reduction_factor": 2, "max_t": 8}
    grid = {"grid": {"variants": ["fusion_st"], "lambdas": [0.1, 0.9], "seeds": [0, 1]}}
    spec = load_sweep(write_sweep(tmp_path, "perconfig", scheduler=scheduler, search=grid,
                                  overrides={"test.sleep_s": 0.2, "test.slow_by_weight": 1},
                                  resources={"cpu": 0.5}, max_concurrent_trials=4),
                      known_variants=VARIANTS)
    result = run_sweep(spec, train_fn=contract_trainer, verbose=0)
    assert result.num_errors == 0
    final: dict[float, list[int]] = {}
    for r in result:
        final.setdefault(r.config["ablation"]["lambda"], []).append(r.metrics["iteration"])
    assert final[0.1] == [8, 8]
    # One decision for both seeds; each stops at its next report, so they end within one evaluation.
    assert max(final[0.9]) < 8 and max(final[0.9]) - min(final[0.9]) <= 2, final


def test_real_trainer_on_synthetic_data(cluster, tmp_path: Path, synthetic_root: Path) -> None:
    """The real cmda.train.run under Ray: two tiny trials, every evaluation reported with its checkpoint."""
    pytest.importorskip("cmda.train", reason="trainer not merged yet")
    repo = Path(__file__).resolve().parents[1]
    overrides = {
        "data.source.root": str(synthetic_root / "cityscapes"),
        "data.target.root": str(synthetic_root / "DSEC_Night"),
        "data.num_workers": 0, "data.batch_size": 1,
        "model.backbone": "mit_b0", "model.pretrained": "none", "model.cyclegan": "none",
        "train.max_iters": 4, "train.eval_interval": 2, "train.device": "cpu",
    }
    sweep_file = tmp_path / "real.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "real", "base_config": str(repo / "configs" / "demo.yaml"), "overrides": overrides,
        "search": {"grid": {"variants": ["none", "fusion_st"], "lambdas": [0.1], "seeds": [0]}},
        "resources": {"cpu": 1}, "max_concurrent_trials": 2, "storage_path": str(tmp_path / "results"),
        "checkpoint": {"num_to_keep": 1},
    }))
    spec = load_sweep(sweep_file, known_variants=VARIANTS)
    grid = run_sweep(spec, verbose=0)
    assert grid.num_errors == 0, [r.error for r in grid]
    for result in grid:
        history = result.metrics_dataframe
        assert list(history["iteration"]) == [2, 4]
        assert history["miou18"].between(0.0, 100.0).all()  # percent, like the paper's tables
        assert history["time/train_s"].is_monotonic_increasing
        if result.config["ablation"]["variant"] == "fusion_st":
            assert "loss/fusion_st" in history.columns
        with result.checkpoint.as_directory() as ckpt:
            resolved = yaml.safe_load((Path(ckpt) / "resolved_config.yaml").read_text())
        assert resolved["uda"]["feature_loss"]["variant"] == result.config["ablation"]["variant"]
        assert resolved["train"]["max_iters"] == 4

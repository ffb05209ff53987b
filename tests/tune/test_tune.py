"""The Ray Tune driver end to end on a real (local, simulated multi-node) Ray cluster.

Most tests drive a small stand-in trainer that follows `cmda.train.run`'s contract exactly (metrics with
`iteration`, a complete checkpoint directory per evaluation inside its work dir, a log.csv there, and
`resume_from`), so that scheduler decisions, retries and resumes are deterministic and fast;
`test_real_trainer_on_synthetic_data` runs the real trainer.
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from cluster_helpers import simulated_cluster
from conftest import write_base_config
from ray import cloudpickle, tune
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tune.cli import _exit_for, main
from tune.driver import experiment_dir, resume_sweep, run_sweep
from tune.failures import FAILURES_FILE
from tune.live_table import LiveTable
from tune.schedulers import DECISIONS_FILE
from tune.status import experiment_status, failed_trials, status_table
from tune.sweep import load_sweep

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests folder


def contract_trainer(config: dict[str, Any], report: Any = None, resume_from: str | None = None) -> dict:
    """Stand-in for cmda.train.run: deterministic mIoU from the lambdas, a checkpoint per evaluation.

    `config["test"]` steers it: `sleep_s` per evaluation, `fail_marker` (raise once, after the 2nd evaluation,
    when the file is absent), `nan_at` (raise the trainer's NonFiniteLossError at that iteration; only while
    the file `nan_marker` is absent, when given), `log` (append every call's start iteration to this file),
    `slow_by_lambda`, `slow_by_seed` (seed s sleeps 1 + s x this as long), `seed_noise` (SD of a seed-to-seed
    difference added to the quality).
    """
    options = config.get("test", {})
    max_iters, interval = config["train"]["max_iters"], config["train"]["eval_interval"]
    work_dir = Path(config["train"]["work_dir"])
    work_dir.mkdir(parents=True, exist_ok=True)
    start = 0
    if resume_from is not None:
        start = json.loads((Path(resume_from) / "state.json").read_text())["iteration"]
        assert (Path(resume_from) / "resolved_config.yaml").is_file()
    if options.get("log"):
        with open(options["log"], "a") as handle:
            handle.write(f"{config['name']} {start}\n")
    lambdas = config["uda"]["feature_loss"]["lambdas"]
    quality = 0.2 if not lambdas else 1.0 - sum(lambdas.values())
    quality += 100 * config.get("optim", {}).get("lr", 0.0)  # a search space over optim.lr (absent: 0)
    if options.get("seed_noise"):
        draw = random.Random(f"{config['seed']} {sorted(lambdas.items())}").gauss(0, 1)
        quality += options["seed_noise"] * draw
    train_s = 0.0
    sleep_s = options.get("sleep_s", 0.0) * (1 + 3 * sum(lambdas.values()) * options.get("slow_by_lambda", 0))
    sleep_s *= 1 + config["seed"] * options.get("slow_by_seed", 0)
    for iteration in range(start + interval, max_iters + 1, interval):
        time.sleep(sleep_s)
        train_s += sleep_s
        nan_marker = options.get("nan_marker")
        if options.get("nan_at") == iteration and not (nan_marker and os.path.exists(nan_marker)):
            from cmda.uda.dacs import NonFiniteLossError

            if nan_marker:
                Path(nan_marker).touch()
            raise NonFiniteLossError(f"loss 'src_fusion' is nan at iteration {iteration}")
        with open(work_dir / "log.csv", "a") as handle:
            handle.write(f"{iteration},{quality}\n")
        ckpt = work_dir / "checkpoints" / f"iter_{iteration:07d}"
        ckpt.mkdir(parents=True)
        (ckpt / "state.json").write_text(json.dumps({"iteration": iteration}))
        (ckpt / "weights.bin").write_bytes(b"\0" * 50_000)
        report(
            {
                "iteration": iteration,
                "max_iters": max_iters,
                "miou18": quality * iteration / max_iters,
                "time/train_s": train_s,
            },
            str(ckpt),
        )
        marker = options.get("fail_marker")
        if marker and iteration == start + 2 * interval and not os.path.exists(marker):
            Path(marker).touch()
            raise RuntimeError("injected failure (fail marker)")
    return {"iteration": max_iters}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trainers' node-local scratch root (CMDA_SCRATCH), so that tests can check it is emptied."""
    return tmp_path_factory.mktemp("scratch")


@pytest.fixture(scope="module")
def cluster(scratch: Path):
    """One simulated cluster for the module: a 2-CPU head; tests may add and remove worker nodes. Its
    processes inherit this environment (set before they start)."""
    environment = {
        "TUNE_GLOBAL_CHECKPOINT_S": "0.1",
        "RAY_CHDIR_TO_TRIAL_DIR": "0",
        "CMDA_SCRATCH": str(scratch),
        # These trials checkpoint every few milliseconds, so Ray's (correct) excessive-sync warning would
        # fire on every report here; a real sweep evaluates every few minutes.
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    }
    with simulated_cluster(head_cpus=2, environment=environment) as sim:
        yield sim


def write_sweep(tmp_path: Path, name: str, **fields: Any) -> Path:
    write_base_config(tmp_path)
    raw: dict[str, Any] = {
        "name": name,
        "base_config": "base.yaml",
        "overrides": {"test.sleep_s": 0.05},
        "search": {
            "grid": {"variants": ["none", "fusion_st"], "lambda_scales": [1.0, 5.0, 9.0], "seeds": [0]}
        },
        "scheduler": {"type": "none"},
        "resources": {"cpu": 1},
        "max_concurrent_trials": 2,
        "storage_path": str(tmp_path / "results"),
        "failure": {"max_failures": 1},
    }
    raw.update(fields)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def result_rows(trial_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line]


def trial_dirs(exp: Path) -> dict[str, Path]:
    return {p.name: p for p in exp.iterdir() if (p / "params.json").is_file()}


def left_in_scratch(scratch: Path, exp: Path) -> list[Path]:
    """What the experiment's trainers left in node-local scratch: their folder goes with the sweep, also
    for trials the scheduler killed before their own cleanup ran."""
    from tune.trainable import scratch_root

    root = scratch_root(str(exp))
    assert root.parent == scratch
    return sorted(root.rglob("*")) + [root] if root.exists() else []


def run(spec: Any, **kwargs: Any) -> Any:
    return run_sweep(spec, train_fn=contract_trainer, live_interval_s=0, **kwargs)


def test_small_files_are_published_without_a_temporary_in_the_uploaded_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray uploads the artifact folder in a background thread while the trial publishes its next log.csv;
    whatever it sees there mid-copy must be a finished file (a temporary would stay at the destination)."""
    import shutil

    from tune import trainable

    work_dir, artifacts = tmp_path / "work", tmp_path / "working_dirs" / "trial_0"
    (work_dir / "tensorboard").mkdir(parents=True)
    (work_dir / "log.csv").write_text("iteration,loss\n1,0.5\n")
    (work_dir / "tensorboard" / "events.out.tfevents.1").write_bytes(b"\0" * 64)
    seen_mid_copy: list[set[str]] = []
    copy = shutil.copyfile

    def copy_and_look(source: Any, target: Any) -> Any:
        seen_mid_copy.append({p.name for p in artifacts.rglob("*")})
        return copy(source, target)

    monkeypatch.setattr(trainable.shutil, "copyfile", copy_and_look)
    staging = trainable.staging_dir(artifacts)
    for _ in range(2):
        trainable.publish_small_files(work_dir, artifacts, staging)
    assert len(seen_mid_copy) == 4
    assert not any(name.startswith(".") for names in seen_mid_copy for name in names), seen_mid_copy
    assert (artifacts / "log.csv").read_text() == (work_dir / "log.csv").read_text()
    assert (artifacts / "tensorboard" / "events.out.tfevents.1").stat().st_size == 64
    assert not _inside_folder(staging, artifacts) and list(staging.iterdir()) == []


def _inside_folder(path: Path, folder: Path) -> bool:
    return folder.resolve() in path.resolve().parents


def test_asha_stops_weak_trials_and_storage_keeps_only_checkpoints_and_small_files(
    cluster, tmp_path: Path, scratch: Path, capsys
) -> None:
    asha = {"type": "asha", "mode": "max", "time_attr": "iteration", "grace_period": 2, "reduction_factor": 2}
    spec = load_sweep(write_sweep(tmp_path, "asha", scheduler=asha))
    grid = run(spec)
    assert grid.num_errors == 0 and len(grid) == 4
    final = {
        (r.config["ablation"]["variant"], r.config["ablation"]["lambda_scale"]): r.metrics["iteration"]
        for r in grid
    }
    assert final[("fusion_st", 1.0)] == 8, final  # the best configuration always reaches max_t
    assert min(final.values()) < 8, final  # ...and ASHA stopped at least one weak one early
    exp = Path(experiment_dir(spec))
    for name, trial_dir in trial_dirs(exp).items():
        rows = result_rows(trial_dir)
        iterations = [row["iteration"] for row in rows]
        assert iterations == list(range(2, iterations[-1] + 1, 2)), name
        kept = sorted(p.name for p in trial_dir.glob("checkpoint_*"))
        assert 1 <= len(kept) <= 2, (name, kept)  # the best by miou18 and the latest
        assert f"checkpoint_{len(rows) - 1:06d}" in kept  # the latest is always kept
        names = {p.name for p in trial_dir.iterdir()} - set(kept)
        assert names <= {
            "params.json",
            "params.pkl",
            "result.json",
            "progress.csv",
            "events.out.tfevents",
            "resolved_config.yaml",
            "log.csv",
        } | {n for n in names if n.startswith("events.out")}, names
        assert {"resolved_config.yaml", "log.csv"} <= names  # arrived through Ray's artifact sync
        assert len((trial_dir / "log.csv").read_text().splitlines()) == len(rows)
        assert not list(trial_dir.rglob("iter_*")) and not list(trial_dir.rglob("resume_*"))
    assert not left_in_scratch(scratch, exp)  # the trainers' scratch is gone with their trials
    saved = yaml.safe_load((exp / "sweep.yaml").read_text())
    assert (saved["metric"], saved["mode"], saved["target"]) == ("miou18", "max", "dsec_night")
    rows = experiment_status(exp)
    assert rows[0].variant == "fusion_st" and rows[0].lambda_ == "x1" and rows[0].iteration == 8
    from tune.cli import main

    capsys.readouterr()
    assert main(["status", str(exp)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:7] == ["trial", "variant", "lambda", "seed", "state", "iteration", "miou18"]
    assert table[1].split()[:6] == [rows[0].name, "fusion_st", "x1", "0", "TERMINATED", "8/8"]
    assert "TERMINATED*" in "\n".join(table)  # stopped-early trials are marked
    # the same folder again: refused, naming the command that continues it
    assert main(["sweep", str(spec.path)]) == 2
    assert "cmda-tune resume" in capsys.readouterr().err


def test_retries_transient_failures_but_not_deterministic_ones(cluster, tmp_path: Path, capsys) -> None:
    """A non-finite loss ends its trial at once although max_failures allows retries, and the command
    reports it (one line per failed trial) and exits non-zero; `resume --restart-errored` starts the errored
    trial over. A RuntimeError is retried from the trial's checkpoint."""
    overrides = {
        "test.sleep_s": 0.05,
        "test.log": str(tmp_path / "starts.log"),
        "test.nan_at": 4,
        "test.nan_marker": str(tmp_path / "nan_once"),
    }
    grid = {"grid": {"variants": [{"variant": "fusion_st", "lambda_scales": [1.0]}], "seeds": [0]}}
    spec = load_sweep(
        write_sweep(tmp_path, "nan", overrides=overrides, search=grid, failure={"max_failures": 3})
    )
    result = run(spec)
    assert result.num_errors == 1
    exp = Path(experiment_dir(spec))
    (trial_dir,) = trial_dirs(exp).values()
    assert [row["iteration"] for row in result_rows(trial_dir)] == [2]
    assert len((tmp_path / "starts.log").read_text().splitlines()) == 1  # not retried, max_failures 3
    (failed,) = failed_trials(result)
    assert failed.last_line.endswith("NonFiniteLossError: loss 'src_fusion' is nan at iteration 4")
    assert Path(failed.error_file).is_file()
    assert _exit_for(result) == 1
    assert f"FAILED {trial_dir.name}: " in capsys.readouterr().err

    record = json.loads((exp / FAILURES_FILE).read_text())  # recorded as it happened, in the experiment
    assert [entry["trial"] for entry in record.values()] == [trial_dir.name]
    again = resume_sweep(exp, train_fn=contract_trainer)  # what every RayJob re-submission runs
    assert again.num_errors == 1 and len((tmp_path / "starts.log").read_text().splitlines()) == 1  # not rerun
    assert "not rerun: " in capsys.readouterr().out

    resumed = resume_sweep(exp, train_fn=contract_trainer, restart_errored=True)
    assert resumed.num_errors == 0 and _exit_for(resumed) == 0
    starts = [int(line.split()[1]) for line in (tmp_path / "starts.log").read_text().splitlines()]
    assert starts == [0, 0]  # started over from scratch, not from its checkpoint of iteration 2
    (replacement,) = trial_dirs(exp).values()  # in place: one folder per seed, the old one is gone
    assert replacement.name != trial_dir.name and not trial_dir.exists(), sorted(trial_dir.rglob("*"))
    assert [row.state for row in experiment_status(exp)] == ["TERMINATED"]  # "1 trial", not 2
    assert json.loads((exp / FAILURES_FILE).read_text()) == {}

    spec = load_sweep(
        write_sweep(
            tmp_path,
            "transient",
            search=grid,
            overrides={
                "test.sleep_s": 0.05,
                "test.fail_marker": str(tmp_path / "failed_once"),
                "test.log": str(tmp_path / "starts2.log"),
            },
        )
    )
    result = run(spec)
    assert result.num_errors == 0
    (trial_dir,) = trial_dirs(Path(experiment_dir(spec))).values()
    assert [row["iteration"] for row in result_rows(trial_dir)] == [2, 4, 6, 8]  # continued after the failure
    starts = [int(line.split()[1]) for line in (tmp_path / "starts2.log").read_text().splitlines()]
    assert starts == [0, 4]  # restarted once, from the checkpoint of iteration 4
    assert experiment_status(Path(experiment_dir(spec)))[0].num_failures == 1
    logged = [line.split(",")[0] for line in (trial_dir / "log.csv").read_text().splitlines()]
    assert logged == ["2", "4", "6", "8"]  # the retry continued the log it carried in its checkpoint


class InterruptOnce(tune.Callback):
    """Kills the driver once `when(results so far)` holds (a marker file keeps the restored run going)."""

    def __init__(self, marker: str, when: Any) -> None:
        self.marker, self.when, self.results = marker, when, []

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:  # noqa: ANN001
        self.results.append((trial.config["ablation"]["lambda_scale"], result["iteration"]))
        if self.when(self.results) and not os.path.exists(self.marker):
            Path(self.marker).touch()
            raise RuntimeError("driver interrupted by the test")


def test_per_config_asha_survives_a_retry_and_a_resume(cluster, tmp_path: Path) -> None:
    """One trial at a time: configuration a (good) runs on both seeds, one seed failing once and retrying
    from its checkpoint; the driver dies at c's (bad) first report. After `resume`, c is judged against a's
    rung records rebuilt from result.json: c's second seed is stopped at the first rung. A scheduler that
    started empty would have no record to compare with and let both seeds of c run to the end."""
    scheduler = {
        "type": "per_config_asha",
        "mode": "max",
        "time_attr": "iteration",
        "grace_period": 2,
        "reduction_factor": 2,
    }
    grid = {"grid": {"variants": [{"variant": "fusion_st", "lambda_scales": [1.0, 12.0]}], "seeds": [0, 1]}}
    overrides = {"test.sleep_s": 0.05, "test.fail_marker": str(tmp_path / "failed_once")}
    spec = load_sweep(
        write_sweep(
            tmp_path,
            "resume",
            scheduler=scheduler,
            search=grid,
            overrides=overrides,
            resources={"cpu": 1},
            max_concurrent_trials=1,
            failure={"max_failures": 2},
        )
    )

    def c_reported(results: list) -> bool:
        return any(scale == 12.0 for scale, _ in results)

    with pytest.raises(Exception, match="driver interrupted"):
        run(spec, extra_callbacks=[InterruptOnce(str(tmp_path / "interrupted"), c_reported)])
    exp = Path(experiment_dir(spec))
    # Ray's staging of a killed earlier run of this experiment (a killed driver removes nothing)
    dead_run = Path(cluster.head_node.get_session_dir_path()) / "artifacts" / "2026-01-01_00-00-00" / exp.name
    (dead_run / "trial_x").mkdir(parents=True)
    (dead_run / "trial_x" / "result.json").write_text("{}\n")
    os.utime(dead_run, (time.time() - 3600, time.time() - 3600))  # not this run's (clean_up_after_fit)
    resumed = resume_sweep(exp, train_fn=contract_trainer)
    assert resumed.num_errors == 0 and len(resumed) == 4
    assert not dead_run.exists()  # removed when the resume started
    recorded = [json.loads(line) for line in (exp / DECISIONS_FILE).read_text().splitlines()]
    assert recorded and all("milestone" in row for row in recorded)  # the rung decisions, recorded as taken
    assert (tmp_path / "failed_once").is_file()  # a seed of a failed once (and was retried)
    final = {
        (r.config["ablation"]["lambda_scale"], r.config["seed"]): r.metrics["iteration"] for r in resumed
    }
    assert final == {(1.0, 0): 8, (1.0, 1): 8, (12.0, 0): 8, (12.0, 1): 2}, final  # empty state: c1 at 8
    for trial_dir in trial_dirs(exp).values():
        iterations = [row["iteration"] for row in result_rows(trial_dir)]
        assert iterations == list(range(2, iterations[-1] + 1, 2))  # retried and resumed without repeats


def test_optuna_with_per_config_asha_runs_each_configuration_on_every_seed(cluster, tmp_path: Path) -> None:
    optuna = {
        "variants": ["none", {"variant": "fusion_st", "lambda_scale": {"low": 0.5, "high": 8.0}}],
        "num_samples": 3,
        "seeds": [0, 1],
        "sampler_seed": 1,
    }
    scheduler = {"type": "per_config_asha", "grace_period": 2, "reduction_factor": 2}
    spec = load_sweep(
        write_sweep(
            tmp_path,
            "optuna",
            search={"optuna": optuna, "space": {"optim.lr": {"loguniform": [1.0e-4, 1.0e-3]}}},
            scheduler=scheduler,
            resources={"cpu": 0.5},
            max_concurrent_trials=4,
        )
    )
    grid = run(spec)
    assert grid.num_errors == 0
    seeds: dict[Any, list[int]] = {}
    for result in grid:
        ablation = result.config["ablation"]
        lr = ablation["params"]["optim.lr"]
        key = (ablation["variant"], json.dumps(ablation["lambdas"], sort_keys=True), lr)
        seeds.setdefault(key, []).append(result.config["seed"])
        assert 1.0e-4 <= lr <= 1.0e-3  # Optuna's draw, shared by the configuration's seeds
        if ablation["variant"] == "fusion_st":
            assert 0.5 <= ablation["lambda_scale"] <= 8.0
    assert all(sorted(s) == [0, 1] for s in seeds.values()), seeds


def test_a_grid_over_the_learning_rate_runs_and_the_analysis_shows_it(cluster, tmp_path: Path) -> None:
    from analysis.report import build

    search = {"grid": {"variants": ["none", "fusion_st"], "lambda_scales": [1.0], "seeds": [0, 1]},
              "space": {"optim.lr": {"grid": [1.0e-3, 2.0e-3]}}}
    spec = load_sweep(write_sweep(tmp_path, "lr", search=search, resources={"cpu": 0.5}, overrides={},
                                  max_concurrent_trials=4))
    log = io.StringIO()  # the live table as a CI log shows it (not a terminal: a line per change)
    table = LiveTable(spec.metric, interval_s=0.0, stream=log, total=8, max_iters=spec.max_iters,
                      experiment=spec.name, tty=False)
    grid = run(spec, extra_callbacks=[table])
    assert grid.num_errors == 0 and len(grid) == 8
    lines = log.getvalue().splitlines()
    assert "0 of 8 done" in lines[0] and "8 of 8 done, 0 running, 0 pending, 0 errored" in lines[-1], lines
    assert any("fusion_st x1 optim.lr=0.002  miou18" in line for line in lines)
    for result in grid:
        lr = result.config["ablation"]["params"]["optim.lr"]
        assert f"optim.lr={lr:g}" in Path(result.path).name  # the folder names the configuration
    status = status_table(experiment_dir(spec)).splitlines()  # `cmda-tune status`: a setting column
    assert status[0].split()[:5] == ["trial", "variant", "lambda", "setting", "seed"]
    assert sum("optim.lr=0.002" in line for line in status) == 4
    report = build(experiment_dir(spec), tmp_path / "report")
    frame = report.comparisons.set_index("config")
    # each fusion_st is compared with the baseline at its own lr: the same difference at both
    deltas = frame.loc[["fusion_st x1 optim.lr=0.001", "fusion_st x1 optim.lr=0.002"], "delta"]
    assert deltas.tolist() == pytest.approx([deltas.iloc[0]] * 2) and deltas.iloc[0] != 0
    assert set(report.tables[1].frame["optim.lr"]) == {"0.001", "0.002"}  # the headline, after the decisions
    assert set(report.figures["params"]["value"]) == {1.0e-3, 2.0e-3}


def test_mlflow_file_store_and_offline_wandb_record_each_trial_by_configuration_and_seed(
    cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses folder stores otherwise

    store = (tmp_path / "mlruns").as_uri()
    callbacks = {"mlflow": {"tracking_uri": store}, "wandb": {"mode": "offline", "project": "cmda-test"}}
    search = {"grid": {"variants": ["none", "fusion_st"], "lambda_scales": [1.0], "seeds": [0]}}
    spec = load_sweep(write_sweep(tmp_path, "tracked", search=search, callbacks=callbacks, overrides={},
                                  resources={"cpu": 0.5}))
    grid = run(spec)
    assert grid.num_errors == 0
    client = mlflow.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tracked")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"none, seed 0", "fusion_st x1, seed 0"}
    fusion = runs["fusion_st x1, seed 0"]
    assert fusion.data.tags["configuration"] == "fusion_st x1" and fusion.data.tags["seed"] == "0"
    history = client.get_metric_history(fusion.info.run_id, "miou18")
    assert [m.step for m in history] == [2, 4, 6, 8]  # at trainer iterations, not report counts
    offline = sorted((Path(experiment_dir(spec)) / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 2  # in the experiment folder: Ray's staging folder (W&B's default) is deleted
    records = [path.read_bytes() for path in offline]  # W&B's run record (protobuf): group and name as text
    fusion_run = next(r for r in records if b"fusion_st x1" in r)  # the group: the configuration's label
    assert b"seed 0" in fusion_run and not any(b"fusion_st x1" in r for r in records if r is not fusion_run)


def test_a_trials_heartbeat_reaches_the_drivers_board(cluster) -> None:
    from tune.heartbeat import read_board, start_board, trial_heartbeat

    board = start_board("beats")
    assert trial_heartbeat("no-such-experiment", "t") is None  # no live table: the trainer gets none
    beat = trial_heartbeat("beats", "t1")
    beat(30)
    beat(40)
    deadline = time.monotonic() + 60  # fire-and-forget through another handle: arrives, in its own time
    while read_board(board).get("t1", (0, 0))[0] != 40 and time.monotonic() < deadline:
        time.sleep(0.1)
    (iteration, sent_at), = read_board(board).values()
    assert iteration == 40 and abs(time.time() - sent_at) < 600
    ray.kill(board)


def test_sweep_survives_losing_a_worker_node(cluster, tmp_path: Path) -> None:
    worker = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    spec = load_sweep(
        write_sweep(
            tmp_path,
            "nodeloss",
            overrides={"test.sleep_s": 0.4},
            resources={"cpu": 2},
            failure={"max_failures": 2},
            search={
                "grid": {"variants": [{"variant": "fusion_st", "lambda_scales": [1.0, 5.0]}], "seeds": [0]}
            },
        )
    )
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
    result = run(spec)
    remover.join()
    assert len(ray.nodes()) >= 2 and sum(n["Alive"] for n in ray.nodes()) == 1  # the worker is gone
    assert result.num_errors == 0
    rows = experiment_status(exp)
    assert {r.iteration for r in rows} == {8}
    assert sum(r.num_failures for r in rows) == 1  # exactly the trial that ran on the lost node retried
    for trial_dir in trial_dirs(exp).values():  # small files of the trial that ran on the lost node arrived
        assert (trial_dir / "log.csv").is_file() and (trial_dir / "resolved_config.yaml").is_file()


def test_real_trainer_on_synthetic_data(cluster, tmp_path: Path, synthetic_root: Path, scratch: Path) -> None:
    """The real cmda.train.run under Ray: the experiment folder holds the kept checkpoints and small files
    only (within 10% of the checkpoints' size), and the trainer's scratch is removed."""
    repo = Path(__file__).resolve().parents[2]
    overrides = {
        "data.source.root": str(synthetic_root / "cityscapes"),
        "data.target.root": str(synthetic_root / "DSEC_Night"),
        "data.num_workers": 0,
        "data.batch_size": 1,
        "model.backbone": "mit_b0",
        "model.pretrained": "none",
        "model.cyclegan": "none",
        "train.max_iters": 4,
        "train.eval_interval": 2,
        "train.device": "cpu",
        "train.tensorboard": True,
    }
    sweep_file = tmp_path / "real.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "name": "real",
                "base_config": str(repo / "configs" / "demo.yaml"),
                "overrides": overrides,
                "search": {"grid": {"variants": ["fusion_st"], "seeds": [0]}},
                "resources": {"cpu": 1},
                "storage_path": str(tmp_path / "results"),
            }
        )
    )
    spec = load_sweep(sweep_file)
    grid = run_sweep(spec, live_interval_s=0)
    assert grid.num_errors == 0, [r.error for r in grid]
    for result in grid:
        history = result.metrics_dataframe
        assert list(history["iteration"]) == [2, 4]
        assert history["miou18"].between(0.0, 100.0).all()  # percent, like the paper's tables
        assert "loss/fusion_st" in history.columns
        assert result.config["ablation"]["lambdas"] == {"fusion_st": 0.05}
        with result.checkpoint.as_directory() as ckpt:
            resolved = yaml.safe_load((Path(ckpt) / "resolved_config.yaml").read_text())
        assert resolved["uda"]["feature_loss"]["variant"] == result.config["ablation"]["variant"]
        trial_dir = Path(result.path)
        assert (trial_dir / "log.csv").is_file()
        events = EventAccumulator(str(trial_dir / "tensorboard"))  # `tensorboard --logdir <experiment>`
        events.Reload()
        assert [e.step for e in events.Scalars("miou18")] == [2, 4]  # trainer iterations, not reports
        assert not list(trial_dir.glob("events.out.tfevents*"))  # Ray's own (report-counted) events: none
    exp = Path(experiment_dir(spec))
    total = sum(p.stat().st_size for p in exp.rglob("*") if p.is_file())
    checkpoints = sum(p.stat().st_size for p in exp.rglob("checkpoint_*/**/*") if p.is_file())
    assert checkpoints <= total <= 1.10 * checkpoints, (total, checkpoints)
    assert not left_in_scratch(scratch, exp)
    from ray.train._internal.storage import _get_ray_train_session_dir

    assert not list(Path(_get_ray_train_session_dir()).glob("*/real"))  # the driver's staging copies are gone


def decide_sweep(tmp_path: Path, name: str, **overrides: Any) -> Any:
    """The reference (none, 0.2), a clearly better configuration (fusion_st x1, 0.95) and one as weak as the
    reference (x16, 0.2) that per-configuration ASHA stops at the rung (iteration 2 of 4); 2 initial seeds,
    max_seeds 4: one look after 2 fresh seeds."""
    grid = {"grid": {"variants": ["none", {"variant": "fusion_st", "lambda_scales": [1.0, 16.0]}],
                     "seeds": [0, 1]}}
    scheduler = {"type": "per_config_asha", "grace_period": 2, "reduction_factor": 2}
    path = write_sweep(tmp_path, name, search=grid, scheduler=scheduler, max_concurrent_trials=2,
                       overrides={"test.seed_noise": 0.01, "train.max_iters": 4, **overrides},
                       decide={"effect": 0.1, "max_seeds": 4, "budget": 2.0})
    return load_sweep(path)


def test_a_decide_sweep_runs_to_a_decision_and_a_killed_driver_resumes_without_revising_it(
        cluster, tmp_path: Path, capsys) -> None:
    """The driver dies at the first report of a fresh seed; `resume` finishes the study. The reference is
    never stopped, the weak configuration's seeds end together at the rung, fresh seeds go only to the open
    comparison and its reference, no trial runs twice, and the decisions recorded before the crash stand."""
    spec = decide_sweep(tmp_path, "decide")

    class AtFreshSeed(InterruptOnce):
        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:  # noqa: ANN001
            if trial.config["seed"] >= 2:
                super().on_trial_result(iteration, trials, trial, result, **info)

    with pytest.raises(Exception, match="driver interrupted"):
        run(spec, extra_callbacks=[AtFreshSeed(str(tmp_path / "interrupted"), lambda results: True)])
    exp = Path(experiment_dir(spec))
    before = [json.loads(line) for line in (exp / "decisions.jsonl").read_text().splitlines()][-1]
    assert not before["done"] and before["family"]  # fresh seeds were wanted when the driver died
    assert main(["best", str(exp)]) == 1  # nothing decided yet
    assert "no configuration is decided better than none yet" in capsys.readouterr().err
    resumed = resume_sweep(exp, train_fn=contract_trainer)
    runs = {(r.config["ablation"]["lambda_scale"], r.config["seed"]): r.metrics["iteration"] for r in resumed}
    assert len(resumed) == 10 and runs == {
        (None, 0): 4, (None, 1): 4, (None, 2): 4, (None, 3): 4, (1.0, 0): 4, (1.0, 1): 4, (1.0, 2): 4,
        (1.0, 3): 4, (16.0, 0): 2, (16.0, 1): 2}, runs
    history = [json.loads(line) for line in (exp / "decisions.jsonl").read_text().splitlines()]
    assert [row["sequence"] for row in history] == list(range(1, len(history) + 1))
    after = history[-1]
    outcomes = {row["label"]: (row["outcome"], row["final"]) for row in after["decisions"].values()}
    assert outcomes == {"fusion_st x1": ("better", True), "fusion_st x16": ("stopped", True)}
    assert after["done"] and after["reference_label"] == "none" and after["sequence"] > before["sequence"]
    for key, row in before["decisions"].items():
        if row["final"]:
            assert after["decisions"][key] == row  # a decision taken before the crash stands
    for trial_dir in trial_dirs(exp).values():  # paused at the rung and resumed without repeats
        iterations = [row["iteration"] for row in result_rows(trial_dir)]
        assert iterations == list(range(2, iterations[-1] + 1, 2))
    from tune.experiment import open_experiment

    states = {t.dirname: t.status for t in open_experiment(exp).trials()}
    assert set(states.values()) == {"TERMINATED"}, states  # no seed of a stopped configuration left PAUSED
    capsys.readouterr()
    assert main(["best", str(exp), "--json"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["label"] == "fusion_st x1" and best["decision"] == "better" and best["delta"] > 0.5
    assert "uda.feature_loss.lambdas.fusion_st=0.05" in best["settings"]
    assert "uda.feature_loss.variant=fusion_st" in best["settings"]
    assert Path(best["checkpoint"]).is_dir() and "fusion_st_x1_s" in best["checkpoint"]


def test_a_slow_weak_reference_judged_after_a_stronger_configuration_is_never_stopped(
        cluster, tmp_path: Path) -> None:
    """Real Ray, per-configuration ASHA at rung 2 of 4, two seeds each, four trials at a time: the reference
    (`reference:` fusion_st x16, quality 0.2, slow) reaches the rung after fusion_st x1 (0.95, fast), below
    the rung's cutoff, and runs to the end; fusion_st x12 (0.4) is stopped there. Seed 1 runs slower, so
    x12's seed 0 is already paused at the rung when the stop comes: the experiment state must say it was
    stopped (Ray leaves a stopped paused trial PAUSED in its state file unless the scheduler marks it)."""
    grid = {"grid": {"variants": [{"variant": "fusion_st", "lambda_scales": [1.0, 16.0, 12.0]}],
                     "seeds": [0, 1]}}
    scheduler = {"type": "per_config_asha", "grace_period": 2, "reduction_factor": 2}
    spec = load_sweep(write_sweep(
        tmp_path, "protected", search=grid, scheduler=scheduler, max_concurrent_trials=4,
        resources={"cpu": 0.5}, reference={"variant": "fusion_st", "lambda_scale": 16.0},
        overrides={"train.max_iters": 4, "test.sleep_s": 0.1, "test.slow_by_lambda": 10,
                   "test.slow_by_seed": 2}))
    assert spec.reference is not None and spec.launch_order()[0].key == spec.reference.key
    grid_result = run(spec)
    reached = {(r.config["ablation"]["lambda_scale"], r.config["seed"]): r.metrics["iteration"]
               for r in grid_result}
    assert reached == {(1.0, 0): 4, (1.0, 1): 4, (16.0, 0): 4, (16.0, 1): 4, (12.0, 0): 2, (12.0, 1): 2}
    exp = Path(experiment_dir(spec))
    log = [json.loads(line) for line in (exp / "scheduler_decisions.jsonl").read_text().splitlines()]
    at_rung = {row["configuration"]: row for row in log if row["milestone"] == 2}
    keys = {c.lambda_scale: c.key for c in spec.launch_order()}
    reference, strong, weak = at_rung[keys[16.0]], at_rung[keys[1.0]], at_rung[keys[12.0]]
    assert strong["sequence"] < reference["sequence"]  # judged after a stronger configuration ...
    assert reference["score"] < weak["score"] < strong["score"]  # ... and below the weak one, stopped there
    assert weak["stopped"] and not reference["stopped"] and not strong["stopped"]
    from tune.experiment import open_experiment

    states = {t.dirname: t.status for t in open_experiment(exp).trials()}
    assert set(states.values()) == {"TERMINATED"}, states

"""Beyond one machine, on this machine: a head and worker nodes as separate Ray processes, a real S3 endpoint.

Each worker node gets its own Ray temp folder, so its trials stage files where the driver never looks, as
on a real second machine: whatever reaches storage from there travelled through storage. Trials run the
stand-in trainer of tests/tune/cluster_helpers.py (the trainer's contract, its log.csv and TensorBoard files).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import records, simulated_cluster, standin_trainer, write_sweep
from s3_server import list_objects, s3_bucket  # noqa: F401 - fixture

from tune.driver import experiment_dir, resume_sweep, run_sweep
from tune.experiment import ExperimentError, open_experiment
from tune.paths import FILE, FOLDER, PathError, TrialPath
from tune.remote import check_paths_where_trials_run
from tune.sweep import load_sweep

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
VARIANTS = ("none", "fusion_st")
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parents[1]


@pytest.fixture(scope="module")
def cluster(s3_bucket: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:  # noqa: F811
    """A 1-CPU head (the driver's node); tests add worker nodes with `add_worker`. Started after the S3
    server so that every Ray process inherits its address and credentials."""
    env = {"TUNE_GLOBAL_CHECKPOINT_S": "0.1", "RAY_CHDIR_TO_TRIAL_DIR": "0"}
    with simulated_cluster(head_cpus=1, environment=env) as sim:
        sim.temp_root = tmp_path_factory.mktemp("nodes")
        yield sim


def add_worker(cluster: Any, name: str, **resources: Any) -> Any:
    """A worker node with its own Ray temp folder: its trials' staging folders are invisible to the driver."""
    temp_dir = cluster.temp_root / name
    temp_dir.mkdir()
    node = cluster.add_node(temp_dir=str(temp_dir), **resources)
    cluster.wait_for_nodes()
    return node


def storage_text(uri: str) -> Any:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(uri)

    def read(*parts: str) -> str:
        with fs.open_input_stream("/".join([root, *parts])) as stream:
            return stream.readall().decode()

    return read


def test_trials_on_both_nodes_survive_losing_the_worker_and_keep_every_file(
        cluster: Any, tmp_path: Path, s3_bucket: str) -> None:  # noqa: F811
    """Two trials, one per node; the worker node is killed mid-trial; the sweep completes with every report
    and every log line, and the files written on the worker reached the bucket."""
    worker = add_worker(cluster, "w1", num_cpus=1)
    worker_id = worker.node_id
    record = tmp_path / "starts.jsonl"
    path = write_sweep(tmp_path, "two_nodes", f"{s3_bucket}/two_nodes",
                       overrides={"test.sleep_s": 0.5, "test.record": str(record), "train.max_iters": 12},
                       search={"grid": {"variants": ["fusion_st"], "lambda_scales": [1.0, 5.0],
                                        "seeds": [0]}})
    spec = load_sweep(path)
    uri = experiment_dir(spec)

    def kill_worker_mid_trial() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            on_worker = [r["trial"] for r in records(record) if r["node"] == worker_id]
            reported = list_objects(uri) if on_worker else {}
            # its 2nd checkpoint is in the bucket: the driver has taken the 1st report (reports block)
            if on_worker and any(k.startswith(f"{on_worker[0]}/checkpoint_000001/") for k in reported):
                cluster.remove_node(worker, allow_graceful=False)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_worker_mid_trial)
    killer.start()
    grid = run_sweep(spec, train_fn=standin_trainer, verbose=0)
    killer.join()
    assert grid.num_errors == 0
    starts = records(record)
    nodes = {r["node"] for r in starts}
    assert worker_id in nodes and len(nodes) == 2, starts  # the trials landed on both nodes
    moved = [r["trial"] for r in starts if r["start"] > 0]
    assert len(moved) == 1, starts  # the worker's trial was retried from its checkpoint on the head

    read = storage_text(uri)
    trials = {t.dirname: t for t in open_experiment(uri).trials()}
    assert len(trials) == 2
    for name, trial in trials.items():
        assert [r["iteration"] for r in trial.results] == [2, 4, 6, 8, 10, 12], name  # no report lost
        # Ray delivers reports at least once: a report the driver took after the last checkpoint it knew
        # of is made again by the retry (the reader keeps the last of each iteration).
        assert all("repeated iteration" in p for p in trial.problems), trial.problems
        assert trial.status == "TERMINATED" and trial.num_failures == (name in moved)
        log_rows = [int(line.split(",")[0]) for line in read(name, "log.csv").splitlines()[1:]]
        assert log_rows[0] == 2 and log_rows == sorted(log_rows), log_rows  # continued across nodes
        assert sorted(set(log_rows)) == [2, 4, 6, 8, 10, 12], name
        assert "device: cpu" in read(name, "resolved_config.yaml")
    objects = list_objects(uri)
    assert f"{moved[0]}/tensorboard/events.out.tfevents.0" in objects  # written on the worker only


def test_sweep_into_a_bucket_survives_a_killed_driver(cluster: Any, tmp_path: Path, s3_bucket: str,  # noqa: F811
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`sweep --storage s3://...` in its own process, killed mid-sweep; `resume`, `status` and the analysis
    read the bucket directly."""
    record = tmp_path / "starts.jsonl"
    path = write_sweep(tmp_path, "bucket", s3_bucket, max_concurrent_trials=1,
                       overrides={"test.sleep_s": 0.5, "test.record": str(record)},
                       search={"grid": {"variants": ["fusion_st"], "lambda_scales": [1.0, 5.0],
                                        "seeds": [0]}})
    spec = load_sweep(path)
    uri = experiment_dir(spec)
    # Snapshots once a second rather than every 0.1 s: Ray rewrites its state file in place while it may
    # be uploading it, and a kill during that upload leaves it cut short (see check_restorable_state).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), str(TESTS.parent)]),
           "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = subprocess.Popen([sys.executable, str(TESTS / "cluster_helpers.py"), str(path), cluster.address],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def first_done_in_bucket() -> bool:
        try:
            return any(t.status == "TERMINATED" for t in open_experiment(uri).trials())
        except ExperimentError:  # not there yet, or caught mid-upload
            return False

    try:
        deadline = time.monotonic() + 90
        while driver.poll() is None and time.monotonic() < deadline:
            # kill while the second trial starts: between reports, with the first one recorded as done
            if len(records(record)) >= 2 and first_done_in_bucket():
                break
            time.sleep(0.1)
        assert driver.poll() is None, "the driver ended before it could be killed"
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    objects = list_objects(uri)
    assert "sweep.yaml" in objects and "tuner.pkl" in objects, sorted(objects)
    first = records(record)[0]["trial"]
    try:
        open_experiment(uri).state()
    except ExperimentError:  # the kill still hit Ray's upload of its state: resume must refuse, not restart
        with pytest.raises(ExperimentError, match="Ray cannot resume from it"):
            resume_sweep(uri, train_fn=standin_trainer)
        return

    resumed = resume_sweep(uri, train_fn=standin_trainer)  # the sweep comes from the bucket's sweep.yaml
    assert resumed.num_errors == 0 and len(resumed) == 2
    assert [r["start"] for r in records(record) if r["trial"] == first] == [0]  # finished: not re-run

    from tune.cli import main as tune_main

    capsys.readouterr()
    assert tune_main(["status", uri]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-3:] == ["best", "miou18", "failures"]
    assert [line.split()[4:6] for line in table[1:3]] == [["TERMINATED", "8/8"]] * 2
    assert table[-1].startswith("2 trials: 2 TERMINATED")


def test_analysis_reads_the_bucket(cluster: Any, tmp_path: Path, s3_bucket: str) -> None:  # noqa: F811
    """`cmda-analyze s3://...`: the same experiment straight from the bucket (run after the test above)."""
    from analysis.cli import main as analyze_main

    uri = f"{s3_bucket}/bucket"
    if not open_experiment(uri, must_exist=False).is_experiment():
        pytest.skip("needs the experiment of test_sweep_into_a_bucket_survives_a_killed_driver")
    assert analyze_main([uri, "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "index.html").is_file()


def test_paths_are_checked_on_every_node_that_can_hold_a_trial(cluster: Any, tmp_path: Path) -> None:
    add_worker(cluster, "w2", num_cpus=1)
    (tmp_path / "data").mkdir()
    present = TrialPath("data.source.root", str(tmp_path / "data"), FOLDER, "b.yaml: field 'data'")
    gone = TrialPath("model.pretrained", str(tmp_path / "w.pth"), FILE, "b.yaml: field 'model.pretrained'")
    assert check_paths_where_trials_run([present], cpu=1, gpu=0) == []
    with pytest.raises(PathError) as error:
        check_paths_where_trials_run([present, gone], cpu=1, gpu=0)
    lines = str(error.value).splitlines()[1:]
    assert len(lines) == 2  # one line per node that can hold a trial: the head and the worker
    assert len({line.split(")")[0] for line in lines}) == 2, lines  # two different nodes answered
    assert all(line.endswith(f"b.yaml: field 'model.pretrained': {tmp_path / 'w.pth'} does not exist")
               for line in lines)
    notes = check_paths_where_trials_run([present], cpu=1, gpu=1)  # GPU workers not up yet (autoscaling)
    assert len(notes) == 1 and "no live node can hold a trial yet (1 CPU, 1 GPU)" in notes[0]


def test_trials_see_exactly_the_gpus_ray_assigned(cluster: Any, tmp_path: Path) -> None:
    """A node that declares 2 GPUs: a CPU trial there sees none and trains on cpu; trials holding half a GPU
    each see one GPU, the one Ray assigned, and train on cuda."""
    add_worker(cluster, "gpu", num_cpus=2, num_gpus=2)
    record = tmp_path / "gpus.jsonl"
    overrides = {"test.sleep_s": 0.0, "test.record": str(record), "train.max_iters": 2}
    one = {"grid": {"variants": ["fusion_st"], "lambda_scales": [1.0], "seeds": [0]}}
    # 2 CPUs: only the GPU node can hold it
    cpu_only = load_sweep(write_sweep(tmp_path, "cpu_on_gpu_node", str(tmp_path / "results"), search=one,
                                      overrides=overrides, resources={"cpu": 2, "gpu": 0}))
    assert run_sweep(cpu_only, train_fn=standin_trainer, verbose=0).num_errors == 0
    halves = load_sweep(write_sweep(tmp_path, "half_gpus", str(tmp_path / "results"), overrides=overrides,
                                    resources={"cpu": 0.5, "gpu": 0.5}, max_concurrent_trials=3))
    assert run_sweep(halves, train_fn=standin_trainer, verbose=0).num_errors == 0
    seen = records(record)
    assert len(seen) == 4
    cpu_trial, *gpu_trials = seen
    assert (cpu_trial["gpu_ids"], cpu_trial["cuda_visible_devices"], cpu_trial["device"]) == ([], "", "cpu")
    for trial in gpu_trials:
        assert len(trial["gpu_ids"]) == 1 and trial["gpu_ids"][0] in ("0", "1"), trial
        assert trial["cuda_visible_devices"] == trial["gpu_ids"][0] and trial["device"] == "cuda", trial

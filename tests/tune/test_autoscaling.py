"""A cluster as KubeRay runs one: a head with 0 CPUs (the driver only), workers from zero, each worker with
its own Ray temp folder (what it stages stays on it, as on a real second machine).

The pre-flight must let such a sweep start (its trials wait for the nodes the autoscaler starts);
`max_concurrent_trials: auto` counts the GPUs of the nodes, node by node, in whole groups of seeds; a worker
without the shared storage mount is refused before any trial; and after a killed driver, `cmda-tune clean`
leaves nothing of the sweep on any node.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import ray
from cluster_helpers import records, simulated_cluster, standin_trainer, write_sweep

from tune.cli import main as cli_main
from tune.driver import experiment_dir, run_sweep, settle_concurrency
from tune.experiment import open_experiment
from tune.paths import PathError
from tune.preflight import ClusterError
from tune.remote import scratch_root
from tune.sweep import load_sweep

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parents[1]
ONE_TRIAL = {"grid": {"variants": ["fusion_st"], "lambda_scales": [1.0], "seeds": [0]}}


@pytest.fixture(scope="module")
def kuberay_like(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    env = {"TUNE_GLOBAL_CHECKPOINT_S": "0.1", "RAY_CHDIR_TO_TRIAL_DIR": "0"}
    with simulated_cluster(head_cpus=0, environment=env) as sim:
        sim.temp_root = tmp_path_factory.mktemp("nodes")
        yield sim


def add_gpu_worker(cluster: Any, name: str) -> None:
    temp_dir = cluster.temp_root / name
    temp_dir.mkdir()
    cluster.add_node(temp_dir=str(temp_dir), num_cpus=2, num_gpus=2)
    cluster.wait_for_nodes()


def test_a_zero_cpu_head_waits_for_a_worker_when_the_cluster_autoscales(kuberay_like: Any,
                                                                          tmp_path: Path) -> None:
    storage = str(tmp_path / "results")
    fields = {"search": ONE_TRIAL, "overrides": {"test.sleep_s": 0.0, "train.max_iters": 2}}
    strict = load_sweep(write_sweep(tmp_path, "strict", storage, **fields, resources={"cpu": 1, "gpu": 1}))
    with pytest.raises(ClusterError, match="no node has that.*resources.autoscaling: true"):
        run_sweep(strict, train_fn=standin_trainer, verbose=0)  # the exit 2 KubeRay users met

    path = write_sweep(tmp_path, "scales", storage, **fields,
                       resources={"cpu": 1, "gpu": 1, "autoscaling": True})
    experiment = Path(experiment_dir(load_sweep(path)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), str(TESTS.parent)])}
    driver = subprocess.Popen([sys.executable, str(TESTS / "cluster_helpers.py"), str(path),
                               kuberay_like.address], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:  # the autoscaler: a GPU node once the sweep passed its pre-flight (sweep.yaml: before any trial)
        deadline = time.monotonic() + 120
        while not (experiment / "sweep.yaml").is_file() and driver.poll() is None:
            assert time.monotonic() < deadline, "the sweep never got past its pre-flight"
            time.sleep(0.2)
        assert driver.poll() is None, driver.stdout.read() if driver.stdout else ""
        add_gpu_worker(kuberay_like, "gpu1")
        output, _ = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, output
    (trial,) = open_experiment(str(experiment)).trials()
    assert trial.status == "TERMINATED" and trial.iteration == 2


def test_auto_concurrency_counts_every_gpu_of_the_cluster(kuberay_like: Any, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Two worker nodes with 2 GPUs each (the previous test's and one more): 4 trials of 1 GPU at once; with
    3 seeds per configuration, 3 (one whole group); half a GPU per trial: 8."""
    import ray

    if sum(n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"]) < 2:
        add_gpu_worker(kuberay_like, "gpu1")
    add_gpu_worker(kuberay_like, "gpu2")
    storage = str(tmp_path / "results")

    def concurrency(name: str, seeds: list[int], **resources: Any) -> int | None:
        search = {"grid": {"variants": ["fusion_st"], "lambda_scales": [1.0, 2.0], "seeds": seeds}}
        spec = load_sweep(write_sweep(tmp_path, name, storage, search=search, max_concurrent_trials="auto",
                                      resources=resources))
        return settle_concurrency(spec, autoscaling=False).max_concurrent_trials

    assert concurrency("two_seeds", [0, 1], cpu=1, gpu=1) == 4
    assert "up to 4 trials at once (4 GPUs" in capsys.readouterr().out
    assert concurrency("three_seeds", [0, 1, 2], cpu=1, gpu=1) == 3
    assert concurrency("halves", [0, 1], cpu=0.5, gpu=0.5) == 8


@contextmanager
def node_without(kuberay_like: Any, hidden: Path, cpus: int) -> Iterator[None]:
    """A worker node in its own mount namespace where `hidden` is an empty tmpfs: a machine that did not
    mount the shared volume (Linux; needs the right to unshare the mount namespace)."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot unshare the mount namespace here")
    ray_cli = Path(sys.executable).parent / "ray"
    script = (f"mount -t tmpfs tmpfs {hidden} && exec {ray_cli} start --address {kuberay_like.address} "
              f"--num-cpus {cpus} --block --disable-usage-stats")
    before = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    node = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not {n["NodeID"] for n in ray.nodes() if n["Alive"]} - before:
            assert node.poll() is None and time.monotonic() < deadline, "the unshared node did not join"
            time.sleep(0.5)
        yield
    finally:
        os.killpg(node.pid, signal.SIGTERM)  # `ray start --block` stops its node's processes
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()


def test_a_worker_without_the_shared_storage_is_refused(kuberay_like: Any, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    spec = load_sweep(write_sweep(tmp_path, "unshared", str(shared / "ray_results"), search=ONE_TRIAL,
                                  resources={"cpu": 3}))  # only the unshared node holds a trial
    with node_without(kuberay_like, shared, cpus=3):
        with pytest.raises(PathError) as error:
            run_sweep(spec, train_fn=standin_trainer, verbose=0)
    message = str(error.value)
    assert "field 'storage_path' (the folder every node must share" in message and "does not exist" in message
    assert not (shared / "ray_results" / "unshared").exists()  # no trial started, nothing written
    assert not list((shared / "ray_results").glob(".cmda_storage_probe_*"))  # the probe is gone


def test_a_killed_driver_leaves_nothing_on_any_node_after_clean(kuberay_like: Any, tmp_path: Path) -> None:
    import ray

    if not any(n["Resources"].get("CPU", 0) >= 1 for n in ray.nodes() if n["Alive"]):
        add_gpu_worker(kuberay_like, "gpu1")
    name = f"killed_{uuid.uuid4().hex[:8]}"  # Ray's staging folders are named after the experiment
    record = tmp_path / "starts.jsonl"
    search = {"grid": {"variants": ["fusion_st"], "lambda_scales": [1.0, 5.0], "seeds": [0]}}
    path = write_sweep(tmp_path, name, str(tmp_path / "results"), search=search, max_concurrent_trials=2,
                       overrides={"test.sleep_s": 0.5, "test.record": str(record), "train.max_iters": 200})
    experiment = Path(experiment_dir(load_sweep(path)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), str(TESTS.parent)])}
    driver = subprocess.Popen([sys.executable, str(TESTS / "cluster_helpers.py"), str(path),
                               kuberay_like.address], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(records(record)) < 2 or not list(experiment.glob("*/result.json")):
            assert driver.poll() is None and time.monotonic() < deadline, "the trials never started"
            time.sleep(0.2)
    finally:
        driver.kill()
        driver.wait()
    temp_roots = [kuberay_like.temp_root, Path(kuberay_like.head_node.get_session_dir_path()).parent]

    def left() -> list[Path]:
        staging = [p for root in temp_roots for p in root.glob(f"**/artifacts/*/{name}")]
        scratch = scratch_root(str(experiment))
        return staging + ([scratch] if scratch.exists() else [])

    assert any(kuberay_like.temp_root in p.parents for p in left())  # a worker node's staging stays
    assert cli_main(["clean", str(experiment), "--address", kuberay_like.address]) == 0
    assert left() == []
    assert list(experiment.glob("*/result.json"))  # the results stay

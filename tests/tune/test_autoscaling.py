"""An autoscaling cluster as KubeRay runs one: a head with 0 CPUs (the driver only), workers from zero.

The pre-flight must let such a sweep start (its trials wait for the nodes the autoscaler starts), and
`max_concurrent_trials: auto` counts the GPUs of the nodes, node by node, in whole groups of seeds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import simulated_cluster, standin_trainer, write_sweep

from tune.driver import experiment_dir, run_sweep, settle_concurrency
from tune.experiment import open_experiment
from tune.preflight import ClusterError
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

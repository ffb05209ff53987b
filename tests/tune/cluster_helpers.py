"""Helpers for the multi-node tests: a stand-in trainer that writes what the real one writes, sweep files,
and a driver that runs in its own process (so a test can kill it).

`standin_trainer` follows `cmda.train.run`'s contract (report(metrics, checkpoint_dir) per evaluation,
resume_from = a reported checkpoint) and, like the real trainer, appends to `<work_dir>/log.csv` and writes
TensorBoard files under `<work_dir>/tensorboard/`. `config["test"]` steers it: `sleep_s` per evaluation and
`record`, a file that gets one JSON line per start: trial name, start iteration, the Ray node, the GPU ids
Ray assigned, CUDA_VISIBLE_DEVICES as the trial saw it and the device in its config.

Run as a script it is a sweep driver: `python cluster_helpers.py SWEEP_FILE ADDRESS`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests folder


@contextmanager
def simulated_cluster(head_cpus: int, environment: Mapping[str, str]) -> Iterator[Any]:
    """A connected `ray.cluster_utils.Cluster` with a head of `head_cpus` CPUs (tests add worker nodes).
    `environment` is set before its processes start, so they inherit it, and restored when it shuts down."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:
        for key, value in environment.items():
            patch.setenv(key, value)
        if ray.is_initialized():
            ray.shutdown()
        head = {"num_cpus": head_cpus, "include_dashboard": False}
        sim = Cluster(initialize_head=True, connect=True, head_node_args=head)
        try:
            yield sim
        finally:
            ray.shutdown()
            sim.shutdown()


def standin_trainer(config: dict[str, Any], report: Any = None, resume_from: str | None = None) -> dict:
    import ray

    options = config.get("test", {})
    train = config["train"]
    max_iters, interval = int(train["max_iters"]), int(train["eval_interval"])
    work = Path(train["work_dir"])
    (work / "tensorboard").mkdir(parents=True, exist_ok=True)
    start = 0
    if resume_from is not None:
        start = json.loads((Path(resume_from) / "state.json").read_text())["iteration"]
    if options.get("record"):
        context = ray.get_runtime_context()
        line = {"trial": config["name"], "start": start, "node": context.get_node_id(),
                "gpu_ids": context.get_accelerator_ids().get("GPU", []),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "device": train.get("device")}
        with open(options["record"], "a") as handle:
            handle.write(json.dumps(line) + "\n")
    log = work / "log.csv"
    for iteration in range(start + interval, max_iters + 1, interval):
        time.sleep(float(options.get("sleep_s", 0.0)))
        with log.open("a") as handle:
            if handle.tell() == 0:
                handle.write("iteration,loss\n")
            handle.write(f"{iteration},{1.0 / iteration:.6f}\n")
        (work / "tensorboard" / f"events.out.tfevents.{start}").write_text(f"scalars up to {iteration}\n")
        with tempfile.TemporaryDirectory() as ckpt:
            (Path(ckpt) / "state.json").write_text(json.dumps({"iteration": iteration}))
            report({"iteration": iteration, "max_iters": max_iters, "miou18": 50.0 * iteration / max_iters,
                    "miou19": 45.0 * iteration / max_iters, "time/train_s": 0.0}, ckpt)
    return {"iteration": max_iters}


def write_sweep(folder: Path, name: str, storage: str, **fields: Any) -> Path:
    """A sweep of `fusion_st` at three lambdas (three trials), 4 evaluations each, on the stand-in."""
    from conftest import write_base_config  # the tests' shared files (tests/conftest.py)

    base = write_base_config(folder, device="auto")
    raw: dict[str, Any] = {
        "name": name, "base_config": str(base), "overrides": {"test.sleep_s": 0.2},
        "search": {"grid": {"variants": ["fusion_st"], "lambda_scales": [1.0, 5.0, 9.0], "seeds": [0]}},
        "scheduler": {"type": "none"}, "resources": {"cpu": 1}, "max_concurrent_trials": 2,
        "storage_path": storage, "failure": {"max_failures": 2}, "checkpoint": {"num_to_keep": 1},
    }
    raw.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def main(argv: list[str]) -> int:
    """Drive a sweep against a running cluster, as `cmda-tune sweep FILE --address ADDRESS` does."""
    from tune.driver import run_sweep
    from tune.sweep import load_sweep

    sweep_file, address = argv
    run_sweep(load_sweep(sweep_file), address=address,
              train_fn=standin_trainer, verbose=0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Per-trial overhead of the platform on one node and on a two-node cluster, for trials of a fixed length.

Each trial is a stand-in that sleeps for its compute (`--trial-s` in `--reports` equal parts) and reports
after each part with a checkpoint of `--checkpoint-mb`, through the real trainable (placement, resolved
config, trial files, Ray's checkpoint upload). Inside a trial:

- launch: the driver sees the trial actor running -> the trainer function is called (resolving the config,
  GPU placement, writing the resolved config and its first copy to storage);
- reports: time spent inside `report` (copying the trial's files, Ray persisting the checkpoint, the
  blocking round trip to the driver), summed over the trial;
- end: the trainer returns -> the driver records the trial complete.

Per sweep: start = the sweep is called -> its first trainer runs; relaunch = a trial frees its slot -> the
next trial's trainer runs (Ray places and starts a new actor process, which imports ray.tune, then our
launch); per-trial overhead = relaunch + reports + end, and its share of a trial's slot.

"bare Ray" runs the same trials as a plain function trainable straight on `tune.Tuner` (no cmda-tune code,
no torch import), the floor any Ray Tune platform pays; the difference to it is ours.

`--trainer real` replaces the stand-in by the real trainer (`cmda.train.run`: it imports torch and builds
MiT-B0 with its EMA teacher) on the synthetic twin at toy size, ten evaluations per trial as in the study
(40,000 iterations, one every 4,000), each with a checkpoint; bare Ray then calls the same trainer from a
plain function trainable. A trial's "compute" is the trainer's own time (its imports, model, steps,
evaluations and checkpoints), the same in every setup; `--iters` sets its length.

The one-node run is a local Ray with 2 CPUs; the two-node run is a head and a worker as separate Ray
processes (`ray.cluster_utils.Cluster`), the worker with its own temp folder, 1 CPU each, so one trial runs
on each node. Storage is a local folder (what a shared file system looks like to Ray). The setup "bare ray
two nodes" runs bare Ray on that two-node cluster: the fair floor for "two nodes" (a second node costs Ray
something too: the actor starts there, the checkpoints upload from there).

    python benchmarks/cluster_overhead.py                       # 4 trials of 60 s, 2 at a time, per setup
    python benchmarks/cluster_overhead.py --trial-s 10 --trials 2   # a quick look
    python benchmarks/cluster_overhead.py --trainer real --iters 40  # the real trainer, ~60 s per trial here
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from ray import cloudpickle, tune  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def standin_trainer(config: dict[str, Any], report: Any = None, resume_from: str | None = None) -> dict:
    """Sleeps `bench.trial_s` in `bench.reports` parts; reports after each with a checkpoint file."""
    fn_start = time.time()
    bench = config["bench"]
    parts, per_part = int(bench["reports"]), float(bench["trial_s"]) / int(bench["reports"])
    work = Path(config["train"]["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    report_s = []
    for part in range(1, parts + 1):
        time.sleep(per_part)
        with (work / "log.csv").open("a") as handle:
            handle.write(f"{part},0.5\n")
        with tempfile.TemporaryDirectory() as ckpt:
            (Path(ckpt) / "checkpoint.pt").write_bytes(os.urandom(int(bench["checkpoint_mb"] * 2**20)))
            started = time.time()
            report({"iteration": part, "max_iters": parts, "miou18": float(part)}, ckpt)
            report_s.append(time.time() - started)
    record(bench["record"], config["name"], fn_start, report_s, per_part * parts)
    return {}


TOY_CONFIG: dict[str, Any] = {
    "model": {"backbone": "mit_b0", "decoder_channels": 32, "pretrained": "none", "cyclegan": "none"},
    "data": {"source": {"resize": [64, 32], "crop": [32, 32]},
             "target": {"name": "dsec_night", "crop": [64, 64], "resize": [32, 32], "test_rows": 110},
             "batch_size": 2, "num_workers": 0},
    "optim": {"lr": 6e-4, "warmup_iters": 2},
    "train": {"device": "cpu", "amp": "off", "progress_bar": False, "tensorboard": False},
}
"""The real trainer's config at toy size (the tests' tiny config): MiT-B0, the synthetic twin's DSEC-Night."""


def real_config(twin: Path, iters: int) -> dict[str, Any]:
    config = json.loads(json.dumps(TOY_CONFIG))
    config["data"]["source"]["root"] = str(twin / "cityscapes")
    config["data"]["target"]["root"] = str(twin / "DSEC_Night")
    every = max(1, iters // 10)
    config["train"].update(max_iters=iters, eval_interval=every, log_interval=every)
    return config


def real_trainer(config: dict[str, Any], report: Any = None, resume_from: str | None = None) -> dict:
    """cmda.train.run, timed: the time inside `report` apart from the trainer's own."""
    from cmda.train import run

    fn_start = time.time()
    bench = config.pop("bench")
    report_s: list[float] = []

    def timed(metrics: Any, checkpoint_dir: str | None) -> None:
        started = time.time()
        report(metrics, checkpoint_dir)
        report_s.append(time.time() - started)

    final = run(config, report=timed, resume_from=resume_from)
    compute = time.time() - fn_start - sum(report_s)
    record(bench["record"], config["name"], fn_start, report_s, compute)
    return final


def bare_real_trainable(params: dict[str, Any]) -> None:
    """The real trainer from a plain Ray Tune function: its own work dir, reports go to `tune.report`."""
    config = json.loads(json.dumps(params["config"]))
    work = tempfile.mkdtemp(prefix="bare_real_")
    config["train"]["work_dir"] = work
    config["name"] = f"bare_{tune.get_context().get_trial_id()}"
    config["bench"] = dict(params["bench"])

    def report(metrics: Any, checkpoint_dir: str | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report({k: float(v) for k, v in metrics.items()}, checkpoint=checkpoint)

    try:
        real_trainer(config, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def record(path: str, trial: str, fn_start: float, report_s: list[float], compute_s: float) -> None:
    import ray

    line = {"trial": trial, "trial_id": tune.get_context().get_trial_id(),
            "fn_start": fn_start, "fn_end": time.time(), "report_s": report_s,
            "compute_s": compute_s, "node": ray.get_runtime_context().get_node_id()}
    with open(path, "a") as handle:
        handle.write(json.dumps(line) + "\n")


def bare_trainable(config: dict[str, Any]) -> None:
    """The same trial as a plain Ray Tune function: the floor without any cmda-tune code."""
    fn_start = time.time()
    bench = config["bench"]
    parts, per_part = int(bench["reports"]), float(bench["trial_s"]) / int(bench["reports"])
    report_s = []
    for part in range(1, parts + 1):
        time.sleep(per_part)
        with tempfile.TemporaryDirectory() as ckpt:
            (Path(ckpt) / "checkpoint.pt").write_bytes(os.urandom(int(bench["checkpoint_mb"] * 2**20)))
            started = time.time()
            tune.report({"iteration": part, "miou18": float(part)},
                        checkpoint=tune.Checkpoint.from_directory(ckpt))
            report_s.append(time.time() - started)
    record(bench["record"], f"bare_{tune.get_context().get_trial_id()}", fn_start, report_s, per_part * parts)


def run_bare(args: argparse.Namespace, root: Path, storage: str, times: Any,
             name: str = "bare_ray") -> Any:
    bench = {"trial_s": args.trial_s, "reports": args.reports, "checkpoint_mb": args.checkpoint_mb,
             "record": str(root / f"{name}.jsonl")}
    trainable, space = bare_trainable, {"bench": bench}
    if args.trainer == "real":
        config = real_config(root / "twin", args.iters)
        trainable, space = bare_real_trainable, {"bench": bench, "config": config}
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={**space, "x": tune.grid_search(list(range(args.trials)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(name=name, storage_path=storage, callbacks=[times], verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    return tuner.fit()


class Times(tune.Callback):
    """Driver-side start and completion time of every trial."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.completed: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:  # noqa: ANN001
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:  # noqa: ANN001
        self.completed[trial.trial_id] = time.time()


def write_sweep(folder: Path, name: str, storage: str, args: argparse.Namespace) -> Path:
    base = folder / "base.yaml"
    if args.trainer == "real":
        base.write_text(yaml.safe_dump({"name": "bench", **real_config(folder / "twin", args.iters)}))
    else:
        base.write_text(yaml.safe_dump({"name": "bench", "train": {"max_iters": args.reports,
                                                                  "device": "auto"}}))
    scales = [float(i + 1) for i in range(args.trials)]
    overrides = {"bench.trial_s": args.trial_s, "bench.reports": args.reports,
                 "bench.checkpoint_mb": args.checkpoint_mb, "bench.record": str(folder / f"{name}.jsonl")}
    raw = {"name": name, "base_config": str(base), "storage_path": storage, "overrides": overrides,
           "search": {"grid": {"variants": ["fusion_st"], "lambda_scales": scales, "seeds": [0]}},
           "scheduler": {"type": "none"}, "resources": {"cpu": 1}, "max_concurrent_trials": 2,
           "failure": {"max_failures": 0}, "checkpoint": {"num_to_keep": 1}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def storage_bytes(location: str) -> dict[str, int]:
    """Bytes per kind of file in the experiment (checkpoints, Ray's result files, our small files)."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(location) if "://" in location else (pafs.LocalFileSystem(), location)
    kinds: dict[str, int] = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(root):].lstrip("/")
        parts = rel.split("/")
        if len(parts) == 1:
            kind = "experiment state (root)"
        elif parts[1].startswith("checkpoint_"):
            kind = "kept checkpoints"
        elif parts[1] in ("result.json", "progress.csv", "params.json", "params.pkl", "events.out.tfevents"):
            kind = "Ray's result files"
        elif parts[1].startswith("events.out"):
            kind = "Ray's result files"
        else:
            kind = f"trial files ({parts[1].split('/')[0]})"
        kinds[kind] = kinds.get(kind, 0) + info.size
    return kinds


def run_setup(label: str, args: argparse.Namespace, root: Path, storage: str) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    from tune.driver import experiment_dir, run_sweep
    from tune.sweep import load_sweep

    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    cluster = None
    if not label.endswith("two nodes"):
        ray.init(address="local", num_cpus=2, include_dashboard=False)  # never someone else's cluster
    else:
        cluster = Cluster(initialize_head=True, connect=True,
                          head_node_args={"num_cpus": 1, "include_dashboard": False})
        (root / "worker_tmp").mkdir(exist_ok=True)
        cluster.add_node(num_cpus=1, temp_dir=str(root / "worker_tmp"))
        cluster.wait_for_nodes()
    try:
        name = label.replace(" ", "_")
        times = Times()
        started = time.time()
        if label.startswith("bare ray"):
            grid = run_bare(args, root, storage, times, name)
            location = f"{storage}/{name}"
        else:
            spec = load_sweep(write_sweep(root, name, storage, args))
            trainer = real_trainer if args.trainer == "real" else standin_trainer
            grid = run_sweep(spec, train_fn=trainer, extra_callbacks=[times], verbose=0)
            location = experiment_dir(spec)
        wall = time.time() - started
        assert grid.num_errors == 0, [r.error for r in grid]
        rows = [json.loads(line) for line in (root / f"{name}.jsonl").read_text().splitlines()]
        per_trial = []
        for row in rows:
            trial_id = row["trial_id"]
            begin, end = times.started[trial_id], times.completed[trial_id]
            per_trial.append({
                "wall": end - begin, "compute": row["compute_s"], "launch": row["fn_start"] - begin,
                "reports": sum(row["report_s"]), "end": end - row["fn_end"], "nodes": row["node"],
            })
        ideal = sum(r["compute_s"] for r in rows) / 2  # two trials at a time (the trainer's own time)
        starts = sorted(r["fn_start"] for r in rows)
        ends = sorted(times.completed.values())
        # a trial of the second wave takes the slot the k-th completion freed
        relaunch = [s - e for s, e in zip(starts[2:], ends)]
        phases = {"startup": starts[0] - started, "finish": started + wall - ends[-1],
                  "relaunch": statistics.mean(relaunch) if relaunch else 0.0}
        return {"label": label, "wall": wall, "ideal": ideal, "trials": per_trial, "phases": phases,
                "nodes": len({r["nodes"] for r in per_trial}),
                "storage": storage_bytes(location), "reports": args.reports * len(rows)}
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trial-s", type=float, default=60.0, help="compute per trial (seconds)")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--reports", type=int, default=6, help="evaluations (reports) per trial")
    parser.add_argument("--checkpoint-mb", type=float, default=20.0)
    parser.add_argument("--setups", nargs="+", default=["bare ray", "one node", "two nodes"],
                        choices=["bare ray", "one node", "bare ray two nodes", "two nodes"],
                        help="'bare ray two nodes': bare Ray on the two-node cluster (vs 'two nodes')")
    parser.add_argument("--trainer", choices=["standin", "real"], default="standin",
                        help="the stand-in (sleeps --trial-s) or cmda.train.run on the synthetic twin")
    parser.add_argument("--iters", type=int, default=40, help="--trainer real: iterations per trial")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="cluster_overhead_"))
    if args.trainer == "real":
        from cmda.data.synthetic import generate

        generate(root / "twin", seed=0)
        args.reports = args.iters // max(1, args.iters // 10)
    results = []
    try:
        for label in args.setups:
            results.append(run_setup(label, args, root, str(root / "results")))
            print(f"{label}: {results[-1]['wall']:.1f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    load = os.getloadavg()[0]
    what = (f"the real trainer, {args.iters} iterations and {args.reports} evaluations with a checkpoint" if
            args.trainer == "real" else f"{args.trial_s:g} s, {args.reports} reports each with a "
            f"{args.checkpoint_mb:g} MB checkpoint")
    print(f"\n{args.trials} trials of {what}, 2 at a time; load average {load:.1f} on "
          f"{os.cpu_count()} CPUs\n")
    print("| setup | nodes used | sweep wall (s) | ideal (s) | sweep overhead | start (s) | per trial: "
          "relaunch (s) | of it, launch (s) | reports (s) | end (s) | overhead (s) | share |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        t, p = r["trials"], r["phases"]

        def mean(key: str, trials: list[dict[str, Any]] = t) -> float:
            return statistics.mean(x[key] for x in trials)

        per_trial = p["relaunch"] + mean("reports") + mean("end")
        share = per_trial / (mean("compute") + per_trial)
        print(f"| {r['label']} | {r['nodes']} | {r['wall']:.1f} | {r['ideal']:.1f} | "
              f"{1 - r['ideal'] / r['wall']:.1%} | {p['startup']:.2f} | {p['relaunch']:.2f} | "
              f"{mean('launch'):.2f} | {mean('reports'):.2f} | {mean('end'):.2f} | {per_trial:.2f} | "
              f"{share:.1%} |")
    print("\nStorage written per experiment (bytes), and per report:")
    for r in results:
        total = sum(r["storage"].values())
        detail = ", ".join(f"{k} {v:,}" for k, v in sorted(r["storage"].items()))
        print(f"- {r['label']}: {total:,} in all ({detail}); {r['reports']} reports")
    return 0


if __name__ == "__main__":
    sys.exit(main())

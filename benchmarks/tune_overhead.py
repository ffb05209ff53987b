"""Platform overhead of a Ray Tune sweep, and the compute ASHA saves, measured on this machine.

1. Overhead: the sweep's wall time against the trials' own training time (`time/train_s`, summed and divided
   by the number of concurrent trials: the wall time of a perfect scheduler with zero bookkeeping).
2. ASHA: the same grid with ASHA and with no scheduler; compute = summed `time/train_s` and trainer
   iterations; does ASHA still find the same best cell?

    python benchmarks/tune_overhead.py                      # real trainer on the synthetic data (demo sweep)
    python benchmarks/tune_overhead.py --trainer standin    # a timed stand-in: Ray's share in isolation
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tune.configuration import Configuration  # noqa: E402
from tune.driver import experiment_dir, run_sweep  # noqa: E402
from tune.sweep import SchedulerSpec, SweepSpec, load_sweep  # noqa: E402


def standin_trainer(config: dict[str, Any], report: Any = None, resume_from: str | None = None) -> dict:
    """Learning curves that saturate at a quality set by (variant, lambda); sleeps stand for compute."""
    import zlib

    train = config["train"]
    seconds_per_iter = float(config.get("bench", {}).get("seconds_per_iter", 0.02))
    variant = config["uda"]["feature_loss"]["variant"]
    lambdas = config["uda"]["feature_loss"]["lambdas"] or {"none": 0.05}
    weight = max(lambdas.values()) or 0.05
    quality = 0.3 + 0.2 * (zlib.crc32(variant.encode()) % 100) / 100 - 0.1 * abs(math.log10(weight) + 1.3)
    start = 0 if resume_from is None else json.loads((Path(resume_from) / "state.json").read_text())["it"]
    train_s = 0.0
    for iteration in range(start + train["eval_interval"], train["max_iters"] + 1, train["eval_interval"]):
        t0 = time.perf_counter()
        time.sleep(seconds_per_iter * train["eval_interval"])
        train_s += time.perf_counter() - t0
        miou = quality * (1 - math.exp(-iteration / (0.3 * train["max_iters"])))
        with tempfile.TemporaryDirectory() as ckpt:
            (Path(ckpt) / "state.json").write_text(json.dumps({"it": iteration}))
            report({"iteration": iteration, "max_iters": train["max_iters"], "miou18": miou,
                    "time/train_s": train_s}, ckpt)
    return {}


def measure(spec: SweepSpec, train_fn: Any) -> dict[str, Any]:
    started = time.perf_counter()
    grid = run_sweep(spec, train_fn=train_fn, live_interval_s=0)
    wall = time.perf_counter() - started
    train_s = sum(r.metrics["time/train_s"] for r in grid)
    iterations = sum(r.metrics["iteration"] for r in grid)
    best = max(grid, key=lambda r: r.metrics["miou18"])
    concurrency = spec.max_concurrent_trials or 1
    return {"wall_s": wall, "train_s": train_s, "ideal_s": train_s / concurrency, "iterations": iterations,
            "trials": len(grid), "errors": grid.num_errors,
            "best": Configuration.from_params(best.config).label,
            "best_miou18": best.metrics["miou18"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer", choices=("real", "standin"), default="real")
    parser.add_argument("--sweep", type=Path, default=REPO / "configs" / "sweeps" / "demo.yaml")
    parser.add_argument("--seconds-per-iter", type=float, default=0.02, help="stand-in compute per iteration")
    parser.add_argument("--keep", action="store_true", help="keep the experiment folders")
    args = parser.parse_args()

    spec = load_sweep(args.sweep)
    train_fn = None
    if args.trainer == "standin":
        train_fn = standin_trainer
        overrides = {**spec.overrides, "bench.seconds_per_iter": args.seconds_per_iter}
        spec = dataclasses.replace(spec, overrides=overrides)
    else:
        from tune.demo import DEFAULT_DATA, ensure_synthetic_data

        ensure_synthetic_data(DEFAULT_DATA)
    root = Path(tempfile.mkdtemp(prefix="tune_overhead_"))
    try:
        rows = {}
        for label, scheduler in (("asha", spec.scheduler), ("no scheduler", SchedulerSpec())):
            variant_spec = dataclasses.replace(spec, name=label.replace(" ", "_"), storage_path=str(root),
                                               scheduler=scheduler)
            rows[label] = measure(variant_spec, train_fn)
            print(f"{label}: done in {rows[label]['wall_s']:.1f} s ({experiment_dir(variant_spec)})")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\ntrainer: {args.trainer}; sweep: {args.sweep.name}; concurrency {spec.max_concurrent_trials}")
    header = f"{'run':<14}{'trials':>7}{'wall s':>9}{'train s':>9}{'ideal s':>9}{'overhead':>10}" \
             f"{'iters':>8}  best"
    print(header)
    for label, r in rows.items():
        overhead = 1 - r["ideal_s"] / r["wall_s"]
        print(f"{label:<14}{r['trials']:>7}{r['wall_s']:>9.1f}{r['train_s']:>9.1f}{r['ideal_s']:>9.1f}"
              f"{overhead:>9.1%}{r['iterations']:>8}  {r['best']} miou18={r['best_miou18']:.4f}")
    asha, full = rows["asha"], rows["no scheduler"]
    print(f"\nASHA compute saved: {1 - asha['train_s'] / full['train_s']:.1%} of training time, "
          f"{1 - asha['iterations'] / full['iterations']:.1%} of iterations, "
          f"{1 - asha['wall_s'] / full['wall_s']:.1%} of wall time; "
          f"same best cell: {asha['best'] == full['best']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How much of the full budget early stopping spends on a study-shaped sweep, and whether it keeps the best
configuration: plain ASHA (per trial) and per-configuration ASHA, in Ray's grid order and in
configuration-major order, against running every trial to the end. No training: simulated learning curves
driven through the real scheduler objects (`tune.simulation`), the same code a sweep runs.

    python benchmarks/scheduler_simulation.py [--replicates 20]

Shape (issue 9): 25 configurations x 3 seeds = 75 trials, 8 at a time, an evaluation every 4,000 of 40,000
iterations, rungs at 8k / 16k / 32k keeping 1/2. Curves: miou(t) = q (1 - exp(-t / 8000)) + noise, with q =
50 + a configuration effect (sd 1.5) + a seed effect (sd 0.7) and evaluation noise (sd 0.5); each trial
trains at its own speed (uniform 0.9..1.1). "Best kept" = the configuration with the highest true mean q
ran to the end on every seed.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ray.tune.schedulers import ASHAScheduler  # noqa: E402
from ray.tune.schedulers.trial_scheduler import FIFOScheduler  # noqa: E402

from tune.schedulers import GroupASHA  # noqa: E402
from tune.simulation import SimTrial, run_sweep  # noqa: E402

CONFIGS, SEEDS, CONCURRENCY, EVAL, MAX_ITERS, GRACE, RF = 25, 3, 8, 4000, 40000, 8000, 2


def make_trials(rng: random.Random, order: str) -> tuple[list[SimTrial], dict[str, float], dict[int, float]]:
    config_effect = {c: rng.gauss(0, 1.5) for c in range(CONFIGS)}
    pairs = [(c, s) for c in range(CONFIGS) for s in range(SEEDS)]
    if order == "ray":  # grid_search over {"ablation", "seed"}: the seed varies slowest
        pairs = [(c, s) for s in range(SEEDS) for c in range(CONFIGS)]
    trials, quality = [], {}
    for c, s in pairs:
        trial = SimTrial(
            f"c{c}_s{s}", {"ablation": {"variant": f"v{c}", "lambdas": {"x": float(c)}}, "seed": s}
        )
        quality[trial.trial_id] = 50 + config_effect[c] + rng.gauss(0, 0.7)
        trials.append(trial)
    return trials, quality, config_effect


def scheduler(kind: str) -> Any:
    if kind == "none":
        return FIFOScheduler()
    if kind == "ray_asha":
        return ASHAScheduler(
            metric="miou18",
            mode="max",
            time_attr="iteration",
            grace_period=GRACE,
            max_t=MAX_ITERS,
            reduction_factor=RF,
        )
    group_by = "trial" if kind == "asha" else "configuration"
    return GroupASHA(
        metric="miou18",
        mode="max",
        grace_period=GRACE,
        max_t=MAX_ITERS,
        reduction_factor=RF,
        group_by=group_by,
        group_size=1 if group_by == "trial" else SEEDS,
    )


def simulate(kind: str, order: str, replicate: int) -> tuple[float, bool]:
    rng = random.Random(replicate)
    trials, quality, config_effect = make_trials(rng, order)
    speed = {t.trial_id: rng.uniform(0.9, 1.1) for t in trials}
    noise_rng = random.Random(replicate * 7919 + 1)

    def curve(trial: SimTrial, iteration: int) -> float:
        return quality[trial.trial_id] * (1 - math.exp(-iteration / 8000)) + noise_rng.gauss(0, 0.5)

    outcome = run_sweep(
        scheduler(kind),
        trials,
        curve,
        max_iters=MAX_ITERS,
        eval_interval=EVAL,
        concurrency=CONCURRENCY,
        speed=lambda t: speed[t.trial_id],
    )
    share = sum(outcome.iterations.values()) / (len(trials) * MAX_ITERS)
    best = max(config_effect, key=config_effect.get)
    kept = all(outcome.last_report[f"c{best}_s{s}"] == MAX_ITERS for s in range(SEEDS))
    return share, kept


ROWS = [
    ("every trial to the end", "none", "config"),
    ("Ray's ASHAScheduler, Ray's grid order", "ray_asha", "ray"),
    ("ASHA per trial (ours), Ray's grid order", "asha", "ray"),
    ("ASHA per trial (ours), configuration-major", "asha", "config"),
    ("per-configuration ASHA, Ray's grid order", "per_config_asha", "ray"),
    ("per-configuration ASHA, configuration-major", "per_config_asha", "config"),
]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicates", type=int, default=20)
    args = parser.parse_args()
    print(
        f"{CONFIGS} configurations x {SEEDS} seeds, {CONCURRENCY} concurrent, evaluation every {EVAL} of "
        f"{MAX_ITERS} iterations, rungs from {GRACE} keeping 1/{RF}; {args.replicates} replicates\n"
    )
    print("| scheduler, launch order | compute (share of the full budget) | best configuration kept |")
    print("| --- | ---: | ---: |")
    for label, kind, order in ROWS:
        results = [simulate(kind, order, r) for r in range(args.replicates)]
        shares = [s for s, _ in results]
        kept = sum(k for _, k in results)
        spread = statistics.stdev(shares) if len(shares) > 1 else 0.0
        print(f"| {label} | {statistics.mean(shares):.0%} ± {spread:.0%} | {kept}/{len(results)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

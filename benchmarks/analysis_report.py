"""How long `cmda-analyze` takes on an experiment the size of the study design, measured on this machine.

The experiment: 6 variants x 4 lambda scales x 3 seeds + 3 baseline seeds = 75 trials, 40,000 iterations,
an evaluation every 4,000 (10 reports) and a trainer log row every 50 iterations (800 rows per log.csv),
per-configuration ASHA with grace 4,000 and reduction factor 3 (half the configurations stopped at 4,000 or
12,000). Baseline: reading the folder (`load`), which any analysis must do; the statistics and the whole
report (tables, six figures in PNG and SVG, the HTML page) are given as multiples of it.

    python benchmarks/analysis_report.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from analysis_fixtures import DEFAULTS, Trial, write_experiment  # noqa: E402

from analysis.compare import comparisons, ladder  # noqa: E402
from analysis.load import load  # noqa: E402
from analysis.report import build  # noqa: E402

VARIANTS = ("src_rgb_event", "src_rgb_event+fusion_st", "fusion_st", "rgb_st+event_s_rgb_t",
            "rgb_st+event_st", "rgb_st+event_s_rgb_t+masked_event")
SCALES = (0.25, 0.5, 1.0, 2.0)
SWEEP = """name: study
metric: miou18
mode: max
target: dsec_night
scheduler: {type: per_config_asha, grace_period: 4000, reduction_factor: 3, max_t: 40000}
resources: {cpu: 8, gpu: 1}
"""


def study_trials() -> list[Trial]:
    """Learning curves that saturate at a per-configuration level; every other configuration stopped."""
    rng = np.random.default_rng(0)
    trials = []
    cells = [("none", None)] + [(v, s) for v in VARIANTS for s in SCALES]
    for number, (variant, scale) in enumerate(cells):
        DEFAULTS.setdefault(variant, {"term_a": 0.1, "term_b": 0.05})
        last = 40000 if number % 2 == 0 else (4000 if number % 4 == 1 else 12000)
        for seed in range(3):
            top = 50 + (number % 7) * 0.8 + seed * 0.3
            curve = {it: top * (1 - 0.9 ** (it / 4000)) + rng.normal(0, 0.5)
                     for it in range(4000, last + 1, 4000)}
            log = "iteration,loss/src_fusion,loss/term_a,lr\n" + "".join(
                f"{it},{2.0 / it ** 0.3},{0.5 / it ** 0.2},6e-05\n" for it in range(50, last + 1, 50))
            trials.append(Trial(variant, seed, curve, scale=scale or 1.0, max_iters=40000, log_text=log))
    return trials


def timed(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_experiment(Path(tmp) / "study", study_trials(), sweep=SWEEP)
        loaded = load(root)
        read = timed(lambda: load(root), args.repeat)
        stats = timed(lambda: (comparisons(loaded), ladder(loaded)), args.repeat)
        whole = timed(lambda: build(root, Path(tmp) / "report"), args.repeat)
        trials, rows = len(loaded.trials), len(loaded.train_log)
    print(f"{trials} trials, {rows} trainer-log rows, median of {args.repeat}\n")
    print("| step | seconds | x reading the folder |")
    print("| --- | ---: | ---: |")
    for name, seconds in (("read the folder (load)", read), ("comparisons + ladder", stats),
                          ("whole report (cmda-analyze)", whole)):
        print(f"| {name} | {seconds:.2f} | {seconds / read:.1f} |")


if __name__ == "__main__":
    main()

"""`make demo`: synthetic data -> the demo sweep on CPU (ASHA) -> the analysis report, in a few minutes.

Usage: python -m tune.demo --out demo_out
Running it again on the same folder resumes the sweep (finished trials are kept) and rebuilds the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SWEEP = REPO / "configs" / "sweeps" / "demo.yaml"
DEFAULT_DATA = REPO / "data" / "synthetic"


def ensure_synthetic_data(root: Path) -> None:
    """Generate the synthetic twin once; later runs reuse it (generation is deterministic in the seed)."""
    if (root / "cityscapes").is_dir() and (root / "DSEC_Night").is_dir():
        print(f"synthetic data: reusing {root}")
        return
    from cmda.data.synthetic import generate

    print(f"synthetic data: generating into {root}")
    generate(root, seed=0)


def run_demo(out: Path, sweep_file: Path = DEFAULT_SWEEP, data_root: Path = DEFAULT_DATA) -> Path:
    """Run (or finish) the demo sweep under `out/ray` and write the report to `out/report`."""
    from ray import tune as ray_tune

    from analysis.report import build_report
    from tune.driver import experiment_dir, experiment_status, format_status, resume_sweep, run_sweep
    from tune.sweep import load_sweep

    started = time.monotonic()
    out = out.expanduser().resolve()
    # The demo config names data/synthetic relative to the repository: run from there whatever the cwd.
    os.chdir(REPO)
    ensure_synthetic_data(data_root)
    spec = dataclasses.replace(load_sweep(sweep_file), storage_path=str(out / "ray"))
    exp = Path(experiment_dir(spec))
    if ray_tune.Tuner.can_restore(str(exp)):
        print(f"sweep: resuming {exp}")
        resume_sweep(exp)
    else:
        run_sweep(spec)
    sweep_s = time.monotonic() - started
    report = build_report([exp], out / "report")
    print()
    print(format_status(experiment_status(exp, metric=spec.metric)))
    print()
    print(f"experiment folder: {exp}   (cmda-tune status {exp})")
    print(f"report:            {report}   (open it in a browser)")
    print(f"wall time:         sweep {sweep_s:.0f} s, total {time.monotonic() - started:.0f} s")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tune.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for results and report")
    parser.add_argument("--sweep", type=Path, default=DEFAULT_SWEEP, help="sweep file (default: the demo)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="synthetic dataset root")
    args = parser.parse_args(argv)
    run_demo(args.out, args.sweep.resolve(), args.data.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())

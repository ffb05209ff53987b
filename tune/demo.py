"""`make demo`: synthetic data -> the demo sweep on CPU -> the analysis report, in about 6 minutes on 2 cores.

Every feature-alignment variant at the L2 study's lambdas (the fork's values) on two seeds, with
per-configuration ASHA deciding on the mean over both seeds, so the report has means, confidence intervals
and paired p-values. The trials are short and the data synthetic: the demo shows the pipeline, the storage
discipline and the statistics, not which variant wins on real data.

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


def folder_sizes(exp: Path) -> tuple[int, int]:
    """(bytes of the whole experiment folder, bytes of its kept checkpoints)."""
    total = sum(p.stat().st_size for p in exp.rglob("*") if p.is_file())
    checkpoints = sum(p.stat().st_size for p in exp.glob("*/checkpoint_*/**/*") if p.is_file())
    return total, checkpoints


def run_demo(out: Path, sweep_file: Path = DEFAULT_SWEEP, data_root: Path = DEFAULT_DATA) -> int:
    """Run (or finish) the demo sweep under `out/ray`, write the report to `out/report`; the exit status."""
    from tune.cli import _exit_for
    from tune.driver import experiment_dir, run_sweep
    from tune.progress import format_table
    from tune.status import experiment_status
    from tune.sweep import load_sweep

    started = time.monotonic()
    out = out.expanduser().resolve()
    # The demo config names data/synthetic relative to the repository: run from there whatever the cwd.
    os.chdir(REPO)
    ensure_synthetic_data(data_root)
    spec = dataclasses.replace(load_sweep(sweep_file), storage_path=str(out / "ray"))
    exp = Path(experiment_dir(spec))
    grid = run_sweep(spec, resume_existing=True, live_interval_s=20.0)
    sweep_s = time.monotonic() - started
    print()
    print(format_table(experiment_status(exp), spec.metric))
    total, checkpoints = folder_sizes(exp)
    print(f"\nexperiment folder: {exp}   (cmda-tune status {exp})")
    print(
        f"storage:           {total / 1e6:.0f} MB, of which kept checkpoints {checkpoints / 1e6:.0f} MB "
        f"({total / max(checkpoints, 1):.3f}x)"
    )
    status = _exit_for(grid)
    try:
        from analysis.report import build_report

        report = build_report([exp], out / "report")
        print(f"report:            {report}   (open it in a browser)")
    except Exception as exc:  # noqa: BLE001 - the sweep's results stay usable; say why there is no report
        print(f"report:            not written: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = status or 1
    print(f"wall time:         sweep {sweep_s:.0f} s, total {time.monotonic() - started:.0f} s")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tune.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for results and report")
    parser.add_argument("--sweep", type=Path, default=DEFAULT_SWEEP, help="sweep file (default: the demo)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="synthetic dataset root")
    args = parser.parse_args(argv)
    return run_demo(args.out, args.sweep.resolve(), args.data.resolve())


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: synthetic data -> the demo sweep on CPU -> the analysis report (README, Set-up).

The sweep half is `tune.demo`, the report `analysis.report`; this script composes them because tune never
imports the analysis (docs/ARCHITECTURE.md). Running it again on the same folder resumes the sweep
(finished trials are kept) and rebuilds the report.

Usage: python demo.py --out demo_out
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tune.demo import DEFAULT_DATA, DEFAULT_SWEEP, run_demo_sweep


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python demo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for results and report")
    parser.add_argument("--sweep", type=Path, default=DEFAULT_SWEEP, help="sweep file (default: the demo)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="synthetic dataset root")
    args = parser.parse_args(argv)
    started = time.monotonic()
    out = args.out.expanduser().resolve()
    exp, status = run_demo_sweep(out, args.sweep.resolve(), args.data.resolve())
    try:
        from analysis.report import build_report

        report = build_report([exp], out / "report")
        print(f"report:            {report}   (open it in a browser)")
    except Exception as exc:  # noqa: BLE001 - the sweep's results stay usable; say why there is no report
        print(f"report:            not written: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = status or 1
    print(f"wall time:         total {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())

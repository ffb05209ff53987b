"""`cmda-analyze EXPERIMENT_DIR [...] --out report/`: tables, figures and a self-contained HTML report."""

from __future__ import annotations

import argparse
import sys

from analysis.load import ExperimentError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cmda-analyze", description=__doc__)
    parser.add_argument("experiments", nargs="+", help="Ray Tune experiment folder(s)")
    parser.add_argument("--out", default="report", help="output folder (default: report/)")
    parser.add_argument(
        "--budget",
        choices=("equal", "final"),
        default="equal",
        help="compare at the iteration every trial reached (default) or finished trials' finals",
    )
    parser.add_argument(
        "--gpus", type=float, default=0.0, help="GPUs per trial when the sweep file is absent"
    )
    parser.add_argument("--test", choices=("ttest", "wilcoxon"), default="ttest", help="paired test vs none")
    args = parser.parse_args(argv)
    from analysis.report import build_report

    try:
        index = build_report(args.experiments, args.out, budget=args.budget, gpus=args.gpus, test=args.test)
    except ExperimentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print((index.parent / "ablation.md").read_text())
    print(f"report: {index.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`cmda-analyze EXPERIMENT [EXPERIMENT ...] --out report/`: compare every configuration with the baseline
where the evidence is, and write comparisons.csv, tables, figures and one self-contained HTML page.

EXPERIMENT is a Ray Tune experiment folder or URI (s3://, gs://). Exit status: 0 when a report was written
(it lists whatever is missing and why), 2 when there is nothing to analyse or a location is not an
experiment (one line on stderr says which and why).
"""

from __future__ import annotations

import argparse
import sys

from analysis.compare import Options
from analysis.stats import CORRECTIONS
from tune.experiment import ExperimentError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cmda-analyze", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", help="Ray Tune experiment folder(s) or URI(s)")
    parser.add_argument("--out", default="report", help="output folder (default: report/)")
    parser.add_argument("--correction", choices=tuple(CORRECTIONS), default="holm",
                        help="multiple-comparison correction: holm (family-wise, default) or bh "
                             "(Benjamini-Hochberg false discovery rate)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level after correction; the Δ intervals are at 1 - alpha")
    parser.add_argument("--effect", type=float, default=1.0,
                        help="difference (metric points) the power notes size the seeds for (default 1.0)")
    parser.add_argument("--gpus", type=float, default=0.0,
                        help="GPUs per trial when the experiment's sweep.yaml does not say (for GPU-hours)")
    args = parser.parse_args(argv)
    if not 0 < args.alpha < 1:
        parser.error(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.effect <= 0:
        parser.error(f"--effect must be a positive number of metric points, got {args.effect}")
    from analysis.report import build

    options = Options(correction=args.correction, alpha=args.alpha)
    try:
        report = build(args.experiments, args.out, options, effect=args.effect, gpus=args.gpus)
    except ExperimentError as error:
        print(f"cmda-analyze: {error}", file=sys.stderr)
        return 2
    print(report.markdown)
    if report.loaded.history.empty:
        print("cmda-analyze: no trial has reported a result yet; the report lists every trial and why",
              file=sys.stderr)
    print(f"report: {report.index.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

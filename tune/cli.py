"""`cmda-tune`: run a sweep file, resume an interrupted one, or print the status of an experiment folder."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from tune.experiment import ExperimentError
from tune.paths import parse_path_map_options
from tune.sweep import GridSearch, SweepError, SweepSpec, load_sweep


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmda-tune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sweep = sub.add_parser("sweep", help="run every trial of a sweep file")
    sweep.add_argument("sweep_file", help="configs/sweeps/*.yaml")
    sweep.add_argument("--address", default=None,
                       help="Ray cluster to join: 'auto' or 'ray://host:10001' (default: a local Ray)")
    sweep.add_argument("--name", default=None, help="experiment name (overrides the sweep file's)")
    sweep.add_argument("--storage", default=None,
                       help="results folder or URI shared by all nodes (overrides storage_path)")
    sweep.add_argument("--check", action="store_true", help="validate the sweep file and exit")
    sweep.add_argument("--path-map", action="append", default=[], metavar="LOCAL=CLUSTER",
                       help="data/weights under folder LOCAL are at CLUSTER on the cluster's nodes "
                            "(repeatable; adds to the sweep's path_map)")

    resume = sub.add_parser("resume", help="finish an interrupted sweep without re-running finished trials")
    resume.add_argument("experiment_dir")
    resume.add_argument("--address", default=None)
    resume.add_argument("--sweep", default=None, help="the sweep file, when the folder holds no sweep.yaml")

    status = sub.add_parser("status", help="table of trials in an experiment folder (does not start Ray)")
    status.add_argument("experiment_dir")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tune import driver

    try:
        if args.command == "status":
            print(driver.format_status(driver.experiment_status(args.experiment_dir)))
            return 0
        if args.command == "resume":
            driver.resume_sweep(args.experiment_dir, address=args.address, sweep_file=args.sweep)
            print(driver.format_status(driver.experiment_status(args.experiment_dir)))
            return 0
        spec = load_sweep(args.sweep_file)
        changes = {k: v for k, v in (("name", args.name), ("storage_path", args.storage)) if v is not None}
        if args.path_map:
            changes["path_map"] = {**spec.path_map, **parse_path_map_options(args.path_map)}
        spec = dataclasses.replace(spec, **changes)
        if args.check:
            print(f"{spec.path}: OK ({_describe(spec)})")
            return 0
        driver.run_sweep(spec, address=args.address)
        print(driver.format_status(driver.experiment_status(driver.experiment_dir(spec))))
        print(f"experiment folder: {driver.experiment_dir(spec)}")
        return 0
    except (SweepError, driver.ClusterError, ExperimentError, FileNotFoundError, ImportError) as exc:
        print(f"cmda-tune: error: {exc}", file=sys.stderr)
        return 2


def _describe(spec: SweepSpec) -> str:
    search = spec.search
    if isinstance(search, GridSearch):
        return f"grid of {search.num_trials} trials"
    return f"optuna with {search.num_samples} trials"


if __name__ == "__main__":
    sys.exit(main())

"""`cmda-tune`: plan a sweep file, run it, resume an interrupted one, or print an experiment's status.

Exit status: 0 when everything asked for succeeded; 1 when a trial ended in error (one line per failed trial
is printed: its name, the error's last line and the path of its error file); 2 when the sweep file, the
trainer configs, the data, the storage or the cluster were rejected before anything ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

from tune.experiment import ExperimentError
from tune.paths import parse_path_map_options
from tune.sweep import SweepError, describe, load_sweep

EXIT_TRIAL_ERRORS = 1
EXIT_REJECTED = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmda-tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sweep = sub.add_parser("sweep", help="run every trial of a sweep file")
    sweep.add_argument("sweep_file", help="configs/sweeps/*.yaml")
    sweep.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: 'auto' or 'ray://host:10001' (default: a local Ray)",
    )
    sweep.add_argument("--name", default=None, help="experiment name (overrides the sweep file's)")
    sweep.add_argument(
        "--storage", default=None, help="results folder or URI shared by all nodes (overrides storage_path)"
    )
    sweep.add_argument(
        "--check",
        action="store_true",
        help="run every pre-flight check (sweep, trainer configs, data, storage) and exit",
    )
    sweep.add_argument(
        "--resume",
        action="store_true",
        help="if the experiment folder exists, continue it instead of refusing",
    )
    sweep.add_argument(
        "--live-interval",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds between two updates of the live table (0: no live table; default 30)",
    )
    sweep.add_argument(
        "--path-map",
        action="append",
        default=[],
        metavar="LOCAL=CLUSTER",
        help="data/weights under folder LOCAL are at CLUSTER on the cluster's nodes (repeatable; adds to "
        "the sweep's path_map)",
    )

    plan = sub.add_parser("plan", help="trials in launch order, compute and storage, without starting Ray")
    plan.add_argument("sweep_file")
    plan.add_argument("--json", action="store_true", help="print one JSON object")
    plan.add_argument("--gpus", type=int, default=None, metavar="N",
                      help="the cluster's GPUs: print the concurrency (trials at once) and wall-clock time")
    spread = plan.add_mutually_exclusive_group()
    spread.add_argument("--seed-sd", type=float, default=None,
                        help="paired seed-to-seed SD of the headline metric, for a decide: sweep's power and "
                        "expected seeds (default: the effect)")
    spread.add_argument("--from", dest="from_experiment", default=None, metavar="EXPERIMENT",
                        help="take the paired seed-to-seed SD from an earlier experiment folder (its "
                        "full-budget values)")
    speed = plan.add_mutually_exclusive_group()
    speed.add_argument("--sec-per-iter", type=float, default=None, help="seconds per trainer iteration")
    speed.add_argument(
        "--measure", action="store_true", help="time a few training steps of the first trial on this machine"
    )
    plan.add_argument(
        "--memory",
        action="store_true",
        help="the GPU memory one training step of the first trial needs and the cards it fits (a real CPU "
        "step of the model: seconds)",
    )

    resume = sub.add_parser("resume", help="finish an interrupted sweep without re-running finished trials")
    resume.add_argument("experiment_dir")
    resume.add_argument("--address", default=None)
    resume.add_argument("--sweep", default=None, help="the sweep file, when the folder holds no sweep.yaml")
    resume.add_argument(
        "--restart-errored",
        action="store_true",
        help="start errored trials over from scratch (default: continue from their checkpoint)",
    )

    clean = sub.add_parser(
        "clean", help="remove what a sweep left on the nodes (scratch, Ray's staging) after a killed "
        "driver, for a sweep that will not be resumed")
    clean.add_argument("experiment_dir")
    clean.add_argument("--address", default=None,
                       help="the Ray cluster the sweep ran on (default: this machine only, without Ray)")
    best = sub.add_parser("best", help="the study's best configuration (decided, or by the report's rule "
                          "without decide:): its settings and its seeds' checkpoints")
    best.add_argument("experiment_dir")
    best.add_argument("--json", action="store_true", help="print one JSON object")

    status = sub.add_parser("status", help="table of trials in an experiment folder (does not start Ray)")
    status.add_argument("experiment_dir")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tune.preflight import ClusterError

    try:
        if args.command == "status":
            return _status(args.experiment_dir)
        if args.command == "plan":
            return _plan(args)
        if args.command == "clean":
            return _clean(args)
        if args.command == "best":
            return _best(args)
        from tune import driver  # imports Ray Tune: only the commands that start Ray pay for it

        if args.command == "resume":
            grid = driver.resume_sweep(
                args.experiment_dir,
                address=args.address,
                sweep_file=args.sweep,
                restart_errored=args.restart_errored,
            )
            _status(args.experiment_dir)
            return _exit_for(grid)
        spec = load_sweep(args.sweep_file)
        changes = {k: v for k, v in (("name", args.name), ("storage_path", args.storage)) if v is not None}
        if args.path_map:
            changes["path_map"] = {**spec.path_map, **parse_path_map_options(args.path_map)}
        spec = dataclasses.replace(spec, **changes)
        if args.check:
            driver.preflight_checks(spec, validate_trainer=True, address=args.address)  # prints warnings
            print(f"{spec.path}: OK ({describe(spec)})")
            return 0
        grid = driver.run_sweep(spec, address=args.address, resume_existing=args.resume,
                                live_interval_s=args.live_interval)
        exp = driver.experiment_dir(spec)
        _status(exp)
        print(f"experiment folder: {exp}")
        return _exit_for(grid)
    except (SweepError, ClusterError, ExperimentError, FileNotFoundError, ImportError) as exc:
        print(f"cmda-tune: error: {exc}", file=sys.stderr)
        return EXIT_REJECTED


def _clean(args: argparse.Namespace) -> int:
    """Every node's scratch and staging of one experiment; the results in storage stay."""
    from tune.experiment import open_experiment
    from tune.remote import clean_everywhere, clean_node

    experiment = open_experiment(args.experiment_dir)
    name = experiment.location.rstrip("/").rsplit("/", 1)[-1]
    if args.address is None:
        removed, notes = clean_node(experiment.root, name), []
    else:
        from tune import driver

        started = driver.connect(args.address)
        try:
            removed, notes = clean_everywhere(experiment.root, name)
        finally:
            if started:
                import ray

                ray.shutdown()
    for path in removed:
        print(f"removed {path}")
    for note in notes:
        print(f"cmda-tune: warning: clean {note}", file=sys.stderr)
    where = "this machine" if args.address is None else "the nodes that answered" if notes else "the nodes"
    print(f"{experiment.location}: nothing of it left on {where} (the results in storage are kept)")
    return 1 if notes else 0


def _status(location: str) -> int:
    from tune.status import status_table

    print(status_table(location))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from tune.plan import (
        checkpoint_bytes,
        format_plan,
        make_plan,
        measure_seconds_per_iter,
        memory_budget,
        seed_sd_from,
    )
    from tune.preflight import check_trial_configs, sweep_warnings

    spec = load_sweep(args.sweep_file)
    sec_per_iter = args.sec_per_iter
    if sec_per_iter is not None and not sec_per_iter > 0:
        raise SweepError(f"--sec-per-iter: expected a number > 0, got {sec_per_iter}")
    if args.gpus is not None and args.gpus < 1:
        raise SweepError(f"--gpus: expected a whole number >= 1, got {args.gpus}")
    configs = check_trial_configs(spec)  # every trial's config is valid, or the error names it
    first = configs[0]
    if args.measure:
        sec_per_iter = measure_seconds_per_iter(first, threads=int(spec.cpu))
    memory = memory_budget(first) if args.memory else None
    measured = None
    if args.from_experiment is not None and spec.decide is not None:
        measured = seed_sd_from(args.from_experiment, spec.metric)
    plan = make_plan(spec, sec_per_iter=sec_per_iter, ckpt_bytes=checkpoint_bytes(first), memory=memory,
                     gpus=args.gpus, warnings=sweep_warnings(spec, configs), seed_sd=args.seed_sd,
                     measured_sd=measured)
    print(json.dumps(plan.as_json(), indent=1) if args.json else format_plan(plan))
    return 0


def _best(args: argparse.Namespace) -> int:
    from tune.best import NothingDecided, best_configuration, format_best

    try:
        best = best_configuration(args.experiment_dir)
    except NothingDecided as exc:
        print(f"cmda-tune: {exc}", file=sys.stderr)
        return EXIT_TRIAL_ERRORS
    print(json.dumps(best.as_json(), indent=1) if args.json else format_best(best))
    return 0


def _exit_for(grid: Any) -> int:
    from tune.status import failed_trials, format_failures

    failures = failed_trials(grid)
    if failures:
        print(format_failures(failures), file=sys.stderr)
        return EXIT_TRIAL_ERRORS
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`cmda data ...` subcommands: synth, index-dsec, prepare-cityscapes, make-ic1, warp-dsec, check.

`check` and `synth` loop over the registry (`cmda.data.targets.dataset_kinds`: the source and every
registered target), so their choices and help name every dataset the registry knows.

`add_data_commands` is called by cmda/cli.py; `main` runs the same commands standalone
(`python -m cmda.data.commands ...`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _run_index_dsec(args: argparse.Namespace) -> None:
    from cmda.data.dsec import build_index_files

    summary = build_index_files(args.root, out_dir=args.out_dir, skip_incomplete=args.skip_incomplete)
    for name, why in summary.skipped.items():
        print(f"skipped {name}: {why}")
    for why, count in summary.dropped.items():
        print(f"left out {count} frame(s): {why}")
    print(f"wrote {summary.train} ({summary.train_count} samples)")
    print(f"wrote {summary.test} ({summary.test_count} samples)")


def _run_check(args: argparse.Namespace) -> int:
    from cmda.data.check import check_tree

    settings = {"window_frames": args.window_frames} if args.window_frames is not None else {}
    reports = check_tree(
        args.root, kind=args.kind, thorough=not args.fast, decode_images=args.decode_images, settings=settings
    )
    for report in reports:
        print(f"checked {report.summary()}")
        for problem in report.problems:
            print(f"  {problem}")
    return 0 if all(report.ok for report in reports) else 1


def _run_prepare_cityscapes(args: argparse.Namespace) -> None:
    from cmda.data.cityscapes import prepare_cityscapes

    for path in prepare_cityscapes(args.root, workers=args.workers):
        print(f"wrote {path}")


def _run_synth(args: argparse.Namespace) -> None:
    from cmda.data.synthetic import run_synth

    run_synth(args)


def _run_warp_dsec(args: argparse.Namespace) -> None:
    from cmda.data.warp import run_warp_dsec

    run_warp_dsec(args)


def add_data_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `data` with its subcommands; each sets `func(args)` on the parsed namespace."""
    from cmda.data.synthetic import add_synth_arguments
    from cmda.data.targets import dataset_kinds

    kinds = dataset_kinds()
    titles = ", ".join(files.title for files in kinds.values())
    data = subparsers.add_parser("data", help="prepare datasets or generate the synthetic twin")
    commands = data.add_subparsers(dest="data_command", required=True)
    synth = commands.add_parser("synth", help=f"write a small synthetic twin of every dataset ({titles})")
    add_synth_arguments(synth)
    synth.set_defaults(func=_run_synth)
    index = commands.add_parser("index-dsec", help="write DSEC event index and train/test list files")
    index.add_argument("root", type=Path, help="DSEC_Night root (holds zurich_city_09_*)")
    index.add_argument("--out-dir", type=Path, default=None, help="where the list files go (default: ROOT)")
    index.add_argument(
        "--skip-incomplete",
        action="store_true",
        help="leave out sequences that lack events, rectify map, timestamps or warp images (printed) "
        "instead of failing; the splits then differ from the full DSEC-Night ones",
    )
    index.set_defaults(func=_run_index_dsec)
    prepare = commands.add_parser("prepare-cityscapes", help="labelIds -> trainIds and RCS statistics")
    prepare.add_argument("root", type=Path, help="Cityscapes root (holds gtFine/)")
    prepare.add_argument("--workers", type=int, default=4)
    prepare.set_defaults(func=_run_prepare_cityscapes)
    from cmda.data.ic1 import add_ic1_arguments, run_make_ic1

    ic1 = commands.add_parser("make-ic1", help="Cityscapes IC1 motion images from frames t-1 and t")
    add_ic1_arguments(ic1)
    ic1.set_defaults(func=run_make_ic1)
    from cmda.data.warp import add_warp_arguments

    warp = commands.add_parser("warp-dsec", help="warp DSEC frame images into the event camera (warp_images)")
    add_warp_arguments(warp)
    warp.set_defaults(func=_run_warp_dsec)
    from cmda.data.check_weights import KIND as WEIGHTS

    check = commands.add_parser(
        "check",
        help=f"find missing, unreadable or inconsistent files ({titles}), or weights that do not load "
        f"({WEIGHTS}/)",
    )
    check.add_argument("root", type=Path, help="a dataset root, or a folder holding several (e.g. data/)")
    check.add_argument("--kind", choices=("auto", *kinds, WEIGHTS), default="auto")
    check.add_argument("--fast", action="store_true", help="headers and metadata only (what training runs)")
    check.add_argument("--decode-images", action="store_true", help="also decode every image (slow)")
    check.add_argument(
        "--window-frames", type=int, default=None, help="event window in frames (data.target.window_frames)"
    )
    check.set_defaults(func=_run_check)
    return data


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: `python -m cmda.data.commands data synth ROOT` or `... synth ROOT`."""
    parser = argparse.ArgumentParser(prog="cmda")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_data_commands(subparsers)
    argv = list(argv) if argv is not None else sys.argv[1:]
    if argv and argv[0] != "data":
        argv = ["data", *argv]
    from cmda.errors import run_command

    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

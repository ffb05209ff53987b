"""`cmda data ...` subcommands: synth, index-dsec, prepare-cityscapes, warp-dsec.

`add_data_commands` is called by cmda/cli.py; `main` runs the same commands standalone
(`python -m cmda.data.commands ...`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _run_index_dsec(args: argparse.Namespace) -> None:
    from cmda.data.dsec import build_index_files

    train, test = build_index_files(args.root, out_dir=args.out_dir)
    for path in (train, test):
        count = sum(1 for line in path.read_text().splitlines() if line.strip())
        print(f"wrote {path} ({count} samples)")


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

    data = subparsers.add_parser("data", help="prepare datasets or generate the synthetic twin")
    commands = data.add_subparsers(dest="data_command", required=True)
    synth = commands.add_parser("synth", help="write a small synthetic Cityscapes + DSEC-Night twin")
    add_synth_arguments(synth)
    synth.set_defaults(func=_run_synth)
    index = commands.add_parser("index-dsec", help="write DSEC event index and train/test list files")
    index.add_argument("root", type=Path, help="DSEC_Night root (holds zurich_city_09_*)")
    index.add_argument("--out-dir", type=Path, default=None, help="where the list files go (default: ROOT)")
    index.set_defaults(func=_run_index_dsec)
    prepare = commands.add_parser("prepare-cityscapes", help="labelIds -> trainIds and RCS statistics")
    prepare.add_argument("root", type=Path, help="Cityscapes root (holds gtFine/)")
    prepare.add_argument("--workers", type=int, default=4)
    prepare.set_defaults(func=_run_prepare_cityscapes)
    from cmda.data.warp import add_warp_arguments

    warp = commands.add_parser("warp-dsec", help="warp DSEC frame images into the event camera (warp_images)")
    add_warp_arguments(warp)
    warp.set_defaults(func=_run_warp_dsec)
    return data


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: `python -m cmda.data.commands data synth ROOT` or `... synth ROOT`."""
    parser = argparse.ArgumentParser(prog="cmda")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_data_commands(subparsers)
    argv = list(argv) if argv is not None else None
    if argv is None:
        import sys

        argv = sys.argv[1:]
    if argv and argv[0] != "data":
        argv = ["data", *argv]
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

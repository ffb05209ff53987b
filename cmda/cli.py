"""`cmda train | test | data ...`: the trainer's command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def cmd_train(args: argparse.Namespace) -> int:
    from cmda.config import load_config
    from cmda.train import run

    config = load_config(args.config, args.set)
    if args.dry_run:
        return dry_run(config, args.config)
    metrics = run(config, resume_from=args.resume)
    print(json.dumps({k: round(v, 3) for k, v in metrics.items() if not k.startswith("iou/")}, indent=1))
    return 0


def dry_run(config, source: str) -> int:
    """Everything `cmda train` checks before it trains (config, data), then the memory one training step
    needs on a GPU (`cmda.memory`), and nothing written."""
    from cmda.data.check import check_training_data
    from cmda.memory import format_memory, memory_json, profile_step

    print(f"{source}: config OK ({config.model.backbone}, target {config.target.name})")
    check_training_data(config)
    print("data: OK")
    print("\n".join(format_memory(memory_json(profile_step(config)))))
    return 0


def save_prediction_png(path: Path, prediction: np.ndarray) -> None:
    """Colour-code trainIds with the Cityscapes palette (255 = black) and write a PNG atomically."""
    from PIL import Image

    from cmda.data.scenes import palette_image
    from cmda.io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(palette_image(prediction.astype(np.uint8))).save(tmp, format="PNG")


@contextlib.contextmanager
def output_folder(path: Path) -> Iterator[Path]:
    """A folder the command may write into; if the command fails, a folder it created is removed again."""
    existed = path.exists()
    try:
        yield path
    except BaseException:
        if not existed and path.exists():
            shutil.rmtree(path, ignore_errors=True)
        raise


def refuse_other_network(folder: Path, config: Any, given: str | None) -> None:
    """A checkpoint evaluated with a config for another target, backbone or fusion fails with a page of
    missing and unexpected keys; say instead what the checkpoint was trained for (its own config.yaml)."""
    from cmda.checkpoint import CONFIG_FILE
    from cmda.config import load_config
    from cmda.errors import ConfigError

    own_file = folder / CONFIG_FILE
    if not own_file.is_file():
        return
    own = load_config(own_file)
    where = f"--config {given}" if given else "the config with its --set options"
    for what, trained, asked in (("target", own.target.name, config.target.name),
                                 ("model.backbone", own.model.backbone, config.model.backbone),
                                 ("model.fusion", own.model.fusion, config.model.fusion)):
        if trained != asked:
            raise ConfigError(
                f"{folder}: this checkpoint was trained for {what} {trained} ({own_file}); {where} is for "
                f"{asked}. Evaluate it with its own config (drop --config), or use a checkpoint trained "
                f"for {asked}.")


def cmd_test(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint with the trainer's evaluation routine; needs no ImageNet or CycleGAN file."""
    from cmda.checkpoint import CHECKPOINT_FILE, CONFIG_FILE, checkpoint_dir_of, load_checkpoint
    from cmda.config import load_config
    from cmda.data.check import check_test_data
    from cmda.eval import evaluate
    from cmda.export import NETWORKS
    from cmda.models.weights import load_strict
    from cmda.train import allow_tf32, build_model, build_test_loader, resolve_device

    folder = checkpoint_dir_of(args.checkpoint)
    config = load_config(args.config or folder / CONFIG_FILE, args.set)
    refuse_other_network(folder, config, args.config)
    check_test_data(config)
    device = resolve_device(config.train.device)
    loader = build_test_loader(config)
    model = build_model(config)
    state = load_checkpoint(folder)
    load_strict(model, state[NETWORKS[args.weights]], f"{folder / CHECKPOINT_FILE} ({args.weights})")
    model.to(device)
    allow_tf32(device)  # as during training; evaluation is fp32 whatever train.amp says
    out_dir = Path(args.out) if args.out else folder / "predictions"

    def write(name: str, prediction) -> None:
        save_prediction_png(out_dir / f"{name}.png".replace("/", "_"), prediction.numpy())

    with output_folder(out_dir):
        metrics = evaluate(
            model, loader, device, config.target, on_prediction=write if args.save_predictions else None
        )
    print(json.dumps({k: round(v, 2) for k, v in metrics.items()}, indent=1))
    if args.save_predictions:
        print(f"predictions written to {out_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cmda.data.commands import add_data_commands
    from cmda.export import NETWORKS, add_export_command
    from cmda.import_original import add_import_command

    parser = argparse.ArgumentParser(prog="cmda", description="CMDA trainer: train, test, prepare data")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train from a YAML config")
    train.add_argument("config")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a dotted key"
    )
    train.add_argument("--resume", default=None, help="checkpoint folder, `latest` file or work_dir")
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="check config and data, print the GPU memory a training step needs, and exit (trains nothing)",
    )
    train.set_defaults(func=cmd_train)
    test = sub.add_parser("test", help="evaluate a checkpoint on its target's labelled test split")
    test.add_argument("checkpoint", help="checkpoint folder, `latest` file or work_dir")
    test.add_argument("--config", default=None, help="config (default: the checkpoint's config.yaml)")
    test.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    test.add_argument("--out", default=None, help="folder for prediction PNGs")
    test.add_argument("--save-predictions", action="store_true", help="write colour-coded prediction PNGs")
    test.add_argument(
        "--weights", choices=tuple(NETWORKS), default="student", help="student (default) or EMA teacher"
    )
    test.set_defaults(func=cmd_test)
    add_data_commands(sub)  # cmda data synth | index-dsec | prepare-cityscapes | make-ic1 | ...
    add_import_command(sub)  # cmda import-checkpoint
    add_export_command(sub)  # cmda export
    return parser


def main(argv: list[str] | None = None) -> int:
    from cmda.errors import run_command

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""`cmda train | test | data ...`: the trainer's command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np


def cmd_train(args: argparse.Namespace) -> int:
    from cmda.config import load_config
    from cmda.train import run

    config = load_config(args.config, args.set)
    metrics = run(config, resume_from=args.resume)
    print(json.dumps({k: round(v, 3) for k, v in metrics.items() if not k.startswith("iou/")}, indent=1))
    return 0


def save_prediction_png(path: Path, prediction: np.ndarray) -> None:
    """Colour-code trainIds with the Cityscapes palette (255 = black) and write a PNG."""
    from PIL import Image

    from cmda.data import PALETTE

    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(PALETTE)] = np.asarray(PALETTE, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(palette[prediction.astype(np.uint8)]).save(path)


def cmd_test(args: argparse.Namespace) -> int:
    import torch
    import torch.nn.functional as F

    from cmda.config import load_config
    from cmda.eval import confusion_matrix, metrics_from_confusion
    from cmda.train import build_model, build_test_dataset, checkpoint_dir_of, load_checkpoint, resolve_device

    folder = checkpoint_dir_of(args.checkpoint)
    config = load_config(args.config or folder / "config.yaml", args.set)
    device = resolve_device(config.train.device)
    model = build_model(config)
    model.load_state_dict(load_checkpoint(folder)["model"])
    model.to(device).eval()
    dataset = build_test_dataset(config)
    conf = torch.zeros(config.model.num_classes, config.model.num_classes, dtype=torch.long)
    out_dir = Path(args.out) if args.out else folder / "predictions"
    with torch.no_grad():
        for index in range(len(dataset)):
            sample = dataset[index]
            image, events = sample["image"][None].to(device), sample["events"][None].to(device)
            logits = model.predict(image, events)
            label = sample["label"]
            logits = F.interpolate(
                logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False
            )
            prediction = logits.argmax(dim=1)[0].cpu()
            conf += confusion_matrix(prediction, label, config.model.num_classes)
            if args.save_predictions:
                save_prediction_png(
                    out_dir / f"{sample.get('name', index)}.png".replace("/", "_"), prediction.numpy()
                )
    metrics = metrics_from_confusion(conf)
    print(json.dumps({k: round(v, 2) for k, v in metrics.items()}, indent=1))
    if args.save_predictions:
        print(f"predictions written to {out_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cmda.data.commands import add_data_commands

    parser = argparse.ArgumentParser(prog="cmda", description="CMDA trainer: train, test, prepare data")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train from a YAML config")
    train.add_argument("config")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a dotted key"
    )
    train.add_argument("--resume", default=None, help="checkpoint folder, `latest` file or work_dir")
    train.set_defaults(func=cmd_train)
    test = sub.add_parser("test", help="evaluate a checkpoint on the DSEC-Night test split")
    test.add_argument("checkpoint", help="checkpoint folder, `latest` file or work_dir")
    test.add_argument("--config", default=None, help="config (default: the checkpoint's config.yaml)")
    test.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    test.add_argument("--out", default=None, help="folder for prediction PNGs")
    test.add_argument("--save-predictions", action="store_true", help="write colour-coded prediction PNGs")
    test.set_defaults(func=cmd_test)
    add_data_commands(sub)  # cmda data synth | index-dsec | prepare-cityscapes
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

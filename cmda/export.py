"""A trained network outside the trainer: `cmda.load_model` for Python, `cmda export` for other tools.

`load_model(path)` reads a checkpoint folder (or its `latest` pointer, a work dir, a folder written by
`cmda import-checkpoint`) or a `.safetensors` file written by `cmda export` with its config beside it, and
returns the network in eval mode with its validated config; `model.predict(image, second_modality)` then
gives full-resolution logits. `export_weights` writes the network's tensors alone as safetensors (no
optimizer, RNG or translator state: safetensors holds tensors only and loads without unpickling anything)
and the config as YAML next to it (`model.safetensors` -> `model.yaml`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from cmda.config import Config

NETWORKS = {"student": "model", "teacher": "teacher"}
"""Which network of a checkpoint: the student (what training evaluates) or the EMA teacher."""
SAFETENSORS_SUFFIX = ".safetensors"


def config_beside(weights: Path) -> Path:
    """Where `cmda export` puts the config of a weights file: same name, `.yaml`."""
    return weights.with_suffix(".yaml")


def checkpoint_weights(
    path: str | os.PathLike[str], network: str = "student"
) -> tuple[dict[str, Any], Config]:
    """(state dict of `network`, config) of a checkpoint folder, `latest` pointer or work dir."""
    from cmda.checkpoint import CONFIG_FILE, checkpoint_dir_of, load_checkpoint
    from cmda.config import config_from_dict

    if network not in NETWORKS:
        raise ValueError(f"network must be one of {sorted(NETWORKS)}, got {network!r}")
    folder = checkpoint_dir_of(path)
    state = load_checkpoint(folder)
    config = config_from_dict(state["config"], source=str(folder / CONFIG_FILE))
    return state[NETWORKS[network]], config


def load_model(
    path: str | os.PathLike[str], weights: str = "student", device: str = "cpu"
) -> tuple[nn.Module, Config]:
    """The network of a checkpoint (folder or exported `.safetensors`) in eval mode on `device`, and its
    config. `weights` picks the student or the EMA teacher of a checkpoint folder."""
    from cmda.models.segmentor import build_model
    from cmda.models.weights import load_strict
    from cmda.train import resolve_device

    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        from cmda.config import load_config

        config = load_config(config_beside(path))
        state = load_file(str(path))
    else:
        state, config = checkpoint_weights(path, weights)
    model = build_model(config)
    load_strict(model, state, path)
    return model.to(resolve_device(device)).eval(), config


def export_weights(
    checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], weights: str = "student"
) -> tuple[Path, Path]:
    """Write the network's tensors as safetensors at `out` and its config as YAML beside it."""
    from safetensors.torch import save_file

    from cmda.config import save_config
    from cmda.io import atomic_path

    out = Path(out)
    if out.suffix != SAFETENSORS_SUFFIX:
        raise ValueError(f"--out {out}: the file name must end in {SAFETENSORS_SUFFIX}")
    state, config = checkpoint_weights(checkpoint, weights)
    metadata = {
        "format": "pt",
        "network": weights,
        "target": config.target.name,
        "backbone": config.model.backbone,
        "source": str(Path(checkpoint).resolve()),
        "config": config_beside(out).name,
    }
    tensors = {key: value.contiguous() for key, value in state.items()}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return out, save_config(config, config_beside(out))


def add_export_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a checkpoint's network as .safetensors (weights only) with its config as YAML"
    )
    parser.add_argument("checkpoint", help="checkpoint folder, `latest` file or work_dir")
    parser.add_argument("--out", required=True, type=Path, help="the .safetensors file to write")
    parser.add_argument("--weights", choices=tuple(NETWORKS), default="student", help="which network")
    parser.set_defaults(func=run_export_command)


def run_export_command(args: argparse.Namespace) -> int:
    weights, config = export_weights(args.checkpoint, args.out, args.weights)
    print(f"wrote {weights} and {config}")
    return 0

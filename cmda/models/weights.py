"""Reading weight files and loading them into a model that is already built.

Models are always built bare (random init); weights are loaded afterwards, and only where they are
needed: ImageNet MiT and CycleGAN files when a training run starts from scratch, never on resume or in
`cmda test`, whose checkpoints hold every weight. So a checkpoint can be evaluated or resumed on a
machine that never had the files the run started from.

File reading is timm's (`timm.models.load_state_dict`: `weights_only` torch.load, unwraps `state_dict` /
`model`, strips `module.` prefixes); key and shape checking is PyTorch's strict `load_state_dict`, whose
message names every missing, unexpected and wrongly shaped key. Errors here add the file's name.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import Tensor, nn


def read_state_dict(path: str | os.PathLike[str], missing_hint: str) -> dict[str, Tensor]:
    """The tensors of a weights file; a missing file names it and says where to get it (`missing_hint`)."""
    from timm.models import load_state_dict

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (resolved {path.resolve()}). {missing_hint}")
    try:
        state_dict = load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as error:  # re-raised with the file named
        raise ValueError(f"could not read weights file {path}: {error}") from error
    if not isinstance(state_dict, dict):
        raise ValueError(f"weights file {path}: expected a dict of tensors, got {type(state_dict).__name__}")
    return {str(k): v for k, v in state_dict.items() if isinstance(v, Tensor)}


def load_strict(
    module: nn.Module, state_dict: dict[str, Tensor], path: str | os.PathLike[str], strict: bool = True
) -> tuple[list[str], list[str]]:
    """`module.load_state_dict` (strict by default); its error, which names keys and shapes, gains the file.

    Returns (missing, unexpected) key lists (empty when strict)."""
    try:
        result = module.load_state_dict(state_dict, strict=strict)
    except RuntimeError as error:
        raise ValueError(f"{path} does not fit {type(module).__name__}: {error}") from None
    return sorted(result.missing_keys), sorted(result.unexpected_keys)

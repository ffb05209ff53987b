"""The CMDA trainer (docs/ARCHITECTURE.md). From Python: `model, config = cmda.load_model(checkpoint)`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from cmda.config import Config


def load_model(
    path: str | os.PathLike[str], weights: str = "student", device: str = "cpu"
) -> tuple[nn.Module, Config]:
    """(network in eval mode, its config) of a checkpoint folder, `latest` file or work dir, or of a
    `.safetensors` file written by `cmda export`; `weights` = "student" or "teacher" (see `cmda.export`).
    Importing `cmda` stays light: torch loads on the first call."""
    from cmda.export import load_model as load

    return load(path, weights, device)

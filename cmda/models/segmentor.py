"""CMDASegmentor: image backbone + event backbone (also encodes ISR) + fusion + one shared DAFormer decoder.

One forward returns the logits of every branch present and the per-stage features of each, so the UDA
step's feature-alignment losses can hook in without re-running the encoders. ``encode``/``decode`` are
exposed separately so the EMA teacher can run only what it needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmda.models.daformer_head import DAFormerHead
from cmda.models.fusion import build_fusion
from cmda.models.mit import build_mit, load_official_mit

BRANCHES = ("image", "events", "fusion", "isr")


@dataclass
class SegmentorOutput:
    """Logits (1/4 input size) and 4-stage features, keyed by branch ("image", "events", "fusion", "isr")."""

    logits: dict[str, Tensor] = field(default_factory=dict)
    features: dict[str, list[Tensor]] = field(default_factory=dict)


def is_unset(value: str | os.PathLike[str] | None) -> bool:
    """``None``, ``""``, ``"none"`` and ``"null"`` all mean "no weights file" in configs."""
    return value is None or str(value).strip().lower() in ("", "none", "null")


def resolve_pretrained(pretrained: str | os.PathLike[str] | None) -> Path | None:
    """Unset (see `is_unset`) means train from scratch; anything else must be an existing file."""
    if is_unset(pretrained):
        return None
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained MiT weights not found: {path} (resolved {path.resolve()}). Put the NVlabs SegFormer "
            "ImageNet-1k file (mit_b0.pth .. mit_b5.pth, linked from the NVlabs/SegFormer README) into "
            "pretrained/ as described in pretrained/README.md, or set model.pretrained: none (train from "
            "scratch)."
        )
    return path


def load_checkpoint_file(path: Path) -> dict[str, object]:
    """Load a tensor-only checkpoint safely (``weights_only``), naming the file on failure."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # re-raised with the file named
        raise ValueError(f"could not read checkpoint {path}: {error}") from error
    if not isinstance(loaded, dict):
        raise ValueError(f"checkpoint {path}: expected a dict of tensors, got {type(loaded).__name__}")
    return loaded


class CMDASegmentor(nn.Module):
    """The CMDA network (see docs/ARCHITECTURE.md, ``cmda.models``)."""

    def __init__(
        self,
        backbone: str = "mit_b5",
        num_classes: int = 19,
        event_channels: int = 3,
        pretrained: str | os.PathLike[str] | None = None,
        drop_path_rate: float = 0.1,
        fusion: str = "attention_avg",
        decoder_channels: int = 256,
    ) -> None:
        super().__init__()
        self.event_channels = event_channels
        self.backbone_image = build_mit(backbone, in_chans=3, drop_path_rate=drop_path_rate)
        self.backbone_events = build_mit(backbone, in_chans=event_channels, drop_path_rate=drop_path_rate)
        embed_dims = self.backbone_image.embed_dims
        self.fusion = build_fusion(fusion, embed_dims)
        self.decode_head = DAFormerHead(embed_dims, num_classes=num_classes, channels=decoder_channels)
        weights_path = resolve_pretrained(pretrained)
        if weights_path is not None:
            state_dict = load_checkpoint_file(weights_path)
            for module in (self.backbone_image, self.backbone_events):
                try:
                    load_official_mit(module, state_dict, strict=True)
                except ValueError as error:
                    raise ValueError(f"{weights_path} does not fit backbone {backbone!r}: {error}") from error

    def _as_event_input(self, x: Tensor, name: str) -> Tensor:
        """ISR images are 3-channel; with N event bins they are averaged and repeated to N channels."""
        if x.shape[1] == self.event_channels:
            return x
        if name == "isr":
            return x.mean(dim=1, keepdim=True).expand(-1, self.event_channels, -1, -1)
        raise ValueError(f"{name} must have {self.event_channels} channels, got shape {tuple(x.shape)}")

    def encode(
        self, image: Tensor, events: Tensor | None = None, isr: Tensor | None = None
    ) -> dict[str, list[Tensor]]:
        """Features per branch; "fusion" is present whenever events are given. Inputs are detached."""
        features = {"image": self.backbone_image(image.detach())}
        if events is not None:
            features["events"] = self.backbone_events(self._as_event_input(events.detach(), "events"))
            features["fusion"] = self.fusion(features["image"], features["events"])
        if isr is not None:
            features["isr"] = self.backbone_events(self._as_event_input(isr.detach(), "isr"))
        return features

    def decode(self, features: dict[str, list[Tensor]]) -> dict[str, Tensor]:
        """Logits at 1/4 input size per branch; Dropout2d only on the image path, as in CMDA."""
        unknown = set(features) - set(BRANCHES)
        if unknown:
            raise ValueError(f"unknown feature branches {sorted(unknown)}; expected among {BRANCHES}")
        return {name: self.decode_head(feats, dropout=name == "image") for name, feats in features.items()}

    def forward(
        self, image: Tensor, events: Tensor | None = None, isr: Tensor | None = None
    ) -> SegmentorOutput:
        features = self.encode(image, events, isr)
        return SegmentorOutput(logits=self.decode(features), features=features)

    def predict(self, image: Tensor, events: Tensor | None = None) -> Tensor:
        """Fusion logits (image logits without events) bilinearly resized to the input size."""
        features = self.encode(image, events)
        branch = "fusion" if events is not None else "image"
        logits = self.decode_head(features[branch], dropout=False)
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)

    def named_parameter_kinds(self) -> Iterator[tuple[str, nn.Parameter, bool, bool]]:
        """(name, parameter, is_head, no_decay) following the original's paramwise rule."""
        for name, parameter in self.named_parameters():
            if parameter.requires_grad:
                yield name, parameter, name.startswith("decode_head."), "norm" in name

    def param_groups(
        self, lr: float, weight_decay: float, head_lr_mult: float = 10.0
    ) -> list[dict[str, object]]:
        """Optimizer groups: ``decode_head.*`` at lr x ``head_lr_mult``; names with ``norm`` get no decay."""
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for _, parameter, is_head, no_decay in self.named_parameter_kinds():
            groups.setdefault((is_head, no_decay), []).append(parameter)
        return [
            {
                "params": params,
                "lr": lr * (head_lr_mult if is_head else 1.0),
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
            for (is_head, no_decay), params in sorted(groups.items())
        ]

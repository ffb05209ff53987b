"""CMDASegmentor: image backbone + event backbone (also encodes ISR) + fusion + one shared DAFormer decoder.

One forward returns the logits of every branch present and the per-stage features of each, so the UDA
step's feature-alignment losses can hook in without re-running the encoders. ``encode``/``decode`` are
exposed separately so the EMA teacher can run only what it needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import Tensor, nn

from cmda.models import checkpointing
from cmda.models.cpu_kernels import resize_bilinear
from cmda.models.daformer_head import DAFormerHead
from cmda.models.fusion import build_fusion
from cmda.models.mit import build_mit, load_official_mit
from cmda.models.weights import read_state_dict

if TYPE_CHECKING:
    from cmda.config import Config

BRANCHES = ("image", "events", "fusion", "isr")


@dataclass
class SegmentorOutput:
    """Logits (1/4 input size) and 4-stage features, keyed by branch ("image", "events", "fusion", "isr")."""

    logits: dict[str, Tensor] = field(default_factory=dict)
    features: dict[str, list[Tensor]] = field(default_factory=dict)


MIT_WEIGHTS_HINT = (
    "Put the NVlabs SegFormer ImageNet-1k file (mit_b0.pth .. mit_b5.pth, linked from the NVlabs/SegFormer "
    "README) into pretrained/ as described in pretrained/README.md, or set model.pretrained: none (train "
    "from scratch)."
)


class CMDASegmentor(nn.Module):
    """The CMDA network (see docs/ARCHITECTURE.md, ``cmda.models``), built bare: ImageNet weights are
    loaded afterwards with `load_pretrained`, only when a run starts from scratch.

    ``fuse_with`` names the second modality ("events" or "isr"): the input the fusion module combines with
    the image. The second backbone (``backbone_events``, the original's name) encodes events and ISR alike.
    """

    def __init__(
        self,
        backbone: str = "mit_b5",
        num_classes: int = 19,
        second_channels: int = 3,
        drop_path_rate: float = 0.1,
        fusion: str = "attention_avg",
        decoder_channels: int = 256,
        fuse_with: str = "events",
        activation_checkpointing: str = "off",
    ) -> None:
        super().__init__()
        if fuse_with not in ("events", "isr"):
            raise ValueError(f"fuse_with must be 'events' or 'isr', got {fuse_with!r}")
        self.backbone_name = backbone
        self.second_channels = second_channels
        self.fuse_with = fuse_with
        self.backbone_image = build_mit(backbone, in_chans=3, drop_path_rate=drop_path_rate)
        self.backbone_events = build_mit(backbone, in_chans=second_channels, drop_path_rate=drop_path_rate)
        embed_dims = self.backbone_image.embed_dims
        self.fusion = build_fusion(fusion, embed_dims)
        self.decode_head = DAFormerHead(embed_dims, num_classes=num_classes, channels=decoder_channels)
        self.set_activation_checkpointing(activation_checkpointing)

    def set_activation_checkpointing(self, mode: str) -> None:
        """"off", "blocks" or "stages" for both backbones, the fusion and the decoder
        (`cmda.models.checkpointing`); the same losses and gradients, less memory, more compute."""
        self.activation_checkpointing = checkpointing.check_mode(mode)
        for module in (self.backbone_image, self.backbone_events, self.fusion, self.decode_head):
            if hasattr(module, "checkpointing"):
                module.checkpointing = mode

    def load_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Load an NVlabs ImageNet MiT file into both backbones (the event stem adapted); strict."""
        state_dict = read_state_dict(path, MIT_WEIGHTS_HINT)
        for module in (self.backbone_image, self.backbone_events):
            load_official_mit(
                module, state_dict, strict=True, source=f"{path} (backbone {self.backbone_name})"
            )

    def _as_second_input(self, x: Tensor, name: str) -> Tensor:
        """ISR images are 3-channel; with N event bins they are averaged and repeated to N channels."""
        if x.shape[1] == self.second_channels:
            return x
        if name == "isr":
            return x.mean(dim=1, keepdim=True).expand(-1, self.second_channels, -1, -1)
        raise ValueError(f"{name} must have {self.second_channels} channels, got shape {tuple(x.shape)}")

    def encode(
        self, image: Tensor, events: Tensor | None = None, isr: Tensor | None = None
    ) -> dict[str, list[Tensor]]:
        """Features per branch; "fusion" is present whenever the `fuse_with` input is given. Inputs are
        detached."""
        features = {"image": self.backbone_image(image.detach())}
        if events is not None:
            features["events"] = self.backbone_events(self._as_second_input(events.detach(), "events"))
        if isr is not None:
            features["isr"] = self.backbone_events(self._as_second_input(isr.detach(), "isr"))
        if self.fuse_with in features:
            features["fusion"] = self.fusion(features["image"], features[self.fuse_with])
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

    def fused_logits(self, image: Tensor, second_modality: Tensor) -> Tensor:
        """Fusion-branch logits (1/4 size) of the image with any second input through the second backbone
        (events or ISR: the original's teacher fuses the night image with either)."""
        first = self.backbone_image(image.detach())
        other = self.backbone_events(self._as_second_input(second_modality.detach(), "isr"))
        return self.decode({"fusion": self.fusion(first, other)})["fusion"]

    def predict(self, image: Tensor, second_modality: Tensor | None = None) -> Tensor:
        """Fusion logits (image logits without a second input) bilinearly resized to the input size."""
        if second_modality is None:
            logits = self.decode_head(self.backbone_image(image), dropout=False)
        else:
            logits = self.fused_logits(image, second_modality)
        return resize_bilinear(logits, image.shape[-2:])

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


def build_model(config: Config) -> CMDASegmentor:
    """The bare segmentor (random init) for this config and target; weights are loaded separately.

    It lives beside the segmentor, not in the trainer, so that the weight checks and the checkpoint import
    build the network without importing the training loop (`cmda.train` re-exports it)."""
    return CMDASegmentor(
        backbone=config.model.backbone,
        num_classes=config.model.num_classes,
        second_channels=config.data.target.second_channels,
        drop_path_rate=config.model.drop_path_rate,
        fusion=config.model.fusion,
        decoder_channels=config.model.decoder_channels,
        fuse_with=config.target.second_modality,
        activation_checkpointing=config.model.activation_checkpointing,
    )

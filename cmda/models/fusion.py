"""Per-stage fusion of image and event (or ISR) features, built for any backbone's stage widths.

* ``AttentionAvgFusion`` (CMDA's default): one MiT Block refines the image tokens, another the event tokens,
  and the two results are averaged.
* ``AttentionFusion`` (the ISR / Dark-Zurich variant): concatenate channels, one Block over 2C, then a
  Mix-FFN 2C -> C -> C projects back to C.
* ``AverageFusion``: the parameter-free baseline (a+b)/2, handy for ablations.

The fusion Blocks keep PyTorch's default init, as the original does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cmda.models import checkpointing
from cmda.models.mit import Block, MixFFN, map_to_tokens, tokens_to_feature_map

FUSION_SR_RATIOS = (8, 4, 2, 1)


def _check_pair(image: Sequence[Tensor], second_modality: Sequence[Tensor], stages: int) -> None:
    if len(image) != stages or len(second_modality) != stages:
        raise ValueError(
            f"fusion expects {stages} maps per modality, got {len(image)} and {len(second_modality)}"
        )
    for stage, (a, b) in enumerate(zip(image, second_modality, strict=True)):
        if a.shape != b.shape:
            raise ValueError(f"fusion stage {stage}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def _fusion_block(dim: int, sr_ratio: int, drop_path: float) -> Block:
    return Block(dim, num_heads=1, mlp_ratio=4.0, sr_ratio=sr_ratio, drop_path=drop_path)


class StagewiseFusion(nn.Module):
    """A fusion that combines the two modalities stage by stage (`stage`), each stage one checkpointing
    piece of kind "stages" (`cmda.models.checkpointing`); `checkpointing` is set by the segmentor."""

    embed_dims: list[int]
    checkpointing = "off"

    def forward(self, image: Sequence[Tensor], second_modality: Sequence[Tensor]) -> list[Tensor]:
        _check_pair(image, second_modality, len(self.embed_dims))
        return [
            checkpointing.run(self.checkpointing, "stages", self, self.stage, x_a, x_b, stage)
            for stage, (x_a, x_b) in enumerate(zip(image, second_modality))
        ]

    def stage(self, x_a: Tensor, x_b: Tensor, stage: int) -> Tensor:
        raise NotImplementedError


class AttentionAvgFusion(StagewiseFusion):
    """y_i = (Block_img_i(x_img_i) + Block_evt_i(x_evt_i)) / 2 for every stage i."""

    def __init__(
        self, embed_dims: Sequence[int], sr_ratios: Sequence[int] = FUSION_SR_RATIOS, drop_path: float = 0.05
    ) -> None:
        super().__init__()
        self.embed_dims = list(embed_dims)
        self.image_blocks = nn.ModuleList(
            _fusion_block(d, r, drop_path) for d, r in zip(embed_dims, sr_ratios)
        )
        self.event_blocks = nn.ModuleList(
            _fusion_block(d, r, drop_path) for d, r in zip(embed_dims, sr_ratios)
        )

    def stage(self, x_img: Tensor, x_evt: Tensor, stage: int) -> Tensor:
        height, width = x_img.shape[-2:]
        mode = self.checkpointing
        block_img, block_evt = self.image_blocks[stage], self.event_blocks[stage]
        tokens = 0.5 * (
            checkpointing.run(mode, "blocks", block_img, block_img, map_to_tokens(x_img), height, width)
            + checkpointing.run(mode, "blocks", block_evt, block_evt, map_to_tokens(x_evt), height, width)
        )
        return tokens_to_feature_map(tokens, height, width)


class AttentionFusion(StagewiseFusion):
    """y_i = MixFFN_{2C->C->C}(Block_2C(concat(x_a_i, x_b_i))) per stage i (no residual after the Block)."""

    def __init__(
        self, embed_dims: Sequence[int], sr_ratios: Sequence[int] = FUSION_SR_RATIOS, drop_path: float = 0.05
    ) -> None:
        super().__init__()
        self.embed_dims = list(embed_dims)
        self.blocks = nn.ModuleList(_fusion_block(2 * d, r, drop_path) for d, r in zip(embed_dims, sr_ratios))
        self.projections = nn.ModuleList(MixFFN(2 * d, d, d) for d in embed_dims)

    def stage(self, x_a: Tensor, x_b: Tensor, stage: int) -> Tensor:
        height, width = x_a.shape[-2:]
        mode = self.checkpointing
        block, projection = self.blocks[stage], self.projections[stage]
        tokens = map_to_tokens(torch.cat([x_a, x_b], dim=1))
        tokens = checkpointing.run(mode, "blocks", block, block, tokens, height, width)
        tokens = checkpointing.run(mode, "blocks", projection, projection, tokens, height, width)
        return tokens_to_feature_map(tokens, height, width)


class AverageFusion(nn.Module):
    """y_i = (x_a_i + x_b_i) / 2: no parameters."""

    def __init__(self, embed_dims: Sequence[int]) -> None:
        super().__init__()
        self.embed_dims = list(embed_dims)

    def forward(self, image: Sequence[Tensor], second_modality: Sequence[Tensor]) -> list[Tensor]:
        _check_pair(image, second_modality, len(self.embed_dims))
        return [0.5 * (a + b) for a, b in zip(image, second_modality)]


FUSIONS: dict[str, type[nn.Module]] = {
    "attention_avg": AttentionAvgFusion,
    "attention": AttentionFusion,
    "average": AverageFusion,
}


def build_fusion(name: str, embed_dims: Sequence[int]) -> nn.Module:
    """Fusion module by name (``attention_avg`` | ``attention`` | ``average``) for the given stage widths."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; expected one of {sorted(FUSIONS)}")
    return FUSIONS[name](embed_dims)

"""DAFormer decoder (context-aware fusion with a separable ASPP), shareable by several CMDA branches.

CMDA runs ONE decoder over the image, event, fusion and ISR features; only the image path applies
Dropout2d before the classifier, so ``forward`` takes ``dropout`` explicitly instead of relying on
``self.training`` alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmda.models import checkpointing
from cmda.models.cpu_kernels import DilatedDepthwiseConv2d, resize_bilinear


class ConvBNReLU(nn.Sequential):
    """Conv (no bias, BN follows) -> BatchNorm -> ReLU, Kaiming-initialised as mmcv's ConvModule."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, groups: int = 1
    ) -> None:
        padding = dilation * (kernel_size // 2)
        super().__init__()
        if groups == in_channels == out_channels and dilation > 1:
            self.conv: nn.Conv2d = DilatedDepthwiseConv2d(in_channels, kernel_size, dilation)
        else:
            self.conv = nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=False,
            )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)


class ChannelLinear(nn.Linear):
    """A Linear over the channels of a [B, C, H, W] map, run as a 1x1 convolution with the same weight: the
    map stays in its layout and needs no token transposes (same products, same parameters and keys)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


class DepthwiseSeparableConvBNReLU(nn.Sequential):
    """Dilated depthwise 3x3 (+BN+ReLU) then pointwise 1x1 (+BN+ReLU): a cheap wide-receptive-field branch."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__()
        self.depthwise = ConvBNReLU(in_channels, in_channels, 3, dilation=dilation, groups=in_channels)
        self.pointwise = ConvBNReLU(in_channels, out_channels, 1)


class SepASPP(nn.Module):
    """Parallel branches at dilations (1, 6, 12, 18), concatenated and fused by a 3x3 bottleneck."""

    def __init__(self, in_channels: int, channels: int, dilations: Sequence[int] = (1, 6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            ConvBNReLU(in_channels, channels, 1)
            if d == 1
            else DepthwiseSeparableConvBNReLU(in_channels, channels, d)
            for d in dilations
        )
        self.bottleneck = ConvBNReLU(len(dilations) * channels, channels, 3)
        self.checkpointing = "off"  # cmda.models.checkpointing: "blocks" recomputes each branch

    def forward(self, x: Tensor) -> Tensor:
        mode = self.checkpointing
        branches = [checkpointing.run(mode, "blocks", branch, branch, x) for branch in self.branches]
        return checkpointing.run(mode, "blocks", self.bottleneck, self.bottleneck, torch.cat(branches, dim=1))


class DAFormerHead(nn.Module):
    """Per-stage linear embed -> upsample to 1/4 -> concat [c1..c4] -> SepASPP -> (dropout) -> 1x1 classifier.

    Logits come out at the resolution of the first (stride-4) feature map.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int = 19,
        channels: int = 256,
        dropout_ratio: float = 0.1,
        dilations: Sequence[int] = (1, 6, 12, 18),
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.num_classes = num_classes
        self.embed = nn.ModuleList(ChannelLinear(c, channels) for c in self.in_channels)
        self.fuse = SepASPP(len(self.in_channels) * channels, channels, dilations)
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    @property
    def checkpointing(self) -> str:
        """`cmda.models.checkpointing` mode: "blocks" recomputes each ASPP branch, "stages" the whole head."""
        return self.fuse.checkpointing

    @checkpointing.setter
    def checkpointing(self, mode: str) -> None:
        self.fuse.checkpointing = mode

    def forward(self, features: Sequence[Tensor], dropout: bool = True) -> Tensor:
        """Decode 4 feature maps; ``dropout`` enables Dropout2d (it is still inactive in eval mode)."""
        if len(features) != len(self.embed):
            raise ValueError(f"DAFormerHead expects {len(self.embed)} feature maps, got {len(features)}")
        return checkpointing.run(self.checkpointing, "stages", self, self.decode, *features, dropout=dropout)

    def decode(self, *features: Tensor, dropout: bool = True) -> Tensor:
        target_size = features[0].shape[-2:]
        embedded = []
        for feature, embed in zip(features, self.embed, strict=True):
            x = embed(feature)
            if x.shape[-2:] != target_size:
                x = resize_bilinear(x, target_size)
            embedded.append(x)
        x = self.fuse(torch.cat(embedded, dim=1))
        if dropout:
            x = self.dropout(x)
        return self.conv_seg(x)

"""SegFormer Mix Transformer (MiT) encoder, mit_b0..mit_b5, written for modern PyTorch.

timm has no MiT, so the model is ours; only timm's generic layers (DropPath, trunc_normal_) are reused.
Module names deliberately equal the NVlabs checkpoint keys (``patch_embed1.proj``, ``block1.0.attn.kv``,
``norm1`` ...) so that loading the official ImageNet weights is an identity mapping and the loader only has
to validate keys/shapes and adapt the stem for event inputs with a different channel count.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import Tensor, nn

from cmda.models import checkpointing

#: Blocks and stage-end norms use eps 1e-6 as in the original; patch-embed and attn.sr norms keep 1e-5.
BlockNorm = partial(nn.LayerNorm, eps=1e-6)


@dataclass(frozen=True)
class MiTConfig:
    """Hyper-parameters of one MiT size (published SegFormer values)."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratios: tuple[int, int, int, int] = (4, 4, 4, 4)


_WIDE = (64, 128, 320, 512)

#: Registry of named variants, timm style: name -> config.
MIT_CONFIGS: dict[str, MiTConfig] = {
    "mit_b0": MiTConfig(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "mit_b1": MiTConfig(embed_dims=_WIDE, depths=(2, 2, 2, 2)),
    "mit_b2": MiTConfig(embed_dims=_WIDE, depths=(3, 4, 6, 3)),
    "mit_b3": MiTConfig(embed_dims=_WIDE, depths=(3, 4, 18, 3)),
    "mit_b4": MiTConfig(embed_dims=_WIDE, depths=(3, 8, 27, 3)),
    "mit_b5": MiTConfig(embed_dims=_WIDE, depths=(3, 6, 40, 3)),
}


FEATURE_LAYOUTS: dict[str, torch.memory_format] = {
    "cpu": torch.contiguous_format,
    "cuda": torch.contiguous_format,
}
"""Memory layout of the feature maps handed to convolutions outside a block (stage outputs, fusion outputs),
per device type. CPU: contiguous, chosen by measurement (oneDNN's convolution backward is much slower on
channels_last-strided maps; benchmarks/README.md). CUDA: contiguous as well, NOT measured yet
(`benchmarks/model_step.py --channels-last` compares both where a GPU exists)."""


def feature_layout(device: torch.device) -> torch.memory_format:
    """The layout of `FEATURE_LAYOUTS` for a device (contiguous for device types it does not name)."""
    return FEATURE_LAYOUTS.get(device.type, torch.contiguous_format)


def tokens_to_map(tokens: Tensor, height: int, width: int) -> Tensor:
    """[B, H*W, C] tokens -> [B, C, H, W] map without a copy (the result is channels_last-strided).

    For the convolutions inside a block (spatial reduction, depthwise conv), where the view is as fast.
    ``reshape``/``permute`` instead of ``view`` so non-contiguous (channels_last) inputs never break.
    """
    batch, _, channels = tokens.shape
    return tokens.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


def tokens_to_feature_map(tokens: Tensor, height: int, width: int) -> Tensor:
    """[B, H*W, C] tokens -> a [B, C, H, W] feature map in the device's layout (`FEATURE_LAYOUTS`): the one
    rule for every map that leaves a block (stage outputs, fusion outputs)."""
    return tokens_to_map(tokens, height, width).contiguous(memory_format=feature_layout(tokens.device))


def map_to_tokens(feature_map: Tensor) -> Tensor:
    """[B, C, H, W] map -> [B, H*W, C] tokens."""
    return feature_map.flatten(2).transpose(1, 2)


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping windows (k7/s4 for the stem, k3/s2 later) followed by LayerNorm."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)  # eps 1e-5, as the original

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(map_to_tokens(x)), height, width


class EfficientAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a spatially reduced token map (sr_ratio R).

    The reduction (a k=R, s=R conv + LayerNorm) is what makes attention affordable at stride 4.
    The attention itself runs through ``F.scaled_dot_product_attention`` (fused kernels on GPU).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"attention dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)  # rows [:dim] are K, rows [dim:] are V
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)  # eps 1e-5, as the original

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        batch, tokens, dim = x.shape
        q = self.q(x).reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            reduced = self.norm(map_to_tokens(self.sr(tokens_to_map(x, height, width))))
        else:
            reduced = x
        kv = self.kv(reduced).reshape(batch, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )
        out = out.transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(self.proj(out))


class DWConv(nn.Module):
    """3x3 depthwise conv on tokens; the wrapper exists so the key is ``mlp.dwconv.dwconv`` as in NVlabs."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        return map_to_tokens(self.dwconv(tokens_to_map(x, height, width)))


class MixFFN(nn.Module):
    """fc1 -> dw 3x3 -> GELU -> fc2; the depthwise conv leaks position, replacing position embeddings."""

    def __init__(
        self, in_features: int, hidden_features: int, out_features: int | None = None, drop: float = 0.0
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = DWConv(hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = self.act(self.dwconv(self.fc1(x), height, width))
        return self.drop(self.fc2(self.drop(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MixFFN(LN(x))).

    Also reused by the fusion modules (``cmda.models.fusion``), which is why it lives beside the model.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = BlockNorm(dim)
        self.attn = EfficientAttention(dim, num_heads, sr_ratio, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = BlockNorm(dim)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), height, width))
        return x + self.drop_path(self.mlp(self.norm2(x), height, width))


def init_mit_weights(module: nn.Module) -> None:
    """The original MiT init: trunc-normal(.02) Linear, unit LayerNorm, He-normal (fan_out/groups) Conv2d."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        module.weight.data.normal_(0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def linear_drop_path_rates(max_rate: float, count: int) -> list[float]:
    """``linspace(0, max_rate, count)`` in plain Python, so building on the meta device works too."""
    if count == 1:
        return [0.0]
    return [max_rate * i / (count - 1) for i in range(count)]


class MixVisionTransformer(nn.Module):
    """Four-stage hierarchical encoder returning feature maps at strides 4, 8, 16 and 32."""

    def __init__(self, config: MiTConfig, in_chans: int = 3, drop_path_rate: float = 0.1) -> None:
        super().__init__()
        self.config = config
        self.in_chans = in_chans
        self.checkpointing = "off"  # cmda.models.checkpointing: "off", "blocks" (each block), "stages"
        self.embed_dims: list[int] = list(config.embed_dims)
        # stochastic depth grows linearly over ALL blocks of all stages, as in the original
        rates = linear_drop_path_rates(drop_path_rate, sum(config.depths))
        first = 0
        previous_dim = in_chans
        for stage, (dim, depth) in enumerate(zip(config.embed_dims, config.depths, strict=True), start=1):
            patch, stride = (7, 4) if stage == 1 else (3, 2)
            self.add_module(f"patch_embed{stage}", OverlapPatchEmbed(previous_dim, dim, patch, stride))
            blocks = nn.ModuleList(
                Block(
                    dim,
                    config.num_heads[stage - 1],
                    config.mlp_ratios[stage - 1],
                    config.sr_ratios[stage - 1],
                    drop_path=rates[first + j],
                )
                for j in range(depth)
            )
            self.add_module(f"block{stage}", blocks)
            self.add_module(f"norm{stage}", BlockNorm(dim))
            first += depth
            previous_dim = dim
        self.apply(init_mit_weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"MiT expects input [B, {self.in_chans}, H, W], got {tuple(x.shape)}")
        outputs: list[Tensor] = []
        for stage in range(1, 5):
            x = checkpointing.run(self.checkpointing, "stages", self, self.stage, x, stage)
            outputs.append(x)
        return outputs

    def stage(self, x: Tensor, stage: int) -> Tensor:
        """Stage 1..4: patch embedding, the blocks, the stage norm; returns the stage's feature map."""
        tokens, height, width = getattr(self, f"patch_embed{stage}")(x)
        for block in getattr(self, f"block{stage}"):
            tokens = checkpointing.run(self.checkpointing, "blocks", block, block, tokens, height, width)
        tokens = getattr(self, f"norm{stage}")(tokens)
        return tokens_to_feature_map(tokens, height, width)


def build_mit(name: str, in_chans: int = 3, drop_path_rate: float = 0.1) -> MixVisionTransformer:
    """Build a named MiT variant (``mit_b0`` .. ``mit_b5``) with the original random init."""
    if name not in MIT_CONFIGS:
        raise ValueError(f"unknown MiT backbone {name!r}; expected one of {sorted(MIT_CONFIGS)}")
    return MixVisionTransformer(MIT_CONFIGS[name], in_chans=in_chans, drop_path_rate=drop_path_rate)


STEM_KEY = "patch_embed1.proj.weight"


def adapt_stem_weight(weight: Tensor, in_chans: int) -> Tensor:
    """Adapt an RGB stem kernel [C, 3, k, k] to ``in_chans`` input channels.

    Rule: average the kernel over its input channels, repeat it ``in_chans`` times and scale by
    ``3 / in_chans``. A spatially constant input of value c then produces exactly the same response as the
    RGB stem gives for the constant image (c, c, c), so pretrained statistics downstream stay calibrated
    whatever the number of event bins.
    """
    source_chans = weight.shape[1]
    if in_chans == source_chans:
        return weight
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_chans, 1, 1) * (source_chans / in_chans)


def load_official_mit(
    model: MixVisionTransformer,
    state_dict: Mapping[str, Tensor],
    strict: bool = True,
    source: str | os.PathLike[str] = "MiT checkpoint",
) -> tuple[list[str], list[str]]:
    """Load an NVlabs ``mit_bX.pth`` state dict (ImageNet classifier ``head.*`` ignored) into ``model``.

    The stem is adapted with :func:`adapt_stem_weight` when ``model.in_chans`` differs from the checkpoint's.
    Keys and shapes are checked by PyTorch's ``load_state_dict`` (``strict`` as given; wrong shapes always
    fail); the ValueError names ``source``. Returns (missing, unexpected) key lists, empty when strict.
    """
    from cmda.models.weights import load_strict

    weights = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
    if STEM_KEY in weights and weights[STEM_KEY].ndim == 4:
        weights[STEM_KEY] = adapt_stem_weight(weights[STEM_KEY], model.in_chans)
    return load_strict(model, weights, source, strict=strict)

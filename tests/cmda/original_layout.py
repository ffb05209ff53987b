"""Checkpoints in the layout the ORIGINAL CMDA code writes, described from its modules (not from ours).

Written from reading XiaRho/CMDA: mmseg/models/backbones/mix_transformer.py (MixVisionTransformer and
mit_b0..b5: patch_embed1..4 = Conv2d `proj` + LayerNorm `norm`; blockN.j = Block: norm1, attn.{q, kv,
proj, [sr, norm] when sr_ratio > 1}, norm2, mlp = Mlp: fc1, dwconv.dwconv (depthwise 3x3), fc2; norm1..4),
fusion/attention_avg_fusion.py (ONE list `basic_block` of 8 Blocks, used in forward as basic_block[2i] on
stage i's image tokens and basic_block[2i+1] on its event tokens), fusion/attention_fusion.py
(`basic_block[i]` a Block over the 2C concatenation, `linear_block[i]` an Mlp 2C -> C -> C),
decode_heads/daformer_head.py (DAFormerHeadFusion: embed_layers_{image,events,fusion}.i = MLP `proj`
Linear, fuse_layer_{...} = ASPPWrapper: aspp_modules.0 a 1x1 ConvModule, aspp_modules.1..3
DepthwiseSeparableConvModule (depthwise_conv, pointwise_conv), bottleneck a 3x3 ConvModule; with
share_decoder the events/fusion entries ARE the image modules), decode_head.py (BaseDecodeHeadFusion:
conv_seg), mmcv's ConvModule (`conv` without bias when a norm follows, BatchNorm named `bn`),
segmentors/encoder_decoder.py (FusionEncoderDecoder: backbone_image, backbone_events, fusion_module,
fusion_isr_module when the config names one, decode_head), uda/dacs.py (DACS: model, ema_model, and
cyclegan_itrd2en for the DSEC train types) and cyclegan/cyclegan_model.py (define_G: pix2pix
ResnetGenerator, 1 -> 1 channel, 64 filters, 9 blocks, instance norm without parameters, conv biases).
mmcv's `save_checkpoint` writes {'meta', 'state_dict', 'optimizer'}; its state dict walks every registered
name, so the shared decoder's aliases appear under each of their names (each a copy, `weights_to_cpu`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch

MIT = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "mit_b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
}
SR_RATIOS = (8, 4, 2, 1)
Shapes = Iterator[tuple[str, tuple[int, ...]]]


def linear(name: str, out: int, inp: int) -> Shapes:
    yield f"{name}.weight", (out, inp)
    yield f"{name}.bias", (out,)


def layer_norm(name: str, dim: int) -> Shapes:
    yield f"{name}.weight", (dim,)
    yield f"{name}.bias", (dim,)


def conv(name: str, out: int, inp: int, k: int, groups: int = 1, bias: bool = True) -> Shapes:
    yield f"{name}.weight", (out, inp // groups, k, k)
    if bias:
        yield f"{name}.bias", (out,)


def conv_module(name: str, out: int, inp: int, k: int, groups: int = 1) -> Shapes:
    """mmcv ConvModule with BN: `conv` (no bias) and `bn` with its buffers."""
    yield from conv(f"{name}.conv", out, inp, k, groups, bias=False)
    yield f"{name}.bn.weight", (out,)
    yield f"{name}.bn.bias", (out,)
    yield f"{name}.bn.running_mean", (out,)
    yield f"{name}.bn.running_var", (out,)
    yield f"{name}.bn.num_batches_tracked", ()


def mlp(name: str, inp: int, hidden: int, out: int) -> Shapes:
    yield from linear(f"{name}.fc1", hidden, inp)
    yield from conv(f"{name}.dwconv.dwconv", hidden, hidden, 3, groups=hidden)
    yield from linear(f"{name}.fc2", out, hidden)


def block(name: str, dim: int, sr_ratio: int) -> Shapes:
    yield from layer_norm(f"{name}.norm1", dim)
    yield from linear(f"{name}.attn.q", dim, dim)
    yield from linear(f"{name}.attn.kv", 2 * dim, dim)
    yield from linear(f"{name}.attn.proj", dim, dim)
    if sr_ratio > 1:
        yield from conv(f"{name}.attn.sr", dim, dim, sr_ratio)
        yield from layer_norm(f"{name}.attn.norm", dim)
    yield from layer_norm(f"{name}.norm2", dim)
    yield from mlp(f"{name}.mlp", dim, 4 * dim, dim)


def mix_transformer(name: str, backbone: str, in_chans: int) -> Shapes:
    dims, depths = MIT[backbone]
    previous = in_chans
    for stage, dim in enumerate(dims, start=1):
        yield from conv(f"{name}.patch_embed{stage}.proj", dim, previous, 7 if stage == 1 else 3)
        yield from layer_norm(f"{name}.patch_embed{stage}.norm", dim)
        previous = dim
    for stage, (dim, depth) in enumerate(zip(dims, depths), start=1):
        for j in range(depth):
            yield from block(f"{name}.block{stage}.{j}", dim, SR_RATIOS[stage - 1])
        yield from layer_norm(f"{name}.norm{stage}", dim)


def attention_avg_fusion(name: str, dims: tuple[int, ...]) -> Shapes:
    for i in range(8):
        yield from block(f"{name}.basic_block.{i}", dims[i // 2], SR_RATIOS[i // 2])


def attention_fusion(name: str, dims: tuple[int, ...]) -> Shapes:
    for i, dim in enumerate(dims):
        yield from block(f"{name}.basic_block.{i}", 2 * dim, SR_RATIOS[i])
    for i, dim in enumerate(dims):
        yield from mlp(f"{name}.linear_block.{i}", 2 * dim, dim, dim)


def daformer_decoder(name: str, branch: str, dims: tuple[int, ...], channels: int) -> Shapes:
    for i, dim in enumerate(dims):
        yield from linear(f"{name}.embed_layers_{branch}.{i}.proj", channels, dim)
    fuse, wide = f"{name}.fuse_layer_{branch}", 4 * channels
    yield from conv_module(f"{fuse}.aspp_modules.0", channels, wide, 1)
    for j in (1, 2, 3):
        yield from conv_module(f"{fuse}.aspp_modules.{j}.depthwise_conv", wide, wide, 3, groups=wide)
        yield from conv_module(f"{fuse}.aspp_modules.{j}.pointwise_conv", channels, wide, 1)
    yield from conv_module(f"{fuse}.bottleneck", channels, wide, 3)


def generator(name: str) -> Shapes:
    yield from conv(f"{name}.model.1", 64, 1, 7)
    yield from conv(f"{name}.model.4", 128, 64, 3)
    yield from conv(f"{name}.model.7", 256, 128, 3)
    for index in range(10, 19):
        yield from conv(f"{name}.model.{index}.conv_block.1", 256, 256, 3)
        yield from conv(f"{name}.model.{index}.conv_block.5", 256, 256, 3)
    yield f"{name}.model.19.weight", (256, 128, 3, 3)  # ConvTranspose2d(256, 128): weight [in, out, k, k]
    yield f"{name}.model.19.bias", (128,)
    yield f"{name}.model.22.weight", (128, 64, 3, 3)
    yield f"{name}.model.22.bias", (64,)
    yield from conv(f"{name}.model.26", 1, 64, 7)


SETTINGS = {
    # train_type cs2dsec_image+events_together: AttentionAvgFusion + an unused fusion_isr_module
    # (AttentionFusion), the CycleGAN translator in the wrapper
    "dsec_night": {"fusion": attention_avg_fusion, "isr_fusion": True, "translator": True},
    # train_type cs2dz_image+raw-isr: AttentionFusion, no translator
    "dark_zurich": {"fusion": attention_fusion, "isr_fusion": False, "translator": False},
}


def segmentor(
    prefix: str, setting: str, backbone: str, channels: int, classes: int, second_in: int
) -> Shapes:
    dims = MIT[backbone][0]
    yield from mix_transformer(f"{prefix}backbone_image", backbone, 3)
    yield from mix_transformer(f"{prefix}backbone_events", backbone, second_in)
    yield from SETTINGS[setting]["fusion"](f"{prefix}fusion_module", dims)
    if SETTINGS[setting]["isr_fusion"]:
        yield from attention_fusion(f"{prefix}fusion_isr_module", dims)
    yield from conv(f"{prefix}decode_head.conv_seg", classes, channels, 1)
    for branch in ("image", "events", "fusion"):
        yield from daformer_decoder(f"{prefix}decode_head", branch, dims, channels)


def _value(key: str, shape: tuple[int, ...], generator_: torch.Generator) -> torch.Tensor:
    if key.endswith("num_batches_tracked"):
        return torch.tensor(40000, dtype=torch.long)
    value = torch.randn(shape, generator=generator_).mul_(0.05)
    return value.abs_().add_(0.5) if key.endswith("running_var") else value


def original_checkpoint(
    setting: str,
    backbone: str = "mit_b0",
    channels: int = 32,
    classes: int = 19,
    second_in: int = 3,
    seed: int = 0,
) -> dict:
    """mmcv's checkpoint dict of the original's DACS wrapper for `setting`, with random values; student
    and teacher differ; the shared decoder's aliases are copies of the image decoder's tensors."""
    rng = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for prefix in ("model.", "ema_model."):
        for key, shape in segmentor(prefix, setting, backbone, channels, classes, second_in):
            twin = re.sub(r"^(.*decode_head\.(embed_layers|fuse_layer))_(events|fusion)\.", r"\1_image.", key)
            if twin != key:  # share_decoder: the same module saved under another name
                state[key] = state[twin].clone()
            else:
                state[key] = _value(key, shape, rng)
    if SETTINGS[setting]["translator"]:
        for key, shape in generator("cyclegan_itrd2en"):
            state[key] = _value(key, shape, rng)
    return {
        "meta": {"iter": 40000, "mmcv_version": "1.3.7", "time": "Tue Feb 21 16:46:00 2023", "CLASSES": ()},
        "state_dict": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 6e-5, "params": [0, 1]}]},
    }

"""Tests of cmda.models: MiT sizes and checkpoint layout, attention, decoder, fusion, segmentor, CycleGAN."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cmda.models import (
    MIT_CONFIGS,
    AttentionFusion,
    AverageFusion,
    CMDASegmentor,
    ResnetGenerator,
    build_mit,
    cpu_kernels,
    load_event_translator,
    load_official_mit,
)
from cmda.models.cpu_kernels import DilatedDepthwiseConv2d, resize_bilinear
from cmda.models.mit import EfficientAttention, MixVisionTransformer, adapt_stem_weight
from cmda.models.weights import read_state_dict

PUBLISHED_ENCODER_PARAMS_M = {
    "mit_b0": 3.3,
    "mit_b1": 13.1,
    "mit_b2": 24.2,
    "mit_b3": 44.0,
    "mit_b4": 60.8,
    "mit_b5": 81.4,
}


@cache
def eval_mit(name: str) -> MixVisionTransformer:
    torch.manual_seed(0)
    return build_mit(name, drop_path_rate=0.0).eval()


def official_keys(name: str) -> set[str]:
    """The NVlabs mit_bX.pth key layout, written out independently of our module tree (minus head.*)."""
    config = MIT_CONFIGS[name]
    keys: set[str] = set()
    for stage in range(1, 5):
        for part in ("proj", "norm"):
            keys |= {f"patch_embed{stage}.{part}.weight", f"patch_embed{stage}.{part}.bias"}
        keys |= {f"norm{stage}.weight", f"norm{stage}.bias"}
        layers = [
            "norm1",
            "attn.q",
            "attn.kv",
            "attn.proj",
            "norm2",
            "mlp.fc1",
            "mlp.dwconv.dwconv",
            "mlp.fc2",
        ]
        if config.sr_ratios[stage - 1] > 1:
            layers += ["attn.sr", "attn.norm"]
        for block in range(config.depths[stage - 1]):
            for layer in layers:
                keys |= {f"block{stage}.{block}.{layer}.weight", f"block{stage}.{block}.{layer}.bias"}
    return keys


@pytest.mark.parametrize("name", sorted(MIT_CONFIGS))
def test_mit_parameter_count_matches_published(name: str) -> None:
    with torch.device("meta"):  # counts parameters without allocating B5's weights
        model = build_mit(name)
    count_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert count_m == pytest.approx(PUBLISHED_ENCODER_PARAMS_M[name], rel=0.01)


@pytest.mark.parametrize("name", sorted(MIT_CONFIGS))
def test_mit_key_layout_is_the_official_one(name: str) -> None:
    with torch.device("meta"):
        model = build_mit(name)
    assert set(model.state_dict()) == official_keys(name)


@pytest.mark.parametrize("name", sorted(MIT_CONFIGS))
@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
def test_mit_output_shapes(name: str, size: tuple[int, int]) -> None:
    model = eval_mit(name)
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, *size))
    assert len(outputs) == 4
    for stride, dim, out in zip((4, 8, 16, 32), model.embed_dims, outputs):
        assert out.shape == (1, dim, math.ceil(size[0] / stride), math.ceil(size[1] / stride))


def test_mit_rejects_wrong_channel_count() -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        eval_mit("mit_b0")(torch.randn(1, 2, 32, 32))


def test_stochastic_depth_is_linear_over_all_blocks() -> None:
    model = build_mit("mit_b2", drop_path_rate=0.1)
    rates = [
        getattr(block.drop_path, "drop_prob", 0.0)
        for stage in range(1, 5)
        for block in getattr(model, f"block{stage}")
    ]
    assert len(rates) == 16
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1)
    assert rates[5] == pytest.approx(0.1 * 5 / 15)


def test_layer_norm_eps_as_original() -> None:
    model = eval_mit("mit_b0")
    assert model.patch_embed1.norm.eps == 1e-5 and model.block1[0].attn.norm.eps == 1e-5
    assert model.block1[0].norm1.eps == 1e-6 and model.block4[0].norm2.eps == 1e-6 and model.norm3.eps == 1e-6


def official_checkpoint(model: MixVisionTransformer) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["head.weight"] = torch.randn(1000, model.embed_dims[-1])
    state["head.bias"] = torch.zeros(1000)
    return state


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_load_official_reproduces_outputs(wrapper: str | None, tmp_path: Path) -> None:
    source = eval_mit("mit_b0")
    checkpoint = official_checkpoint(source)
    path = tmp_path / "mit_b0.pth"
    torch.save(checkpoint if wrapper is None else {wrapper: checkpoint}, path)
    torch.manual_seed(123)
    target = build_mit("mit_b0", drop_path_rate=0.0).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert not torch.allclose(target(x)[3], source(x)[3])
        missing, unexpected = load_official_mit(target, read_state_dict(path, "hint"), source=path)
        assert missing == [] and unexpected == []
        for ours, theirs in zip(target(x), source(x)):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_load_official_names_missing_and_unexpected_keys() -> None:
    model = build_mit("mit_b0")
    checkpoint = official_checkpoint(model)
    del checkpoint["block2.1.attn.kv.weight"]
    checkpoint["block9.0.attn.q.weight"] = torch.zeros(1)
    expected = r"(?s)mit_b0\.pth does not fit.*Missing.*block2\.1\.attn\.kv\.weight.*Unexpected.*block9\.0"
    with pytest.raises(ValueError, match=expected):
        load_official_mit(model, checkpoint, source="mit_b0.pth")
    missing, unexpected = load_official_mit(model, checkpoint, strict=False)
    assert missing == ["block2.1.attn.kv.weight"] and unexpected == ["block9.0.attn.q.weight"]


def test_load_official_names_wrong_shape() -> None:
    model = build_mit("mit_b0")
    checkpoint = official_checkpoint(build_mit("mit_b1"))
    expected = r"(?s)size mismatch for block1\.0\.attn\.q\.weight.*\[64, 64\].*\[32, 32\]"
    with pytest.raises(ValueError, match=expected):
        load_official_mit(model, checkpoint)


def test_stem_adaptation_keeps_constant_input_response() -> None:
    rgb = eval_mit("mit_b0")
    checkpoint = official_checkpoint(rgb)
    for channels in (1, 5):
        events = build_mit("mit_b0", in_chans=channels, drop_path_rate=0.0).eval()
        load_official_mit(events, checkpoint)
        stem = events.patch_embed1.proj.weight
        assert stem.shape[1] == channels
        expected = rgb.patch_embed1.proj.weight.mean(dim=1, keepdim=True) * 3 / channels
        torch.testing.assert_close(stem, expected.expand_as(stem))
        with torch.no_grad():
            ours = events(torch.full((1, channels, 64, 64), 0.7))
            theirs = rgb(torch.full((1, 3, 64, 64), 0.7))
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    weight = torch.randn(4, 3, 7, 7)
    assert adapt_stem_weight(weight, 3) is weight


def test_sdpa_attention_equals_plain_softmax() -> None:
    torch.manual_seed(0)
    attn = EfficientAttention(dim=40, num_heads=5, sr_ratio=2).eval()
    height, width = 6, 10
    x = torch.randn(2, height * width, 40)
    with torch.no_grad():
        fused = attn(x, height, width)
        q = attn.q(x).reshape(2, -1, 5, 8).transpose(1, 2)
        reduced = attn.sr(x.transpose(1, 2).reshape(2, 40, height, width)).flatten(2).transpose(1, 2)
        kv = attn.kv(attn.norm(reduced))
        k = kv[..., :40].reshape(2, -1, 5, 8).transpose(1, 2)  # K = first C output rows of kv
        v = kv[..., 40:].reshape(2, -1, 5, 8).transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(-2, -1) * 8**-0.5, dim=-1)
        plain = attn.proj((weights @ v).transpose(1, 2).reshape(2, height * width, 40))
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("dilation", "size"), [(2, (13, 10)), (6, (16, 16)), (18, (9, 20))])
def test_dilated_depthwise_equals_the_plain_convolution(dilation: int, size: tuple[int, int]) -> None:
    """Same output, input gradient and weight gradient as `nn.Conv2d` with the same weight, through the
    CPU backward of `cmda.models.cpu_kernels`; same state-dict keys; autocast takes the plain path."""
    torch.manual_seed(0)
    conv = DilatedDepthwiseConv2d(8, 3, dilation)
    plain = torch.nn.Conv2d(8, 8, 3, padding=dilation, dilation=dilation, groups=8, bias=False)
    plain.load_state_dict(conv.state_dict())
    assert conv.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 8, *size, requires_grad=True)
    upstream = torch.randn(2, 8, *size)
    out = conv(x)
    assert out.grad_fn is not None and "DilatedDepthwise" in out.grad_fn.name()
    grad_x, grad_w = torch.autograd.grad(out, (x, conv.weight), upstream)
    expected = plain(x)
    expected_x, expected_w = torch.autograd.grad(expected, (x, plain.weight), upstream)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(grad_x, expected_x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_w, expected_w, rtol=1e-5, atol=1e-5)
    (grad_w_only,) = torch.autograd.grad(conv(x.detach()), conv.weight, upstream)  # input needs no gradient
    torch.testing.assert_close(grad_w_only, expected_w, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "DilatedDepthwise" not in conv(x).grad_fn.name()
    with cpu_kernels.disabled():  # what cmda.memory measures: the ops a GPU runs
        assert "DilatedDepthwise" not in conv(x).grad_fn.name()
        assert "Upsample" in resize_bilinear(x, (5, 5)).grad_fn.name()
    assert "DilatedDepthwise" in conv(x).grad_fn.name()


@pytest.mark.parametrize(
    ("shape", "size"), [((2, 4, 8, 8), (32, 32)), ((1, 3, 13, 17), (30, 41)), ((1, 2, 30, 41), (13, 17))]
)
def test_resize_bilinear_equals_interpolate(shape: tuple[int, ...], size: tuple[int, int]) -> None:
    """The CPU matmul form gives F.interpolate's bilinear (align_corners=False) values and gradients, up,
    down and at non-integer ratios; a channels_last map keeps its layout through F.interpolate."""
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    upstream = torch.randn(*shape[:2], *size)
    out = resize_bilinear(x, size)
    expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(out, x, upstream)
    (expected_grad,) = torch.autograd.grad(expected, x, upstream)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)
    assert "Interpolat" not in type(out.grad_fn).__name__ and "Upsample" not in type(out.grad_fn).__name__
    channels_last = x.detach().contiguous(memory_format=torch.channels_last)
    assert resize_bilinear(channels_last, size).is_contiguous(memory_format=torch.channels_last)


def test_resize_bilinear_after_a_first_call_in_inference_mode() -> None:
    """The cached interpolation weights made under inference mode can still be saved for backward."""
    with torch.inference_mode():
        resize_bilinear(torch.randn(1, 2, 7, 9), (11, 5))
    x = torch.randn(1, 2, 7, 9, requires_grad=True)
    resize_bilinear(x, (11, 5)).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_decoder_runs_its_dilated_branches_and_embeddings_through_the_fast_modules() -> None:
    """The ASPP's dilated depthwise convs are `DilatedDepthwiseConv2d`; the per-stage embeddings are
    Linears over channels (1x1 convs on the map) equal to the Linear over tokens."""
    head = CMDASegmentor("mit_b0", num_classes=3).decode_head
    dilated = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d) and m.dilation[0] > 1]
    assert len(dilated) == 3 and all(isinstance(m, DilatedDepthwiseConv2d) for m in dilated)
    embed = head.embed[0]
    feature = torch.randn(2, embed.in_features, 5, 7)
    tokens = feature.flatten(2).transpose(1, 2)
    expected = F.linear(tokens, embed.weight, embed.bias).transpose(1, 2).reshape(2, -1, 5, 7)
    torch.testing.assert_close(embed(feature), expected, rtol=1e-6, atol=1e-6)


def test_segmentor_outputs_and_gradients_reach_every_part() -> None:
    torch.manual_seed(0)
    model = CMDASegmentor("mit_b0", num_classes=5, second_channels=1).train()
    image, events, isr = torch.randn(2, 3, 64, 96), torch.randn(2, 1, 64, 96), torch.randn(2, 3, 64, 96)
    out = model(image, events, isr)
    assert set(out.logits) == set(out.features) == {"image", "events", "fusion", "isr"}
    for logits in out.logits.values():
        assert logits.shape == (2, 5, 16, 24)
    assert [f.shape[1] for f in out.features["fusion"]] == [32, 64, 160, 256]
    sum(logits.square().mean() for logits in out.logits.values()).backward()
    for part in ("backbone_image", "backbone_events", "fusion", "decode_head"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(part + ".")]
        assert grads and all(g is not None for g in grads), part
        assert sum(g.abs().sum() for g in grads) > 0, part


def test_segmentor_image_only_and_predict() -> None:
    model = CMDASegmentor("mit_b0", num_classes=3).eval()
    image, events = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(image)
        assert set(out.logits) == {"image"}
        assert model.predict(image).shape == (1, 3, 64, 64)
        fused = model.predict(image, events)
        expected = F.interpolate(model(image, events).logits["fusion"], size=(64, 64), mode="bilinear")
    torch.testing.assert_close(fused, expected)


def test_decoder_dropout_only_on_image_path() -> None:
    model = CMDASegmentor("mit_b0", num_classes=4).train()
    feats = [f.detach() for f in model.backbone_image(torch.randn(2, 3, 64, 64))]
    torch.manual_seed(1)
    logits = model.decode({"image": feats, "events": feats})
    torch.manual_seed(1)
    no_dropout = model.decode_head(feats, dropout=False)
    torch.testing.assert_close(logits["events"], no_dropout)
    assert not torch.allclose(logits["image"], no_dropout)


def test_segmentor_builds_bare_then_loads_pretrained_into_both_backbones(tmp_path: Path) -> None:
    checkpoint = official_checkpoint(eval_mit("mit_b0"))
    path = tmp_path / "mit_b0.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in checkpoint.items()}}, path)
    model = CMDASegmentor("mit_b0", second_channels=2)
    expected = checkpoint["block3.1.mlp.fc2.weight"]
    assert not torch.equal(model.backbone_image.block3[1].mlp.fc2.weight, expected)
    model.load_pretrained(path)
    torch.testing.assert_close(model.backbone_image.block3[1].mlp.fc2.weight, expected)
    torch.testing.assert_close(model.backbone_events.block3[1].mlp.fc2.weight, expected)
    assert model.backbone_events.patch_embed1.proj.weight.shape[1] == 2
    with pytest.raises(ValueError, match=r"(?s)mit_b0\.pth \(backbone mit_b1\) does not fit.*size mismatch"):
        CMDASegmentor("mit_b1").load_pretrained(path)


def test_segmentor_pretrained_missing_or_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "mit_b0.pth"
    with pytest.raises(FileNotFoundError, match=r"mit_b0\.pth.*NVlabs/SegFormer.*pretrained/README\.md"):
        CMDASegmentor("mit_b0").load_pretrained(missing)
    missing.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"could not read weights file .*mit_b0\.pth"):
        CMDASegmentor("mit_b0").load_pretrained(missing)


def test_segmentor_fuses_with_the_declared_second_modality() -> None:
    """fuse_with="isr" (Dark Zurich): the ISR is the fused input and no events branch exists."""
    torch.manual_seed(0)
    model = CMDASegmentor("mit_b0", num_classes=3, fusion="attention", fuse_with="isr").eval()
    image, isr = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(image, isr=isr)
        assert set(out.logits) == {"image", "isr", "fusion"}
        expected = F.interpolate(out.logits["fusion"], size=(64, 64), mode="bilinear")
        torch.testing.assert_close(model.predict(image, isr), expected)


def test_feature_maps_follow_the_device_layout(monkeypatch) -> None:
    """Maps leaving a block (stage, fusion and decoder-embedding outputs) take the device's layout: dense
    NCHW on CPU by default (no channels_last-strided views reach the decoder's convolutions), channels_last
    where `FEATURE_LAYOUTS` says so, with the same logits."""
    from cmda.models import mit

    torch.manual_seed(0)
    model = CMDASegmentor("mit_b0", num_classes=3).eval()
    image, events = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    seen: list[torch.Tensor] = []
    hook = model.decode_head.fuse.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        reference = model(image, events)
    assert all(f.is_contiguous() for f in reference.features["image"] + reference.features["fusion"])
    assert seen and all(x.is_contiguous() for x in seen)
    monkeypatch.setitem(mit.FEATURE_LAYOUTS, "cpu", torch.channels_last)
    seen.clear()
    with torch.no_grad():
        out = model(image, events)
    hook.remove()
    torch.testing.assert_close(out.logits["fusion"], reference.logits["fusion"], rtol=1e-4, atol=1e-4)
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in out.features["fusion"])
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in seen)


def test_param_groups_follow_paramwise_rule() -> None:
    model = CMDASegmentor("mit_b0", num_classes=3)
    groups = model.param_groups(lr=1e-3, weight_decay=0.01, head_lr_mult=10.0)
    by_id = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_id[id(named["decode_head.conv_seg.weight"])]["lr"] == pytest.approx(1e-2)
    plain = by_id[id(named["backbone_image.block1.0.attn.q.weight"])]
    assert plain is by_id[id(named["fusion.image_blocks.0.attn.q.weight"])]
    assert plain["lr"] == pytest.approx(1e-3) and plain["weight_decay"] == 0.01
    assert by_id[id(named["backbone_events.norm1.weight"])]["weight_decay"] == 0.0
    assert by_id[id(named["backbone_events.block1.0.norm1.weight"])]["lr"] == pytest.approx(1e-3)
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_other_fusions_keep_stage_shapes() -> None:
    dims = [32, 64, 160, 256]
    feats = [torch.randn(1, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate(dims)]
    others = [torch.randn_like(f) for f in feats]
    for fusion in (AttentionFusion(dims).eval(), AverageFusion(dims)):
        with torch.no_grad():
            fused = fusion(feats, others)
        assert [f.shape for f in fused] == [f.shape for f in feats]
    torch.testing.assert_close(AverageFusion(dims)(feats, others)[2], (feats[2] + others[2]) / 2)
    with pytest.raises(ValueError, match="shapes differ"):
        AverageFusion(dims)(feats, others[::-1])


def pix2pix_generator_keys() -> set[str]:
    """Parameter keys of pix2pix's ResnetGenerator(1, 1, 64, InstanceNorm, no dropout, 9 blocks)."""
    indices = [1, 4, 7, 19, 22, 26]
    keys = {f"model.{i}.{p}" for i in indices for p in ("weight", "bias")}
    keys |= {
        f"model.{b}.conv_block.{c}.{p}" for b in range(10, 19) for c in (1, 5) for p in ("weight", "bias")
    }
    return keys


def test_generator_layout_shape_and_range() -> None:
    torch.manual_seed(0)
    generator = ResnetGenerator().eval()
    assert set(generator.state_dict()) == pix2pix_generator_keys()
    assert sum(p.numel() for p in generator.parameters()) / 1e6 == pytest.approx(11.37, abs=0.05)
    with torch.no_grad():
        out = generator(torch.rand(2, 1, 32, 48) * 2 - 1)
    assert out.shape == (2, 1, 32, 48)
    assert out.min() >= -1 and out.max() <= 1 and out.std() > 0


def test_load_event_translator_strict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    generator = ResnetGenerator().eval()
    path = tmp_path / "cityscapes_ICD_to_dsec_EN.pth"
    torch.save({"module." + k: v for k, v in generator.state_dict().items()}, path)
    loaded = load_event_translator(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), generator(x))
    broken = dict(generator.state_dict())
    broken.pop("model.10.conv_block.5.bias")
    torch.save(broken, path)
    expected = r"(?s)EN\.pth does not fit ResnetGenerator.*model\.10\.conv_block\.5\.bias"
    with pytest.raises(ValueError, match=expected):
        load_event_translator(path)
    with pytest.raises(FileNotFoundError, match=r"nothing\.pth.*XiaRho/CMDA"):
        load_event_translator(tmp_path / "nothing.pth")

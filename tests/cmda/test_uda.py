"""The DACS step's parts (EMA, ClassMix, pseudo weight, CE reduction) and one full step per variant."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from cmda.data.targets import TARGETS
from cmda.uda.dacs import DACSStep, branch_losses, pseudo_labels, weighted_ce
from cmda.uda.ema import EMATeacher, ema_alpha
from cmda.uda.feature_losses import VARIANTS
from cmda.uda.mix import (
    JITTER_FACTORS,
    apply_color_jitter,
    blur_kernel_size,
    class_mix_masks,
    color_jitter,
    draw_color_jitter,
    gaussian_blur,
    mix,
)


def test_ema_alpha_ramp_and_update_arithmetic():
    assert ema_alpha(1, 0.999) == pytest.approx(0.5) and ema_alpha(9, 0.999) == pytest.approx(0.9)
    assert ema_alpha(100_000, 0.999) == 0.999
    student = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2), torch.nn.Dropout(0.5))
    teacher = EMATeacher(student, alpha=0.999)
    before = teacher.model[0].weight.clone()
    with torch.no_grad():
        student[0].weight.add_(1.0)
    teacher.update(student, 0)
    torch.testing.assert_close(teacher.model[0].weight, before)  # iteration 0 keeps the copy
    teacher.update(student, 3)  # alpha = 0.75
    torch.testing.assert_close(teacher.model[0].weight, 0.75 * before + 0.25 * student[0].weight)
    assert teacher.model[1].training and not teacher.model[2].training  # BN batch stats, no dropout
    assert not any(p.requires_grad for p in teacher.parameters())


def test_class_mix_draws_per_sample_from_the_batch_classes():
    labels = torch.tensor([[[0, 1], [2, 255]], [[1, 1], [3, 3]]])
    masks = class_mix_masks(labels, torch.Generator().manual_seed(0))
    assert masks.shape == (2, 1, 2, 2)
    a, b = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    torch.testing.assert_close(mix(masks, a, b), masks.expand(-1, 3, -1, -1))
    # sample 1 holds classes {1, 3}: from its own classes (1 of 2) it would always paste exactly 2 pixels;
    # drawing 3 of the batch's 5 classes {0, 1, 2, 3, 255} it pastes 0, 2 or 4
    pasted = {int(class_mix_masks(labels, torch.Generator().manual_seed(s))[1].sum()) for s in range(20)}
    assert pasted <= {0, 2, 4} and pasted - {2}


def test_class_mix_chooses_half_the_classes_separately_for_each_sample():
    row = torch.tensor([0, 1, 2, 3, 4, 255])
    labels = row.repeat(2, 3, 1)  # two identical samples holding all 6 batch classes
    differ = 0
    for seed in range(10):
        masks = class_mix_masks(labels, torch.Generator().manual_seed(seed))[:, 0] > 0
        chosen = [set(labels[i][masks[i]].tolist()) for i in range(2)]
        assert all(len(c) == 3 for c in chosen)  # ceil(6 / 2), 255 among the candidates
        assert all(masks[i][labels[i] == c].all() for i in range(2) for c in chosen[i])
        differ += chosen[0] != chosen[1]
    assert differ > 0, "one draw shared by the batch"


def test_pseudo_weight_is_one_share_per_batch():
    logits = torch.zeros(2, 3, 2, 2)
    logits[0, 1] = 10.0  # sample 0 confident everywhere, sample 1 uniform
    label, weight = pseudo_labels(logits, (2, 2), 0.968)
    assert weight.item() == pytest.approx(0.5)
    assert label[0].eq(1).all()


def test_ce_averages_over_all_pixels_including_ignored():
    logits = torch.zeros(1, 2, 2, 2)
    label = torch.tensor([[[0, 1], [255, 255]]])
    expected = torch.log(torch.tensor(2.0)) * 2 / 4
    assert weighted_ce(logits, label).item() == pytest.approx(expected.item())
    weights = {"image": 0.5, "second": 0.5, "fusion": 0.5, "isr": 0.25}
    losses = branch_losses({"image": logits, "events": logits, "isr": logits}, label, weights, "events")
    assert losses["events"].item() == pytest.approx(0.25 * expected.item())  # halved beside an ISR branch
    assert losses["isr"].item() == pytest.approx(0.25 * expected.item())
    isr_second = branch_losses({"image": logits, "isr": logits}, label, {**weights, "second": 0.7}, "isr")
    assert isr_second["isr"].item() == pytest.approx(0.7 * expected.item())  # Dark Zurich: ISR = second


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """Hexcone HSV, hue in radians [0, 2 pi), s = delta / (v + 1e-6) as kornia 0.5.8 (ties: r, g, b)."""
    r, g, b = x.unbind(1)
    v, low = x.amax(1), x.amin(1)
    delta = v - low
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    sector = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = torch.where(delta == 0, torch.zeros_like(delta), sector).remainder(6) * (2 * math.pi / 6)
    return torch.stack((hue, delta / (v + 1e-6), v), 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    h6 = (h / (2 * math.pi) * 6).remainder(6)
    i, f = h6.floor(), h6 - h6.floor()
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = {0: (v, t, p), 1: (q, v, p), 2: (p, v, t), 3: (p, q, v), 4: (t, p, v), 5: (v, p, q)}
    out = torch.zeros_like(x)
    for sector, rgb in table.items():
        out = torch.where((i == sector).unsqueeze(1), torch.stack(rgb, 1), out)
    return out


def jitter_058(x: torch.Tensor, b: float, c: float, s: float, h: float, order: list[int]) -> torch.Tensor:
    """kornia 0.5.8 ColorJitter at fixed factors and order, transcribed from its formulas."""
    def saturate(img):
        hue, sat, val = rgb_to_hsv(img).unbind(1)
        return hsv_to_rgb(torch.stack((hue, (sat * s).clamp(0, 1), val), 1))

    def shift_hue(img):
        hue, sat, val = rgb_to_hsv(img).unbind(1)
        return hsv_to_rgb(torch.stack(((hue + h * 2 * math.pi).remainder(2 * math.pi), sat, val), 1))

    ops = [lambda img: (img + b - 1).clamp(0, 1), lambda img: (img * c).clamp(0, 1), saturate, shift_hue]
    for index in order:
        x = ops[index](x)
    return x


def test_color_jitter_is_kornia_058_at_fixed_factors_with_an_order_per_sample():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(3, 3, 12, 12, generator=gen)
    image[0] *= 0.15  # night pixels
    image[2] = 0.7 + 0.3 * image[2]  # bright: brightness and contrast clip at 1
    image[1, :, :2] = 0.4  # grey pixels: saturation and hue leave them alone
    factors = [(1.2, 0.8, 1.15, 0.12), (0.85, 1.2, 0.8, -0.2), (1.1, 1.1, 1.2, 0.05)]
    orders = [[3, 2, 1, 0], [0, 1, 2, 3], [2, 0, 3, 1]]
    params = {name: torch.tensor([f[k] for f in factors]) for k, name in enumerate(JITTER_FACTORS)}
    params["order"] = torch.tensor(orders)
    out = apply_color_jitter(image, params)
    for i in range(3):
        expected = jitter_058(image[i : i + 1], *factors[i], orders[i])
        torch.testing.assert_close(out[i : i + 1], expected, atol=2e-5, rtol=0)
    # brightness is ADDED and contrast MULTIPLIES the raw value: 0.1 -> 0.3 and 0.5 -> 0.4
    grey = torch.tensor([0.1, 0.5]).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    only = {
        "brightness_factor": torch.tensor([1.2, 1.0]),
        "contrast_factor": torch.tensor([1.0, 0.8]),
        "saturation_factor": torch.ones(2),
        "hue_factor": torch.zeros(2),
        "order": torch.tensor([[0, 1, 2, 3]] * 2),
    }
    expected = torch.tensor([[0.3] * 3, [0.4] * 3])
    torch.testing.assert_close(apply_color_jitter(grey, only)[:, :, 0, 0], expected)


def test_color_jitter_draws_every_factor_and_order_from_the_generator():
    params = draw_color_jitter(8, 0.2, torch.Generator().manual_seed(3))
    again = draw_color_jitter(8, 0.2, torch.Generator().manual_seed(3))
    assert all(torch.equal(params[k], again[k]) for k in params)
    for name in ("brightness_factor", "contrast_factor", "saturation_factor"):
        assert params[name].shape == (8,) and ((params[name] >= 0.8) & (params[name] <= 1.2)).all()
    assert (params["hue_factor"].abs() <= 0.2).all()
    assert params["order"].shape == (8, 4) and (params["order"].sort(1).values == torch.arange(4)).all()
    assert len(torch.unique(params["order"], dim=0)) > 1  # each sample its own order
    image = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    jittered = color_jitter(image, 0.2, torch.Generator().manual_seed(3))
    torch.testing.assert_close(jittered, apply_color_jitter(image, params))
    assert jittered.min() >= 0 and jittered.max() <= 1 and not torch.allclose(jittered, image)


def test_blur_is_a_reflect_padded_gaussian_with_the_original_kernel_size():
    assert blur_kernel_size(512) == 51 and blur_kernel_size(64) == 7 and blur_kernel_size(48) == 5
    image = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(5))
    sigma = 0.8

    def taps(k):
        x = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
        w = torch.exp(-(x**2) / (2 * sigma**2))
        return w / w.sum()

    kernel = torch.outer(taps(5), taps(7)).expand(3, 1, 5, 7)
    padded = torch.nn.functional.pad(image, (3, 3, 2, 2), mode="reflect")
    expected = torch.nn.functional.conv2d(padded, kernel, groups=3)
    torch.testing.assert_close(gaussian_blur(image, sigma), expected, atol=1e-5, rtol=0)
    flat = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 1.0), flat)


def one_step(config, seed_batch: int = 0):
    from cmda.train import build_datasets, build_model, build_train_loader

    torch.manual_seed(0)
    model = build_model(config)
    step = DACSStep(model, config.uda, config.target, seed=config.seed)
    loader = build_train_loader(config, build_datasets(config).paired, 0)
    batch = next(iter(loader))
    logged = step(batch, 1, torch.device("cpu"), contextlib.nullcontext)
    return model, logged


SERVED = [
    (variant, target)
    for variant in sorted(VARIANTS)
    for target in sorted(TARGETS)
    if set().union(*VARIANTS[variant].requires.values()) <= TARGETS[target].modalities
]
"""Every (variant, target) pair the config accepts (tests/cmda/test_config.py checks the refused ones)."""


@pytest.mark.parametrize(("variant", "target"), SERVED)
def test_one_iteration_of_each_variant_on_each_target(tiny_config, variant, target):
    spec = TARGETS[target]
    model, logged = one_step(tiny_config(target=target, **{"uda.feature_loss.variant": variant}))
    branches = {"image", "fusion", "isr", spec.second_modality}
    expected = {f"{phase}_{b}" for phase in ("src", "mix") for b in branches}
    expected |= set(VARIANTS[variant].terms) | {"pseudo_weight"}
    if "masked_event_s_rgb_t" in expected:
        expected.add("masked_event_coverage")
    assert set(logged) == expected
    assert all(torch.isfinite(v) for v in logged.values())
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:5])


def test_lambda_zero_equals_the_plain_cmda_step(tiny_config):
    base_model, base_logged = one_step(tiny_config())
    zero_model, zero_logged = one_step(
        tiny_config(**{"uda.feature_loss.variant": "rgb_st+event_st", "uda.feature_loss.lambda_scale": 0.0})
    )
    for key, value in base_logged.items():
        assert zero_logged[key].item() == value.item(), key
    for (name, a), b in zip(base_model.named_parameters(), zero_model.parameters()):
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad), name

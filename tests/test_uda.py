"""The DACS step's parts (EMA, ClassMix, pseudo weight, CE reduction) and one full step per variant."""

from __future__ import annotations

import contextlib

import pytest
import torch

from cmda.data.targets import TARGETS
from cmda.uda.dacs import DACSStep, branch_losses, pseudo_labels, weighted_ce
from cmda.uda.ema import EMATeacher, ema_alpha
from cmda.uda.feature_losses import VARIANTS
from cmda.uda.mix import blur_kernel_size, class_mix_masks, color_jitter, gaussian_blur, mix


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


def test_class_mix_takes_half_of_the_batch_classes():
    labels = torch.tensor([[[0, 1], [2, 255]], [[1, 1], [3, 3]]])
    masks = class_mix_masks(labels, torch.Generator().manual_seed(0))
    assert masks.shape == (2, 1, 2, 2)
    chosen = set(labels[masks[:, 0] > 0].tolist())
    assert len(chosen) == 3  # ceil(5 classes / 2), 255 included in the candidates
    assert all((masks[:, 0] > 0)[labels == c].all() for c in chosen)
    a, b = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    torch.testing.assert_close(mix(masks, a, b), masks.expand(-1, 3, -1, -1))


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


def test_jitter_and_blur_keep_range_and_shape():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 16, 16)
    jittered = color_jitter(image, 0.2, gen)
    assert jittered.shape == image.shape and jittered.min() >= 0 and jittered.max() <= 1
    assert not torch.allclose(jittered, image)
    assert blur_kernel_size(512) == 51
    flat = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 1.0), flat)


def one_step(config, seed_batch: int = 0):
    from cmda.train import build_loaders, build_model

    torch.manual_seed(0)
    model = build_model(config)
    step = DACSStep(model, config.uda, config.target, seed=config.seed)
    loader, _ = build_loaders(config, 0)
    batch = next(iter(loader))
    logged = step(batch, 1, torch.device("cpu"), contextlib.nullcontext)
    return model, logged


SERVED = [
    (variant, target)
    for variant in sorted(VARIANTS)
    for target in sorted(TARGETS)
    if set().union(*VARIANTS[variant].requires.values()) <= TARGETS[target].modalities
]
"""Every (variant, target) pair the config accepts (tests/test_config.py checks the refused ones)."""


@pytest.mark.parametrize(("variant", "target"), SERVED)
def test_one_iteration_of_each_variant_on_each_target(tiny_config, variant, target):
    spec = TARGETS[target]
    model, logged = one_step(tiny_config(target=target, **{"uda.feature_loss.variant": variant}))
    branches = {"image", "fusion", "isr", spec.second_modality}
    expected = {f"{phase}_{b}" for phase in ("src", "mix") for b in branches}
    expected |= set(VARIANTS[variant].terms) | {"pseudo_weight"}
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

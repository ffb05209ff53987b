"""Activation checkpointing (`model.activation_checkpointing`): the same step as without it.

One real DACS step (source pass, teacher, ClassMix, mixed pass, both backwards) on MiT-B0 with drop-path
on, for every registered loss variant: every logged loss, every gradient and the decoder's BatchNorm
running statistics equal those of `off` within float tolerance. Drop-path and dropout draw the same units
in the recomputation (the RNG state is restored), which is what makes the gradients equal.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from cmda.models.checkpointing import CHECKPOINTING
from cmda.uda.feature_losses import VARIANTS

TOY = {"model.drop_path_rate": 0.3, "model.decoder_channels": 16, "data.batch_size": 1}
"""Drop-path on (its draws must be reproduced), and the smallest step that still has every branch."""


def steps_by_mode(config) -> dict[str, tuple[dict, dict, dict]]:
    """{mode: (logged losses, gradients, buffers)} of one DACS step from the same weights and batch."""
    from cmda.train import build_datasets, build_model, build_train_loader
    from cmda.uda.dacs import DACSStep

    torch.manual_seed(0)
    model = build_model(config)
    initial = copy.deepcopy(model.state_dict())
    batch = next(iter(build_train_loader(config, build_datasets(config).paired, 0)))
    results = {}
    for mode in CHECKPOINTING:
        model.load_state_dict(initial)
        model.zero_grad(set_to_none=True)
        model.set_activation_checkpointing(mode)
        step = DACSStep(model, config.uda, config.target, seed=config.seed)
        torch.manual_seed(1)  # the global stream drop-path and dropout draw from
        logged = step(batch, 1, torch.device("cpu"), contextlib.nullcontext)
        grads = {name: p.grad for name, p in model.named_parameters()}
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        results[mode] = (logged, grads, buffers)
    return results


def assert_same_step(config) -> None:
    results = steps_by_mode(config)
    reference, reference_grads, reference_buffers = results["off"]
    for mode in CHECKPOINTING[1:]:
        logged, grads, buffers = results[mode]
        assert set(logged) == set(reference)
        for key, value in reference.items():
            torch.testing.assert_close(logged[key], value, rtol=1e-5, atol=1e-6, msg=f"{mode}: {key}")
        for name, grad in reference_grads.items():
            if grad is None:
                assert grads[name] is None, f"{mode}: {name}"
                continue
            torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=f"{mode}: grad of {name}")
        for name, buffer in reference_buffers.items():  # BatchNorm statistics moved once, not twice
            torch.testing.assert_close(buffers[name], buffer, rtol=1e-5, atol=1e-6, msg=f"{mode}: {name}")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_checkpointing_gives_the_losses_and_gradients_of_off(tiny_config, variant):
    assert_same_step(tiny_config(**{"uda.feature_loss.variant": variant, **TOY}))


def test_checkpointing_with_the_concatenating_fusion_and_the_night_pass(tiny_config):
    """Dark Zurich's AttentionFusion (Block + Mix-FFN projection) and the extra pure-night student pass."""
    assert_same_step(
        tiny_config(
            target="dark_zurich",
            **{
                "uda.feature_loss.variant": "rgb_st+event_st",
                "uda.feature_loss.target_features": "night",
                **TOY,
            },
        )
    )


def test_checkpointing_is_inactive_without_autograd() -> None:
    """Under no_grad (the EMA teacher, evaluation) nothing is checkpointed: the plain forward runs."""
    from cmda.models import CMDASegmentor

    torch.manual_seed(0)
    model = CMDASegmentor("mit_b0", num_classes=3, decoder_channels=16, activation_checkpointing="stages")
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = model(image, image, image)
    assert all(not logits.requires_grad for logits in out.logits.values())
    with pytest.raises(ValueError, match="activation_checkpointing"):
        model.set_activation_checkpointing("everything")

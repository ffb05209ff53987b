"""Gradient accumulation (`train.accumulate`): k micro-batches of b samples make the step of one batch of k*b.

Equal where nothing depends on the batch as a whole: the test's model has no batch statistics (BatchNorm,
dropout and drop-path in eval mode, student and teacher) and the step's per-batch quantities are pinned
(pseudo-label threshold 0, so the batch's confidence weight is 1; a per-sample ClassMix mask instead of
the draw from the batch's classes; no jitter or blur; Dark Zurich's fixed ISR direction). What differs in
a real run is documented in the README (Config).
"""

from __future__ import annotations

import contextlib
import copy

import torch
from timm.layers import DropPath
from torch import nn

from cmda.train import (
    build_datasets,
    build_session,
    build_train_loader,
    iteration_batches,
    lr_factor,
    train_step,
)

PINNED = {
    "uda.pseudo_threshold": 0.0,
    "uda.color_jitter_p": 0.0,
    "uda.blur": False,
    "uda.feature_loss.variant": "rgb_st+event_st",
    "model.drop_path_rate": 0.0,
    "model.decoder_channels": 16,
}


def without_batch_statistics(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.Dropout | nn.Dropout2d | DropPath):
            module.eval()


def one_iteration(config, monkeypatch) -> tuple[dict[str, float], dict[str, torch.Tensor], dict]:
    monkeypatch.setattr(
        "cmda.uda.dacs.class_mix_masks", lambda labels, generator: (labels % 2 == 0).unsqueeze(1).float()
    )
    torch.manual_seed(0)
    session = build_session(config, torch.device("cpu"), None)
    session.model.train()
    without_batch_statistics(session.model)
    without_batch_statistics(session.step.teacher.model)
    session.iteration = 1  # the teacher moves (iteration 0 keeps its copy)
    loader = build_train_loader(config, build_datasets(config).paired, 0)
    batches = next(iteration_batches(loader, config.train.accumulate))
    values = train_step(session, batches, torch.device("cpu"), contextlib.nullcontext)
    grads = {name: p.grad.clone() for name, p in session.model.named_parameters() if p.grad is not None}
    return values, grads, copy.deepcopy(session.model.state_dict())


def test_two_micro_batches_equal_one_batch_of_two(tiny_config, monkeypatch):
    large = one_iteration(tiny_config(target="dark_zurich", **PINNED), monkeypatch)
    split = {"data.batch_size": 1, "train.accumulate": 2}
    small = one_iteration(tiny_config(target="dark_zurich", **PINNED, **split), monkeypatch)
    (large_values, large_grads, large_weights), (small_values, small_grads, small_weights) = large, small
    assert set(small_values) == set(large_values)
    for key, value in large_values.items():
        torch.testing.assert_close(small_values[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert set(small_grads) == set(large_grads)
    scale = max(grad.norm().item() for grad in large_grads.values())
    for name, grad in large_grads.items():  # summation order differs: relative to each gradient's norm,
        # with a floor for the gradients that vanish (about 1e-11: attention query weights at init)
        assert (small_grads[name] - grad).norm() <= 1e-4 * grad.norm() + 1e-7 * scale, name
    for name, weight in large_weights.items():  # the same AdamW step
        torch.testing.assert_close(small_weights[name], weight, rtol=1e-5, atol=1e-7, msg=name)


def test_micro_batches_are_the_large_batch_split_in_order(tiny_config):
    large_config = tiny_config()
    small_config = tiny_config(**{"data.batch_size": 1, "train.accumulate": 2})
    paired = build_datasets(large_config).paired
    large = next(iteration_batches(build_train_loader(large_config, paired, 1), 1))[0]
    small = next(iteration_batches(build_train_loader(small_config, paired, 1), 2))
    for key in ("image", "label"):
        torch.testing.assert_close(torch.cat([b["source"][key] for b in small]), large["source"][key])
    torch.testing.assert_close(torch.cat([b["target"]["events"] for b in small]), large["target"]["events"])


def test_the_schedule_and_checkpoints_count_optimizer_steps(tiny_config):
    from cmda.train import load_checkpoint, run

    config = tiny_config(**{"data.batch_size": 1, "train.accumulate": 2, "train.max_iters": 2})
    run(config)
    state = load_checkpoint(config.train.work_dir)
    assert state["iteration"] == 2 and state["scheduler"]["last_epoch"] == 2
    lrs = [group["lr"] for group in state["optimizer"]["param_groups"]]
    expected = [group["initial_lr"] * lr_factor(2, config) for group in state["optimizer"]["param_groups"]]
    assert lrs == expected

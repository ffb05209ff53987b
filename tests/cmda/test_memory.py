"""The memory budget (`cmda.memory`): what it counts, how it scales, and that it predicts a real step."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from cmda import memory as M
from cmda.models import checkpointing


def test_the_modes_are_the_checkpointing_settings() -> None:
    assert M.MODES == checkpointing.CHECKPOINTING


def test_saved_tensors_are_unique_storages_without_parameters() -> None:
    weight = nn.Parameter(torch.randn(256, 256))
    x = torch.randn(64, 256, requires_grad=True)
    live = M.LiveBytes()
    saved = M.SavedTensors({weight.untyped_storage().data_ptr()}, live)
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack), live.follow():
        hidden = (x @ weight).relu()  # matmul saves x and the weight; relu saves its output
        out = (hidden * hidden).sum()  # saves `hidden` twice: one storage
    assert saved.activations("off") == x.numel() * 4 + hidden.numel() * 4
    out.backward()
    assert weight.grad is not None


def test_pieces_keep_their_inputs_and_what_is_saved_outside() -> None:
    """Under `blocks` a piece keeps only its inputs; under `off` everything it saved."""
    layers = nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 32))
    params = {p.untyped_storage().data_ptr() for p in layers.parameters()}
    x = torch.randn(16, 32, requires_grad=True)
    live = M.LiveBytes()
    saved = M.SavedTensors(params, live)
    with (
        checkpointing.observed(saved.piece),
        torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack),
    ):
        with live.follow():
            y = checkpointing.run("off", "blocks", layers, layers, x.exp())  # exp saves its output: outside
            loss = y.square().sum()
    row = 16 * 32 * 4
    assert saved.activations("off") == 4 * row  # exp out (= first Linear's input), GELU in, Linear in, y
    assert saved.activations("blocks") == 2 * row  # exp out (also the piece's input), y
    assert saved.activations("stages") == saved.activations("off")  # no piece of that kind
    loss.backward()


def test_alignment_pairs_the_same_events_around_local_differences() -> None:
    a = list("abcdefghijklmnopqrstuvwxyz")
    b = list("abcXdefghijkYZlmnopqrstuvwxyz")
    pairs = M.aligned(a, b)
    assert all(a[i] == b[j] for i, j in pairs) and len(pairs) == len(a)


def test_budget_parts_fits_and_alternatives() -> None:
    line = M.Line.through([(1000.0, 1000.0 * 10), (2000.0, 2000.0 * 10)])  # 10 bytes per pixel
    assert line.intercept == pytest.approx(0) and line.at(3000.0) == pytest.approx(30_000)
    timeline = M.Timeline.through(
        (1000.0, ["a", "b"], [5_000, 12_000]), (2000.0, ["a", "b"], [9_000, 22_000])
    )
    assert timeline.peak(3000.0) == pytest.approx(32_000)
    gib = 2**30
    profile = M.StepProfile(
        weights=gib,
        trainable=gib,
        teacher=gib,
        pixels=1e6,
        activations={"off": M.Line(0, 4000), "blocks": M.Line(0, 1000), "stages": M.Line(0, 500)},
        working={mode: M.Timeline.through((0.0, ["x"], [0]), (1.0, ["x"], [4400])) for mode in M.MODES},
        batch_size=2,
        accumulate=1,
        activation_checkpointing="off",
    )
    budget = profile.budget()
    assert budget.optimizer == 2 * budget.gradients and budget.activations == 8e9
    assert budget.transient == pytest.approx(0.8e9, rel=1e-6)  # working 8.8e9 less the saved 8e9
    assert budget.peak == 5 * gib + 8.8e9  # weights, gradients, two moments, teacher + working
    assert budget.fits_gb == [16, 24, 32, 40, 48, 80]  # 13.2 GiB + 1 GiB reserved
    settings = {(b.activation_checkpointing, b.batch_size, b.accumulate): b for b in profile.alternatives()}
    assert set(settings) == {(mode, 2, 1) for mode in M.MODES} | {(mode, 1, 2) for mode in M.MODES}
    assert settings[("off", 1, 2)].activations == budget.activations // 2
    lines = M.format_memory(M.memory_json(profile))
    assert "peak 13.2 GiB, fits 16 GB cards and larger" in lines[0]
    assert lines[2] == "  to fit 8 GB cards: none of these settings"  # 5 GiB fixed + 4.1 GiB at batch 1
    assert lines[3].startswith("  to fit 12 GB cards: activation_checkpointing off, batch 1 x accumulate 2")


def real_working_peak(config, size: int) -> int:
    """Live bytes other than gradients at the peak of one real step with the config's checkpointing."""
    from cmda.models import cpu_kernels
    from cmda.train import build_session

    session = build_session(config, torch.device("cpu"), None)
    session.model.train()
    live = M.LiveBytes()
    with live.follow(), cpu_kernels.disabled():  # the ops a GPU runs, as the profile measures them
        session.step(
            M.synthetic_batch(config, [size, size], [size, size]),
            1,
            torch.device("cpu"),
            contextlib.nullcontext,
        )
    grads = {p.grad.untyped_storage().data_ptr() for p in session.model.parameters() if p.grad is not None}
    return max(live.live(grads))


def test_the_profile_predicts_a_real_step_four_times_larger(tiny_config) -> None:
    """Measured at 32 and 64 pixels, evaluated at 128: the working set (everything alive but the
    gradients) of a real step within 2% for `off`, and for `blocks` and `stages`, which are replayed from
    the `off` run without running them."""
    size = 128
    config = tiny_config(
        **{
            "data.source.crop": [size, size],
            "data.source.resize": [256, 128],
            "data.target.crop": [64, 64],
            "data.target.resize": [size, size],
            "data.batch_size": 1,
            "model.decoder_channels": 16,
        }
    )
    profile = M.profile_step(config)
    assert profile.measured_at == [[32, 32], [64, 64]]
    for mode in M.MODES:
        config.model.activation_checkpointing = mode
        real = real_working_peak(config, size)
        predicted = profile.working[mode].peak(size * size)
        assert 0.98 * real <= predicted <= 1.02 * real, (mode, predicted, real)
    off, blocks = profile.budget("off"), profile.budget("blocks")
    assert blocks.activations < off.activations and blocks.peak < off.peak

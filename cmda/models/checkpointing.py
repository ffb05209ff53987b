"""Activation checkpointing: pieces of the network recomputed in the backward pass instead of keeping every
tensor their backward needs (`model.activation_checkpointing`).

- ``off``: everything is kept, as the original does.
- ``blocks``: every transformer block (both MiT backbones and the fusion) and every branch of the decoder's
  ASPP is recomputed; only its inputs are kept.
- ``stages``: each MiT stage, each fusion stage and the decoder of each branch is recomputed as one piece:
  fewer tensors kept, a larger piece alive while it is recomputed.

Built on ``torch.utils.checkpoint(use_reentrant=False)``, which works when a piece's inputs do not require
grad (the backbones see detached images), under ``no_grad`` nothing is checkpointed (the EMA teacher,
evaluation), and the RNG state is saved and restored around the recomputation, so drop-path and dropout
drop the same units twice. BatchNorm inside a recomputed piece would update its running statistics a
second time; the recomputation restores them, so a checkpointed run keeps the running statistics (and so
the evaluation) of one without.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

CHECKPOINTING = ("off", "blocks", "stages")
"""The values of `model.activation_checkpointing`."""


def check_mode(mode: str) -> str:
    if mode not in CHECKPOINTING:
        raise ValueError(f"activation_checkpointing must be one of {CHECKPOINTING}, got {mode!r}")
    return mode


@contextlib.contextmanager
def running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Restore the running statistics of every training-mode BatchNorm in `module` on exit."""
    buffers = [
        buffer
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
        for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)
    ]
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        for buffer, value in zip(buffers, saved, strict=True):
            buffer.copy_(value)


class _Piece:
    """The checkpointed function: its first call is the forward, later calls are recomputations."""

    def __init__(self, module: nn.Module, function: Callable[..., Any]) -> None:
        self.module, self.function, self.calls = module, function, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            return self.function(*args, **kwargs)
        with running_stats_kept(self.module):
            return self.function(*args, **kwargs)


PieceObserver = Callable[[str, tuple, bool], None]
"""observer(kind, args, entering): told when a piece of `kind` starts (with its arguments) and ends."""
_observers: list[PieceObserver] = []


@contextlib.contextmanager
def observed(observer: PieceObserver) -> Iterator[None]:
    """Tell `observer` about every piece run inside the block, checkpointed or not (`cmda.memory` uses it to
    know which saved tensors each setting would recompute, from one run of `off`)."""
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)


def run(
    mode: str, kind: str, module: nn.Module, function: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """``function(*args, **kwargs)``: one piece of `kind` ("blocks" or "stages"), checkpointed when the
    model's `mode` is that kind and autograd records. `module` is the module the function runs, whose
    BatchNorm statistics the recomputation must not move."""
    for observer in _observers:
        observer(kind, args, True)
    try:
        if mode != kind or not torch.is_grad_enabled():
            return function(*args, **kwargs)
        piece = _Piece(module, function)
        return checkpoint(piece, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)
    finally:
        for observer in _observers:
            observer(kind, args, False)

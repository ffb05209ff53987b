"""Faster CPU kernels for two decoder operations: the same arithmetic, summed in another order.

On CPU (float32, dense NCHW, outside autocast) PyTorch runs two of the decoder's operations far below
what the machine can do; CUDA, half precision, autocast and channels_last maps keep the PyTorch op.
- Dilated depthwise conv (the ASPP branches): oneDNN has a direct kernel for the forward but falls back
  to im2col + GEMM for the input gradient of a dilated one. That gradient is the same correlation of the
  output gradient with the kernel turned by 180 degrees, which the direct kernel runs.
- Bilinear resize (``align_corners=False``): separable, so ``rows @ x @ cols.T`` with PyTorch's 1-D
  weights (two GEMMs) instead of its upsampling kernel, which transposes the map to channels-last and back.
Tests compare each with the PyTorch op, values and gradients. Measurements: benchmarks/README.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_DISABLED: ContextVar[bool] = ContextVar("cpu_kernels_disabled", default=False)


@contextmanager
def disabled() -> Iterator[None]:
    """The PyTorch ops everywhere inside: `cmda.memory` measures on CPU the step a GPU would run."""
    token = _DISABLED.set(True)
    try:
        yield
    finally:
        _DISABLED.reset(token)


def applies(x: Tensor) -> bool:
    """Whether the CPU kernels run for this input: CPU, float32, dense NCHW, no autocast, not `disabled`."""
    return (
        not _DISABLED.get()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.is_contiguous()
        and not _cpu_autocast()
    )


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 (the project allows >= 2.3) has no device argument
        return torch.is_autocast_cpu_enabled()


class _DilatedDepthwise(torch.autograd.Function):
    """Stride-1 depthwise conv with ``padding == dilation * (k // 2)``; the input gradient as above."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, dilation: int, padding: int) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(x, weight)
        ctx.dilation, ctx.padding = dilation, padding
        return F.conv2d(x, weight, padding=padding, dilation=dilation, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # noqa: ANN001
        x, weight = ctx.saved_tensors
        dilation, padding, groups = ctx.dilation, ctx.padding, weight.shape[0]
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight.flip(-2, -1), padding=padding, dilation=dilation, groups=groups)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [padding] * 2, [dilation] * 2, False, [0, 0], groups,
                [False, True, False],
            )[1]
        return grad_x, grad_weight, None, None


class DilatedDepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(c, c, k, padding=d * (k // 2), dilation=d, groups=c, bias=False)``: same parameters and
    state-dict keys, with the CPU input gradient of this module's docstring."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__(
            channels, channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
            groups=channels, bias=False,
        )

    def forward(self, x: Tensor) -> Tensor:
        if not applies(x):
            return super().forward(x)
        return _DilatedDepthwise.apply(x, self.weight, self.dilation[0], self.padding[0])


@lru_cache(maxsize=64)
def interpolation_matrix(size_in: int, size_out: int) -> Tensor:
    """[size_out, size_in] weights of 1-D linear interpolation (``align_corners=False``): PyTorch's own
    kernel applied to the identity. Cached, so built outside inference mode: a first call under
    ``torch.inference_mode`` must not leave a tensor that a later training step could not save."""
    with torch.inference_mode(False):
        identity = torch.eye(size_in)[None]
        return F.interpolate(identity, size=size_out, mode="linear", align_corners=False)[0].t().contiguous()


def resize_bilinear(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` for a [B, C, H, W] tensor."""
    height, width = int(size[0]), int(size[1])
    if not applies(x):
        return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    rows = interpolation_matrix(x.shape[-2], height)
    cols = interpolation_matrix(x.shape[-1], width)
    return torch.matmul(rows, torch.matmul(x, cols.t()))

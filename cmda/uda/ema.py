"""The EMA teacher of DACS: a slowly moving average of the student that makes the pseudo labels."""

from __future__ import annotations

import copy

import torch
from timm.layers import DropPath
from torch import nn


def ema_alpha(iteration: int, alpha: float) -> float:
    """alpha_t = min(1 - 1/(t+1), alpha): a plain running mean early on, then the fixed decay."""
    return min(1 - 1 / (iteration + 1), alpha)


class EMATeacher(nn.Module):
    """A frozen copy of the student updated as theta_T <- a_t theta_T + (1 - a_t) theta_S.

    As in the original: only parameters are averaged (buffers such as BN running statistics are not), the
    teacher's Dropout / DropPath are switched off, and its BatchNorm stays in training mode, i.e. it
    normalises with the statistics of the batch it sees.
    """

    def __init__(self, student: nn.Module, alpha: float = 0.999) -> None:
        super().__init__()
        self.alpha = alpha
        self.model = copy.deepcopy(student)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.set_mode()

    def set_mode(self) -> None:
        """Train mode everywhere (BN batch statistics) except the stochastic layers."""
        self.model.train()
        for module in self.model.modules():
            if isinstance(module, nn.Dropout | nn.Dropout2d | DropPath):
                module.eval()

    def train(self, mode: bool = True) -> EMATeacher:  # the teacher's mode is fixed by design
        super().train(mode)
        self.set_mode()
        return self

    @torch.no_grad()
    def update(self, student: nn.Module, iteration: int) -> None:
        """One EMA step with the alpha of this iteration (iteration 0 keeps the initial copy)."""
        if iteration == 0:
            return
        a = ema_alpha(iteration, self.alpha)
        for teacher_p, student_p in zip(self.model.parameters(), student.parameters(), strict=True):
            teacher_p.mul_(a).add_(student_p.detach(), alpha=1 - a)

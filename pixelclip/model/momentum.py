"""Momentum (EMA) teacher: a frozen copy of the student, `t = gamma * t + (1 - gamma) * s`."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of `student` with every parameter frozen, in eval mode."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, gamma: float) -> None:
    """teacher <- gamma * teacher + (1 - gamma) * student, over the student's trainable parameters
    (the others are equal in both and stay so). gamma = 1 keeps the teacher; gamma = 0 copies."""
    t_params = dict(teacher.named_parameters())
    pairs = [(t_params[n], p) for n, p in student.named_parameters() if p.requires_grad]
    if not pairs:
        return
    t, s = zip(*pairs, strict=True)
    torch._foreach_mul_(t, gamma)
    torch._foreach_add_(t, s, alpha=1.0 - gamma)

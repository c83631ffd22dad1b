"""Optimizers and learning-rate schedules (per-step, with linear warmup)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt

from distill.schema import PositiveInt, Section


class OptimizerSpec(Section):
    """``sgd`` (momentum, optional Nesterov) or ``adamw``."""

    name: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: NonNegativeFloat = 1e-4
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    nesterov: bool = False


class ScheduleSpec(Section):
    """``constant``, ``step`` (multiply by ``gamma`` at each epoch in ``milestones``) or
    ``cosine`` (to zero at the end), each after ``warmup_epochs`` of linear warmup."""

    name: Literal["constant", "step", "cosine"] = "cosine"
    warmup_epochs: NonNegativeInt = 0
    milestones: list[PositiveInt] = Field(default_factory=list)
    gamma: float = Field(default=0.1, gt=0.0)


def build_optimizer(spec: OptimizerSpec, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    trainable = [p for p in parameters if p.requires_grad]
    if spec.name == "sgd":
        return torch.optim.SGD(
            trainable,
            lr=spec.lr,
            momentum=spec.momentum,
            weight_decay=spec.weight_decay,
            nesterov=spec.nesterov and spec.momentum > 0,
        )
    return torch.optim.AdamW(trainable, lr=spec.lr, weight_decay=spec.weight_decay)


def build_schedule(
    spec: ScheduleSpec, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step multiplier of the base learning rate."""
    warmup_steps = spec.warmup_epochs * steps_per_epoch
    total_steps = max(1, epochs * steps_per_epoch)
    milestone_steps = sorted(m * steps_per_epoch for m in spec.milestones)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if spec.name == "cosine":
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if spec.name == "step":
            return spec.gamma ** sum(step >= milestone for milestone in milestone_steps)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

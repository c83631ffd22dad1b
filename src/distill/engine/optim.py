"""Optimizers and learning-rate schedules (per-step, with linear warmup)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat

from distill.schema import Epochs, EpochsOrZero, Section


class OptimizerSpec(Section):
    """``sgd`` (momentum, optional Nesterov) or ``adamw``.

    ``fused``: update every parameter in one fused kernel per step (PyTorch's ``fused=True``,
    on CPU and CUDA) instead of a loop of small kernels per parameter; for small models this
    loop is a large share of a step. Where the device has no fused kernel the loop is used.
    """

    name: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: NonNegativeFloat = 1e-4
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    fused: bool = True


class ScheduleSpec(Section):
    """``constant``, ``step`` (multiply by ``gamma`` at each epoch in ``milestones``) or
    ``cosine`` (to zero at the end), each after ``warmup_epochs`` of linear warmup."""

    name: Literal["constant", "step", "cosine"] = "cosine"
    warmup_epochs: EpochsOrZero = 0
    milestones: list[Epochs] = Field(default_factory=list)
    gamma: float = Field(default=0.1, gt=0.0)


def build_optimizer(spec: OptimizerSpec, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    trainable = [p for p in parameters if p.requires_grad]
    fused = spec.fused and _has_fused_kernel(trainable)
    if spec.name == "sgd":
        return torch.optim.SGD(
            trainable,
            lr=spec.lr,
            momentum=spec.momentum,
            weight_decay=spec.weight_decay,
            nesterov=spec.nesterov and spec.momentum > 0,
            fused=fused or None,
        )
    return torch.optim.AdamW(trainable, lr=spec.lr, weight_decay=spec.weight_decay, fused=fused or None)


def _has_fused_kernel(parameters: list[torch.nn.Parameter]) -> bool:
    """Whether PyTorch's fused optimizer kernels take these parameters: floating point, dense,
    all on one device of a type that has them."""
    devices = {parameter.device for parameter in parameters}
    return (
        len(devices) == 1
        and next(iter(devices)).type in _FUSED_DEVICE_TYPES
        and all(parameter.is_floating_point() and not parameter.is_sparse for parameter in parameters)
    )


_FUSED_DEVICE_TYPES = ("cpu", "cuda")


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

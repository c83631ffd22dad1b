"""Training a model alone on the labels: the baseline every distillation method must beat."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distill.losses.kd import soft_cross_entropy
from distill.methods.base import Batch, Method, MethodSpec
from distill.methods.registry import METHODS, MethodContext


class ScratchSpec(MethodSpec):
    """``scratch``: cross-entropy on the labels (mixed labels under mixup)."""

    name: Literal["scratch"] = "scratch"
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)


class Scratch(Method):
    """Cross-entropy training; under mixup the target is the mixed one-hot distribution."""

    def __init__(self, student: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__(student)
        self.label_smoothing = label_smoothing

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.student(batch.inputs)
        return {"ce": classification_loss(logits, batch, self.label_smoothing)}


def classification_loss(logits: torch.Tensor, batch: Batch, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against hard labels, or against mixed labels when the batch was mixed."""
    soft = batch.soft_targets()
    if soft is None:
        return F.cross_entropy(logits, batch.targets, label_smoothing=label_smoothing)
    if label_smoothing:
        soft = soft * (1 - label_smoothing) + label_smoothing / batch.num_classes
    return soft_cross_entropy(logits, soft)


@METHODS.register_factory("scratch", "train the model alone on the labels (the baseline)")
def build_scratch(spec: ScratchSpec, context: MethodContext) -> Method:
    return Scratch(context.student, spec.label_smoothing)

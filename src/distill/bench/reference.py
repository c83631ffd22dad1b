"""The reference: a hand-written KD epoch the way the PyTorch knowledge-distillation tutorial
writes one (DataLoader over a TensorDataset, teacher under ``torch.no_grad``, soft-target loss
from softmax / log-softmax, ``T²`` scaling, weighted sum with the label loss).

It is what a user would write without a framework, so ``distill bench`` times it side by side
with the framework's own loop: the framework must add no overhead on top of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_reference_loader(
    inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, seed: int
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        TensorDataset(inputs, targets), batch_size=batch_size, shuffle=True, generator=generator
    )


def reference_kd_epoch(
    teacher: nn.Module,
    student: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    temperature: float,
    soft_target_weight: float,
    label_weight: float,
    device: torch.device,
) -> float:
    """One epoch of tutorial-style KD; returns the mean loss."""
    teacher.eval()
    student.train()
    total = 0.0
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        with torch.no_grad():
            teacher_logits = teacher(inputs)
        student_logits = student(inputs)
        soft_targets = F.softmax(teacher_logits / temperature, dim=-1)
        soft_prob = F.log_softmax(student_logits / temperature, dim=-1)
        soft_targets_loss = (
            torch.sum(soft_targets * (soft_targets.log() - soft_prob)) / soft_prob.size(0) * temperature**2
        )
        label_loss = F.cross_entropy(student_logits, labels)
        loss = soft_target_weight * soft_targets_loss + label_weight * label_loss
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / max(1, len(loader))

"""Attention transfer: match normalized spatial attention maps of intermediate features.

Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017, arXiv 1612.03928).
Activation-based attention map ``F(A) = Σ_c |A_c|^p`` (Sec. 3.1, p = 2 by default), and the
loss of Eq. 2: ``β/2 · Σ_j ‖ Q_S^j/‖Q_S^j‖₂ − Q_T^j/‖Q_T^j‖₂ ‖_p`` with ``Q = vec(F(A))``.
Following the authors' code, the per-pair term is the mean of squared differences of the
normalized maps (the channel *mean* replaces the sum; the normalization removes the constant).
The weight ``β`` is applied by the caller (the recipe's ``weight``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``(batch, C, *spatial)`` → ``(batch, prod(spatial))`` L2-normalized attention map."""
    if feature.ndim < 3:
        raise ValueError(
            f"attention_map expects (batch, channels, *spatial) features, got {tuple(feature.shape)}"
        )
    return F.normalize(feature.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def attention_transfer_loss(
    student_feature: torch.Tensor, teacher_feature: torch.Tensor, p: float = 2.0
) -> torch.Tensor:
    """Attention transfer term for one (student, teacher) feature pair; zero iff maps agree."""
    if student_feature.shape[0] != teacher_feature.shape[0]:
        raise ValueError(
            f"attention_transfer_loss: batch sizes differ, student {tuple(student_feature.shape)} "
            f"vs teacher {tuple(teacher_feature.shape)}"
        )
    if student_feature.shape[2:] != teacher_feature.shape[2:]:
        raise ValueError(
            "attention_transfer_loss: spatial sizes differ, student "
            f"{tuple(student_feature.shape[2:])} vs teacher {tuple(teacher_feature.shape[2:])}; "
            "tap layers with the same resolution"
        )
    student_map = attention_map(student_feature, p)
    teacher_map = attention_map(teacher_feature.detach(), p)
    return (student_map - teacher_map).pow(2).mean()

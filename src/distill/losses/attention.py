"""Attention transfer: match normalized spatial attention maps of intermediate features.

Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017, arXiv 1612.03928).
Activation-based attention map ``F(A) = Σ_c |A_c|^p`` (Sec. 3.1, p = 2 by default), and the
loss of Eq. 2: ``β/2 · Σ_j ‖ Q_S^j/‖Q_S^j‖₂ − Q_T^j/‖Q_T^j‖₂ ‖_p`` with ``Q = vec(F(A))``.
Following the authors' code (``szagoruyko/attention-transfer``, ``utils.at`` and
``utils.at_loss``), the map takes the channel *mean* (the normalization removes the constant)
and the term is the squared difference of the normalized maps ``q = Q/‖Q‖₂``. With ``N``
positions per map and ``B`` samples, ``d_b = q_S,b − q_T,b``::

    raw:        AT = 1/(B·N) · Σ_b ‖d_b‖²        (the code's ``.pow(2).mean()``)
    size_free:  AT = 1/(B·N_ref) · Σ_b ‖d_b‖²    N_ref = 3 / (1/32² + 1/16² + 1/8²) = 1024/7

``‖d_b‖² = 2 − 2·cos(Q_S,b, Q_T,b)`` lies in [0, 2] whatever the map size, so the weight β on the
term pulls each sample by ``β/N`` (raw) — a pull that grows as maps shrink: β = 1000 was tuned on
CIFAR WRN maps of 32², 16² and 8² positions (pulls ≈ 1, 4, 16), and becomes 100 and 200 on
MNIST-1D's 10- and 5-long maps. ``size_free`` pulls by ``β/N_ref`` at every size; ``N_ref`` is the
harmonic mean of the paper's three map sizes, so over three groups the total pull
``3·β/N_ref = β·(1/32² + 1/16² + 1/8²)`` equals the paper's at any size. ``raw`` reproduces the
official code exactly. The weight ``β`` is applied by the caller (the recipe's ``weight``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

#: How the attention-transfer term depends on the map size (see the module docstring).
AttentionScale = Literal["size_free", "raw"]

#: The attention-map sizes (positions) of the paper's CIFAR WRN groups: 32², 16², 8².
PAPER_MAP_POSITIONS = (32 * 32, 16 * 16, 8 * 8)

#: ``N_ref``: the harmonic mean of :data:`PAPER_MAP_POSITIONS`, 1024/7 ≈ 146.3 positions.
REFERENCE_POSITIONS = len(PAPER_MAP_POSITIONS) / sum(1 / n for n in PAPER_MAP_POSITIONS)


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``(batch, C, *spatial)`` → ``(batch, prod(spatial))`` L2-normalized attention map."""
    if feature.ndim < 3:
        raise ValueError(
            f"attention_map expects (batch, channels, *spatial) features, got {tuple(feature.shape)}"
        )
    return F.normalize(feature.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def attention_transfer_loss(
    student_feature: torch.Tensor,
    teacher_feature: torch.Tensor,
    p: float = 2.0,
    scale: AttentionScale = "size_free",
) -> torch.Tensor:
    """Attention transfer term for one (student, teacher) feature pair; zero iff maps agree.

    ``scale="raw"`` is the official ``at_loss`` (mean over samples and positions, so β's pull
    per sample is β/N); ``"size_free"`` (default) is ``raw · N / N_ref``, a pull of β/N_ref at
    every map size (module docstring)."""
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
    if scale not in ("size_free", "raw"):
        raise ValueError(f"attention_transfer_loss: scale must be 'size_free' or 'raw', got {scale!r}")
    student_map = attention_map(student_feature, p)
    teacher_map = attention_map(teacher_feature.detach(), p)
    raw = (student_map - teacher_map).pow(2).mean()
    if scale == "raw":
        return raw
    return raw * (student_map.shape[1] / REFERENCE_POSITIONS)

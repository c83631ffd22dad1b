"""Hinton knowledge distillation: match the teacher's temperature-softened class distribution.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (arXiv 1503.02531), Sec. 2:
soft targets ``q_i = exp(z_i/T) / sum_j exp(z_j/T)`` (Eq. 1). The gradient of the soft-target
cross-entropy with respect to a student logit is ``(1/T)(q_i - p_i)`` (Eq. 2), so the term is
multiplied by ``T²`` to keep its gradient magnitude independent of the temperature.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.ndim != 2 or teacher_logits.ndim != 2:
        raise ValueError(
            "kd_loss expects (batch, classes) logits, got student "
            f"{tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}"
        )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "kd_loss: student logits "
            f"{tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "must have the same (batch, classes) shape"
        )


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 4.0,
    weight: float = 1.0,
) -> torch.Tensor:
    """``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, averaged over the batch (times
    ``weight``, folded into the loss's one scaling).

    Args:
        student_logits: ``(batch, classes)`` raw student outputs.
        teacher_logits: ``(batch, classes)`` raw teacher outputs (no gradient flows into them).
        temperature: softening temperature ``T > 0``.

    Returns:
        A scalar tensor. Its gradient w.r.t. ``student_logits`` is
        ``T · (softmax(student/T) − softmax(teacher/T)) / batch`` (Hinton et al. Eq. 2 times T²).
    """
    _check_logits(student_logits, teacher_logits)
    if temperature <= 0:
        raise ValueError(f"kd_loss: temperature must be > 0, got {temperature}")
    scaled = teacher_logits.detach()
    if temperature != 1:
        scaled = scaled * scalar(1 / temperature, scaled)
    return kd_loss_from_log_probs(student_logits, F.log_softmax(scaled, dim=1), temperature, weight)


def kd_loss_from_log_probs(
    student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, temperature: float, weight: float = 1.0
) -> torch.Tensor:
    """:func:`kd_loss` with the teacher given as log-probabilities already softened at ``T``
    (as a teacher-output cache stores them): ``T² · KL(q_T ‖ softmax(student/T))``."""
    _check_logits(student_logits, teacher_log_probs)
    teacher_log_probs = teacher_log_probs.detach()
    teacher_probs = teacher_log_probs.exp()
    sum_p_log_p = torch.dot(teacher_probs.reshape(-1), teacher_log_probs.reshape(-1))
    return kd_loss_from_probs(student_logits, teacher_probs, sum_p_log_p, temperature, weight)


def kd_loss_from_probs(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    sum_p_log_p: torch.Tensor,
    temperature: float,
    weight: float = 1.0,
) -> torch.Tensor:
    """``weight · T² · KL(q_T ‖ softmax(student/T))`` from the teacher's probabilities ``q_T``
    and the batch's ``Σ q log q`` (a scalar, or one value per sample): the form the per-step
    path uses, because it costs the fewest kernels.

    ``KL = Σ q log q − Σ q · log_softmax(s/T)``: the teacher's part is a constant a cache
    computes once per sample, and the student's part is one log-softmax and one dot product over
    the flattened batch (no per-element KL tensor, no separate batch-mean and weight scalings).
    """
    _check_logits(student_logits, teacher_probs)
    scaled = student_logits
    if temperature != 1:
        scaled = student_logits * scalar(1 / temperature, student_logits)
    student_log_probs = F.log_softmax(scaled, dim=1)
    cross = torch.dot(teacher_probs.detach().reshape(-1), student_log_probs.reshape(-1))
    constant = sum_p_log_p.detach() if sum_p_log_p.ndim == 0 else sum_p_log_p.detach().sum()
    return (constant - cross) * scalar(weight * temperature**2 / student_logits.shape[0], cross)


@functools.lru_cache(maxsize=256)
def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


def scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a 0-dimensional tensor of ``like``'s dtype and device, made once and reused.

    Multiplying by it skips the Python-number-to-tensor conversion (an allocation and a copy)
    that ``tensor * float`` pays on every call, in the forward and again in the backward — a
    measurable share of a step for small models. Read-only: never modify the result in place.
    """
    return _scalar(float(value), like.dtype, like.device)


def weighted(weight: float, term: torch.Tensor) -> torch.Tensor:
    """``weight · term``, without an extra kernel when the weight is 1."""
    return term if weight == 1 else term * scalar(weight, term)


def kd_loss_top_k(
    student_logits: torch.Tensor,
    teacher_top_log_probs: torch.Tensor,
    top_classes: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """:func:`kd_loss` against a teacher known only by its ``k`` most probable classes at ``T``.

    The classes outside the top ``k`` are merged into one "rest" bin on both sides: the teacher's
    rest mass is ``1 − Σ q_top``, the student's is its softmax mass on the same classes, and the
    KL divergence is taken over those ``k + 1`` bins (times ``T²``). Unlike spreading the rest
    mass evenly, this asks nothing of how the student distributes its tail — only how much mass
    it puts there. With ``k = classes`` it equals :func:`kd_loss` exactly.

    Args:
        student_logits: ``(batch, classes)``.
        teacher_top_log_probs: ``(batch, k)`` teacher log-probabilities at ``T``.
        top_classes: ``(batch, k)`` their class indices (int64).
    """
    if teacher_top_log_probs.shape != top_classes.shape or student_logits.shape[0] != top_classes.shape[0]:
        raise ValueError(
            f"kd_loss_top_k: student logits {tuple(student_logits.shape)}, teacher top-k "
            f"{tuple(teacher_top_log_probs.shape)} and classes {tuple(top_classes.shape)} disagree"
        )
    scaled = student_logits if temperature == 1 else student_logits / temperature
    student_log_probs = F.log_softmax(scaled, dim=1)
    student_top = student_log_probs.gather(1, top_classes)
    teacher_top = teacher_top_log_probs.detach()
    teacher_top_probs = teacher_top.exp()
    divergence = (teacher_top_probs * (teacher_top - student_top)).sum(dim=1)
    if top_classes.shape[1] < student_logits.shape[1]:
        outside = torch.ones_like(student_log_probs, dtype=torch.bool).scatter_(1, top_classes, False)
        student_rest = torch.logsumexp(student_log_probs.masked_fill(~outside, float("-inf")), dim=1)
        teacher_rest = (1 - teacher_top_probs.sum(dim=1)).clamp_min(1e-12)
        divergence = divergence + teacher_rest * (teacher_rest.log() - student_rest)
    return divergence.mean() * temperature**2


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a full target distribution (mixup labels, soft labels), batch mean."""
    if logits.shape != target_probs.shape:
        raise ValueError(
            f"soft_cross_entropy: logits {tuple(logits.shape)} and targets "
            f"{tuple(target_probs.shape)} must have the same shape"
        )
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()

"""Token-level divergences between a teacher's and a student's next-token distributions, for
language-model distillation.

* :func:`forward_kl` — ``KL(p_T ‖ p_S)`` per token: supervised token-level KD (Hinton et al. 2015 on
  every position; torchtune's ``ForwardKLLoss`` of its KD recipe), and GKD's β = 0.
* :func:`generalized_jsd` — the generalized Jensen–Shannon divergence of Agarwal et al., "On-Policy
  Distillation of Language Models: Learning from Self-Generated Mistakes" (ICLR 2024,
  arXiv 2306.13649), eq. (1)::

      D_JSD(β)(P ‖ Q) = β · KL(P ‖ β P + (1 − β) Q) + (1 − β) · KL(Q ‖ β P + (1 − β) Q)

  with P = teacher, Q = student, as TRL's ``GKDTrainer.generalized_jsd_loss`` (huggingface/trl,
  ``trl/experimental/gkd/gkd_trainer.py``): the mixture is ``M = β p_T + (1 − β) p_S``, computed in
  log space by log-sum-exp; β = 0 is *defined* as the forward ``KL(p_T ‖ p_S)`` and β = 1 as the
  reverse ``KL(p_S ‖ p_T)`` (TRL's convention: the limits of ``D_JSD(β) / β`` as β → 0 and of
  ``D_JSD(β) / (1 − β)`` as β → 1; the divergence itself goes to 0 at both ends). β = 0.5 is the
  symmetric Jensen–Shannon divergence.
* :func:`topk_logprobs` and :func:`topk_kl` — a top-k teacher-output cache (DistillKit's idea: keep
  only the k largest teacher log-probabilities per token and their token ids) and the forward KL
  against it, with a stated policy for the teacher's mass outside the top k:

  - ``"renormalize"``: the teacher is taken to be its top k renormalized to sum to 1 (the missing
    mass is dropped); the student keeps its full-vocabulary log-probabilities, so mass it puts
    outside the k ids is penalized only through normalization.
  - ``"other"``: the missing mass ``1 − Σ_topk p_T`` is one extra "other" outcome, matched against
    the student's mass outside the same k ids — a proper KL between two (k+1)-outcome
    distributions, a lower bound of the full KL (data processing inequality).

  Both equal the full forward KL when k is the vocabulary size.

Every loss averages over the tokens where ``mask`` is true (positions that are not padding), as
TRL's ``batchmean`` with labels (the sum over valid tokens divided by their number, at least 1).
Temperature divides both logits first (TRL's and torchtune's default: 1).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

MissingMass = Literal["renormalize", "other"]


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of per-token ``values`` over the positions where ``mask`` is true (sum / max(n, 1))."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1)


def _log_probs(logits: Tensor, temperature: float) -> Tensor:
    """Log-softmax of ``logits / temperature`` in at least float32 (float64 stays float64)."""
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=-1)


def _kl(target_log: Tensor, input_log: Tensor) -> Tensor:
    """``KL(target ‖ input)`` per position from log-probabilities over the last dimension."""
    return F.kl_div(input_log, target_log, reduction="none", log_target=True).sum(dim=-1)


def forward_kl(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None, temperature: float = 1.0
) -> Tensor:
    """``KL(p_T ‖ p_S)`` per token, averaged over ``mask``."""
    student = _log_probs(student_logits, temperature)
    teacher = _log_probs(teacher_logits, temperature)
    return masked_mean(_kl(teacher, student), mask)


def generalized_jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> Tensor:
    """GKD's generalized JSD (eq. 1 of arXiv 2306.13649) per token, averaged over ``mask``; β = 0
    is the forward KL(teacher ‖ student), β = 1 the reverse KL(student ‖ teacher) (TRL)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    student = _log_probs(student_logits, temperature)
    teacher = _log_probs(teacher_logits, temperature)
    if beta == 0.0:
        per_token = _kl(teacher, student)
    elif beta == 1.0:
        per_token = _kl(student, teacher)
    else:
        weight = torch.tensor(beta, dtype=student.dtype, device=student.device)
        mixture = torch.logsumexp(
            torch.stack([student + torch.log1p(-weight), teacher + torch.log(weight)]), dim=0
        )
        per_token = beta * _kl(teacher, mixture) + (1 - beta) * _kl(student, mixture)
    return masked_mean(per_token, mask)


def topk_logprobs(teacher_logits: Tensor, k: int, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """The cache entry per token: the ``k`` largest teacher log-probabilities (full-vocabulary
    normalization) and their token ids, each ``(..., k)``."""
    if not 1 <= k <= teacher_logits.shape[-1]:
        raise ValueError(f"k must be between 1 and the vocabulary size {teacher_logits.shape[-1]}, got {k}")
    values, indices = _log_probs(teacher_logits, temperature).topk(k, dim=-1)
    return values, indices


def _log1mexp(log_mass: Tensor) -> Tensor:
    """``log(1 − exp(x))`` for ``x ≤ 0``, stable (Mächler 2012), floored to stay finite at x = 0."""
    x = log_mass.clamp(max=-1e-12)
    small = x > -0.6931471805599453
    return torch.where(small, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x))).clamp_min(-80.0)


def topk_kl(
    student_logits: Tensor,
    teacher_values: Tensor,
    teacher_indices: Tensor,
    mask: Tensor | None = None,
    missing_mass: MissingMass = "other",
    temperature: float = 1.0,
) -> Tensor:
    """Forward KL from a top-k teacher cache (:func:`topk_logprobs`) per token, averaged over
    ``mask``, with the missing-mass policy ``"renormalize"`` or ``"other"`` (module docstring).
    The cache's ``temperature`` is the one it was built with."""
    student = _log_probs(student_logits, temperature)
    student_top = student.gather(-1, teacher_indices)
    teacher_top = teacher_values.to(student.dtype)
    if missing_mass == "renormalize":
        teacher_top = teacher_top - torch.logsumexp(teacher_top, dim=-1, keepdim=True)
        per_token = (teacher_top.exp() * (teacher_top - student_top)).sum(dim=-1)
    elif missing_mass == "other":
        per_token = (teacher_top.exp() * (teacher_top - student_top)).sum(dim=-1)
        teacher_rest = torch.logsumexp(teacher_top, dim=-1)  # log Σ_topk p_T ≤ 0
        student_rest = torch.logsumexp(student_top, dim=-1)
        rest_mass = (-torch.expm1(teacher_rest)).clamp_min(0.0)  # 1 − Σ_topk p_T
        rest_term = rest_mass * (_log1mexp(teacher_rest) - _log1mexp(student_rest))
        per_token = per_token + torch.where(rest_mass > 0, rest_term, torch.zeros_like(rest_term))
    else:
        raise ValueError(f"missing_mass must be 'renormalize' or 'other', got {missing_mass!r}")
    return masked_mean(per_token, mask)

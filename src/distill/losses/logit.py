"""Logit-based distillation losses beyond Hinton KD: DKD, DIST, logit standardization and MLKD.

Each function is a plain tensor function that reproduces the arithmetic of the authors' released
code (reductions, ``T²`` factors, epsilons); where that code departs from the paper, the docstring
says so and we follow the code. Schedules, augmentation pairing and loss weights against the
cross-entropy are method concerns and stay out of this module. No gradient flows into the
teacher's logits.

- DKD: Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR 2022 (arXiv
  2203.08679), Eqs. 1–7; code: ``megvii-research/mdistiller``, ``mdistiller/distillers/DKD.py``.
- DIST: Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022
  (arXiv 2205.10536); code: ``hunto/image_classification_sota``, ``lib/models/losses/dist_kd.py``
  (the ``classification`` submodule of ``hunto/DIST_KD``).
- Logit standardization: Sun, Ren, Li, Wang & Cao, "Logit Standardization in Knowledge
  Distillation", CVPR 2024 (arXiv 2403.01427); code: ``sunshangquan/logit-standardization-KD``.
- MLKD: Jin, Wang & Lin, "Multi-Level Logit Distillation", CVPR 2023; code:
  ``Jin-Ying/Multi-Level-Logit-Distillation``, ``mdistiller/distillers/KD_ours.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

#: MLKD's temperatures in the official CIFAR-100 setting: the base KD temperature (4) plus the
#: fixed extras 2, 3, 5 and 6 (on ImageNet the base is 1, giving 1, 2, 3, 5, 6).
MLKD_TEMPERATURES: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0, 6.0)


def _check_pair(name: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.ndim != 2 or teacher_logits.ndim != 2:
        raise ValueError(
            f"{name} expects (batch, classes) logits, got student_logits "
            f"{tuple(student_logits.shape)} and teacher_logits {tuple(teacher_logits.shape)}"
        )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"{name}: student_logits {tuple(student_logits.shape)} and teacher_logits "
            f"{tuple(teacher_logits.shape)} must have the same (batch, classes) shape"
        )


def _check_temperature(name: str, temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"{name}: temperature must be > 0, got {temperature}")


# --------------------------------------------------------------------------------------------
# DKD


def dkd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    reduction: Literal["mean", "none"] = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """DKD's two parts, ``(TCKD, NCKD)``, each times ``T²`` (Zhao et al. Eqs. 1–7).

    With ``p = softmax(z/T)`` and ``t`` the target class:

    - TCKD ``= KL(b^T ‖ b^S)`` over the binary distribution ``b = [p_t, 1 − p_t]`` (Eq. 1),
    - NCKD ``= KL(p̂^T ‖ p̂^S)`` over the non-target classes renormalised among themselves,
      ``p̂_i = p_i / (1 − p_t)`` for ``i ≠ t`` (Eq. 2),

    so that Hinton KD at the same ``T`` is ``TCKD + (1 − p_t^T) · NCKD`` per sample (Eqs. 5–6).

    The official code takes NCKD as a softmax over all classes after subtracting 1000 from the
    target logit (at ``T``) and TCKD as ``log`` of summed probabilities. We drop the target class
    exactly and take both binary log-probabilities from log-sum-exps; the values agree (the
    ``exp(−1000)`` the code leaves on the target is below float32's smallest number) and ours
    cannot give ``log 0`` when a probability rounds to 1.

    Args:
        student_logits: ``(batch, classes)`` raw student outputs, ``classes ≥ 2``.
        teacher_logits: ``(batch, classes)`` raw teacher outputs.
        targets: ``(batch,)`` integer class indices.
        temperature: ``T > 0``.
        reduction: ``"mean"``: batch means (the official ``sum / batch``); ``"none"``: one value
            per sample, shape ``(batch,)``.
    """
    _check_pair("dkd_terms", student_logits, teacher_logits)
    _check_temperature("dkd_terms", temperature)
    batch, classes = student_logits.shape
    if classes < 2:
        raise ValueError(f"dkd_terms needs at least 2 classes, got logits {tuple(student_logits.shape)}")
    if targets.shape != (batch,) or targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(
            f"dkd_terms: targets must be ({batch},) integer class indices, got "
            f"{tuple(targets.shape)} of dtype {targets.dtype}"
        )
    if reduction not in ("mean", "none"):
        raise ValueError(f"dkd_terms: reduction must be 'mean' or 'none', got {reduction!r}")

    student = student_logits / temperature
    teacher = teacher_logits.detach() / temperature
    target_index = targets.long().view(batch, 1)
    others = torch.ones_like(student, dtype=torch.bool).scatter_(1, target_index, False)

    def split(scaled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # log p_t, log(1 − p_t), and the (batch, classes − 1) non-target logits
        rest_logits = scaled[others].view(batch, classes - 1)
        log_total = torch.logsumexp(scaled, dim=1)
        log_target = scaled.gather(1, target_index).squeeze(1) - log_total
        log_rest = torch.logsumexp(rest_logits, dim=1) - log_total
        return log_target, log_rest, rest_logits

    s_target, s_rest, s_rest_logits = split(student)
    t_target, t_rest, t_rest_logits = split(teacher)
    tckd = t_target.exp() * (t_target - s_target) + t_rest.exp() * (t_rest - s_rest)
    t_hat_log = F.log_softmax(t_rest_logits, dim=1)
    nckd = (t_hat_log.exp() * (t_hat_log - F.log_softmax(s_rest_logits, dim=1))).sum(dim=1)
    scale = temperature**2
    if reduction == "mean":
        return tckd.mean() * scale, nckd.mean() * scale
    return tckd * scale, nckd * scale


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Decoupled KD: ``α · TCKD + β · NCKD`` (Zhao et al. Eq. 7), each term times ``T²`` and
    averaged over the batch, as in the official code; see :func:`dkd_terms`.

    Defaults are the official CIFAR-100 setting (``α = 1, β = 8, T = 4``; the released configs
    lower ``β`` to 2 or 6 for some pairs; ImageNet ResNet-34 → ResNet-18 uses ``α = 1, β = 0.5,
    T = 1``). The official training also ramps the whole term in linearly, multiplying it by
    ``min(epoch / warmup, 1)`` with ``warmup = 20`` epochs (1 on ImageNet); that schedule belongs
    to the method, not to this function.

    Returns:
        A scalar tensor.
    """
    tckd, nckd = dkd_terms(student_logits, teacher_logits, targets, temperature)
    return alpha * tckd + beta * nckd


# --------------------------------------------------------------------------------------------
# DIST


def _pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``: the cosine of the
    centred rows, with ``eps`` added to the product of norms (as the DIST code does)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DIST's ``(inter-class, intra-class)`` relation losses, each times ``T²``.

    With ``Y = softmax(z/T)`` a ``(batch, classes)`` matrix and ``ρ`` the Pearson correlation:

    - inter-class: ``1 − mean_i ρ(Y^S[i, :], Y^T[i, :])`` (each sample's class distribution),
    - intra-class: ``1 − mean_c ρ(Y^S[:, c], Y^T[:, c])`` (each class's scores across the batch).

    Pearson correlation ignores a positive scale and a shift of either argument, so the student
    is asked to reproduce the teacher's *relations* (rankings, relative gaps), not its exact
    probabilities. With a batch of one the intra-class term is the constant ``T²`` (a column of
    one entry has no variation) and passes no gradient.
    """
    _check_pair("dist_terms", student_logits, teacher_logits)
    _check_temperature("dist_terms", temperature)
    student = F.softmax(student_logits / temperature, dim=1)
    teacher = F.softmax(teacher_logits.detach() / temperature, dim=1)
    inter = 1 - _pearson_rows(student, teacher, eps).mean()
    intra = 1 - _pearson_rows(student.t(), teacher.t(), eps).mean()
    scale = temperature**2
    return inter * scale, intra * scale


def dist_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    eps: float = 1e-8,
) -> torch.Tensor:
    """DIST: ``β · L_inter + γ · L_intra`` on temperature-softened probabilities (Huang et al.),
    each term times ``T²`` as in the official code; see :func:`dist_terms`.

    Official settings: ``β = γ = 1``; ``T = 1`` on ImageNet and ``T = 4`` on CIFAR-100, with the
    whole term weighted 2 against a cross-entropy of weight 1 (those weights are the method's).

    Returns:
        A scalar tensor in ``[0, 2 (β + γ) T²]``.
    """
    inter, intra = dist_terms(student_logits, teacher_logits, temperature, eps)
    return beta * inter + gamma * intra


# --------------------------------------------------------------------------------------------
# Logit standardization


def standardize_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Z-score each sample's logits over the classes: ``(z − mean(z)) / (std(z) + eps)``.

    Sun et al. apply this to the student's and the teacher's logits before the temperature
    softmax of any logit loss (KD, DKD, ...), so the student matches the teacher's logit
    *relations* rather than their range: the result is unchanged by adding a constant to a
    sample's logits or multiplying them by a positive number. As in the official code, ``std`` is
    torch's default Bessel-corrected estimate (divides by ``classes − 1``) and ``eps`` is added to
    it, not under the square root. The official KD + standardization setting on CIFAR-100 is
    ``T = 2`` with the KD term weighted 9 against a cross-entropy of weight 0.1.

    Args:
        logits: ``(..., classes)`` with ``classes ≥ 2``; standardized along the last dimension.
    """
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(
            f"standardize_logits expects logits of shape (..., classes) with classes ≥ 2, "
            f"got {tuple(logits.shape)}"
        )
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (std + eps)


# --------------------------------------------------------------------------------------------
# MLKD


class MultiLevelLogitTerms(NamedTuple):
    """MLKD's three alignment terms, each already summed over the temperatures."""

    instance: torch.Tensor
    batch: torch.Tensor
    class_level: torch.Tensor


def mlkd_confidence_masks(teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official MLKD code's confidence masks, from the teacher's logits (on the weak view).

    - sample mask ``(batch,)``: the teacher's top softmax probability (at ``T = 1``) is **at most**
      the batch median,
    - class mask ``(classes,)``: the class's softmax probability summed over the batch is at most
      the median of those sums.

    The medians are ``numpy.percentile(..., 50)`` in the code (linear interpolation), which
    :func:`torch.quantile` reproduces; half-precision logits are promoted to float32 first. Note
    the comparison is ``≤`` (``Tensor.le``): the masks keep the *less* confident half, not the
    more confident one.
    """
    if teacher_logits.ndim != 2:
        raise ValueError(
            "mlkd_confidence_masks expects (batch, classes) teacher_logits, got "
            f"{tuple(teacher_logits.shape)}"
        )
    probs = F.softmax(teacher_logits.detach().float(), dim=1)  # torch.quantile needs float32/64
    confidence = probs.max(dim=1).values
    class_confidence = probs.sum(dim=0)
    sample_mask = confidence <= torch.quantile(confidence, 0.5)
    class_mask = class_confidence <= torch.quantile(class_confidence, 0.5)
    return sample_mask, class_mask


def multilevel_logit_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperatures: Sequence[float] = MLKD_TEMPERATURES,
    masked: bool = True,
) -> MultiLevelLogitTerms:
    """MLKD's instance-, batch- and class-level alignment for one pair of logits, reproducing the
    arithmetic of the official ``KD_ours.py``. With ``p = softmax(z/T)`` (``(batch, classes)``),
    for every ``T`` in ``temperatures``:

    - instance: ``T² · mean_i KL(p^T_i ‖ p^S_i)`` (Hinton KD at ``T``),
    - batch: ``‖p^T p^Tᵀ − p^S p^Sᵀ‖²_F / batch`` (the ``batch × batch`` sample-correlation Gram),
    - class: ``‖p^Tᵀ p^T − p^Sᵀ p^S‖²_F / classes`` (the ``classes × classes`` class-correlation
      Gram),

    each term summed over the temperatures. The batch and class terms carry no ``T²``.

    With ``masked=True`` (the official weak-view terms) the masks of
    :func:`mlkd_confidence_masks` are applied as the code applies them: each term is already a
    batch-reduced scalar when it is multiplied by the mask and averaged (the per-sample
    ``reduce=False`` variant is commented out in the code), so a mask only scales its term by the
    fraction of entries it keeps (about one half): the instance and batch terms by the sample
    mask's, the class term by the class mask's. With ``masked=False`` no factor is applied (the
    code's strong-view instance term, which is unmasked).

    The method supplies the pairing: the official loss is ``w · (instance(weak, masked) +
    batch(weak, masked) + class(weak, masked) + instance(strong, unmasked))`` plus
    ``w_ce · (CE(weak) + CE(strong))``; the code computes the strong-view batch and class terms
    but never adds them, and its strong-view instance sum takes the ``T = 2`` and ``T = 6``
    parts from the weak view. The official temperatures are the base KD temperature plus 2, 3, 5
    and 6 (:data:`MLKD_TEMPERATURES` for the CIFAR-100 base of 4).
    """
    _check_pair("multilevel_logit_loss", student_logits, teacher_logits)
    if len(temperatures) == 0:
        raise ValueError("multilevel_logit_loss: temperatures must not be empty")
    for temperature in temperatures:
        _check_temperature("multilevel_logit_loss", temperature)
    batch, classes = student_logits.shape
    teacher_logits = teacher_logits.detach()
    instance = student_logits.new_zeros(())
    batch_term = student_logits.new_zeros(())
    class_term = student_logits.new_zeros(())
    for temperature in temperatures:
        log_p_s = F.log_softmax(student_logits / temperature, dim=1)
        log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
        p_s, p_t = log_p_s.exp(), log_p_t.exp()
        kl = (p_t * (log_p_t - log_p_s)).sum(dim=1).mean()
        instance = instance + kl * temperature**2
        batch_term = batch_term + (p_t @ p_t.t() - p_s @ p_s.t()).pow(2).sum() / batch
        class_term = class_term + (p_t.t() @ p_t - p_s.t() @ p_s).pow(2).sum() / classes
    if masked:
        sample_mask, class_mask = mlkd_confidence_masks(teacher_logits)
        sample_fraction = sample_mask.to(instance.dtype).mean()
        instance = instance * sample_fraction
        batch_term = batch_term * sample_fraction
        class_term = class_term * class_mask.to(class_term.dtype).mean()
    return MultiLevelLogitTerms(instance, batch_term, class_term)

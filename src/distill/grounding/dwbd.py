"""SimVG's dynamic weight-balance distillation (DWBD) as a training method, with its baselines.

Dai, Yang, Xu, Feng & Yang, "SimVG: A Simple Framework for Visual Grounding with Decoupled
Multi-modal Fusion", NeurIPS 2024, arXiv 2409.17531; official code ``Dmmm1997/SimVG``
(``simvg/models/heads/tgqs_kd_detr_head/tgqs_kd_detr_head.py``, ``forward_train`` branch
``"balanced_distill"``; ``simvg/core/criterion/criterion.py``; configs
``configs/single/ViT-base/refcoco/refcoco_{onestage,twostage_1,twostage_2}.py``).

The model (:class:`~distill.grounding.models.GroundingModel`) has a decoder branch (DB, the
teacher inside the model) and a token branch (TB, the fast head). With ground truth ``g`` and
DB's last-layer boxes ``b`` and foreground scores ``p = softmax(logits)[..., 0]``::

    m_i   = argmin_q 5·‖b_iq − g_i‖₁ − p_iq − 2·GIoU(b_iq, g_i)   (Hungarian with one target)
    ω_i   = p_{i,m_i} · IoU(b_{i,m_i}, g_i)                        (detached)
    w     = mean_i ω_i                                             (detached)
    L_det(x, y) = CE(logits_x, object) + 5·‖x − y‖₁ + 2·(1 − GIoU(x, y))   (batch means)
    L_TB  = λ_t·(1 − w)·L_det(TB, g) + λ_d·w·L_det(TB, b_m)        λ_t = 2, λ_d = 1
    L_DB  = Σ_layers [ CE_eos(logits, matched → object, others → no object)
                       + 5·‖b_m − g‖₁ + 2·(1 − GIoU(b_m, g)) ]
    total = L_DB + L_TB

(:func:`distill.losses.dwbd.dwbd_loss` computes ``L_TB``, ω and w; :func:`decoder_loss` here
computes ``L_DB``.) Early in training DB is poor, w ≈ 0, and TB learns from the labels; as DB
improves w → 1 and TB follows DB's boxes.

**Matching.** With one ground-truth box per expression, the Hungarian assignment is the query of
least DETR cost (:func:`distill.losses.dwbd.matched_query`), per decoder layer for ``L_DB`` and on
the last layer for ω; with the default ``queries = 1`` (50 of the 53 official configs) it is the
only query. DB's class term is DETR's: cross-entropy over every query, the unmatched ones labelled
"no object" with class weight ``eos_coef = 0.1`` (a weighted mean, as ``SetCriterion``).

**Methods** (:data:`METHODS`), all trained with ``L_DB`` as well (DB is always in the model):

* ``tb-gt``: TB from the ground truth only, ``L_TB = λ_t·L_det(TB, g)`` (w fixed at 0);
* ``fixed-mix``: ``w`` fixed at ``fixed_weight = 0.5`` instead of ``mean ω``;
* ``dwbd``: one stage, DB and TB jointly with the dynamic w (official ``*_onestage.py``);
* ``dwbd-2stage``: stage 1 trains DB alone (``L_DB``; official ``*_twostage_1.py``,
  ``branch_loss_weight={"decoder": 1.0}``), stage 2 continues from it with DWBD (official
  ``*_twostage_2.py``, ``load_from`` the stage-1 weights, a fresh schedule) and DB's decoder
  frozen: the queries, decoder layers and DB heads get ``requires_grad = False`` and ``eval()``
  (the head's ``decoder_freeze`` switch). ``L_DB`` is still added, so the shared encoder keeps
  DB's gradient. The official twostage_2 configs leave ``decoder_freeze=False``; we freeze by
  default (``freeze_decoder``) as the stage-2 teacher is meant to be the stage-1 DB, and the
  switch turns it off.

Where the paper leaves a choice, the official code was followed: ω uses DB's last layer, read
detached; ω enters only through the batch mean w (``per_sample_weighting=False``, see
:mod:`distill.losses.dwbd`); TB's loss includes its class term in both targets; the λ of the
ViT-Base configs.

Pure computation: no files, no printing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.grounding.models import GroundingModel, GroundingOutput
from distill.losses.dwbd import (
    OBJECT_CLASS,
    detection_loss,
    dwbd_loss,
    dwbd_weights,
    matched_query,
)

#: The compared methods, in board order.
METHODS = ("tb-gt", "fixed-mix", "dwbd", "dwbd-2stage")

#: DETR's weight of the "no object" class in DB's cross-entropy (SimVG ``eos_coef``).
EOS_COEF = 0.1


@dataclass(frozen=True)
class MethodPlan:
    """How a method weighs TB's two targets and whether it trains in two stages.

    ``mix``: ``"gt"`` (w = 0), ``"fixed"`` (w = ``fixed_weight``) or ``"dynamic"`` (w = mean ω).
    """

    name: str
    mix: Literal["gt", "fixed", "dynamic"]
    two_stage: bool = False


def plan_of(name: str) -> MethodPlan:
    """The plan of a method name; a ``ValueError`` names the known ones."""
    plans = {
        "tb-gt": MethodPlan("tb-gt", "gt"),
        "fixed-mix": MethodPlan("fixed-mix", "fixed"),
        "dwbd": MethodPlan("dwbd", "dynamic"),
        "dwbd-2stage": MethodPlan("dwbd-2stage", "dynamic", two_stage=True),
    }
    if name not in plans:
        raise ValueError(f"unknown grounding method {name!r}; known: {', '.join(METHODS)}")
    return plans[name]


def decoder_loss(output: GroundingOutput, gt: Tensor, eos_coef: float = EOS_COEF) -> Tensor:
    """``L_DB``: DETR's loss of every decoder layer against the one ground-truth box.

    Per layer: the matched query (:func:`~distill.losses.dwbd.matched_query`) is labelled object,
    the others no object; the class term is the cross-entropy over all queries weighted ``[1,
    eos_coef]`` (weighted mean); the box terms (L1 × 5, GIoU × 2) are the matched query's.
    """
    total = gt.new_zeros(())
    for boxes, logits in output.db_layers:
        scores = logits.detach().softmax(-1)[..., OBJECT_CLASS]
        matched = matched_query(boxes.detach(), scores, gt)
        labels = torch.ones(logits.shape[:2], dtype=torch.long, device=logits.device)
        labels[torch.arange(len(matched)), matched] = OBJECT_CLASS
        weight = torch.tensor([1.0, eos_coef], device=logits.device, dtype=logits.dtype)
        class_term = F.cross_entropy(logits.transpose(1, 2), labels, weight=weight)
        matched_boxes = boxes[torch.arange(len(matched)), matched]
        total = total + class_term + detection_loss(matched_boxes, gt)
    return total


@dataclass
class TokenTerms:
    """TB's loss terms and DB's quality: ``gt_term``, ``distill_term`` (scalars with gradient to
    TB), ``w`` the weight actually used and ``omega_mean`` = mean ω (both detached floats)."""

    gt_term: Tensor
    distill_term: Tensor
    w: float
    omega_mean: float

    @property
    def total(self) -> Tensor:
        return self.gt_term + self.distill_term


def token_loss(
    output: GroundingOutput,
    gt: Tensor,
    plan: MethodPlan,
    lambda_t: float = 2.0,
    lambda_d: float = 1.0,
    fixed_weight: float = 0.5,
    per_sample_weighting: bool = False,
) -> TokenTerms:
    """``L_TB`` of ``plan``: ``λ_t·(1 − w)·L_det(TB, g) + λ_d·w·L_det(TB, b_m)`` with w = mean ω
    (``dynamic``, :func:`~distill.losses.dwbd.dwbd_loss`), ``fixed_weight`` (``fixed``) or 0
    (``gt``: the distillation term is exactly zero and not computed)."""
    db_boxes, db_scores = output.db_boxes, output.db_scores
    if plan.mix == "dynamic":
        terms = dwbd_loss(
            output.tb_boxes,
            db_boxes,
            db_scores,
            gt,
            lambda_t,
            lambda_d,
            tb_logits=output.tb_logits,
            per_sample_weighting=per_sample_weighting,
        )
        w = float(terms.w)
        return TokenTerms(terms.gt_term, terms.distill_term, w, w)
    matched = matched_query(db_boxes.detach(), db_scores.detach(), gt)
    omega, mean_omega = dwbd_weights(db_boxes, db_scores, gt, matched)
    gt_loss = detection_loss(output.tb_boxes, gt, pred_logits=output.tb_logits)
    if plan.mix == "gt":
        return TokenTerms(lambda_t * gt_loss, gt_loss.new_zeros(()), 0.0, float(mean_omega))
    teacher = db_boxes.detach()[torch.arange(len(matched)), matched]
    distill = detection_loss(
        output.tb_boxes,
        teacher,
        omega if per_sample_weighting else None,
        pred_logits=output.tb_logits,
    )
    w = fixed_weight
    return TokenTerms(lambda_t * (1 - w) * gt_loss, lambda_d * w * distill, w, float(mean_omega))


def set_decoder_frozen(model: GroundingModel, frozen: bool) -> None:
    """Freeze (or release) DB's own parameters: ``requires_grad`` off and the modules in eval mode
    (SimVG's ``decoder_freeze``). The shared encoder and TB stay trainable."""
    for parameter in model.decoder_parameters():
        parameter.requires_grad_(not frozen)
    for module in model.decoder_modules():
        module.train(not frozen and model.training)


@dataclass
class StepLoss:
    """One step's loss: ``total`` (to minimize) and its named parts as floats."""

    total: Tensor
    parts: dict[str, float]


def grounding_loss(
    model: GroundingModel,
    images: Tensor,
    tokens: Tensor,
    gt: Tensor,
    plan: MethodPlan,
    stage: int = 1,
    lambda_t: float = 2.0,
    lambda_d: float = 1.0,
    fixed_weight: float = 0.5,
    per_sample_weighting: bool = False,
    eos_coef: float = EOS_COEF,
) -> StepLoss:
    """The whole model's loss for one batch: ``L_DB + L_TB`` — or ``L_DB`` alone in stage 1 of a
    two-stage plan (TB is not trained then). ``parts``: ``db``, ``tb_gt``, ``tb_kd``, ``w`` (the
    weight used; for stage 1 and ``tb-gt`` 0) and ``omega`` (mean ω, DB's quality, always)."""
    if stage not in (1, 2) or (stage == 2 and not plan.two_stage):
        raise ValueError(f"stage must be 1, or 2 for a two-stage plan; got {stage} for {plan.name}")
    output = model(images, tokens)
    db = decoder_loss(output, gt, eos_coef)
    if plan.two_stage and stage == 1:
        matched = matched_query(output.db_boxes.detach(), output.db_scores.detach(), gt)
        _, omega = dwbd_weights(output.db_boxes, output.db_scores, gt, matched)
        parts = {"db": float(db.detach()), "tb_gt": 0.0, "tb_kd": 0.0, "w": 0.0, "omega": float(omega)}
        return StepLoss(db, parts)
    terms = token_loss(output, gt, plan, lambda_t, lambda_d, fixed_weight, per_sample_weighting)
    parts = {
        "db": float(db.detach()),
        "tb_gt": float(terms.gt_term.detach()),
        "tb_kd": float(terms.distill_term.detach()),
        "w": terms.w,
        "omega": terms.omega_mean,
    }
    return StepLoss(db + terms.total, parts)

"""SimVG's dynamic weight-balance distillation (DWBD) for a one-box grounding head.

Dai, Yang, Xu, Feng & Yang, "SimVG: A Simple Framework for Visual Grounding with Decoupled
Multi-modal Fusion" (NeurIPS 2024, arXiv 2409.17531); official code ``Dmmm1997/SimVG``. A grounding
model has two heads on the same features: the *decoder branch* (DB), a DETR decoder with ``N``
queries, each a normalized ``(cx, cy, w, h)`` box and a foreground score; and the *token branch*
(TB), a light MLP on one object token that predicts one box. The DB is the in-model teacher. DWBD
trains the TB from the ground truth and from the DB at once, balanced by how good the DB is now::

    m_i  = argmin_q  5·‖b_iq − g_i‖₁ − 1·p_iq − 2·GIoU(b_iq, g_i)      (DETR matching cost)
    ω_i  = p_{i,m_i} · IoU(b_{i,m_i}, g_i)                              (detached)
    w    = mean_i ω_i                                                    (detached)
    L_TB = λ_t·(1 − w)·L_det(TB, g) + λ_d·w·L_det(TB, b_m)
    L_det(x, y) = 1·CE(x, object) + 5·mean_i ‖x_i − y_i‖₁ + 2·mean_i (1 − GIoU(x_i, y_i))

Facts from the official code (``simvg/models/heads/tgqs_kd_detr_head/tgqs_kd_detr_head.py``, class
``TextGuidedQuerySelectKDDETRHead``; ``simvg/core/criterion/criterion.py``, ``SetCriterion``):

* ``prepare_soft_targets(..., prepare_target_mode="score_iou_weighted")`` matches DB's last-layer
  output to the ground truth with detrex's ``HungarianMatcher(cost_class=1, cost_bbox=5,
  cost_giou=2, cost_class_type="ce_cost")``; with one target box per sample the Hungarian
  assignment is the query of least cost (:func:`matched_query`). ``p`` is
  ``softmax(logits)[..., 0]`` (class 0 is the object, the last class "no object"), and DB's logits
  and boxes are taken with ``.detach().data``: the targets and ω carry no gradient.
* ``forward_train``, branch ``"balanced_distill"``: ``w = mean(cat(weights))``;
  ``loss_tgt = λ_t · L_det(TB, GT) · (1 − w)`` and ``loss_kd = λ_d · L_det(TB, DB targets) · w``;
  the total adds the DB's own DETR loss ``loss_dgt`` (weight 1, with auxiliary decoder layers).
* Both TB terms use ``self.criterion`` (``loss_class_type="ce_loss"``, weights class 1, bbox 5,
  giou 2). That criterion ignores the targets' ``"weight"`` entry, so in the official balanced
  loss ω enters **only through w**: the distillation term is *not* weighted per sample. The
  per-sample weighting exists in ``SetCriterion``'s ``"weighted_ce_loss"`` branch (box terms × ω,
  class term unweighted), which the head uses only for its other, non-balanced ``"distill"`` mode;
  no released config selects that mode.
  :func:`dwbd_loss` follows the balanced code by default (``per_sample_weighting=False``) and
  offers the ω-weighted box terms as an option.
* λ: the ViT-Base configs use ``{"token": 2.0, "distill": 1.0}`` (λ_t = 2, λ_d = 1, the defaults
  here); the ViT-Large configs use ``{"token": 1.0, "distill": 0.4}``. 50 of 53 configs set
  ``num_queries=1`` (the matching is then trivial), three set 10.

Box losses are normalized by the number of target boxes (one per sample: the batch size), the L1
is summed over the 4 coordinates. Equation numbers of the paper are not cited: the text of the
paper was not available here to check them; the formulas above follow the code.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from distill.losses.boxes import box_cxcywh_to_xyxy, box_iou, box_l1, generalized_box_iou

#: SimVG's matching costs (detrex ``HungarianMatcher`` in ``TextGuidedQuerySelectKDDETRHead``)
MATCH_COST_CLASS = 1.0
MATCH_COST_BBOX = 5.0
MATCH_COST_GIOU = 2.0

#: SimVG's loss weights (``SetCriterion`` weight_dict: ``loss_class`` 1, ``loss_bbox`` 5, ``loss_giou`` 2)
CLASS_WEIGHT = 1.0
L1_WEIGHT = 5.0
GIOU_WEIGHT = 2.0

#: index of the object class in the head's logits (the last index is "no object")
OBJECT_CLASS = 0


class DWBDTerms(NamedTuple):
    """The token branch's two DWBD terms and the weights that balance them.

    Attributes:
        gt_term: ``λ_t·(1 − w)·L_det(TB, GT)`` (scalar).
        distill_term: ``λ_d·w·L_det(TB, DB's matched box)`` (scalar; ω-weighted box terms when
            ``per_sample_weighting``).
        w: ``mean(ω)``, a detached scalar in [0, 1].
        omega: ``(B,)`` detached per-sample quality ``score × IoU`` of DB's matched query.
        matched: ``(B,)`` index of DB's matched query per sample.
    """

    gt_term: torch.Tensor
    distill_term: torch.Tensor
    w: torch.Tensor
    omega: torch.Tensor
    matched: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        """``gt_term + distill_term``: the token branch's part of SimVG's total loss."""
        return self.gt_term + self.distill_term


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _check_single_boxes(name: str, boxes: torch.Tensor) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must be (batch, 4) cxcywh boxes, got shape {_shape(boxes)}")
    if boxes.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch; DWBD needs at least one sample")


def _check_decoder(db_boxes: torch.Tensor, db_scores: torch.Tensor, gt: torch.Tensor) -> None:
    _check_single_boxes("gt", gt)
    batch = gt.shape[0]
    if db_boxes.ndim != 3 or db_boxes.shape[2] != 4 or db_boxes.shape[0] != batch:
        raise ValueError(
            f"db_boxes must be (batch={batch}, queries, 4) cxcywh boxes, got shape {_shape(db_boxes)}"
        )
    if db_boxes.shape[1] == 0:
        raise ValueError("db_boxes has no queries; the decoder branch needs at least one")
    if db_scores.shape != db_boxes.shape[:2]:
        raise ValueError(
            f"db_scores must be (batch, queries) = {_shape(db_boxes)[:2]} foreground probabilities, "
            f"got shape {_shape(db_scores)}"
        )


def _check_matched(matched: torch.Tensor, batch: int) -> None:
    if matched.shape != (batch,):
        raise ValueError(f"matched must be ({batch},) query indices, got shape {_shape(matched)}")
    if matched.is_floating_point() or matched.is_complex() or matched.dtype == torch.bool:
        raise ValueError(f"matched must hold integer query indices, got dtype {matched.dtype}")


@torch.no_grad()
def matched_query(
    db_boxes: torch.Tensor,
    db_scores: torch.Tensor,
    gt: torch.Tensor,
    cost_class: float = MATCH_COST_CLASS,
    cost_bbox: float = MATCH_COST_BBOX,
    cost_giou: float = MATCH_COST_GIOU,
) -> torch.Tensor:
    """Index ``(B,)`` of the decoder query matched to each sample's single ground-truth box.

    SimVG matches with detrex's ``HungarianMatcher`` (``cost_class_type="ce_cost"``), whose cost
    of query ``q`` against target ``g`` is ``cost_bbox·‖b_q − g‖₁ − cost_class·p_q −
    cost_giou·GIoU(b_q, g)`` (L1 over the 4 ``cxcywh`` coordinates, GIoU on ``xyxy``). With one
    target per sample, the Hungarian assignment is the query of least cost; ties go to the lowest
    index (``torch.argmin``; scipy's solver is not documented to break ties the same way).

    Args:
        db_boxes: ``(B, N, 4)`` decoder boxes, normalized ``cxcywh``.
        db_scores: ``(B, N)`` foreground probabilities (SimVG: ``softmax(logits)[..., 0]``).
        gt: ``(B, 4)`` ground-truth boxes, normalized ``cxcywh``.

    Raises:
        ValueError: a shape does not fit (the tensor is named).
    """
    _check_decoder(db_boxes, db_scores, gt)
    target = gt.unsqueeze(1).expand_as(db_boxes)
    giou = generalized_box_iou(box_cxcywh_to_xyxy(db_boxes), box_cxcywh_to_xyxy(target))
    cost = cost_bbox * box_l1(db_boxes, target) - cost_class * db_scores - cost_giou * giou
    return cost.argmin(dim=1)


def _gather_matched(
    db_boxes: torch.Tensor, db_scores: torch.Tensor, matched: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    index = matched.long()
    boxes = db_boxes.gather(1, index.view(-1, 1, 1).expand(-1, 1, 4)).squeeze(1)
    scores = db_scores.gather(1, index.view(-1, 1)).squeeze(1)
    return boxes, scores


def dwbd_weights(
    db_boxes: torch.Tensor, db_scores: torch.Tensor, gt: torch.Tensor, matched: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample quality ``ω`` and batch weight ``w`` of the decoder branch, both detached.

    ``ω_i = p_{i,m_i} · IoU(b_{i,m_i}, g_i)`` for the matched query ``m_i`` and ``w = mean_i ω_i``
    (SimVG ``prepare_soft_targets``, mode ``"score_iou_weighted"``, then ``forward_train``'s
    ``weights_distill``). With scores in [0, 1], both lie in [0, 1]. Nothing here carries a
    gradient: SimVG reads DB's outputs with ``.detach().data``.

    Args:
        db_boxes: ``(B, N, 4)`` decoder boxes, normalized ``cxcywh``.
        db_scores: ``(B, N)`` foreground probabilities.
        gt: ``(B, 4)`` ground-truth boxes, normalized ``cxcywh``.
        matched: ``(B,)`` integer query indices (:func:`matched_query`).

    Returns:
        ``(omega (B,), w ())``.

    Raises:
        ValueError: a shape or dtype does not fit (the tensor is named).
    """
    _check_decoder(db_boxes, db_scores, gt)
    _check_matched(matched, gt.shape[0])
    boxes, scores = _gather_matched(db_boxes.detach(), db_scores.detach(), matched)
    iou = box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(gt.detach()))
    omega = scores * iou
    return omega, omega.mean()


def detection_loss(
    pred_boxes: torch.Tensor,
    target_boxes: torch.Tensor,
    sample_weights: torch.Tensor | None = None,
    l1_weight: float = L1_WEIGHT,
    giou_weight: float = GIOU_WEIGHT,
    pred_logits: torch.Tensor | None = None,
    class_weight: float = CLASS_WEIGHT,
) -> torch.Tensor:
    """DETR's loss for one predicted box per sample against one target box per sample.

    ``L = class_weight·mean_i CE(logits_i, object) + (1/B)·Σ_i s_i·(l1_weight·‖p_i − t_i‖₁ +
    giou_weight·(1 − GIoU(p_i, t_i)))`` with ``s_i = 1`` unless ``sample_weights`` are given —
    SimVG's ``SetCriterion.loss_boxes`` (its ``"weighted_ce_loss"`` branch multiplies both box terms
    by the target's weight and still divides by the number of boxes ``B``, not by ``Σ s``). The
    class term is left out when ``pred_logits`` is None; when present it is never weighted by
    ``s`` (the official weighted branch gives the matched query weight 1 as well).

    Args:
        pred_boxes: ``(B, 4)`` predicted boxes, normalized ``cxcywh``.
        target_boxes: ``(B, 4)`` targets, same format (not detached here).
        sample_weights: optional ``(B,)`` per-sample weights of the box terms.
        pred_logits: optional ``(B, C)`` logits, ``C ≥ 2``, class 0 = object, last = no object.

    Raises:
        ValueError: a shape does not fit (the tensor is named).
    """
    _check_single_boxes("pred_boxes", pred_boxes)
    if target_boxes.shape != pred_boxes.shape:
        raise ValueError(
            f"target_boxes must match pred_boxes {_shape(pred_boxes)}, got shape {_shape(target_boxes)}"
        )
    batch = pred_boxes.shape[0]
    per_box = l1_weight * box_l1(pred_boxes, target_boxes) + giou_weight * (
        1 - generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(target_boxes))
    )
    if sample_weights is not None:
        if sample_weights.shape != (batch,):
            raise ValueError(f"sample_weights must be ({batch},), got shape {_shape(sample_weights)}")
        per_box = per_box * sample_weights
    loss = per_box.sum() / batch
    if pred_logits is not None:
        if pred_logits.ndim != 2 or pred_logits.shape[0] != batch or pred_logits.shape[1] < 2:
            raise ValueError(
                f"pred_logits must be ({batch}, classes ≥ 2) with class 0 the object, "
                f"got shape {_shape(pred_logits)}"
            )
        labels = torch.full((batch,), OBJECT_CLASS, dtype=torch.long, device=pred_logits.device)
        loss = loss + class_weight * F.cross_entropy(pred_logits, labels)
    return loss


def dwbd_loss(
    tb_boxes: torch.Tensor,
    db_boxes: torch.Tensor,
    db_scores: torch.Tensor,
    gt: torch.Tensor,
    lambda_t: float = 2.0,
    lambda_d: float = 1.0,
    tb_logits: torch.Tensor | None = None,
    per_sample_weighting: bool = False,
    matched: torch.Tensor | None = None,
    l1_weight: float = L1_WEIGHT,
    giou_weight: float = GIOU_WEIGHT,
    class_weight: float = CLASS_WEIGHT,
) -> DWBDTerms:
    """SimVG's DWBD loss of the token branch (module docstring), as two terms and their weights.

    ``gt_term = λ_t·(1 − w)·L_det(TB, GT)`` and ``distill_term = λ_d·w·L_det(TB, b_m)`` where
    ``b_m`` is DB's matched box (detached, as in SimVG) and ``w = mean(ω)`` (detached). With
    ``per_sample_weighting`` the distillation box terms are also weighted by ``ω_i`` (SimVG's
    ``"weighted_ce_loss"`` criterion); the official balanced loss does not do this (default off).
    The gradient reaches ``tb_boxes`` and ``tb_logits`` only; the decoder branch learns from its
    own DETR loss, which the caller adds.

    Args:
        tb_boxes: ``(B, 4)`` token-branch boxes, normalized ``cxcywh``.
        db_boxes: ``(B, N, 4)`` decoder-branch boxes (last decoder layer), normalized ``cxcywh``.
        db_scores: ``(B, N)`` decoder foreground probabilities.
        gt: ``(B, 4)`` ground truth, normalized ``cxcywh``.
        lambda_t: weight of the ground-truth term (SimVG ViT-B configs: 2.0; ViT-L: 1.0).
        lambda_d: weight of the distillation term (SimVG ViT-B configs: 1.0; ViT-L: 0.4).
        tb_logits: optional ``(B, C)`` token-branch logits (class 0 = object); adds the class term
            to both ``L_det`` (both targets are "object").
        matched: optional ``(B,)`` precomputed matched queries; :func:`matched_query` otherwise.

    Raises:
        ValueError: a shape does not fit (the tensor is named).
    """
    _check_single_boxes("tb_boxes", tb_boxes)
    _check_decoder(db_boxes, db_scores, gt)
    if tb_boxes.shape != gt.shape:
        raise ValueError(f"tb_boxes must match gt {_shape(gt)}, got shape {_shape(tb_boxes)}")
    db_boxes, db_scores, gt = db_boxes.detach(), db_scores.detach(), gt.detach()
    if matched is None:
        matched = matched_query(db_boxes, db_scores, gt)
    omega, w = dwbd_weights(db_boxes, db_scores, gt, matched)
    teacher_boxes, _ = _gather_matched(db_boxes, db_scores, matched)
    gt_loss = detection_loss(
        tb_boxes, gt, None, l1_weight, giou_weight, pred_logits=tb_logits, class_weight=class_weight
    )
    distill_loss = detection_loss(
        tb_boxes,
        teacher_boxes,
        omega if per_sample_weighting else None,
        l1_weight,
        giou_weight,
        pred_logits=tb_logits,
        class_weight=class_weight,
    )
    return DWBDTerms(
        gt_term=lambda_t * (1 - w) * gt_loss,
        distill_term=lambda_d * w * distill_loss,
        w=w,
        omega=omega,
        matched=matched,
    )

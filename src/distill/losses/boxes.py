"""Paired box geometry for DETR-style box losses: format conversion, IoU, GIoU, L1.

Boxes are normalized to the image (coordinates in [0, 1]) as in DETR (Carion et al., ECCV 2020,
arXiv 2005.12872) and in SimVG (Dai et al., NeurIPS 2024, arXiv 2409.17531), whose heads predict
``(cx, cy, w, h)`` after a sigmoid. Every function here is *paired*: row ``i`` of the first
argument meets row ``i`` of the second, giving ``(..., )`` values (the diagonal of the pairwise
matrices that DETR's ``box_ops`` compute and SimVG reads with ``torch.diag``).

Generalized IoU is Rezatofighi et al., "Generalized Intersection over Union" (CVPR 2019,
arXiv 1902.09630), Algorithm 1: ``GIoU = IoU − |C \\ (A ∪ B)| / |C|`` with ``C`` the smallest
enclosing box; it lies in (−1, 1], equals 1 only for identical boxes and is negative for disjoint
boxes far apart.

Degenerate boxes (zero area) would divide by zero in the plain formulas; the denominators here are
clamped from below by ``eps`` (1e-7 by default), which leaves every box of positive area untouched.
"""

from __future__ import annotations

import torch

#: smallest union / enclosing area used as a denominator (only zero-area boxes reach it)
AREA_EPS = 1e-7


def _check_boxes(name: str, boxes: torch.Tensor) -> None:
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(
            f"{name} must have 4 coordinates in its last dimension, got shape {tuple(boxes.shape)}"
        )


def _check_paired(first_name: str, first: torch.Tensor, second_name: str, second: torch.Tensor) -> None:
    _check_boxes(first_name, first)
    _check_boxes(second_name, second)
    if first.shape != second.shape:
        raise ValueError(
            f"{first_name} {tuple(first.shape)} and {second_name} {tuple(second.shape)} must have the same "
            "shape: boxes are compared pairwise, row by row"
        )


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` boxes ``(cx, cy, w, h)`` → ``(x0, y0, x1, y1)`` = ``(cx − w/2, cy − h/2, cx + w/2,
    cy + h/2)``. Differentiable; no clamping (DETR's ``box_cxcywh_to_xyxy``)."""
    _check_boxes("boxes", boxes)
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp_min(0) * (boxes[..., 3] - boxes[..., 1]).clamp_min(0)


def _intersection_union(
    boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    top_left = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    extent = (bottom_right - top_left).clamp_min(0)
    intersection = extent[..., 0] * extent[..., 1]
    union = (_area(boxes1) + _area(boxes2) - intersection).clamp_min(eps)
    return intersection, union


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = AREA_EPS) -> torch.Tensor:
    """Paired IoU of ``(..., 4)`` ``xyxy`` boxes → ``(...)`` in [0, 1].

    ``IoU_i = |A_i ∩ B_i| / |A_i ∪ B_i|``; the union is clamped below by ``eps``.

    Raises:
        ValueError: a tensor lacks the 4 coordinates, or the shapes differ (named in the message).
    """
    _check_paired("boxes1", boxes1, "boxes2", boxes2)
    intersection, union = _intersection_union(boxes1, boxes2, eps)
    return intersection / union


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = AREA_EPS) -> torch.Tensor:
    """Paired generalized IoU (Rezatofighi et al. 2019) of ``(..., 4)`` ``xyxy`` boxes → ``(...)``.

    ``GIoU_i = IoU_i − (|C_i| − |A_i ∪ B_i|) / |C_i|`` with ``C_i`` the smallest box enclosing
    ``A_i`` and ``B_i``. It is 1 for identical boxes, in (−1, 0) for disjoint ones, and keeps a
    gradient where IoU is 0. Union and ``|C_i|`` are clamped below by ``eps``.

    Raises:
        ValueError: a tensor lacks the 4 coordinates, or the shapes differ (named in the message).
    """
    _check_paired("boxes1", boxes1, "boxes2", boxes2)
    intersection, union = _intersection_union(boxes1, boxes2, eps)
    corner_low = torch.minimum(boxes1[..., :2], boxes2[..., :2])
    corner_high = torch.maximum(boxes1[..., 2:], boxes2[..., 2:])
    enclosing = _area(torch.cat((corner_low, corner_high), dim=-1)).clamp_min(eps)
    return intersection / union - (enclosing - union) / enclosing


def box_l1(pred_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
    """Paired L1 distance ``Σ_k |p_ik − t_ik|`` over the 4 coordinates → ``(...)``.

    DETR's box loss sums the absolute error over the 4 normalized ``cxcywh`` coordinates of each
    matched box and divides by the number of boxes (``loss_bbox = l1.sum() / num_boxes``); this is
    the per-box sum, before that division.

    Raises:
        ValueError: a tensor lacks the 4 coordinates, or the shapes differ (named in the message).
    """
    _check_paired("pred_boxes", pred_boxes, "target_boxes", target_boxes)
    return (pred_boxes - target_boxes).abs().sum(dim=-1)

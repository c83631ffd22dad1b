"""Grounding metrics: Acc@IoU≥0.5 and mean IoU of one predicted box per expression.

The standard referring-expression metric (RefCOCO and SimVG, arXiv 2409.17531): an expression is
grounded correctly when the IoU of the predicted box with the ground-truth box is at least 0.5.
Boxes are normalized ``(cx, cy, w, h)``; IoU from :func:`distill.losses.boxes.box_iou`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.losses.boxes import box_cxcywh_to_xyxy, box_iou

#: The IoU at which a grounding counts as correct.
ACC_THRESHOLD = 0.5


def box_ious(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(B,)`` IoU of paired ``(B, 4)`` cxcywh boxes (no gradient)."""
    if predicted.shape != target.shape or predicted.ndim != 2 or predicted.shape[1] != 4:
        raise ValueError(
            f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} must both be (B, 4) boxes"
        )
    with torch.no_grad():
        return box_iou(box_cxcywh_to_xyxy(predicted.detach()), box_cxcywh_to_xyxy(target.detach()))


def accuracy_at(predicted: torch.Tensor, target: torch.Tensor, threshold: float = ACC_THRESHOLD) -> float:
    """Fraction of rows whose IoU is at least ``threshold``."""
    return float((box_ious(predicted, target) >= threshold).float().mean())


@dataclass
class GroundingCounts:
    """Hits at IoU ≥ ``threshold``, summed IoU and count, accumulated over batches."""

    threshold: float = ACC_THRESHOLD
    hits: int = 0
    iou_sum: float = 0.0
    count: int = 0

    def add(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        ious = box_ious(predicted, target)
        self.hits += int((ious >= self.threshold).sum())
        self.iou_sum += float(ious.sum())
        self.count += int(ious.numel())

    @property
    def accuracy(self) -> float:
        """Acc@IoU≥threshold; NaN when nothing was added."""
        return self.hits / self.count if self.count else float("nan")

    @property
    def mean_iou(self) -> float:
        return self.iou_sum / self.count if self.count else float("nan")

"""Segmentation metrics for BEV collaborative perception.

DiscoGraph (Li et al., "Learning Distilled Collaboration Graph for Multi-Agent Perception",
NeurIPS 2021, arXiv 2111.00643) reports BEV segmentation as intersection over union. Here IoU is
pooled: intersections and unions are summed over every cell of every map in the batch (and over
batches with :class:`SegmentationCounts`) before dividing, rather than averaged per image, so maps
with few target cells do not dominate. Evaluating on a region — e.g. the cells the ego agent did
not see, :attr:`distill.perception.world.Scenes.occluded` — counts only the cells inside it, false
positives included.

When nothing inside the counted cells is predicted or targeted, the union is empty and IoU is
undefined: it is NaN (not 1.0), so an empty evaluation never passes as a perfect one.

A prediction is a tensor of logits (``from_logits=True``: the mask is ``sigmoid(x) > threshold``),
of probabilities (``from_logits=False``: ``x > threshold``), or already a boolean mask (used as
is). Targets are ``{0, 1}`` (any dtype; ``> 0.5`` is a target) or boolean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _mask(prediction: torch.Tensor, threshold: float, from_logits: bool) -> torch.Tensor:
    if prediction.dtype == torch.bool:
        return prediction
    if from_logits:
        return torch.sigmoid(prediction.float()) > threshold
    return prediction > threshold


def _counts(
    prediction: torch.Tensor,
    targets: torch.Tensor,
    region: torch.Tensor | None,
    threshold: float,
    from_logits: bool,
) -> tuple[int, int]:
    if prediction.shape != targets.shape:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and targets {tuple(targets.shape)} must have one shape"
        )
    with torch.no_grad():
        predicted = _mask(prediction.detach(), threshold, from_logits)
        target = targets.detach() if targets.dtype == torch.bool else targets.detach() > 0.5
        both, either = predicted & target, predicted | target
        if region is not None:
            inside = region.detach().to(torch.bool)
            try:
                torch.broadcast_shapes(inside.shape, target.shape)
            except RuntimeError as error:
                raise ValueError(
                    f"region {tuple(region.shape)} does not broadcast to targets {tuple(targets.shape)}"
                ) from error
            both, either = both & inside, either & inside
        return int(both.sum().item()), int(either.sum().item())


def iou(
    logits_or_probs: torch.Tensor,
    targets: torch.Tensor,
    region: torch.Tensor | None = None,
    threshold: float = 0.5,
    from_logits: bool = True,
) -> float:
    """Pooled intersection over union of the predicted mask and ``targets``.

    Counts every cell of the batch, or only the cells where ``region`` (a boolean tensor that
    broadcasts to ``targets``) is true. NaN when the union is empty.
    """
    intersection, union = _counts(logits_or_probs, targets, region, threshold, from_logits)
    return intersection / union if union else float("nan")


@dataclass
class SegmentationCounts:
    """Intersection and union accumulated over batches; :attr:`iou` is the pooled IoU."""

    intersection: int = 0
    union: int = 0

    def add(
        self,
        prediction: torch.Tensor,
        targets: torch.Tensor,
        region: torch.Tensor | None = None,
        threshold: float = 0.5,
        from_logits: bool = True,
    ) -> None:
        """Count one batch (arguments as for :func:`iou`)."""
        intersection, union = _counts(prediction, targets, region, threshold, from_logits)
        self.intersection += intersection
        self.union += union

    @property
    def iou(self) -> float:
        """Pooled IoU of everything added so far; NaN while the union is empty."""
        return self.intersection / self.union if self.union else float("nan")

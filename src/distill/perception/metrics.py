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


def neighbour_weight_by_sight(edge_weights: torch.Tensor, occluded: torch.Tensor) -> tuple[float, float]:
    """How much an ego trusts its neighbours where it cannot see and where it can.

    ``edge_weights``: DiscoGraph's ``(N, A, A, 1, h, w)`` collaboration weights (``[n, i, k]`` the
    softmax weight ego ``i`` gives agent ``k``); ``occluded``: the egos' ``(N, A, 1, V, V)``
    unseen cells, ``V`` a multiple of ``h``. A collaboration pixel covers a ``V/h × V/h`` block
    of cells; it is *unseen* when the ego saw none of them and *seen* when it saw all. Returns
    the mean weight on the neighbours (``1 −`` the ego's own weight) over the unseen pixels and
    over the seen ones — DiscoGraph's graph should lean on the neighbours where the ego is blind.
    NaN for a kind of pixel that does not occur.
    """
    n, a = edge_weights.shape[:2]
    h, w = edge_weights.shape[-2:]
    if tuple(occluded.shape[:2]) != (n, a) or occluded.shape[-1] % w or occluded.shape[-2] % h:
        raise ValueError(
            f"occluded {tuple(occluded.shape)} does not match edge weights {tuple(edge_weights.shape)}"
        )
    own = torch.diagonal(edge_weights[:, :, :, 0], dim1=1, dim2=2).permute(0, 3, 1, 2)  # (N, A, h, w)
    neighbours = 1.0 - own
    share = torch.nn.functional.adaptive_avg_pool2d(occluded.flatten(0, 1).float(), (h, w))
    share = share.view(n, a, h, w)
    return _mean_or_nan(neighbours[share == 1.0]), _mean_or_nan(neighbours[share == 0.0])


def _mean_or_nan(values: torch.Tensor) -> float:
    return float(values.mean()) if values.numel() else float("nan")

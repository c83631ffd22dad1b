"""Pooled IoU: golden values on hand-made masks, regions, thresholds, accumulation."""

from __future__ import annotations

import math

import pytest
import torch

from distill.perception.metrics import SegmentationCounts, iou

TARGET = torch.tensor(
    [
        [0, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
        [1, 0, 0, 0],
    ],
    dtype=torch.float32,
)
PREDICTED = torch.tensor(
    [
        [0, 1, 1, 1],
        [0, 0, 1, 0],
        [0, 0, 0, 0],
        [1, 0, 0, 1],
    ],
    dtype=torch.bool,
)


def logits(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, 3.0, -3.0)


def test_golden_value_on_a_4x4_mask():
    # intersection: (0,1), (0,2), (1,2), (3,0) = 4; union: those + (0,3), (1,1), (3,3) = 7
    assert iou(logits(PREDICTED), TARGET) == pytest.approx(4 / 7)
    assert iou(PREDICTED, TARGET) == pytest.approx(4 / 7)  # a boolean mask is used as is
    assert iou(PREDICTED.float() * 0.9, TARGET, from_logits=False) == pytest.approx(4 / 7)
    assert iou(logits(TARGET > 0), TARGET) == 1.0
    assert iou(logits(TARGET == 0), TARGET) == 0.0


def test_region_counts_only_its_cells():
    top = torch.zeros(4, 4, dtype=torch.bool)
    top[:2] = True
    # top half: intersection 3 ((0,1), (0,2), (1,2)); union 5 (+ (0,3), (1,1))
    assert iou(logits(PREDICTED), TARGET, region=top) == pytest.approx(3 / 5)
    # bottom half: intersection 1 ((3,0)), union 2 (+ (3,3)): false positives inside count
    assert iou(logits(PREDICTED), TARGET, region=~top) == pytest.approx(1 / 2)
    # a region that broadcasts: one per row
    rows = torch.tensor([True, False, False, True])[:, None]
    assert iou(logits(PREDICTED), TARGET, region=rows) == pytest.approx(3 / 5)


def test_pooled_over_the_batch_not_averaged_per_image():
    big_target = torch.zeros(4, 4)
    big_target[:2] = 1  # 8 cells, predicted perfectly
    tiny_target = torch.zeros(4, 4)
    tiny_target[0, 0] = 1  # 1 cell, missed
    targets = torch.stack([big_target, tiny_target])[:, None]
    predicted = torch.stack([big_target > 0, torch.zeros(4, 4, dtype=torch.bool)])[:, None]
    assert iou(logits(predicted), targets) == pytest.approx(8 / 9)  # per-image mean would be 0.5


def test_threshold_and_logits():
    scores = torch.tensor([[-1.0, 0.2], [1.0, 3.0]])
    target = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    assert iou(scores, target) == pytest.approx(1.0)  # sigmoid > 0.5 ⟺ logit > 0
    assert iou(scores, target, threshold=0.7) == pytest.approx(2 / 3)  # sigmoid(0.2) ≈ 0.55 drops out
    assert iou(torch.sigmoid(scores), target, threshold=0.7, from_logits=False) == pytest.approx(2 / 3)


def test_empty_union_is_nan():
    nothing = torch.zeros(4, 4)
    assert math.isnan(iou(logits(nothing > 0), nothing))
    assert math.isnan(iou(logits(PREDICTED), TARGET, region=torch.zeros(4, 4, dtype=torch.bool)))
    assert math.isnan(SegmentationCounts().iou)


def test_counts_accumulate_over_batches():
    counts = SegmentationCounts()
    counts.add(logits(PREDICTED), TARGET)
    assert (counts.intersection, counts.union) == (4, 7)
    counts.add(logits(TARGET > 0), TARGET)
    assert (counts.intersection, counts.union) == (9, 12)
    assert counts.iou == pytest.approx(9 / 12)
    top = torch.zeros(4, 4, dtype=torch.bool)
    top[:2] = True
    counts.add(PREDICTED, TARGET, region=top)
    assert (counts.intersection, counts.union) == (12, 17)
    whole = torch.stack([logits(PREDICTED), logits(TARGET > 0)])
    assert iou(whole, torch.stack([TARGET, TARGET])) == pytest.approx(9 / 12)


def test_gradients_are_not_tracked_and_shapes_are_checked():
    scores = torch.randn(2, 1, 4, 4, requires_grad=True)
    value = iou(scores, torch.zeros(2, 1, 4, 4))
    assert isinstance(value, float)
    with pytest.raises(ValueError, match="one shape"):
        iou(scores, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="broadcast"):
        iou(scores, torch.zeros(2, 1, 4, 4), region=torch.ones(3, 4, dtype=torch.bool))


def test_neighbour_weight_by_sight_splits_pixels_by_what_the_ego_saw() -> None:
    from distill.perception.metrics import neighbour_weight_by_sight

    n, a, h = 2, 3, 4
    own = torch.full((n, a, 1, h, h), 0.9)
    own[..., :2, :] = 0.3  # the top half of every ego's collaboration map trusts itself less
    weights = torch.empty(n, a, a, 1, h, h)
    for i in range(a):
        for k in range(a):
            weights[:, i, k] = own[:, i] if i == k else (1 - own[:, i]) / (a - 1)
    occluded = torch.zeros(n, a, 1, 16, 16, dtype=torch.bool)
    occluded[..., :8, :] = True  # the top half unseen: exactly the top two pixel rows
    occluded[..., 8, 0] = True  # one partly seen block: counted in neither
    unseen, seen = neighbour_weight_by_sight(weights, occluded)
    assert unseen == pytest.approx(0.7) and seen == pytest.approx(0.1)
    unseen, seen = neighbour_weight_by_sight(weights, torch.zeros_like(occluded))
    assert math.isnan(unseen) and seen == pytest.approx((8 * 0.7 + 8 * 0.1) / 16)
    with pytest.raises(ValueError, match="does not match"):
        neighbour_weight_by_sight(weights, occluded[..., :15])

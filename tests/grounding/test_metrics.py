"""Acc@IoU≥0.5 and mean IoU against hand-worked boxes."""

from __future__ import annotations

import math

import pytest
import torch

from distill.grounding.metrics import GroundingCounts, accuracy_at, box_ious


def test_golden_ious_and_threshold() -> None:
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 3)
    pred = torch.tensor(
        [
            [0.5, 0.5, 0.2, 0.2],  # identical: IoU 1
            [0.5, 0.5, 0.2, 0.1],  # half of it inside: IoU 1/2, counts at ≥ 0.5
            [0.9, 0.9, 0.1, 0.1],  # disjoint: IoU 0
        ]
    )
    assert box_ious(pred, gt).tolist() == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)
    assert accuracy_at(pred, gt) == pytest.approx(2 / 3)
    assert accuracy_at(pred, gt, threshold=0.75) == pytest.approx(1 / 3)


def test_counts_pool_batches() -> None:
    counts = GroundingCounts()
    assert math.isnan(counts.accuracy) and math.isnan(counts.mean_iou)
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    counts.add(gt, gt)
    counts.add(torch.tensor([[0.1, 0.1, 0.1, 0.1]]), gt)
    assert counts.accuracy == 0.5 and counts.mean_iou == pytest.approx(0.5)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="must both be"):
        box_ious(torch.zeros(2, 4), torch.zeros(3, 4))

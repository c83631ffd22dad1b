import math

import pytest
import torch

from distill.losses.boxes import box_cxcywh_to_xyxy, box_iou, box_l1, generalized_box_iou


def reference_iou_giou(a, b):
    """Plain-float IoU and GIoU of two xyxy boxes, written from the definitions."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union, inter / union - (hull - union) / hull


# (box A, box B, IoU, GIoU), worked by hand
HAND_CASES = [
    # overlap 1, union 7, hull 3x3 = 9: GIoU = 1/7 − 2/9 = −5/63
    ((0.0, 0.0, 2.0, 2.0), (1.0, 1.0, 3.0, 3.0), 1 / 7, -5 / 63),
    # touching neither: union 2, hull 3: GIoU = −1/3
    ((0.0, 0.0, 1.0, 1.0), (2.0, 0.0, 3.0, 1.0), 0.0, -1 / 3),
    # B inside A: IoU 4/8, hull = A, GIoU = IoU
    ((0.0, 0.0, 4.0, 2.0), (1.0, 0.0, 3.0, 2.0), 0.5, 0.5),
    # identical
    ((0.1, 0.2, 0.5, 0.9), (0.1, 0.2, 0.5, 0.9), 1.0, 1.0),
]


@pytest.mark.parametrize(("a", "b", "iou", "giou"), HAND_CASES)
def test_iou_and_giou_match_hand_worked_values(a, b, iou, giou):
    first, second = torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    assert box_iou(first, second).item() == pytest.approx(iou, abs=1e-12)
    assert generalized_box_iou(first, second).item() == pytest.approx(giou, abs=1e-12)
    # paired functions are symmetric
    assert generalized_box_iou(second, first).item() == pytest.approx(giou, abs=1e-12)


def test_cxcywh_to_xyxy_by_hand():
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.2, 0.2]], dtype=torch.float64)
    expected = torch.tensor([[0.4, 0.3, 0.6, 0.7], [0.0, 0.8, 0.2, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(box_cxcywh_to_xyxy(boxes), expected)


def random_xyxy(generator, shape):
    centre = torch.rand(*shape, 2, generator=generator, dtype=torch.float64)
    size = 0.05 + 0.5 * torch.rand(*shape, 2, generator=generator, dtype=torch.float64)
    return box_cxcywh_to_xyxy(torch.cat((centre, size), dim=-1))


def test_paired_values_over_batch_dimensions_match_a_loop():
    generator = torch.Generator().manual_seed(3)
    first, second = random_xyxy(generator, (3, 5)), random_xyxy(generator, (3, 5))
    iou, giou = box_iou(first, second), generalized_box_iou(first, second)
    assert iou.shape == giou.shape == (3, 5)
    for i in range(3):
        for j in range(5):
            ref_iou, ref_giou = reference_iou_giou(first[i, j].tolist(), second[i, j].tolist())
            assert iou[i, j].item() == pytest.approx(ref_iou, abs=1e-12)
            assert giou[i, j].item() == pytest.approx(ref_giou, abs=1e-12)
    assert bool(((iou >= 0) & (iou <= 1)).all())
    assert bool(((giou > -1) & (giou <= iou)).all())


def test_giou_of_disjoint_far_boxes_is_negative_and_keeps_a_gradient():
    near_origin = torch.tensor([[0.0, 0.0, 0.1, 0.1]])
    far = torch.tensor([[0.9, 0.9, 1.0, 1.0]], requires_grad=True)
    giou = generalized_box_iou(near_origin, far)
    assert box_iou(near_origin, far).item() == 0.0
    # hull 1, union 0.02: GIoU = −0.98
    assert giou.item() == pytest.approx(-0.98, abs=1e-6)
    giou.sum().backward()
    assert far.grad is not None and bool((far.grad != 0).any())


def test_zero_area_boxes_stay_finite():
    point = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    assert torch.isfinite(box_iou(point, point)).all()
    assert torch.isfinite(generalized_box_iou(point, point)).all()


def test_box_l1_sums_the_four_coordinates():
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    target = torch.tensor([[0.6, 0.4, 0.2, 0.5], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    torch.testing.assert_close(box_l1(pred, target), torch.tensor([0.5, 0.0], dtype=torch.float64))
    assert math.isclose(box_l1(pred[0], target[0]).item(), 0.5)


@pytest.mark.parametrize("function", [box_iou, generalized_box_iou])
def test_shape_errors_name_the_tensor(function):
    good = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="boxes1"):
        function(torch.zeros(2, 3), good)
    with pytest.raises(ValueError, match="boxes2"):
        function(good, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="same shape"):
        function(good, torch.zeros(3, 4))


def test_l1_and_conversion_shape_errors():
    with pytest.raises(ValueError, match="target_boxes"):
        box_l1(torch.zeros(2, 4), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="boxes"):
        box_cxcywh_to_xyxy(torch.zeros(2, 5))

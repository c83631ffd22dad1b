import math

import pytest
import torch

from distill.losses.dwbd import DWBDTerms, detection_loss, dwbd_loss, dwbd_weights, matched_query

# ---- an independent plain-float reference, written from SimVG's code path ----


def xyxy(box):
    cx, cy, w, h = box
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def iou_giou(a, b):
    a, b = xyxy(a), xyxy(b)
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union, inter / union - (hull - union) / hull


def l1(a, b):
    return sum(abs(x - y) for x, y in zip(a, b, strict=True))


def ref_match(boxes, scores, gt):
    costs = [5 * l1(b, gt) - s - 2 * iou_giou(b, gt)[1] for b, s in zip(boxes, scores, strict=True)]
    return min(range(len(costs)), key=costs.__getitem__)


def ref_det(pred, target, logits=None, weights=None):
    batch = len(pred)
    weights = weights or [1.0] * batch
    box = sum(
        w * (5 * l1(p, t) + 2 * (1 - iou_giou(p, t)[1]))
        for p, t, w in zip(pred, target, weights, strict=True)
    )
    loss = box / batch
    if logits is not None:
        loss += sum(math.log(sum(math.exp(v) for v in row)) - row[0] for row in logits) / batch
    return loss


def ref_dwbd(tb, db_boxes, db_scores, gt, logits=None, lambda_t=2.0, lambda_d=1.0, weighted=False):
    matched = [ref_match(b, s, g) for b, s, g in zip(db_boxes, db_scores, gt, strict=True)]
    omega = [db_scores[i][m] * iou_giou(db_boxes[i][m], gt[i])[0] for i, m in enumerate(matched)]
    w = sum(omega) / len(omega)
    teacher = [db_boxes[i][m] for i, m in enumerate(matched)]
    gt_term = lambda_t * (1 - w) * ref_det(tb, gt, logits)
    distill_term = lambda_d * w * ref_det(tb, teacher, logits, omega if weighted else None)
    return matched, omega, w, gt_term, distill_term


def random_case(seed, batch=5, queries=4, logits=False):
    generator = torch.Generator().manual_seed(seed)

    def boxes(*shape):
        centre = 0.2 + 0.6 * torch.rand(*shape, 2, generator=generator, dtype=torch.float64)
        size = 0.05 + 0.4 * torch.rand(*shape, 2, generator=generator, dtype=torch.float64)
        return torch.cat((centre, size), dim=-1)

    gt = boxes(batch)
    db_boxes = boxes(batch, queries)
    db_boxes[:, 0] = gt + 0.03 * torch.randn(batch, 4, generator=generator, dtype=torch.float64)
    db_scores = torch.rand(batch, queries, generator=generator, dtype=torch.float64)
    tb = boxes(batch)
    tb_logits = torch.randn(batch, 2, generator=generator, dtype=torch.float64) if logits else None
    return tb, db_boxes, db_scores, gt, tb_logits


# ---- matching ----


def test_matching_prefers_the_box_over_a_confident_far_query():
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    db_boxes = torch.tensor([[[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2], [0.52, 0.5, 0.2, 0.2]]])
    db_scores = torch.tensor([[0.99, 0.2, 0.3]])
    # costs: q0 far (its L1 alone costs 5·0.9 = 4.5); q1 exact: −0.2 − 2 = −2.2;
    # q2: 5·0.02 − 0.3 − 2·GIoU, GIoU = IoU = 0.036 / 0.044: ≈ −1.836
    assert matched_query(db_boxes, db_scores, gt).tolist() == [1]


def test_matching_breaks_equal_boxes_by_score():
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    db_boxes = torch.tensor([[[0.55, 0.5, 0.2, 0.2], [0.55, 0.5, 0.2, 0.2]]])
    assert matched_query(db_boxes, torch.tensor([[0.3, 0.7]]), gt).tolist() == [1]
    assert matched_query(db_boxes, torch.tensor([[0.7, 0.3]]), gt).tolist() == [0]


@pytest.mark.parametrize("seed", range(5))
def test_matching_equals_a_loop_over_the_detr_cost(seed):
    _, db_boxes, db_scores, gt, _ = random_case(seed, batch=6, queries=7)
    expected = [
        ref_match(b, s, g) for b, s, g in zip(db_boxes.tolist(), db_scores.tolist(), gt.tolist(), strict=True)
    ]
    assert matched_query(db_boxes, db_scores, gt).tolist() == expected


# ---- ω and w ----


def test_omega_is_score_times_iou_by_hand():
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]])
    # sample 0: box shifted by half its width: IoU = 0.02 / 0.06 = 1/3; sample 1: exact box
    db_boxes = torch.tensor([[[0.6, 0.5, 0.2, 0.2]], [[0.5, 0.5, 0.2, 0.2]]])
    db_scores = torch.tensor([[0.9], [0.5]])
    omega, w = dwbd_weights(db_boxes, db_scores, gt, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(omega, torch.tensor([0.3, 0.5]))
    assert w.item() == pytest.approx(0.4)


@pytest.mark.parametrize("seed", range(6))
def test_w_is_in_unit_interval_and_detached(seed):
    _, db_boxes, db_scores, gt, _ = random_case(seed)
    db_boxes.requires_grad_(True)
    db_scores.requires_grad_(True)
    omega, w = dwbd_weights(db_boxes, db_scores, gt, matched_query(db_boxes, db_scores, gt))
    assert 0.0 <= w.item() <= 1.0
    assert bool(((omega >= 0) & (omega <= 1)).all())
    assert not w.requires_grad and not omega.requires_grad
    assert w.grad_fn is None and omega.grad_fn is None


# ---- the detection loss ----


def test_detection_loss_by_hand():
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2]], dtype=torch.float64)
    target = torch.tensor([[0.6, 0.5, 0.2, 0.2]], dtype=torch.float64)
    # L1 = 0.1; IoU = 0.02 / 0.06 = 1/3, hull = union → GIoU = 1/3: 5·0.1 + 2·(2/3)
    assert detection_loss(pred, target).item() == pytest.approx(0.5 + 4 / 3)
    assert detection_loss(pred, pred).item() == pytest.approx(0.0)
    # the class term: CE of logits (0, 0) against "object" is log 2
    logits = torch.zeros(1, 2, dtype=torch.float64)
    assert detection_loss(pred, pred, pred_logits=logits).item() == pytest.approx(math.log(2))
    # per-sample weights scale the box terms and the sum is still divided by the batch size
    weight = torch.tensor([0.25], dtype=torch.float64)
    assert detection_loss(pred, target, weight).item() == pytest.approx(0.25 * (0.5 + 4 / 3))


# ---- the DWBD loss ----


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("with_logits", [False, True])
def test_dwbd_equals_a_loop_reference(seed, weighted, with_logits):
    tb, db_boxes, db_scores, gt, logits = random_case(seed, logits=with_logits)
    terms = dwbd_loss(tb, db_boxes, db_scores, gt, tb_logits=logits, per_sample_weighting=weighted)
    matched, omega, w, gt_term, distill_term = ref_dwbd(
        tb.tolist(),
        db_boxes.tolist(),
        db_scores.tolist(),
        gt.tolist(),
        logits.tolist() if logits is not None else None,
        weighted=weighted,
    )
    assert isinstance(terms, DWBDTerms)
    assert terms.matched.tolist() == matched
    torch.testing.assert_close(terms.omega, torch.tensor(omega, dtype=torch.float64))
    assert terms.w.item() == pytest.approx(w)
    assert terms.gt_term.item() == pytest.approx(gt_term)
    assert terms.distill_term.item() == pytest.approx(distill_term)
    assert terms.total.item() == pytest.approx(gt_term + distill_term)


def test_a_perfect_decoder_puts_all_weight_on_distillation():
    tb, _, _, gt, logits = random_case(7, logits=True)
    db_boxes = torch.stack((gt, gt + 0.3), dim=1)
    db_scores = torch.tensor([[1.0, 0.0]] * gt.shape[0], dtype=torch.float64)
    terms = dwbd_loss(tb, db_boxes, db_scores, gt, tb_logits=logits, lambda_t=2.0, lambda_d=1.0)
    assert terms.w.item() == pytest.approx(1.0)
    assert terms.gt_term.item() == pytest.approx(0.0, abs=1e-12)
    expected = 1.0 * detection_loss(tb, gt, pred_logits=logits)
    assert terms.total.item() == pytest.approx(expected.item())


def test_a_useless_decoder_leaves_only_the_ground_truth_term():
    tb, db_boxes, _, gt, _ = random_case(8)
    expected = 2.0 * detection_loss(tb, gt)
    # every score 0
    terms = dwbd_loss(tb, db_boxes, torch.zeros(db_boxes.shape[:2], dtype=torch.float64), gt)
    assert terms.w.item() == 0.0
    assert terms.distill_term.item() == 0.0
    assert terms.total.item() == pytest.approx(expected.item())
    # confident, but every box disjoint from the ground truth: IoU 0
    far = gt.unsqueeze(1).repeat(1, 3, 1)
    far[..., 0] = gt[:, :1] + gt[:, 2:3] + 0.5
    terms = dwbd_loss(tb, far, torch.ones(far.shape[:2], dtype=torch.float64), gt)
    assert terms.w.item() == 0.0
    assert terms.total.item() == pytest.approx(expected.item())


def test_per_sample_weighting_scales_each_sample_by_omega():
    # two samples, the same TB error on each; the decoder is exact on both but half as confident on #1
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.4, 0.4, 0.3, 0.3]], dtype=torch.float64)
    tb = gt + torch.tensor([0.05, 0.0, 0.0, 0.0], dtype=torch.float64)
    db_boxes = gt.unsqueeze(1)
    db_scores = torch.tensor([[1.0], [0.5]], dtype=torch.float64)
    weighted = dwbd_loss(tb, db_boxes, db_scores, gt, per_sample_weighting=True)
    plain = dwbd_loss(tb, db_boxes, db_scores, gt)
    torch.testing.assert_close(weighted.omega, torch.tensor([1.0, 0.5], dtype=torch.float64))
    per_sample = [detection_loss(tb[i : i + 1], gt[i : i + 1]).item() for i in range(2)]
    w = 0.75
    assert weighted.distill_term.item() == pytest.approx(w * (1.0 * per_sample[0] + 0.5 * per_sample[1]) / 2)
    # SimVG's balanced loss: ω only through w
    assert plain.distill_term.item() == pytest.approx(w * (per_sample[0] + per_sample[1]) / 2)
    assert weighted.gt_term.item() == pytest.approx(plain.gt_term.item())


def test_gradient_reaches_the_token_branch_only():
    tb, db_boxes, db_scores, gt, logits = random_case(9, logits=True)
    for tensor in (tb, db_boxes, db_scores, gt, logits):
        tensor.requires_grad_(True)
    terms = dwbd_loss(tb, db_boxes, db_scores, gt, tb_logits=logits, per_sample_weighting=True)
    terms.total.backward()
    assert tb.grad is not None and bool((tb.grad != 0).any())
    assert logits.grad is not None and bool((logits.grad != 0).any())
    assert db_boxes.grad is None and db_scores.grad is None and gt.grad is None
    assert not terms.w.requires_grad


def test_a_given_matching_is_used():
    tb, db_boxes, db_scores, gt, _ = random_case(10)
    last = torch.full((gt.shape[0],), db_boxes.shape[1] - 1, dtype=torch.long)
    terms = dwbd_loss(tb, db_boxes, db_scores, gt, matched=last)
    assert terms.matched.tolist() == last.tolist()
    omega, _ = dwbd_weights(db_boxes, db_scores, gt, last)
    torch.testing.assert_close(terms.omega, omega)


def test_shape_errors_name_the_tensor():
    tb, db_boxes, db_scores, gt, _ = random_case(11)
    with pytest.raises(ValueError, match="tb_boxes"):
        dwbd_loss(tb[:, :3], db_boxes, db_scores, gt)
    with pytest.raises(ValueError, match="tb_boxes"):
        dwbd_loss(tb[:2], db_boxes, db_scores, gt)
    with pytest.raises(ValueError, match="db_boxes"):
        dwbd_loss(tb, db_boxes[:, 0], db_scores, gt)
    with pytest.raises(ValueError, match="db_boxes"):
        matched_query(db_boxes[:, :0], db_scores[:, :0], gt)
    with pytest.raises(ValueError, match="db_scores"):
        dwbd_loss(tb, db_boxes, db_scores[:, :2], gt)
    with pytest.raises(ValueError, match="gt"):
        matched_query(db_boxes, db_scores, gt[:, :2])
    with pytest.raises(ValueError, match="gt"):
        matched_query(db_boxes[:0], db_scores[:0], gt[:0])
    with pytest.raises(ValueError, match="matched"):
        dwbd_weights(db_boxes, db_scores, gt, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="matched"):
        dwbd_weights(db_boxes, db_scores, gt, torch.zeros(gt.shape[0]))
    with pytest.raises(ValueError, match="target_boxes"):
        detection_loss(tb, gt[:2])
    with pytest.raises(ValueError, match="sample_weights"):
        detection_loss(tb, gt, torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="pred_logits"):
        detection_loss(tb, gt, pred_logits=torch.zeros(gt.shape[0], 1))

"""DKD, DIST, logit standardization and MLKD: golden values worked out independently (by hand,
or with numpy loops written from the papers' definitions), and the property that defines each
method."""

import math

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from distill.losses.kd import kd_loss
from distill.losses.logit import (
    MLKD_TEMPERATURES,
    dist_loss,
    dist_terms,
    dkd_loss,
    dkd_terms,
    mlkd_confidence_masks,
    multilevel_logit_loss,
    standardize_logits,
)

FAST = settings(max_examples=30, deadline=None)


def _softmax(row: np.ndarray) -> np.ndarray:
    e = np.exp(row - row.max())
    return e / e.sum()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0))


def _logits(draw_values: list[float], rows: int) -> torch.Tensor:
    return torch.tensor(draw_values, dtype=torch.float64).view(rows, -1)


# --------------------------------------------------------------------------------------------
# DKD


def _dkd_reference(student: np.ndarray, teacher: np.ndarray, targets: np.ndarray, temperature: float):
    """Zhao et al. Eqs. 1–2 literally: binary [p_t, 1 − p_t] and p̂_i = p_i / (1 − p_t), per sample."""
    tckd, nckd = [], []
    for s_row, t_row, target in zip(student, teacher, targets, strict=True):
        p_s, p_t = _softmax(s_row / temperature), _softmax(t_row / temperature)
        b_s = np.array([p_s[target], 1 - p_s[target]])
        b_t = np.array([p_t[target], 1 - p_t[target]])
        rest = [i for i in range(len(s_row)) if i != target]
        hat_s = np.array([p_s[i] / (1 - p_s[target]) for i in rest])
        hat_t = np.array([p_t[i] / (1 - p_t[target]) for i in rest])
        tckd.append(_kl(b_t, b_s) * temperature**2)
        nckd.append(_kl(hat_t, hat_s) * temperature**2)
    return np.array(tckd), np.array(nckd)


def test_dkd_golden_value_by_hand():
    # teacher probabilities (1/2, 1/3, 1/6), student uniform, target class 0, T = 1:
    # b^T = (1/2, 1/2), b^S = (1/3, 2/3); p̂^T = (2/3, 1/3), p̂^S = (1/2, 1/2)
    teacher = torch.log(torch.tensor([[3.0, 2.0, 1.0]]))
    student = torch.zeros(1, 3)
    targets = torch.tensor([0])
    tckd = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
    nckd = (2 / 3) * math.log((2 / 3) / 0.5) + (1 / 3) * math.log((1 / 3) / 0.5)
    got_tckd, got_nckd = dkd_terms(student, teacher, targets, temperature=1.0)
    assert got_tckd.item() == pytest.approx(tckd, rel=1e-6)
    assert got_nckd.item() == pytest.approx(nckd, rel=1e-6)
    assert dkd_loss(student, teacher, targets, 1.0, 8.0, 1.0).item() == pytest.approx(
        tckd + 8 * nckd, rel=1e-6
    )
    # the same distributions at T = 2 (teacher logits doubled): the terms gain a factor T² = 4
    loss_t2 = dkd_loss(student, 2 * teacher, targets, alpha=0.5, beta=2.0, temperature=2.0)
    assert loss_t2.item() == pytest.approx(4 * (0.5 * tckd + 2.0 * nckd), rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_matches_a_loop_over_the_papers_definitions(temperature):
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(0, 3, (6, 7)), rng.normal(0, 3, (6, 7))
    targets = rng.integers(0, 7, 6)
    tckd, nckd = _dkd_reference(student, teacher, targets, temperature)
    got_tckd, got_nckd = dkd_terms(
        torch.tensor(student), torch.tensor(teacher), torch.tensor(targets), temperature, reduction="none"
    )
    np.testing.assert_allclose(got_tckd.numpy(), tckd, rtol=1e-9)
    np.testing.assert_allclose(got_nckd.numpy(), nckd, rtol=1e-9)
    loss = dkd_loss(
        torch.tensor(student), torch.tensor(teacher), torch.tensor(targets), 1.5, 8.0, temperature
    )
    assert loss.item() == pytest.approx(1.5 * tckd.mean() + 8.0 * nckd.mean(), rel=1e-9)


@given(
    values=st.lists(st.floats(-6, 6), min_size=10, max_size=10),
    teacher_values=st.lists(st.floats(-6, 6), min_size=10, max_size=10),
    targets=st.lists(st.integers(0, 4), min_size=2, max_size=2),
    temperature=st.floats(0.5, 8),
)
@FAST
def test_kd_is_tckd_plus_teacher_non_target_mass_times_nckd(values, teacher_values, targets, temperature):
    """Eqs. 5–6: KD = TCKD + (1 − p_t^T) · NCKD for every sample (both sides carry the same T²)."""
    student, teacher = _logits(values, 2), _logits(teacher_values, 2)
    target = torch.tensor(targets)
    tckd, nckd = dkd_terms(student, teacher, target, temperature, reduction="none")
    p_target = torch.softmax(teacher / temperature, dim=1).gather(1, target.view(-1, 1)).squeeze(1)
    for i in range(2):
        kd = kd_loss(student[i : i + 1], teacher[i : i + 1], temperature)
        assert (tckd[i] + (1 - p_target[i]) * nckd[i]).item() == pytest.approx(kd.item(), rel=1e-7, abs=1e-10)


def test_nckd_ignores_the_target_logit_and_tckd_the_non_target_arrangement():
    torch.manual_seed(1)
    student, teacher = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    targets = torch.tensor([0, 2, 5, 3])
    tckd, nckd = dkd_terms(student, teacher, targets, reduction="none")
    # raising the student's target logit changes only the binary (target vs rest) part
    bumped = student.clone()
    bumped[torch.arange(4), targets] += 2.5
    tckd_bumped, nckd_bumped = dkd_terms(bumped, teacher, targets, reduction="none")
    torch.testing.assert_close(nckd_bumped, nckd)
    assert (tckd_bumped - tckd).abs().min() > 1e-3
    # reversing the non-target logits keeps p_t (hence TCKD) but moves the non-target distribution
    shuffled = student.clone()
    for i, t in enumerate(targets.tolist()):
        rest = [j for j in range(6) if j != t]
        shuffled[i, rest] = student[i, rest[::-1]]
    tckd_shuffled, nckd_shuffled = dkd_terms(shuffled, teacher, targets, reduction="none")
    torch.testing.assert_close(tckd_shuffled, tckd)
    assert (nckd_shuffled - nckd).abs().max() > 1e-3


def test_dkd_zero_with_zero_gradient_when_student_equals_teacher_and_teacher_gets_none():
    torch.manual_seed(2)
    teacher = torch.randn(5, 4, requires_grad=True)
    student = teacher.detach().clone().requires_grad_(True)
    targets = torch.tensor([0, 1, 2, 3, 0])
    loss = dkd_loss(student, teacher, targets)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert student.grad is not None and student.grad.abs().max() < 1e-6
    assert teacher.grad is None
    other = torch.randn(5, 4, requires_grad=True)
    dkd_loss(other, teacher, targets).backward()
    assert other.grad is not None and torch.isfinite(other.grad).all() and other.grad.abs().max() > 0


def test_dkd_stays_finite_when_a_probability_rounds_to_one():
    # at T = 1 the student's target probability is 1 in float32 (1 − p_t underflows), so
    # log(1 − p_t) computed from probabilities would be −inf
    student = torch.tensor([[120.0, 0.0, -3.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 0.5, 0.0]])
    targets = torch.tensor([0])
    loss = dkd_loss(student, teacher, targets, temperature=1.0)
    exact = dkd_loss(student.detach().double(), teacher.double(), targets, temperature=1.0)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(exact.item(), rel=1e-5)
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_dkd_rejects_bad_shapes_with_the_tensor_named():
    logits = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"targets must be \(3,\)"):
        dkd_loss(logits, logits, torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must be"):
        dkd_loss(logits, logits, torch.zeros(3))
    with pytest.raises(ValueError, match=r"student_logits .* teacher_logits"):
        dkd_loss(torch.zeros(3, 5), logits, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 classes"):
        dkd_loss(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        dkd_loss(logits, logits, torch.zeros(3, dtype=torch.long), temperature=0.0)


# --------------------------------------------------------------------------------------------
# DIST


def test_dist_golden_value_by_hand():
    # two classes: each row correlates +1 or −1. Teacher rows favour class 0 then class 1.
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    agreeing = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # same orientation in every row and column
    assert dist_loss(agreeing, teacher).item() == pytest.approx(0.0, abs=1e-6)
    # row 0 reversed (ρ = −1), row 1 agrees (ρ = 1): inter = 1 − 0 = 1; every student column is
    # constant, so its correlation is 0 and intra = 1
    flipped = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    inter, intra = dist_terms(flipped, teacher)
    assert inter.item() == pytest.approx(1.0, abs=1e-6)
    assert intra.item() == pytest.approx(1.0, abs=1e-6)
    assert dist_loss(flipped, teacher, beta=2.0, gamma=0.5, temperature=1.0).item() == pytest.approx(
        2.5, abs=1e-6
    )


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dist_matches_numpy_corrcoef(temperature):
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(0, 2, (6, 5)), rng.normal(0, 2, (6, 5))
    y_s = np.stack([_softmax(r / temperature) for r in student])
    y_t = np.stack([_softmax(r / temperature) for r in teacher])
    inter = 1 - np.mean([np.corrcoef(y_s[i], y_t[i])[0, 1] for i in range(6)])
    intra = 1 - np.mean([np.corrcoef(y_s[:, c], y_t[:, c])[0, 1] for c in range(5)])
    got = dist_loss(
        torch.tensor(student), torch.tensor(teacher), beta=0.7, gamma=1.3, temperature=temperature
    )
    assert got.item() == pytest.approx(temperature**2 * (0.7 * inter + 1.3 * intra), rel=1e-6)


@given(
    teacher_values=st.lists(st.floats(-5, 5), min_size=12, max_size=12),
    mix=st.floats(0.05, 0.95),
    temperature=st.sampled_from([1.0, 2.0, 4.0]),
)
@FAST
def test_dist_is_zero_for_a_positive_affine_copy_of_the_teachers_probabilities(
    teacher_values, mix, temperature
):
    """Pearson correlation ignores scale and shift: a student whose probabilities are
    ``a·q + (1 − a)/C`` (the teacher's, shrunk towards uniform) has correlation 1 with the teacher
    in every row *and* every column, so DIST is 0 — while KD still penalises it."""
    teacher = _logits(teacher_values, 3)
    q = torch.softmax(teacher / temperature, dim=1)
    if (q.max(dim=1).values - q.min(dim=1).values).min() < 1e-3 or (
        (q.max(dim=0).values - q.min(dim=0).values).min() < 1e-3
    ):
        return  # a (nearly) constant row or column has no correlation to preserve
    student = temperature * torch.log(mix * q + (1 - mix) / q.shape[1])
    assert dist_loss(student, teacher, temperature=temperature, eps=0.0).item() == pytest.approx(
        0.0, abs=1e-9
    )
    assert kd_loss(student, teacher, temperature).item() > 1e-6


def test_dist_gradient_zero_at_the_teacher_finite_elsewhere_and_bounded():
    torch.manual_seed(4)
    teacher = torch.randn(8, 10, dtype=torch.float64, requires_grad=True)
    student = teacher.detach().clone().requires_grad_(True)
    loss = dist_loss(student, teacher, temperature=4.0, eps=0.0)  # ρ = 1 is a maximum without eps
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    loss.backward()
    assert student.grad is not None and student.grad.abs().max() < 1e-9
    assert teacher.grad is None
    assert dist_loss(student, teacher, temperature=4.0).item() < 1e-3  # official eps: tiny residue
    other = torch.randn(8, 10, dtype=torch.float64, requires_grad=True)
    loss = dist_loss(other, teacher, temperature=4.0)
    loss.backward()
    assert 0 <= loss.item() <= 2 * 2 * 16
    assert other.grad is not None and torch.isfinite(other.grad).all()


def test_dist_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"student_logits \(2, 3\) and teacher_logits \(2, 4\)"):
        dist_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(batch, classes\)"):
        dist_loss(torch.zeros(6), torch.zeros(6))


# --------------------------------------------------------------------------------------------
# Logit standardization


def test_standardize_golden_value_by_hand():
    # mean 2, Bessel-corrected std sqrt(((−1)² + 0² + 1²) / 2) = 1
    out = standardize_logits(torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 40.0]], dtype=torch.float64))
    torch.testing.assert_close(out[0], torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64) / (1 + 1e-7))
    # second row: mean 20, deviations (−10, −10, 20), std sqrt(600 / 2) = 10·sqrt(3)
    expected = torch.tensor([-10.0, -10.0, 20.0], dtype=torch.float64) / (10 * math.sqrt(3) + 1e-7)
    torch.testing.assert_close(out[1], expected)


def test_standardize_matches_numpy_ddof_1():
    z = np.random.default_rng(5).normal(0, 4, (4, 9))
    expected = (z - z.mean(axis=1, keepdims=True)) / (z.std(axis=1, ddof=1, keepdims=True) + 1e-7)
    np.testing.assert_allclose(standardize_logits(torch.tensor(z)).numpy(), expected, rtol=1e-12)


@given(
    values=st.lists(st.floats(-10, 10), min_size=8, max_size=8),
    scales=st.lists(st.floats(0.1, 20), min_size=2, max_size=2),
    shifts=st.lists(st.floats(-50, 50), min_size=2, max_size=2),
)
@FAST
def test_standardize_ignores_per_sample_shift_and_positive_scale(values, scales, shifts):
    z = _logits(values, 2)
    if (z.std(dim=1) < 0.1).any():
        return  # the eps added to the std shows at a relative eps / std: keep rows well spread
    moved = z * torch.tensor(scales, dtype=torch.float64).view(2, 1) + torch.tensor(shifts).view(2, 1)
    torch.testing.assert_close(standardize_logits(moved), standardize_logits(z), rtol=1e-4, atol=1e-4)
    out = standardize_logits(z)
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(out.std(dim=1), torch.ones(2, dtype=torch.float64), rtol=1e-5, atol=0)


def test_standardized_kd_forgives_a_student_with_another_logit_range():
    """The paper's point: after standardization KD asks for the teacher's logit relations, not
    its magnitude, so a student with logits ``3·z + 1`` is already distilled."""
    torch.manual_seed(6)
    teacher = torch.randn(4, 10, dtype=torch.float64)
    student = 3 * teacher + 1
    assert kd_loss(student, teacher, temperature=2.0).item() > 0.1
    standardized = kd_loss(standardize_logits(student), standardize_logits(teacher), temperature=2.0)
    assert standardized.item() == pytest.approx(0.0, abs=1e-10)


def test_standardize_constant_rows_and_bad_shapes():
    z = torch.full((2, 5), 3.0, requires_grad=True)
    out = standardize_logits(z)
    assert torch.equal(out, torch.zeros(2, 5))
    out.sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="classes ≥ 2"):
        standardize_logits(torch.zeros(4, 1))


# --------------------------------------------------------------------------------------------
# MLKD


def _mlkd_reference(student: np.ndarray, teacher: np.ndarray, temperatures, masked: bool):
    """Loops over samples and classes: instance KL·T², batch Gram over samples, class Gram over
    classes; masks from numpy's median of the teacher's confidences (kept where ≤ median)."""
    batch, classes = student.shape
    instance = batch_term = class_term = 0.0
    for temperature in temperatures:
        p_s = np.stack([_softmax(r / temperature) for r in student])
        p_t = np.stack([_softmax(r / temperature) for r in teacher])
        instance += temperature**2 * np.mean([_kl(p_t[i], p_s[i]) for i in range(batch)])
        batch_term += (
            sum(
                (
                    sum(p_t[i, c] * p_t[j, c] for c in range(classes))
                    - sum(p_s[i, c] * p_s[j, c] for c in range(classes))
                )
                ** 2
                for i in range(batch)
                for j in range(batch)
            )
            / batch
        )
        class_term += (
            sum(
                (
                    sum(p_t[i, a] * p_t[i, b] for i in range(batch))
                    - sum(p_s[i, a] * p_s[i, b] for i in range(batch))
                )
                ** 2
                for a in range(classes)
                for b in range(classes)
            )
            / classes
        )
    if masked:
        probs = np.stack([_softmax(r) for r in teacher])
        confidence, class_confidence = probs.max(axis=1), probs.sum(axis=0)
        sample_fraction = np.mean(confidence <= np.percentile(confidence, 50))
        class_fraction = np.mean(class_confidence <= np.percentile(class_confidence, 50))
        instance, batch_term, class_term = (
            instance * sample_fraction,
            batch_term * sample_fraction,
            class_term * class_fraction,
        )
    return instance, batch_term, class_term


def test_mlkd_golden_value_by_hand():
    # T = 1, student uniform, teacher probabilities (3/4, 1/4) and (1/2, 1/2)
    teacher = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], dtype=torch.float64)
    student = torch.zeros(2, 2, dtype=torch.float64)
    instance = (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)) / 2
    # teacher p pᵀ = [[10/16, 1/2], [1/2, 1/2]] vs all 1/2: one entry off by 1/8, divided by batch 2
    batch_term = (1 / 8) ** 2 / 2
    # teacher pᵀ p = [[13/16, 7/16], [7/16, 5/16]] vs all 1/2: (5² + 1 + 1 + 3²)/16², divided by 2 classes
    class_term = (25 + 1 + 1 + 9) / 256 / 2
    got = multilevel_logit_loss(student, teacher, temperatures=(1.0,), masked=False)
    assert got.instance.item() == pytest.approx(instance, rel=1e-12)
    assert got.batch.item() == pytest.approx(batch_term, rel=1e-12)
    assert got.class_level.item() == pytest.approx(class_term, rel=1e-12)
    # confidences (3/4, 1/2), median 5/8: only sample 1 is kept; class sums (5/4, 3/4), median 1:
    # only class 1 is kept — each mask keeps half, so each term is halved
    sample_mask, class_mask = mlkd_confidence_masks(teacher)
    assert sample_mask.tolist() == [False, True] and class_mask.tolist() == [False, True]
    masked = multilevel_logit_loss(student, teacher, temperatures=(1.0,))
    assert [t.item() for t in masked] == pytest.approx(
        [instance / 2, batch_term / 2, class_term / 2], rel=1e-12
    )


@pytest.mark.parametrize("masked", [True, False])
def test_mlkd_matches_loops_at_the_official_temperatures(masked):
    rng = np.random.default_rng(7)
    student, teacher = rng.normal(0, 3, (5, 4)), rng.normal(0, 3, (5, 4))
    expected = _mlkd_reference(student, teacher, MLKD_TEMPERATURES, masked)
    got = multilevel_logit_loss(torch.tensor(student), torch.tensor(teacher), masked=masked)
    assert [t.item() for t in got] == pytest.approx(list(expected), rel=1e-9)
    assert MLKD_TEMPERATURES == (2.0, 3.0, 4.0, 5.0, 6.0)


def test_mlkd_batch_and_class_levels_see_different_structure():
    """The batch level compares sample-to-sample similarities (blind to which class is which);
    the class level compares class co-occurrence over the batch (blind to sample order)."""
    torch.manual_seed(8)
    teacher = torch.randn(6, 5, dtype=torch.float64)
    student = torch.randn(6, 5, dtype=torch.float64)
    base = multilevel_logit_loss(student, teacher, masked=False)
    rows_permuted = multilevel_logit_loss(student[torch.randperm(6)], teacher, masked=False)
    torch.testing.assert_close(rows_permuted.class_level, base.class_level)
    assert abs(rows_permuted.batch.item() - base.batch.item()) > 1e-6
    classes_permuted = multilevel_logit_loss(student[:, torch.tensor([4, 0, 3, 1, 2])], teacher, masked=False)
    torch.testing.assert_close(classes_permuted.batch, base.batch)
    assert abs(classes_permuted.class_level.item() - base.class_level.item()) > 1e-6
    # every term vanishes, with its gradient, at the teacher
    same = teacher.clone().requires_grad_(True)
    terms = multilevel_logit_loss(same, teacher)
    total = sum(terms, torch.zeros((), dtype=torch.float64))
    assert total.item() == pytest.approx(0.0, abs=1e-12)
    total.backward()
    assert same.grad is not None and same.grad.abs().max() < 1e-10
    other = student.clone().requires_grad_(True)
    sum(multilevel_logit_loss(other, teacher), torch.zeros((), dtype=torch.float64)).backward()
    assert other.grad is not None and torch.isfinite(other.grad).all()


def test_mlkd_temperatures_add_up_and_bad_arguments_are_rejected():
    torch.manual_seed(9)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    together = multilevel_logit_loss(student, teacher, temperatures=(2.0, 5.0))
    apart = [multilevel_logit_loss(student, teacher, temperatures=(t,)) for t in (2.0, 5.0)]
    for i in range(3):
        assert together[i].item() == pytest.approx(apart[0][i].item() + apart[1][i].item(), rel=1e-5)
    with pytest.raises(ValueError, match="temperatures must not be empty"):
        multilevel_logit_loss(student, teacher, temperatures=())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        multilevel_logit_loss(student, teacher, temperatures=(4.0, -1.0))
    with pytest.raises(ValueError, match="student_logits"):
        multilevel_logit_loss(student, torch.randn(5, 3))
    with pytest.raises(ValueError, match="teacher_logits"):
        mlkd_confidence_masks(torch.randn(4))
    # mixed precision: the median still works on bfloat16 logits
    half = multilevel_logit_loss(student.bfloat16(), teacher.bfloat16(), temperatures=(4.0,))
    assert all(torch.isfinite(term.float()) for term in half)

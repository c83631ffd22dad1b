import math

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from distill.losses import kd_loss, kd_loss_from_probs, scalar, soft_cross_entropy


def test_golden_value_by_hand():
    # one sample, two classes, T = 2: softmax([2, 0] / 2) and softmax([0, 0] / 2)
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2.0, 0.0]])
    p_teacher = [math.e / (math.e + 1), 1 / (math.e + 1)]
    kl = sum(p * math.log(p / 0.5) for p in p_teacher)
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(4 * kl, rel=1e-6)


def test_batch_mean_golden_value():
    student = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # second row contributes 0; first row: KL(softmax([0,1,0]) || softmax([1,0,0])) at T = 1
    q = torch.softmax(teacher[0], 0)
    p = torch.softmax(student[0], 0)
    expected = float((q * (q.log() - p.log())).sum()) / 2
    assert kd_loss(student, teacher, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)


@given(
    logits=st.lists(st.floats(-8, 8), min_size=12, max_size=12),
    temperature=st.floats(0.5, 10),
)
@settings(max_examples=40, deadline=None)
def test_zero_when_student_equals_teacher_and_never_negative(logits, temperature):
    teacher = torch.tensor(logits).view(3, 4)
    assert kd_loss(teacher.clone(), teacher, temperature).item() == pytest.approx(0.0, abs=1e-6)
    other = teacher.flip(1)
    assert kd_loss(other, teacher, temperature).item() >= -1e-6


@pytest.mark.parametrize("temperature", [1.0, 4.0, 10.0])
def test_gradient_is_T_times_probability_gap_over_batch(temperature):
    """Hinton et al. Eq. 2 times T²: ∂L/∂z = T (p − q) / batch."""
    torch.manual_seed(0)
    student = torch.randn(5, 7, requires_grad=True)
    teacher = torch.randn(5, 7)
    kd_loss(student, teacher, temperature).backward()
    expected = (
        temperature
        * (torch.softmax(student.detach() / temperature, 1) - torch.softmax(teacher / temperature, 1))
        / 5
    )
    torch.testing.assert_close(student.grad, expected, rtol=1e-5, atol=1e-7)


def test_no_gradient_reaches_the_teacher():
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3, requires_grad=True)
    kd_loss(student, teacher).backward()
    assert teacher.grad is None


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"same \(batch, classes\) shape"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"expects \(batch, classes\)"):
        kd_loss(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0)


def test_soft_cross_entropy_matches_hard_labels_for_one_hot_targets():
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    torch.testing.assert_close(
        soft_cross_entropy(logits, one_hot), torch.nn.functional.cross_entropy(logits, labels)
    )


@given(k=st.integers(1, 6), temperature=st.floats(0.5, 6.0))
@settings(max_examples=30, deadline=None)
def test_top_k_kd_is_the_kl_over_top_k_plus_one_rest_bin(k, temperature):
    from distill.losses import kd_loss_top_k

    torch.manual_seed(k)
    student = torch.randn(4, 6)
    teacher = torch.randn(4, 6)
    teacher_log_probs = torch.log_softmax(teacher / temperature, 1)
    top_values, top_classes = teacher_log_probs.topk(k, dim=1)
    loss = kd_loss_top_k(student, top_values, top_classes, temperature)
    # independent computation: merge the other classes into one bin on both sides
    student_probs = torch.softmax(student / temperature, 1)
    q = top_values.exp()
    p = student_probs.gather(1, top_classes)
    q_bins = torch.cat([q, 1 - q.sum(1, keepdim=True)], 1).clamp_min(1e-12)
    p_bins = torch.cat([p, 1 - p.sum(1, keepdim=True)], 1).clamp_min(1e-12)
    expected = (q_bins * (q_bins.log() - p_bins.log())).sum(1).mean() * temperature**2
    if k < 6:
        assert loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    else:  # every class kept: exactly Hinton KD
        assert loss.item() == pytest.approx(kd_loss(student, teacher, temperature).item(), rel=1e-4, abs=1e-6)


@given(
    logits=st.lists(st.floats(-8, 8), min_size=24, max_size=24),
    temperature=st.sampled_from([1.0, 2.0, 4.0]),
    weight=st.sampled_from([1.0, 0.9]),
)
@settings(max_examples=30, deadline=None)
def test_probability_form_equals_the_kl_form_in_value_and_gradient(logits, temperature, weight):
    """The per-step form (teacher probabilities and per-sample Σ q log q, as a cache holds
    them) is ``weight · T² · KL`` as PyTorch's ``kl_div`` computes it, gradient included."""
    values = torch.tensor(logits).view(2, 4, 3)
    teacher = values[0]
    log_q = torch.log_softmax(teacher / temperature, dim=1)
    q = log_q.exp()
    reference = values[1].clone().requires_grad_()
    expected = (
        weight
        * temperature**2
        * F.kl_div(
            torch.log_softmax(reference / temperature, dim=1), log_q, reduction="batchmean", log_target=True
        )
    )
    expected.backward()
    student = values[1].clone().requires_grad_()
    loss = kd_loss_from_probs(student, q, (q * log_q).sum(dim=1), temperature, weight)
    loss.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)
    torch.testing.assert_close(student.grad, reference.grad, rtol=1e-4, atol=1e-6)


def test_scalar_constants_are_made_once_per_value_dtype_and_device():
    single, double = torch.zeros(2), torch.zeros(2, dtype=torch.float64)
    assert scalar(0.25, single) is scalar(0.25, single)
    assert scalar(0.25, double).dtype == torch.float64 and scalar(0.25, double).ndim == 0
    torch.testing.assert_close(single * scalar(0.25, single), single * 0.25)

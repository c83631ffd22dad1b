import math
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from distill.losses import slam_loss, slam_mix, soft_cross_entropy
from distill.methods.slam import top_k_mask


def batch(seed=0, rows=6, classes=5):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, classes, generator=generator) * 2
    teacher = F.softmax(torch.randn(rows, classes, generator=generator) * 2, dim=1)
    alpha = torch.rand(rows, generator=generator)
    return logits, teacher, alpha, top_k_mask(teacher, 3)


@given(st.integers(0, 10_000))
@settings(max_examples=25, deadline=None)
def test_with_alpha_one_slam_is_plain_distillation(seed):
    logits, teacher, _, mask = batch(seed)
    ones = torch.ones(logits.shape[0])
    for normalize in (False, True):
        torch.testing.assert_close(
            slam_loss(logits, teacher, ones, mask, normalize), soft_cross_entropy(logits, teacher)
        )


def test_classes_outside_the_teachers_top_k_keep_exactly_alpha_times_f():
    logits, _teacher, alpha, mask = batch(1)
    probs = F.softmax(logits, dim=1)
    mixed = slam_mix(probs, alpha, mask)
    outside = ~mask
    torch.testing.assert_close(mixed[outside], (alpha.unsqueeze(1) * probs).expand_as(probs)[outside])
    inside = mask
    expected = alpha.unsqueeze(1) * probs + (1 - alpha.unsqueeze(1)) * (1 - probs)
    torch.testing.assert_close(mixed[inside], expected[inside])
    normalized = slam_mix(probs, alpha, mask, normalize=True)  # the main text's form: ÷ (k − 1) = 2
    expected = alpha.unsqueeze(1) * probs + (1 - alpha.unsqueeze(1)) * (1 - probs) / 2
    torch.testing.assert_close(normalized[inside], expected[inside])


def test_no_gradient_reaches_alpha_or_the_top_k_mask():
    logits, teacher, alpha, mask = batch(2)
    logits.requires_grad_(True)
    alpha = alpha.clone().requires_grad_(True)
    soft_mask = mask.float().requires_grad_(True)
    slam_loss(logits, teacher, alpha, soft_mask).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert alpha.grad is None and soft_mask.grad is None


def test_extreme_logits_give_finite_loss_and_gradients():
    logits = torch.tensor([[1e4, -1e4, 0.0, -1e4], [-1e4, -1e4, -1e4, 1e4]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False, False], [True, True, False, False]])
    for alpha in (torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.3, 0.9])):
        loss = slam_loss(logits, teacher, alpha, mask)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_shapes_must_match():
    logits, teacher, alpha, mask = batch(3)
    with pytest.raises(ValueError, match="must match"):
        slam_loss(logits, teacher[:, :4], alpha, mask)


# The gradient on the teacher's label. With a one-hot teacher label j the loss is −log mix_j, and
# mix_j = c·f_j + b is affine in the student's f_j:
#   unnormalized (Remark B.1): c = α − (1 − α) = 2α − 1,               b = 1 − α
#   normalized (main text):    c = α − (1 − α)/(k − 1) = (kα − 1)/(k − 1), b = (1 − α)/(k − 1)
# Through the softmax, ∂L/∂z_j = −c·f_j(1 − f_j)/mix_j and ∂L/∂z_i = c·f_j·f_i/mix_j (i ≠ j). A positive
# ∂L/∂z_j means gradient descent lowers z_j: the student is pushed *away* from the teacher's label,
# which happens where c < 0, i.e. α < ½ (unnormalized) or α < 1/k (normalized).


def one_hot_case(logits, teacher, k):
    label = teacher.argmax(dim=1)
    return F.one_hot(label, teacher.shape[1]).float(), top_k_mask(teacher, k), label


def logit_gradient(logits, target, alpha, mask, normalize):
    logits = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(slam_loss(logits, target, alpha, mask, normalize), logits)
    return grad


@pytest.mark.parametrize(
    ("normalize", "loss", "gradient"),
    [
        # α = 0.4: c = 2·0.4 − 1 = −0.2, b = 0.6, mix_0 = −0.2·0.4 + 0.6 = 0.52
        (
            False,
            -math.log(0.52),
            [
                0.2 * 0.4 * 0.6 / 0.52,
                -0.2 * 0.4 * 0.3 / 0.52,
                -0.2 * 0.4 * 0.2 / 0.52,
                -0.2 * 0.4 * 0.1 / 0.52,
            ],
        ),
        # k = 3: c = 0.4 − 0.6/2 = 0.1, b = 0.3, mix_0 = 0.1·0.4 + 0.3 = 0.34
        (
            True,
            -math.log(0.34),
            [-0.1 * 0.4 * 0.6 / 0.34, 0.1 * 0.4 * 0.3 / 0.34, 0.1 * 0.4 * 0.2 / 0.34, 0.1 * 0.4 * 0.1 / 0.34],
        ),
    ],
)
def test_golden_loss_and_gradient_on_a_one_hot_teacher_label(normalize, loss, gradient):
    # student f = (0.4, 0.3, 0.2, 0.1); teacher's label 0, its top 3 = {0, 1, 2}; α = 0.4, so
    # ½ > α > 1/3: the unnormalized form pushes the student off the teacher's label, the
    # normalized one pulls it on
    logits = torch.tensor([[0.4, 0.3, 0.2, 0.1]], dtype=torch.float64).log()
    target, mask, _ = one_hot_case(logits, torch.tensor([[0.5, 0.25, 0.15, 0.1]]), 3)
    alpha = torch.tensor([0.4])
    torch.testing.assert_close(
        slam_loss(logits, target, alpha, mask, normalize), torch.tensor(loss, dtype=torch.float64)
    )
    torch.testing.assert_close(
        logit_gradient(logits, target, alpha, mask, normalize),
        torch.tensor([gradient], dtype=torch.float64),
    )


@given(st.integers(0, 10_000), st.floats(0.0, 1.0), st.integers(2, 6))
@settings(max_examples=200, deadline=None)
def test_sign_of_the_gradient_on_the_teachers_label(seed, alpha, k):
    """Unnormalized: pushed away from the teacher's label exactly where α < ½; normalized: exactly
    where α < 1/k. The gradient matches −c·f_j(1 − f_j)/(c·f_j + b) computed in float64."""
    assume(abs(alpha - 0.5) > 1e-3 and abs(alpha - 1 / k) > 1e-3)
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, 6, generator=generator, dtype=torch.float64)
    teacher = F.softmax(torch.randn(1, 6, generator=generator) * 2, dim=1)
    target, mask, label = one_hot_case(logits, teacher, k)
    f_j = F.softmax(logits, dim=1)[0, label].item()
    alphas = torch.tensor([alpha], dtype=torch.float64)
    for normalize, c, b, threshold in (
        (False, 2 * alpha - 1, 1 - alpha, 0.5),
        (True, alpha - (1 - alpha) / (k - 1), (1 - alpha) / (k - 1), 1 / k),
    ):
        grad = logit_gradient(logits, target, alphas, mask, normalize)[0, label].item()
        assert grad == pytest.approx(-c * f_j * (1 - f_j) / (c * f_j + b), rel=1e-6, abs=1e-12)
        assert (grad > 0) == (alpha < threshold)


@given(st.integers(0, 10_000), st.floats(0.0, 0.99))
@settings(max_examples=50, deadline=None)
def test_on_one_hot_targets_k_matters_only_when_normalized(seed, alpha):
    """The teacher's label is always in its own top k, so the unnormalized loss on a one-hot label
    is the same for every k (and equals the normalized loss at k = 2); the normalized loss grows
    with k, since mix_j = α·f_j + (1 − α)(1 − f_j)/(k − 1) falls as k grows."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    teacher = F.softmax(torch.randn(3, 6, generator=generator) * 2, dim=1)
    alphas = torch.full((3,), alpha)
    unnormalized, normalized = [], []
    for k in range(2, 7):
        target, mask, _ = one_hot_case(logits, teacher, k)
        unnormalized.append(slam_loss(logits, target, alphas, mask))
        normalized.append(slam_loss(logits, target, alphas, mask, normalize=True))
    for loss in unnormalized[1:]:
        torch.testing.assert_close(loss, unnormalized[0])
    torch.testing.assert_close(normalized[0], unnormalized[0])
    assert all(later > earlier for earlier, later in pairwise(normalized))

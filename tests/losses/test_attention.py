import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from distill.losses import attention_map, attention_transfer_loss
from distill.losses.attention import REFERENCE_POSITIONS


def test_attention_map_golden_value():
    # one sample, two channels, two positions: mean of squares per position, then L2-normalized
    feature = torch.tensor([[[1.0, 0.0], [1.0, 2.0]]])  # (1, C=2, L=2)
    raw = torch.tensor([(1 + 1) / 2, (0 + 4) / 2])
    torch.testing.assert_close(attention_map(feature), (raw / raw.norm()).unsqueeze(0))


def test_loss_golden_value():
    student = torch.tensor([[[1.0, 0.0]]])  # map [1, 0]
    teacher = torch.tensor([[[0.0, 1.0]]])  # map [0, 1]
    # raw, the authors' `(at(x) - at(y)).pow(2).mean()`: ‖d‖² / N = (1 + 1) / 2
    assert attention_transfer_loss(student, teacher, scale="raw").item() == pytest.approx((1 + 1) / 2)
    # size-free (default): ‖d‖² / N_ref with N_ref = 3 / (1/1024 + 1/256 + 1/64) = 1024/7
    assert attention_transfer_loss(student, teacher).item() == pytest.approx(2 * 7 / 1024)


def test_reference_size_is_the_harmonic_mean_of_the_paper_cifar_maps():
    harmonic_mean = 3 / (1 / 1024 + 1 / 256 + 1 / 64)
    assert harmonic_mean == pytest.approx(1024 / 7)  # by hand: 1 + 4 + 16 = 21, 3 · 1024 / 21
    assert pytest.approx(harmonic_mean) == REFERENCE_POSITIONS


def _one_hot_maps(positions: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Features whose normalized maps are one-hot at different positions: ‖d‖² = 2 per sample."""
    student = torch.zeros(batch, 3, positions)
    teacher = torch.zeros(batch, 3, positions)
    student[:, :, 0] = 1.0
    teacher[:, :, -1] = 2.0
    return student, teacher


def test_on_the_paper_cifar_maps_both_scales_pull_the_same_in_total():
    # WRN groups at 32², 16², 8²: Σ_j ‖d‖²/N_j (raw) = 3 · ‖d‖²/N_ref (size-free)
    raw = size_free = 0.0
    for side in (32, 16, 8):
        student, teacher = _one_hot_maps(side * side)
        student, teacher = student.view(2, 3, side, side), teacher.view(2, 3, side, side)
        raw += attention_transfer_loss(student, teacher, scale="raw").item()
        size_free += attention_transfer_loss(student, teacher).item()
        assert attention_transfer_loss(student, teacher).item() == pytest.approx(2 * 7 / 1024)
    assert raw == pytest.approx(2 * (1 / 1024 + 1 / 256 + 1 / 64))
    assert size_free == pytest.approx(raw)


@given(
    small=st.integers(1, 40),
    extra=st.integers(1, 1000),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None)
def test_size_free_pull_does_not_depend_on_the_map_size(small, extra, seed):
    # the same attention on a bigger map (zero activations appended): the normalized maps, and so
    # their difference ‖d‖², are unchanged; the size-free term, and its gradient, are too, while
    # the raw term shrinks by N_small / N_big
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(3, 4, small, generator=generator).requires_grad_()
    teacher = torch.randn(3, 5, small, generator=generator)
    padded_student = F.pad(student, (0, extra))
    padded_teacher = F.pad(teacher, (0, extra))
    torch.testing.assert_close(
        attention_transfer_loss(padded_student, padded_teacher), attention_transfer_loss(student, teacher)
    )
    torch.testing.assert_close(
        attention_transfer_loss(padded_student, padded_teacher, scale="raw") * (small + extra) / small,
        attention_transfer_loss(student, teacher, scale="raw"),
    )
    (gradient,) = torch.autograd.grad(attention_transfer_loss(student, teacher), student)
    (padded_gradient,) = torch.autograd.grad(attention_transfer_loss(padded_student, padded_teacher), student)
    torch.testing.assert_close(padded_gradient, gradient)


def test_size_free_is_raw_times_positions_over_the_reference():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 3, 5), torch.randn(4, 6, 5)
    torch.testing.assert_close(
        attention_transfer_loss(student, teacher),
        attention_transfer_loss(student, teacher, scale="raw") * 5 * 7 / 1024,
    )
    with pytest.raises(ValueError, match="scale must be"):
        attention_transfer_loss(student, teacher, scale="mean")  # type: ignore[arg-type]


@given(scale=st.floats(0.1, 100.0))
@settings(max_examples=25, deadline=None)
def test_invariant_to_feature_scale_and_zero_for_equal_maps(scale):
    torch.manual_seed(0)
    student = torch.randn(3, 4, 5, 5)
    teacher = torch.randn(3, 8, 5, 5)
    base = attention_transfer_loss(student, teacher)
    torch.testing.assert_close(attention_transfer_loss(student, teacher * scale), base)
    assert attention_transfer_loss(student * scale, student).item() == pytest.approx(0, abs=1e-7)


def test_channel_counts_may_differ_but_resolutions_may_not():
    assert attention_transfer_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 9, 4, 4)).item() >= 0
    with pytest.raises(ValueError, match="spatial sizes differ"):
        attention_transfer_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="batch sizes differ"):
        attention_transfer_loss(torch.randn(2, 3, 4, 4), torch.randn(3, 3, 4, 4))
    with pytest.raises(ValueError, match="expects"):
        attention_map(torch.randn(2, 3))

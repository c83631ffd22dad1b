import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from distill.losses import attention_map, attention_transfer_loss


def test_attention_map_golden_value():
    # one sample, two channels, two positions: mean of squares per position, then L2-normalized
    feature = torch.tensor([[[1.0, 0.0], [1.0, 2.0]]])  # (1, C=2, L=2)
    raw = torch.tensor([(1 + 1) / 2, (0 + 4) / 2])
    torch.testing.assert_close(attention_map(feature), (raw / raw.norm()).unsqueeze(0))


def test_loss_golden_value():
    student = torch.tensor([[[1.0, 0.0]]])  # map [1, 0]
    teacher = torch.tensor([[[0.0, 1.0]]])  # map [0, 1]
    assert attention_transfer_loss(student, teacher).item() == pytest.approx((1 + 1) / 2)


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

import pytest
import torch

from distill.losses import HintRegressor, fitnet_hint_loss


def test_zero_when_features_are_equal_and_golden_value():
    feature = torch.randn(2, 3, 4)
    assert fitnet_hint_loss(feature, feature).item() == 0.0
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[1.0, 3.0]])
    assert fitnet_hint_loss(student, teacher).item() == pytest.approx((1 + 9) / 2)


def test_gradient_flows_to_student_only():
    student = torch.randn(2, 5, requires_grad=True)
    teacher = torch.randn(2, 5, requires_grad=True)
    fitnet_hint_loss(student, teacher).backward()
    torch.testing.assert_close(student.grad, 2 * (student - teacher).detach() / 10)
    assert teacher.grad is None


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape"),
    [((4, 8), (4, 16)), ((4, 8, 10), (4, 32, 10)), ((4, 8, 6, 6), (4, 12, 6, 6))],
)
def test_regressor_maps_student_channels_to_teacher_channels(student_shape, teacher_shape):
    regressor = HintRegressor(torch.Size(student_shape), torch.Size(teacher_shape))
    assert regressor(torch.randn(student_shape)).shape == teacher_shape


def test_regressor_rejects_different_resolutions_and_ranks():
    with pytest.raises(ValueError, match="spatial sizes differ"):
        HintRegressor(torch.Size((2, 8, 4, 4)), torch.Size((2, 8, 8, 8)))
    with pytest.raises(ValueError, match="different ranks"):
        HintRegressor(torch.Size((2, 8)), torch.Size((2, 8, 8, 8)))
    with pytest.raises(ValueError, match="does not match"):
        fitnet_hint_loss(torch.zeros(2, 3), torch.zeros(2, 4))

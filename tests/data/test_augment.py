import pytest
import torch

from distill.data import AugmentSpec, augment_batch


def draw(spec, inputs, seed=0):
    return augment_batch(inputs, spec, torch.Generator().manual_seed(seed))


def test_same_seed_same_batch_and_different_seed_different_batch():
    inputs = torch.randn(16, 1, 40)
    spec = AugmentSpec(mixup_alpha=1.0, shift=3, noise=0.1)
    first, mix_first = draw(spec, inputs, 0)
    second, mix_second = draw(spec, inputs, 0)
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(mix_first.weight, mix_second.weight)
    assert not torch.equal(first, draw(spec, inputs, 1)[0])


def test_mixup_is_a_convex_combination_and_mixed_targets_are_distributions():
    inputs = torch.randn(32, 5)
    mixed, mixing = draw(AugmentSpec(mixup_alpha=0.4), inputs)
    assert ((mixing.weight >= 0) & (mixing.weight <= 1)).all()
    expected = mixing.weight[:, None] * inputs + (1 - mixing.weight[:, None]) * inputs[mixing.partner]
    torch.testing.assert_close(mixed, expected)
    targets = mixing.mix_targets(torch.arange(32) % 4, 4)
    torch.testing.assert_close(targets.sum(1), torch.ones(32))


def test_shift_translates_with_zero_fill():
    inputs = torch.arange(1, 11, dtype=torch.float32).view(1, 1, 10).repeat(50, 1, 1)
    shifted, _ = draw(AugmentSpec(shift=2), inputs)
    for row in shifted[:, 0]:
        nonzero = row[row != 0]
        assert len(nonzero) >= 8
        # the kept values are a contiguous run of the original sequence
        assert torch.equal(nonzero, torch.arange(nonzero[0], nonzero[0] + len(nonzero)))


@pytest.mark.parametrize("spec", [AugmentSpec(flip=True), AugmentSpec(crop_padding=2)])
def test_image_augmentations_keep_shape_and_content_statistics(spec):
    inputs = torch.randn(8, 3, 12, 12)
    out, mixing = draw(spec, inputs)
    assert out.shape == inputs.shape and mixing is None


def test_crop_with_zero_offset_is_a_pure_shift():
    inputs = torch.randn(4, 1, 6, 6)
    out, _ = draw(AugmentSpec(crop_padding=1), inputs, seed=5)
    for original, cropped in zip(inputs, out, strict=True):
        padded = torch.nn.functional.pad(original, (1, 1, 1, 1))
        assert any(torch.equal(cropped, padded[:, r : r + 6, c : c + 6]) for r in range(3) for c in range(3))


def test_disabled_spec_reports_disabled():
    assert not AugmentSpec().enabled and AugmentSpec(noise=0.1).enabled

import pytest
import torch

from distill.data import AugmentSpec, apply_plan, draw_plan


def augment(spec, inputs, indices=None, seed=0, targets=None):
    indices = torch.arange(len(inputs)) if indices is None else indices
    targets = torch.arange(len(inputs)) % 4 if targets is None else targets
    plan = draw_plan(spec, len(inputs), tuple(inputs.shape[1:]), seed)
    return apply_plan(plan, inputs[indices], indices, inputs, targets)


def test_same_seed_same_batch_and_different_seed_different_batch():
    inputs = torch.randn(16, 1, 40)
    spec = AugmentSpec(mixup_alpha=1.0, shift=3, noise=0.1)
    first, mix_first = augment(spec, inputs, seed=0)
    second, mix_second = augment(spec, inputs, seed=0)
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(mix_first.weight, mix_second.weight)
    assert not torch.equal(first, augment(spec, inputs, seed=1)[0])


def test_a_sample_is_augmented_the_same_whatever_batch_it_is_in():
    """The property a teacher-output cache relies on: draws are addressed by sample index."""
    inputs = torch.randn(32, 1, 40)
    spec = AugmentSpec(mixup_alpha=0.5, shift=4, noise=0.2)
    whole, _ = augment(spec, inputs, seed=7)
    order = torch.randperm(32)
    for batch in order.split(5):
        part, _ = augment(spec, inputs, indices=batch, seed=7)
        torch.testing.assert_close(part, whole[batch])


def test_mixup_is_a_convex_combination_and_mixed_targets_are_distributions():
    inputs = torch.randn(32, 5)
    targets = torch.arange(32) % 4
    plan = draw_plan(AugmentSpec(mixup_alpha=0.4), 32, (5,), 0)
    mixed, mixing = apply_plan(plan, inputs, torch.arange(32), inputs, targets)
    weight = plan.weight[:, None]
    assert ((plan.weight >= 0) & (plan.weight <= 1)).all()
    torch.testing.assert_close(mixed, weight * inputs + (1 - weight) * inputs[plan.partner])
    mixed_targets = mixing.mix_targets(targets, 4)
    torch.testing.assert_close(mixed_targets.sum(1), torch.ones(32))
    assert torch.equal(mixing.partner_targets, targets[plan.partner])


def test_shift_translates_with_zero_fill():
    inputs = torch.arange(1, 11, dtype=torch.float32).view(1, 1, 10).repeat(50, 1, 1)
    shifted, _ = augment(AugmentSpec(shift=2), inputs)
    for row in shifted[:, 0]:
        nonzero = row[row != 0]
        assert len(nonzero) >= 8
        assert torch.equal(nonzero, torch.arange(nonzero[0], nonzero[0] + len(nonzero)))


@pytest.mark.parametrize("spec", [AugmentSpec(flip=True), AugmentSpec(crop_padding=2)])
def test_image_augmentations_keep_shape(spec):
    inputs = torch.randn(8, 3, 12, 12)
    out, mixing = augment(spec, inputs)
    assert out.shape == inputs.shape and mixing is None


def test_crop_is_a_window_of_the_padded_image():
    inputs = torch.randn(4, 1, 6, 6)
    out, _ = augment(AugmentSpec(crop_padding=1), inputs, seed=5)
    for original, cropped in zip(inputs, out, strict=True):
        padded = torch.nn.functional.pad(original, (1, 1, 1, 1))
        assert any(torch.equal(cropped, padded[:, r : r + 6, c : c + 6]) for r in range(3) for c in range(3))


def test_noise_statistics_and_bank_for_large_splits(monkeypatch):
    inputs = torch.zeros(400, 1, 50)
    out, _ = augment(AugmentSpec(noise=0.5), inputs)
    assert abs(float(out.std()) - 0.5) < 0.02 and abs(float(out.mean())) < 0.02
    monkeypatch.setattr("distill.data.augment.NOISE_BANK_ELEMENTS", 500)
    plan = draw_plan(AugmentSpec(noise=0.5), 400, (1, 50), 0)
    assert plan.noise_bank.shape == (10, 1, 50) and int(plan.noise_index.max()) < 10


def test_draws_cycle_when_fixed():
    assert [AugmentSpec(draws=3).draw_of_epoch(e) for e in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert AugmentSpec().draw_of_epoch(11) == 11
    assert not AugmentSpec().enabled and AugmentSpec(noise=0.1).enabled

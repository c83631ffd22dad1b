"""Augmentation as *plans*: one draw of parameters for every sample, addressable by index.

Distillation benefits from asking the teacher about inputs the labels do not cover: a *patient
and consistent* teacher (Beyer et al., "Knowledge distillation: A good teacher is patient and
consistent", CVPR 2022) is queried on exactly the augmented input the student sees, including
mixup interpolations (Zhang et al., "mixup", ICLR 2018: ``x̃ = λ x_i + (1 − λ) x_j`` with
``λ ~ Beta(α, α)``).

A draw (:class:`AugmentPlan`) fixes, for each sample ``i`` of a split, its shift, flip, crop,
mixup partner and weight, and its noise pattern. The augmented version of
sample ``i`` under a draw is therefore the same whatever batch it lands in, which is what lets a
teacher-output cache replay augmentations exactly (as Fast Knowledge Distillation does) and lets
a resumed run repeat an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field

from distill.schema import Epochs, NonNegativeInt, Section


class AugmentSpec(Section):
    """Which augmentations to apply to training inputs (all off by default).

    ``mixup_alpha``: mix each sample with a random partner, ``λ ~ Beta(α, α)`` per sample (0 = off).
    ``shift``: translate along the last axis by up to ± this many steps, zero-filled.
    ``noise``: add Gaussian noise with this standard deviation.
    ``flip``: mirror images left–right with probability ½ (inputs shaped (C, H, W)).
    ``crop_padding``: pad images by this many pixels and crop back at a random offset.
    ``draws``: cycle through this many distinct draws (epoch ``e`` uses draw ``e mod draws``);
    unset, every epoch gets a fresh draw.
    """

    mixup_alpha: float = Field(default=0.0, ge=0.0)
    shift: NonNegativeInt = 0
    noise: float = Field(default=0.0, ge=0.0)
    flip: bool = False
    crop_padding: NonNegativeInt = 0
    draws: Epochs | None = None  # more draws than epochs would never be used

    @property
    def enabled(self) -> bool:
        return bool(self.mixup_alpha or self.shift or self.noise or self.flip or self.crop_padding)

    def draw_of_epoch(self, epoch: int) -> int:
        """Which draw epoch ``epoch`` (0-based) uses."""
        return epoch if self.draws is None else epoch % self.draws


@dataclass(frozen=True)
class AugmentPlan:
    """One draw of augmentation parameters for all ``num_samples`` samples of a split."""

    spec: AugmentSpec
    seed: int
    shift: torch.Tensor | None = None
    flip: torch.Tensor | None = None
    crop: torch.Tensor | None = None
    partner: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    noise_bank: torch.Tensor | None = None
    noise_index: torch.Tensor | None = None


@dataclass(frozen=True)
class Mixing:
    """How a batch was mixed: sample ``i`` is ``weight[i]·x_i + (1 − weight[i])·partner_i``."""

    partner_targets: torch.Tensor
    weight: torch.Tensor

    def mix_targets(self, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Mixed one-hot target distributions ``(batch, num_classes)``."""
        weight = self.weight[:, None]
        return (
            weight * F.one_hot(targets, num_classes).float()
            + (1 - weight) * F.one_hot(self.partner_targets, num_classes).float()
        )


#: At most this many noise values are drawn per plan; larger splits share noise patterns.
NOISE_BANK_ELEMENTS = 1 << 24


def draw_plan(spec: AugmentSpec, num_samples: int, sample_shape: tuple[int, ...], seed: int) -> AugmentPlan:
    """Draw every random parameter of ``spec`` for ``num_samples`` samples from ``seed``.

    Noise: each sample gets its own pattern when ``num_samples × prod(sample_shape)`` fits in
    :data:`NOISE_BANK_ELEMENTS`; beyond that, samples draw patterns from a bank of that size.
    """
    generator = torch.Generator().manual_seed(seed)
    fields: dict[str, torch.Tensor] = {}
    if spec.shift:
        fields["shift"] = torch.randint(-spec.shift, spec.shift + 1, (num_samples,), generator=generator)
    if spec.flip:
        fields["flip"] = torch.rand(num_samples, generator=generator) < 0.5
    if spec.crop_padding:
        fields["crop"] = torch.randint(0, 2 * spec.crop_padding + 1, (num_samples, 2), generator=generator)
    if spec.mixup_alpha:
        fields["partner"] = torch.randperm(num_samples, generator=generator)
        fields["weight"] = _beta_icdf(
            spec.mixup_alpha, torch.rand(num_samples, generator=generator, dtype=torch.float64)
        )
    if spec.noise:
        numel = max(1, math.prod(sample_shape))
        bank_size = max(1, min(num_samples, NOISE_BANK_ELEMENTS // numel))
        fields["noise_bank"] = torch.randn((bank_size, *sample_shape), generator=generator)
        fields["noise_index"] = (
            torch.arange(num_samples)
            if bank_size == num_samples
            else torch.randint(0, bank_size, (num_samples,), generator=generator)
        )
    return AugmentPlan(spec, seed, **fields)


def apply_plan(
    plan: AugmentPlan,
    inputs: torch.Tensor,
    indices: torch.Tensor,
    split_inputs: torch.Tensor,
    split_targets: torch.Tensor,
) -> tuple[torch.Tensor, Mixing | None]:
    """Augment the batch ``inputs`` (rows ``indices`` of the split) as ``plan`` dictates.

    ``split_inputs``/``split_targets`` are the whole split (mixup partners come from it).
    Returns the augmented batch (on the batch's device) and the mixing, if any.
    """
    device = inputs.device
    spec = plan.spec
    inputs = _geometric(plan, inputs, indices)
    mixing = None
    if plan.partner is not None and plan.weight is not None:
        partner_index = plan.partner[indices]
        partner = _geometric(plan, split_inputs[partner_index].to(device), partner_index)
        weight = plan.weight[indices].to(device)
        shape = (-1,) + (1,) * (inputs.ndim - 1)
        inputs = weight.view(shape) * inputs + (1 - weight.view(shape)) * partner
        mixing = Mixing(split_targets[partner_index].to(device), weight)
    if plan.noise_bank is not None and plan.noise_index is not None:
        inputs = inputs + spec.noise * plan.noise_bank[plan.noise_index[indices]].to(device)
    return inputs, mixing


def planned_batches(
    split_inputs: torch.Tensor,
    split_targets: torch.Tensor,
    plan: AugmentPlan | None,
    batch_size: int,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split in order, ``(indices, inputs)`` per batch, each batch on ``device`` and
    augmented as ``plan`` dictates (as is, without a plan): what a teacher sees of one draw."""
    for start in range(0, len(split_targets), batch_size):
        indices = torch.arange(start, min(start + batch_size, len(split_targets)))
        inputs = split_inputs[indices].to(device)
        if plan is not None:
            inputs, _ = apply_plan(plan, inputs, indices, split_inputs, split_targets)
        yield indices, inputs


def _geometric(plan: AugmentPlan, inputs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    if plan.crop is not None:
        inputs = _random_crop(inputs, plan.spec.crop_padding, plan.crop[indices])
    if plan.flip is not None:
        flip = plan.flip[indices].to(inputs.device)
        inputs = torch.where(flip.view((-1,) + (1,) * (inputs.ndim - 1)), inputs.flip(-1), inputs)
    if plan.shift is not None:
        inputs = _shift_last_axis(inputs, plan.shift[indices].to(inputs.device))
    return inputs


def _shift_last_axis(inputs: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    length = inputs.shape[-1]
    positions = torch.arange(length, device=inputs.device)
    source = positions[None, :] - offsets[:, None]
    valid = (source >= 0) & (source < length)
    rows = inputs.reshape(inputs.shape[0], -1, length)
    gathered = torch.gather(rows, 2, source.clamp(0, length - 1)[:, None, :].expand(-1, rows.shape[1], -1))
    return (gathered * valid[:, None, :]).reshape(inputs.shape)


def _random_crop(inputs: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    batch, _, height, width = inputs.shape
    padded = F.pad(inputs, (padding, padding, padding, padding))
    offsets = offsets.to(inputs.device)
    row_index = offsets[:, :1] + torch.arange(height, device=inputs.device)[None, :]
    col_index = offsets[:, 1:] + torch.arange(width, device=inputs.device)[None, :]
    batch_index = torch.arange(batch, device=inputs.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch_index, row_index[:, :, None], col_index[:, None, :]]
    return cropped.permute(0, 3, 1, 2).contiguous()


def _beta_icdf(alpha: float, uniform: torch.Tensor) -> torch.Tensor:
    """Beta(α, α) samples from uniform draws via the inverse CDF (exact and seedable)."""
    from scipy.special import betaincinv

    return torch.from_numpy(betaincinv(alpha, alpha, uniform.numpy())).float()

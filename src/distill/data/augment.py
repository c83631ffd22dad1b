"""Batch augmentations for training and distillation, drawn from an explicit generator.

Distillation benefits from asking the teacher about inputs the labels do not cover: a *patient
and consistent* teacher (Beyer et al., "Knowledge distillation: A good teacher is patient and
consistent", CVPR 2022) is queried on exactly the augmented input the student sees, including
mixup interpolations (Zhang et al., "mixup", ICLR 2018: ``x̃ = λ x_i + (1 − λ) x_j`` with
``λ ~ Beta(α, α)``). Every draw comes from the ``torch.Generator`` passed in, so a run is
reproducible and an epoch can be replayed from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt

from distill.schema import Section


class AugmentSpec(Section):
    """Which augmentations to apply to each training batch (all off by default).

    ``mixup_alpha``: mix pairs of samples with ``λ ~ Beta(α, α)`` drawn per sample (0 = off).
    ``shift``: translate along the last axis by up to ± this many steps, zero-filled.
    ``noise``: add Gaussian noise with this standard deviation.
    ``flip``: mirror images left–right with probability ½ (inputs shaped (C, H, W)).
    ``crop_padding``: pad images by this many pixels and crop back at a random offset.
    """

    mixup_alpha: float = Field(default=0.0, ge=0.0)
    shift: NonNegativeInt = 0
    noise: float = Field(default=0.0, ge=0.0)
    flip: bool = False
    crop_padding: NonNegativeInt = 0

    @property
    def enabled(self) -> bool:
        return bool(self.mixup_alpha or self.shift or self.noise or self.flip or self.crop_padding)


@dataclass(frozen=True)
class Mixing:
    """How a batch was mixed: sample ``i`` is ``weight[i]·x_i + (1 − weight[i])·x_partner[i]``."""

    partner: torch.Tensor
    weight: torch.Tensor

    def mix_targets(self, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Mixed one-hot target distributions ``(batch, num_classes)``."""
        one_hot = F.one_hot(targets, num_classes).float()
        weight = self.weight[:, None]
        return weight * one_hot + (1 - weight) * one_hot[self.partner]


def _shift_last_axis(inputs: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    length = inputs.shape[-1]
    positions = torch.arange(length, device=inputs.device)
    source = positions[None, :] - offsets[:, None]
    valid = (source >= 0) & (source < length)
    gathered = torch.gather(
        inputs.reshape(inputs.shape[0], -1, length),
        2,
        source.clamp(0, length - 1)[:, None, :].expand(-1, inputs[0].numel() // length, -1),
    )
    return (gathered * valid[:, None, :]).reshape(inputs.shape)


def _random_crop(inputs: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    batch, _, height, width = inputs.shape
    padded = F.pad(inputs, (padding, padding, padding, padding))
    rows = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    cols = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    row_index = (rows[:, None] + torch.arange(height)[None, :]).to(inputs.device)
    col_index = (cols[:, None] + torch.arange(width)[None, :]).to(inputs.device)
    batch_index = torch.arange(batch, device=inputs.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch_index, row_index[:, :, None], col_index[:, None, :]]
    return cropped.permute(0, 3, 1, 2).contiguous()


def augment_batch(
    inputs: torch.Tensor, spec: AugmentSpec, generator: torch.Generator
) -> tuple[torch.Tensor, Mixing | None]:
    """Apply ``spec`` to a batch; returns the new inputs and the mixing draw (``None`` if off).

    Random numbers are drawn on the CPU from ``generator`` and moved to the batch's device, so
    the same seed gives the same batch on every device.
    """
    batch = inputs.shape[0]
    device = inputs.device
    if spec.crop_padding:
        inputs = _random_crop(inputs, spec.crop_padding, generator)
    if spec.flip:
        flip = (torch.rand(batch, generator=generator) < 0.5).to(device)
        inputs = torch.where(flip[:, None, None, None], inputs.flip(-1), inputs)
    if spec.shift:
        offsets = torch.randint(-spec.shift, spec.shift + 1, (batch,), generator=generator)
        inputs = _shift_last_axis(inputs, offsets.to(device))
    if spec.noise:
        inputs = inputs + spec.noise * torch.randn(inputs.shape, generator=generator).to(device)
    mixing = None
    if spec.mixup_alpha:
        beta = torch.distributions.Beta(spec.mixup_alpha, spec.mixup_alpha)
        # Beta sampling has no generator argument: draw it through uniform samples instead.
        uniform = torch.rand(batch, generator=generator)
        weight = _beta_icdf(beta, uniform).to(device)
        partner = torch.randperm(batch, generator=generator).to(device)
        shape = (batch,) + (1,) * (inputs.ndim - 1)
        inputs = weight.view(shape) * inputs + (1 - weight.view(shape)) * inputs[partner]
        mixing = Mixing(partner, weight)
    return inputs, mixing


def _beta_icdf(beta: torch.distributions.Beta, uniform: torch.Tensor) -> torch.Tensor:
    """Beta samples from uniform draws via the inverse CDF (scipy's, exact and seedable)."""
    from scipy.special import betaincinv

    alpha = float(beta.concentration1)
    values = betaincinv(alpha, float(beta.concentration0), uniform.double().numpy())
    return torch.from_numpy(values).float()

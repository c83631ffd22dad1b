"""Aggregation in the mirror space: the weighted power mean of AIMS and HyperPrism.

AIMS (Du, Chen, Yang, Li, Kong, "Aggregation in the Mirror Space", arXiv 2210.16181, Sec. 3) and
HyperPrism (the same group, NeurIPS 2024, "HyperPrism: An Adaptive Non-linear Aggregation
Framework for Distributed Machine Learning over Non-IID Data and Time-varying Communication
Links") replace linear averaging with mirror descent's aggregation: with the mirror function
``ψ_p(x) = Σ_k |x_k|^{p+1}/(p+1)``, whose gradient — the mirror map — is ``φ_p(x) = sign(x)·|x|^p``
coordinate-wise, a device aggregates what it received (itself included) with weights ``w_j``:

``x̄ = φ_p⁻¹( Σ_j w_j·φ_p(x_j) / Σ_j w_j )``,   ``φ_p⁻¹(y) = sign(y)·|y|^{1/p}``

— the sign-preserving weighted power mean (WPM) of degree ``p``. ``p = 1`` is weighted averaging
(FedAvg, DPSGD gossip); a larger ``p`` pulls each coordinate towards the neighbour of largest
magnitude. Only aggregation is non-linear: local SGD stays in the primal space.

Power means are positively homogeneous (``M_p(c·x) = c·M_p(x)`` for ``c > 0``) and work
coordinate by coordinate, so each coordinate is divided by its largest magnitude over the
devices before the powers and multiplied back after: no overflow at large ``p`` (``|x|^{20}`` of
a weight of 100 overflows float32 otherwise), and no underflow of a small coordinate beside a
large one (a scale per tensor would lose it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from distill.federated.averaging import StateDict


def power_mean(values: torch.Tensor, weights: torch.Tensor, degree: torch.Tensor | float) -> torch.Tensor:
    """The sign-preserving WPM of ``values`` (``(devices, ...)``) along dim 0.

    ``weights`` is ``(devices,)``, non-negative with a positive sum; ``degree`` is ``p ≥ 1``, a
    float or a scalar tensor (the result is differentiable in it, and in ``values``).
    """
    if values.shape[0] != weights.shape[0]:
        raise ValueError(f"{values.shape[0]} devices' values but {weights.shape[0]} weights")
    degree = torch.as_tensor(degree, dtype=values.dtype)
    tiny = torch.finfo(values.dtype).tiny
    shape = (-1,) + (1,) * (values.ndim - 1)
    share = (weights / weights.sum()).to(values.dtype).reshape(shape)
    # homogeneity, coordinate by coordinate: the powers of x / max_j |x_j| lie in [-1, 1] and
    # neither overflow (large p, large weights) nor vanish beside a larger coordinate
    scale = values.detach().abs().amax(dim=0).clamp_min(tiny)
    mean = (share * mirror_map(values / scale, degree)).sum(dim=0)
    return inverse_mirror_map(mean, degree) * scale


def mirror_map(values: torch.Tensor, degree: torch.Tensor | float) -> torch.Tensor:
    """``φ_p(x) = sign(x)·|x|^p``, coordinate-wise (0 ↦ 0, with a finite derivative in ``p``)."""
    return torch.sign(values) * _safe_power(values.abs(), degree)


def inverse_mirror_map(values: torch.Tensor, degree: torch.Tensor | float) -> torch.Tensor:
    """``φ_p⁻¹(y) = sign(y)·|y|^{1/p}``, coordinate-wise."""
    return torch.sign(values) * _safe_power(values.abs(), 1.0 / degree)


def _safe_power(magnitude: torch.Tensor, exponent: torch.Tensor | float) -> torch.Tensor:
    """``magnitude ** exponent`` with 0 ↦ 0 and a finite derivative in ``exponent`` there
    (``d/dp x^p = x^p·ln x`` is 0·(−∞) at 0)."""
    tiny = torch.finfo(magnitude.dtype).tiny
    return torch.where(magnitude > 0, magnitude.clamp_min(tiny) ** exponent, torch.zeros_like(magnitude))


def aggregate_states(
    states: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | torch.Tensor,
    degrees: Mapping[str, torch.Tensor | float] | float,
) -> StateDict:
    """The WPM of every floating-point entry of ``states`` (one degree per entry: a mapping from
    entry name, or one number for all); integer entries (BatchNorm's counters) are averaged and
    rounded as FedAvg does."""
    weight_tensor = torch.as_tensor(weights, dtype=torch.float64)
    result: StateDict = {}
    for key, reference in states[0].items():
        stacked = torch.stack([state[key] for state in states])
        if not reference.is_floating_point():
            share = (weight_tensor / weight_tensor.sum()).reshape((-1,) + (1,) * reference.ndim)
            result[key] = (share * stacked.double()).sum(0).round().to(reference.dtype)
            continue
        degree = degrees if isinstance(degrees, float | int) else degrees[key]
        result[key] = power_mean(stacked, weight_tensor.to(stacked.dtype), degree)
    return result

"""State-dict arithmetic: FedAvg, task vectors and their weighted merge.

Every entry of a ``state_dict`` takes part, BatchNorm running statistics and counters included,
as in TAKFL's official code (its task vectors span ``state_dict().keys()``). Arithmetic runs in
float64 and each result is cast back to the base entry's dtype (``type_as``), so integer counters
stay integers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

StateDict = dict[str, torch.Tensor]


def _check_keys(reference: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor], what: str) -> None:
    if set(reference) != set(other):
        missing = sorted(set(reference) - set(other))[:3]
        extra = sorted(set(other) - set(reference))[:3]
        raise ValueError(f"{what}: state dicts differ (missing {missing}, unexpected {extra})")
    for key, tensor in reference.items():
        if tensor.shape != other[key].shape:
            raise ValueError(
                f"{what}: '{key}' has shape {tuple(other[key].shape)}, expected {tuple(tensor.shape)}"
            )


def weighted_average(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> StateDict:
    """FedAvg (McMahan et al. 2017, Alg. 1): ``Σ_k (n_k / Σn) θ_k`` over every entry.

    ``weights`` are the clients' sample counts (or any non-negative weights); they are
    normalized here.
    """
    if not states:
        raise ValueError("weighted_average needs at least one state dict")
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} state dicts for {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0 or any(weight < 0 for weight in weights):
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    reference = states[0]
    for state in states[1:]:
        _check_keys(reference, state, "weighted_average")
    averaged: StateDict = {}
    for key, tensor in reference.items():
        accumulated = torch.zeros(tensor.shape, dtype=torch.float64)
        for state, weight in zip(states, weights, strict=True):
            accumulated += state[key].detach().to(torch.float64) * (weight / total)
        if tensor.is_floating_point():
            averaged[key] = accumulated.to(tensor.dtype)
        else:
            averaged[key] = accumulated.round().to(tensor.dtype)
    return averaged


def task_vector(tuned: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> StateDict:
    """``τ = θ_tuned − θ_base`` entry by entry, in float64 (Ilharco et al. 2023, Eq. 1)."""
    _check_keys(base, tuned, "task_vector")
    return {key: tuned[key].detach().to(torch.float64) - base[key].detach().to(torch.float64) for key in base}


def merge_task_vectors(
    base: Mapping[str, torch.Tensor], vectors: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> StateDict:
    """``θ = θ_base + Σ_j λ_j τ_j`` (TAKFL Eq. 5), cast back to each entry's dtype."""
    if len(vectors) != len(weights):
        raise ValueError(f"{len(vectors)} task vectors for {len(weights)} coefficients")
    merged: StateDict = {}
    for key, tensor in base.items():
        update = torch.zeros(tensor.shape, dtype=torch.float64)
        for vector, weight in zip(vectors, weights, strict=True):
            update += float(weight) * vector[key]
        merged[key] = (tensor.detach().to(torch.float64) + update).to(tensor.dtype)
    return merged


def state_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes the tensors of ``state`` occupy (what sending it costs, before framing)."""
    return sum(tensor.numel() * tensor.element_size() for tensor in state.values())


def cpu_state(module: torch.nn.Module) -> StateDict:
    """A detached CPU copy of ``module``'s ``state_dict``."""
    return {key: value.detach().cpu().clone() for key, value in module.state_dict().items()}

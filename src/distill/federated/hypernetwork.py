"""HyperPrism's per-device hypernetwork: one WPM degree per layer, learned through the aggregate.

HyperPrism (NeurIPS 2024) lets "a dedicated hypernetwork per device" choose the degree of the
weighted power mean for each layer and each round. The public summaries give neither the
hypernetwork's inputs nor its size, and no official code was found, so this follows the pFedHN
pattern the paper builds on, and says where it chooses:

- device ``i`` holds a learnable embedding ``e_i`` (8 numbers) and a two-layer MLP ``h_i``
  (8 → 16 → one output per layer); the degrees are ``p = 1 + (p_max − 1)·sigmoid(h_i(e_i))``,
  inside ``[1, p_max]`` (our choice of squashing: bounded, so a step can never push a degree to
  an overflow; ``p_max = 9`` covers the fixed degrees 3–7 AIMS reports);
- after device ``i`` receives its neighbours' models it forms the aggregate with these degrees
  (differentiable in ``p``: :func:`~distill.federated.mirror.power_mean`), computes the loss of
  the aggregate on one local batch (in eval mode: BatchNorm uses the aggregated statistics, whose
  degrees learn too), and steps ``h_i`` and ``e_i`` by Adam; the aggregate it keeps
  is the one formed before that step, and the updated hypernetwork chooses the next round's
  degrees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from distill.federated.averaging import StateDict
from distill.federated.mirror import aggregate_states


class DegreeHypernetwork(nn.Module):
    """``e → MLP → 1 + (p_max − 1)·sigmoid``: one degree per named layer."""

    def __init__(
        self, layers: Sequence[str], max_degree: float = 9.0, embedding: int = 8, hidden: int = 16
    ) -> None:
        super().__init__()
        if max_degree < 1:
            raise ValueError(f"max_degree must be ≥ 1, got {max_degree}")
        self.layers = list(layers)
        self.max_degree = max_degree
        self.embedding = nn.Parameter(torch.randn(embedding) * 0.1)
        self.network = nn.Sequential(
            nn.Linear(embedding, hidden), nn.ReLU(), nn.Linear(hidden, len(self.layers))
        )

    def forward(self) -> torch.Tensor:
        """The degrees, ``(layers,)``, each in ``[1, max_degree]``."""
        return 1.0 + (self.max_degree - 1.0) * torch.sigmoid(self.network(self.embedding))

    def degrees(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.layers, self(), strict=True))


def layer_of(entry: str) -> str:
    """The module an entry belongs to (``features.0.weight`` → ``features.0``)."""
    return entry.rsplit(".", 1)[0] if "." in entry else entry


def entry_degrees(
    layer_degrees: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Each floating-point entry of ``state`` gets its layer's degree."""
    return {key: layer_degrees[layer_of(key)] for key, value in state.items() if value.is_floating_point()}


def adaptive_aggregate(
    model: nn.Module,
    hypernetwork: DegreeHypernetwork,
    optimizer: torch.optim.Optimizer,
    states: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float],
    batch: tuple[torch.Tensor, torch.Tensor],
) -> tuple[StateDict, dict[str, float]]:
    """Aggregate ``states`` with the hypernetwork's degrees, train it one step on ``batch``
    through the aggregate, and return the (detached) aggregate and the degrees it used."""
    layer_degrees = hypernetwork.degrees()
    merged = aggregate_states(states, weights, entry_degrees(layer_degrees, states[0]))
    inputs, targets = batch
    model.eval()  # the aggregate as it will be used; train mode would update its running statistics in place
    loss = F.cross_entropy(functional_call(model, merged, (inputs,)), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    used = {layer: float(degree.detach()) for layer, degree in layer_degrees.items()}
    return {key: value.detach() for key, value in merged.items()}, used

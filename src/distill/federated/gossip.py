"""Decentralized learning over time-varying links: gossip with linear or mirror-space aggregation.

The setting of AIMS and HyperPrism's sweeps (no server): ``m`` devices with Dirichlet(α) label
skew; in each round every device trains locally, then exchanges models with its neighbours in
that round's graph — each link is up with probability ``density``, independently per round — and
aggregates what it received, itself included, with Metropolis–Hastings or uniform weights:

- ``linear``: weighted averaging (DPSGD gossip; the WPM of degree 1);
- ``power``: AIMS's WPM of a fixed degree ``p`` (:mod:`distill.federated.mirror`);
- ``hyperprism``: a degree per layer from each device's hypernetwork
  (:mod:`distill.federated.hypernetwork`).

Everything runs in one process (the paper's own sweeps simulate up to 100 devices the same way).
Randomness is derived from ``(seed, round, …)``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

import numpy as np
import torch
from pydantic import Field

from distill.data.bundle import Split
from distill.data.sources import DATASETS, DataSpec, load_data
from distill.federated.averaging import StateDict, cpu_state, weighted_average
from distill.federated.hypernetwork import DegreeHypernetwork, adaptive_aggregate, layer_of
from distill.federated.local import accuracy, make_generator, train_local
from distill.federated.mirror import aggregate_states
from distill.federated.partition import dirichlet_split
from distill.federated.spec import LocalSpec
from distill.models import ModelSpec, build_model, model_field
from distill.schema import PositiveInt, Section, Seed

if TYPE_CHECKING:
    ModelField: TypeAlias = ModelSpec
    DataField: TypeAlias = DataSpec
else:
    ModelField = model_field()
    DataField = DATASETS.union("dataset")


class AggregationSpec(Section):
    """How a device combines what it received: ``linear``, ``power`` (degree ``degree``) or
    ``hyperprism`` (per-layer degrees in ``[1, max_degree]``, hypernetwork Adam at ``lr``)."""

    rule: Literal["linear", "power", "hyperprism"] = "linear"
    degree: Annotated[float, Field(ge=1.0, le=64.0)] = 3.0
    max_degree: Annotated[float, Field(ge=1.0, le=64.0)] = 9.0
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = 0.01


class GossipRecipe(Section):
    """A decentralized run (``kind: decentralized`` in a ``distill fed`` recipe)."""

    kind: Literal["decentralized"] = "decentralized"
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    description: str = ""
    seed: Seed = 0
    data: DataField
    model: ModelField
    devices: Annotated[int, Field(ge=2, le=1000)] = 20
    dirichlet_alpha: Annotated[float, Field(gt=0.0, le=1e6)] = 0.1
    min_device_samples: PositiveInt = 5
    density: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    mixing: Literal["metropolis", "uniform"] = "metropolis"
    rounds: Annotated[int, Field(ge=1, le=100_000)] = 100
    eval_every: Annotated[int, Field(ge=1, le=100_000)] = 1
    local: LocalSpec = Field(default_factory=lambda: LocalSpec(epochs=1, lr=0.01))
    aggregation: AggregationSpec = Field(default_factory=AggregationSpec)

    @property
    def rule_name(self) -> str:
        """``linear``, ``power-3``, ``hyperprism``: how boards and folders name the rule."""
        rule = self.aggregation
        return f"power-{rule.degree:g}" if rule.rule == "power" else rule.rule


def link_graph(devices: int, density: float, seed: int, round_index: int) -> np.ndarray:
    """This round's symmetric adjacency (no self loops): each link up with probability ``density``."""
    rng = np.random.default_rng([seed, round_index, 9])
    upper = np.triu(rng.random((devices, devices)) < density, k=1)
    return upper | upper.T


def mixing_weights(adjacency: np.ndarray, rule: str) -> np.ndarray:
    """Row-stochastic, symmetric mixing matrix over the up links plus self.

    ``metropolis``: ``w_ij = 1 / (1 + max(d_i, d_j))`` on links, ``w_ii = 1 − Σ_j w_ij``
    (Metropolis–Hastings; doubly stochastic). ``uniform``: ``1 / (d_i + 1)`` over neighbours and
    self (row-stochastic only).
    """
    degree = adjacency.sum(axis=1)
    count = len(adjacency)
    weights = np.zeros((count, count))
    if rule == "metropolis":
        for i, j in zip(*np.nonzero(adjacency), strict=True):
            weights[i, j] = 1.0 / (1.0 + max(degree[i], degree[j]))
        weights[np.diag_indices(count)] = 1.0 - weights.sum(axis=1)
    else:
        weights = (adjacency + np.eye(count)) / (degree + 1.0)[:, None]
    return weights


@dataclass
class GossipRound:
    round: int
    mean_accuracy: float | None
    min_accuracy: float | None
    links_up: int
    #: per layer, the mean degree over devices (``hyperprism``) or the fixed degree
    degrees: dict[str, float]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Gossip:
    """The devices' models, data shards and hypernetworks, and one round of the protocol."""

    def __init__(self, recipe: GossipRecipe) -> None:
        self.recipe = recipe
        self.bundle = load_data(recipe.data)
        rows = torch.arange(len(self.bundle.train))
        self.shards = dirichlet_split(
            rows,
            self.bundle.train.targets,
            recipe.devices,
            recipe.dirichlet_alpha,
            recipe.seed,
            recipe.min_device_samples,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            self.model = build_model(recipe.model, self.bundle.input_shape, self.bundle.num_classes)
        start = cpu_state(self.model)  # every device starts from the same weights, as in DPSGD
        self.states: list[StateDict] = [dict(start) for _ in range(recipe.devices)]
        self.layers = sorted({layer_of(key) for key, value in start.items() if value.is_floating_point()})
        self.hypernetworks: list[DegreeHypernetwork] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        if recipe.aggregation.rule == "hyperprism":
            for device in range(recipe.devices):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(recipe.seed * 1_000 + device)
                    network = DegreeHypernetwork(self.layers, recipe.aggregation.max_degree)
                self.hypernetworks.append(network)
                self.optimizers.append(torch.optim.Adam(network.parameters(), lr=recipe.aggregation.lr))

    def shard(self, device: int) -> Split:
        return self.bundle.train.subset(self.shards[device])

    def snapshot(self) -> dict[str, Any]:
        """A copy of everything a checkpoint must hold (not views of the live tensors)."""
        return copy.deepcopy(
            {
                "states": [dict(state) for state in self.states],
                "hypernetworks": [network.state_dict() for network in self.hypernetworks],
                "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
            }
        )

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.states = [dict(state) for state in snapshot["states"]]
        for network, state in zip(self.hypernetworks, snapshot["hypernetworks"], strict=True):
            network.load_state_dict(state)
        for optimizer, state in zip(self.optimizers, snapshot["optimizers"], strict=True):
            optimizer.load_state_dict(state)

    def run_round(self, round_index: int) -> GossipRound:
        started = time.perf_counter()
        recipe = self.recipe
        for device in range(recipe.devices):
            self.model.load_state_dict(self.states[device])
            seed = (recipe.seed * 1_000_003 + round_index * 7_919 + device) % (2**63 - 1)
            train_local(self.model, self.shard(device), recipe.local, seed)
            self.states[device] = cpu_state(self.model)
        adjacency = link_graph(recipe.devices, recipe.density, recipe.seed, round_index)
        weights = mixing_weights(adjacency, recipe.mixing)
        used: list[dict[str, float]] = []
        merged = []
        for device in range(recipe.devices):
            peers = [j for j in range(recipe.devices) if weights[device, j] > 0]
            states = [self.states[j] for j in peers]
            row = [float(weights[device, j]) for j in peers]
            if recipe.aggregation.rule == "linear":
                merged.append(weighted_average(states, row))
            elif recipe.aggregation.rule == "power":
                merged.append(aggregate_states(states, row, recipe.aggregation.degree))
            else:
                batch = self._local_batch(device, round_index)
                state, degrees = adaptive_aggregate(
                    self.model, self.hypernetworks[device], self.optimizers[device], states, row, batch
                )
                merged.append(state)
                used.append(degrees)
        self.states = merged
        degrees = self._degrees(used)
        mean = low = None
        if (round_index + 1) % recipe.eval_every == 0 or round_index + 1 == recipe.rounds:
            scores = [self.device_accuracy(device) for device in range(recipe.devices)]
            mean, low = float(np.mean(scores)), float(np.min(scores))
        return GossipRound(
            round_index + 1, mean, low, int(adjacency.sum() // 2), degrees, time.perf_counter() - started
        )

    def _degrees(self, used: list[dict[str, float]]) -> dict[str, float]:
        rule = self.recipe.aggregation
        if rule.rule == "hyperprism":
            return {layer: float(np.mean([entry[layer] for entry in used])) for layer in self.layers}
        degree = 1.0 if rule.rule == "linear" else rule.degree
        return {layer: degree for layer in self.layers}

    def _local_batch(self, device: int, round_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        shard = self.shard(device)
        generator = make_generator((self.recipe.seed * 31 + round_index * 17 + device) % (2**63 - 1))
        rows = torch.randperm(len(shard), generator=generator)[: self.recipe.local.batch_size]
        return shard.inputs[rows], shard.targets[rows]

    def device_accuracy(self, device: int) -> float:
        self.model.load_state_dict(self.states[device])
        return accuracy(self.model, self.bundle.test)

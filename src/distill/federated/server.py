"""One federated round of FedAvg, FedDF or TAKFL, over any :class:`Transport`.

The round, as TAKFL's official code runs it (``cv/src/benchmarks/main_fedhd.py``):

1. each prototype ``i`` samples ``max(⌊frac_i·|C_i|⌋, 1)`` clients; each trains from ``θ_i``;
2. FedAvg per prototype, weighted by the clients' sample counts, over that prototype's replies;
3. (FedDF, TAKFL) the clients that trained answer a logit query on the public set; prototype
   ``j``'s teacher signal ``z_j`` is the mean of its clients' logits, and ``s_i`` is the averaged
   model's own logits;
4. FedDF distills one target — the mean over *all* replying clients — into every ``θ_i``. TAKFL
   restarts from ``θ_i`` for every teacher ``j`` (``j = i`` included), distills ``z_j`` with
   self-regularization ``γ_i``, takes ``τ_ij = θ_ij − θ_i`` and merges ``θ_i + Σ_j λ_ij τ_ij``.

Randomness is derived from ``(seed, round, stage, …)``, never carried in a generator's state, so
a round replays exactly after a resume. A client that fails or times out costs its own update:
its prototype averages the replies that came, and a prototype with no reply keeps ``θ_i`` and
teaches nothing this round.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from distill.federated.averaging import (
    StateDict,
    cpu_state,
    merge_task_vectors,
    state_bytes,
    task_vector,
    weighted_average,
)
from distill.federated.client import TrainReply
from distill.federated.distillation import distill_into, ensemble_logits
from distill.federated.hypernetwork import DegreeHypernetwork, adaptive_aggregate, layer_of
from distill.federated.local import accuracy, predict_logits
from distill.federated.merging import heuristic_candidates, select_candidate, tune_coefficients
from distill.federated.mirror import aggregate_states
from distill.federated.partition import sample_clients
from distill.federated.setting import FederatedSetting, build_prototype_model, setting_for
from distill.federated.spec import FedRecipe
from distill.models import count_parameters


@dataclass(frozen=True, order=True)
class ClientRef:
    """One client: its prototype's index and its index within the prototype."""

    prototype: int
    client: int


class Transport(Protocol):
    """What carries a round's messages: Flower (simulation or deployment) or the in-process
    transport of the tests. Each call returns the replies it got and, for every client it did
    not hear from, the reason."""

    def train(
        self, round_index: int, tasks: Mapping[ClientRef, StateDict]
    ) -> tuple[dict[ClientRef, TrainReply], dict[ClientRef, str]]: ...

    def query(
        self, round_index: int, clients: list[ClientRef]
    ) -> tuple[dict[ClientRef, torch.Tensor], dict[ClientRef, str]]: ...


@dataclass
class PrototypeRound:
    """One prototype's part of a round, as the run directory records it."""

    name: str
    sampled: list[int]
    replied: list[int]
    missing: dict[str, str]
    averaged_accuracy: float
    merged_accuracy: float
    local_loss: float | None
    #: λ_i over teachers in prototype order (TAKFL); ``None`` for FedAvg and FedDF
    lambdas: list[float] | None
    bytes_sent: int
    bytes_received: int


@dataclass
class RoundRecord:
    """Everything measured in one round."""

    round: int
    algorithm: str
    prototypes: list[PrototypeRound]
    seconds: float
    seconds_local: float
    seconds_distill: float
    #: HyperPrism averaging: per prototype name, the degree per layer used this round
    degrees: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def stage_seed(seed: int, round_index: int, *parts: int) -> int:
    """A seed for one stage of one round, e.g. ``(student, teacher)`` of a distillation."""
    sequence = np.random.SeedSequence([seed, round_index, *parts])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


class Federation:
    """The server's state (each prototype's ``θ_i`` and last λ_i) and its round logic."""

    def __init__(self, recipe: FedRecipe, setting: FederatedSetting | None = None) -> None:
        self.recipe = recipe
        self.setting = setting if setting is not None else setting_for(recipe)
        self.models = [
            build_prototype_model(recipe, index, self.setting, stage_seed(recipe.seed, 0, 1, index))
            for index in range(len(recipe.prototypes))
        ]
        self.states: list[StateDict] = [cpu_state(model) for model in self.models]
        self.lambdas: list[list[float] | None] = [None for _ in recipe.prototypes]
        self.capacities = [count_parameters(model) for model in self.models]
        #: HyperPrism averaging: a degree hypernetwork (and its optimizer) per prototype
        self.hypernetworks: dict[int, tuple[DegreeHypernetwork, torch.optim.Optimizer]] = {}
        self.degrees: dict[int, dict[str, float]] = {}

    # ------------------------------------------------------------------ checkpoint state

    def snapshot(self) -> dict[str, Any]:
        """What a checkpoint must hold to continue exactly (randomness is per round)."""
        hyper = {
            str(index): {"network": network.state_dict(), "optimizer": optimizer.state_dict()}
            for index, (network, optimizer) in self.hypernetworks.items()
        }
        return copy.deepcopy(
            {
                "states": [dict(state) for state in self.states],
                "lambdas": list(self.lambdas),
                "hypernetworks": hyper,
            }
        )

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        states = snapshot["states"]
        if len(states) != len(self.states):
            raise ValueError(f"the checkpoint holds {len(states)} prototypes, the recipe {len(self.states)}")
        for model, state in zip(self.models, states, strict=True):
            model.load_state_dict(state)
        self.states = [cpu_state(model) for model in self.models]
        self.lambdas = list(snapshot["lambdas"])
        for key, stored in snapshot.get("hypernetworks", {}).items():
            network, optimizer = self._hypernetwork(int(key))
            network.load_state_dict(stored["network"])
            optimizer.load_state_dict(stored["optimizer"])

    # ------------------------------------------------------------------ evaluation

    def _model_at(self, index: int, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        model = self.models[index]
        model.load_state_dict(dict(state))
        return model

    def test_accuracy(self, index: int, state: Mapping[str, torch.Tensor]) -> float:
        return accuracy(self._model_at(index, state), self.setting.bundle.test)

    # ------------------------------------------------------------------ one round

    def sampled_clients(self, round_index: int) -> list[ClientRef]:
        rng = np.random.default_rng([self.recipe.seed, round_index, 2])
        return [
            ClientRef(index, client)
            for index, prototype in enumerate(self.recipe.prototypes)
            for client in sample_clients(prototype.clients, prototype.fraction, rng)
        ]

    def run_round(self, round_index: int, transport: Transport) -> RoundRecord:
        """Run round ``round_index`` (0-based) and update every ``θ_i``."""
        started = time.perf_counter()
        recipe, count = self.recipe, len(self.recipe.prototypes)
        sampled = self.sampled_clients(round_index)
        self.degrees = {}
        tasks = {ref: self.states[ref.prototype] for ref in sampled}
        replies, missing = transport.train(round_index, tasks)
        sent = [0] * count
        received = [0] * count
        for ref in sampled:
            sent[ref.prototype] += state_bytes(self.states[ref.prototype])
        averaged: list[StateDict] = []
        losses: list[float | None] = []
        for index in range(count):
            mine = sorted(ref for ref in replies if ref.prototype == index)
            for ref in mine:
                received[index] += state_bytes(replies[ref].state)
            if mine:
                averaged.append(
                    self._average(
                        round_index,
                        index,
                        [replies[r].state for r in mine],
                        [replies[r].samples for r in mine],
                    )
                )
                losses.append(float(np.mean([replies[r].loss for r in mine])))
            else:
                averaged.append(self.states[index])  # nobody answered: θ_i stays
                losses.append(None)
        averaged_accuracy = [self.test_accuracy(index, averaged[index]) for index in range(count)]
        local_done = time.perf_counter()

        merged = list(averaged)
        lambdas: list[list[float] | None] = [None] * count
        query_missing: dict[ClientRef, str] = {}
        if recipe.algorithm != "fedavg":
            logits, query_missing = transport.query(round_index, sorted(replies))
            for ref, tensor in logits.items():
                received[ref.prototype] += tensor.numel() * tensor.element_size()
            if logits:
                if recipe.algorithm == "feddf":
                    merged = self._feddf(round_index, averaged, logits)
                else:
                    merged, lambdas = self._takfl(round_index, averaged, logits)
        merged_accuracy = [
            averaged_accuracy[index]
            if merged[index] is averaged[index]
            else self.test_accuracy(index, merged[index])
            for index in range(count)
        ]
        finished = time.perf_counter()

        self.states = [dict(state) for state in merged]
        for index in range(count):
            if lambdas[index] is not None:
                self.lambdas[index] = lambdas[index]
        absent = {**missing, **query_missing}
        records = []
        for index, prototype in enumerate(recipe.prototypes):
            records.append(
                PrototypeRound(
                    name=prototype.name,
                    sampled=[ref.client for ref in sampled if ref.prototype == index],
                    replied=sorted(ref.client for ref in replies if ref.prototype == index),
                    missing={
                        str(ref.client): why for ref, why in sorted(absent.items()) if ref.prototype == index
                    },
                    averaged_accuracy=averaged_accuracy[index],
                    merged_accuracy=merged_accuracy[index],
                    local_loss=losses[index],
                    lambdas=lambdas[index],
                    bytes_sent=sent[index],
                    bytes_received=received[index],
                )
            )
        return RoundRecord(
            round=round_index + 1,
            algorithm=recipe.algorithm,
            prototypes=records,
            seconds=finished - started,
            seconds_local=local_done - started,
            seconds_distill=finished - local_done,
            degrees={recipe.prototypes[index].name: used for index, used in sorted(self.degrees.items())},
        )

    def _average(
        self, round_index: int, index: int, states: list[StateDict], samples: list[int]
    ) -> StateDict:
        """Per-prototype aggregation: FedAvg, or the weighted power mean (AIMS / HyperPrism)."""
        rule = self.recipe.averaging
        if rule.rule == "linear" or len(states) == 1:
            return weighted_average(states, samples)
        weights = [float(count) for count in samples]
        if rule.rule == "power":
            return aggregate_states(states, weights, rule.degree)
        hypernetwork, optimizer = self._hypernetwork(index)
        validation = self.setting.validation
        generator = torch.Generator().manual_seed(stage_seed(self.recipe.seed, round_index, 7, index))
        rows = torch.randperm(len(validation), generator=generator)[: rule.batch_size]
        merged, degrees = adaptive_aggregate(
            self.models[index],
            hypernetwork,
            optimizer,
            states,
            weights,
            (validation.inputs[rows], validation.targets[rows]),
        )
        self.degrees[index] = degrees
        return merged

    def _hypernetwork(self, index: int) -> tuple[DegreeHypernetwork, torch.optim.Optimizer]:
        if index not in self.hypernetworks:
            layers = sorted(
                {layer_of(key) for key, value in self.states[index].items() if value.is_floating_point()}
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(stage_seed(self.recipe.seed, 0, 8, index))
                network = DegreeHypernetwork(layers, self.recipe.averaging.max_degree)
            self.hypernetworks[index] = (
                network,
                torch.optim.Adam(network.parameters(), lr=self.recipe.averaging.lr),
            )
        return self.hypernetworks[index]

    # ------------------------------------------------------------------ FedDF

    def _feddf(
        self, round_index: int, averaged: list[StateDict], logits: Mapping[ClientRef, torch.Tensor]
    ) -> list[StateDict]:
        target = ensemble_logits([logits[ref] for ref in sorted(logits)])
        merged = []
        for index in range(len(averaged)):
            model = self._model_at(index, averaged[index])
            distill_into(
                model,
                self.setting.public,
                target,
                self.recipe.distill,
                stage_seed(self.recipe.seed, round_index, 3, index),
            )
            merged.append(cpu_state(model))
        return merged

    # ------------------------------------------------------------------ TAKFL

    def _takfl(
        self, round_index: int, averaged: list[StateDict], logits: Mapping[ClientRef, torch.Tensor]
    ) -> tuple[list[StateDict], list[list[float] | None]]:
        recipe, count = self.recipe, len(averaged)
        teachers = sorted({ref.prototype for ref in logits})
        signals = {
            j: ensemble_logits([logits[ref] for ref in sorted(logits) if ref.prototype == j])
            for j in teachers
        }
        gammas = recipe.self_weights
        merged: list[StateDict] = []
        chosen: list[list[float] | None] = []
        for student in range(count):
            own = predict_logits(self._model_at(student, averaged[student]), self.setting.public)
            vectors = []
            for teacher in teachers:
                model = self._model_at(student, averaged[student])
                distill_into(
                    model,
                    self.setting.public,
                    signals[teacher],
                    self.recipe.distill,
                    stage_seed(recipe.seed, round_index, 4, student, teacher),
                    self_logits=own,
                    self_weight=gammas[student],
                )
                vectors.append(task_vector(cpu_state(model), averaged[student]))
            weights = self._coefficients(round_index, student, teachers, averaged[student], vectors)
            merged.append(merge_task_vectors(averaged[student], vectors, weights.tolist()))
            full = [0.0] * count
            for teacher, weight in zip(teachers, weights, strict=True):
                full[teacher] = float(weight)
            chosen.append(full)
        return merged, chosen

    def _coefficients(
        self,
        round_index: int,
        student: int,
        teachers: list[int],
        base: StateDict,
        vectors: list[StateDict],
    ) -> np.ndarray:
        merge = self.recipe.merge
        if merge.lambdas == "fixed":
            assert merge.fixed is not None
            row = np.array([merge.fixed[student][teacher] for teacher in teachers], dtype=float)
            if row.sum() <= 0:
                row = np.full(len(teachers), 1.0)
            return row / row.sum()
        if merge.lambdas == "heuristic":
            candidates = heuristic_candidates(
                [self.capacities[teacher] for teacher in teachers],
                merge.candidates,
                stage_seed(self.recipe.seed, round_index, 5, student),
            )

            def score(state: StateDict) -> float:
                return accuracy(self._model_at(student, state), self.setting.validation)

            return select_candidate(base, vectors, candidates, score)[0]
        previous = self.lambdas[student]
        start = None
        if previous is not None and all(previous[teacher] > 0 for teacher in teachers):
            start = [previous[teacher] for teacher in teachers]
            start = [value / sum(start) for value in start]
        return tune_coefficients(
            self._model_at(student, base),
            base,
            vectors,
            self.setting.validation,
            stage_seed(self.recipe.seed, round_index, 6, student),
            start=start,
            epochs=merge.tune_epochs,
        )

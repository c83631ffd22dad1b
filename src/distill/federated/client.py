"""A client's side of a round, whatever carries the messages.

A client receives its prototype's averaged weights, the recipe, and its (prototype, client)
index; it trains on its private shard and keeps the local model so it can answer the server's
logit query on the public set (TAKFL's and FedDF's teacher signal is the *local* models' logits,
official ``main_fedhd.py``: ``clients[cn][idx].inference(public_ds)`` after local training).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from distill.errors import RecipeError
from distill.federated.averaging import StateDict, cpu_state
from distill.federated.local import predict_logits, train_local
from distill.federated.setting import build_prototype_model, setting_for
from distill.federated.spec import FedRecipe
from distill.models.imported import imported_factories


@dataclass(frozen=True)
class TrainReply:
    """What a client sends back after local training."""

    state: StateDict
    samples: int
    loss: float


@contextmanager
def one_thread() -> Iterator[None]:
    """Client work runs on one thread — as Flower's simulation gives each client call one CPU —
    so a round's numbers do not depend on the engine that runs the client or on the machine's
    core count (a different thread count changes the order of floating-point sums)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def client_seed(seed: int, round_index: int, prototype: int, client: int) -> int:
    """The batch-order seed of one client in one round (independent of who else trains)."""
    return (seed * 1_000_003 + round_index * 7_919 + prototype * 104_729 + client * 15_485_863) % (2**63 - 1)


def check_network_recipe(recipe: FedRecipe) -> None:
    """A recipe that arrived in a message may name only registered models: a client never
    imports code a server names."""
    for index, prototype in enumerate(recipe.prototypes):
        named = sorted(imported_factories(prototype.model.model_dump(mode="json")))
        if named:
            raise RecipeError(
                f"prototypes[{index}].model names the factory {named[0]!r}; a federated client "
                "builds only registered models (register it with a --plugin on every node)"
            )


def run_local_training(
    recipe: FedRecipe, prototype: int, client: int, round_index: int, state: Mapping[str, torch.Tensor]
) -> tuple[TrainReply, torch.nn.Module]:
    """Train client ``client`` of ``prototype`` from ``state``; the reply and the local model."""
    check_network_recipe(recipe)
    setting = setting_for(recipe)
    if not 0 <= prototype < len(recipe.prototypes) or not 0 <= client < len(setting.shards[prototype]):
        raise RecipeError(f"no client {client} of prototype {prototype} in this recipe")
    model = build_prototype_model(recipe, prototype, setting, recipe.seed)
    model.load_state_dict(dict(state))
    shard = setting.client_split(prototype, client)
    loss = train_local(model, shard, recipe.local, client_seed(recipe.seed, round_index, prototype, client))
    # float32, as a Flower MetricRecord carries it: the same number whichever engine runs the client
    return TrainReply(cpu_state(model), len(shard), float(torch.tensor(loss, dtype=torch.float32))), model


def public_logits(recipe: FedRecipe, model: torch.nn.Module) -> torch.Tensor:
    """The local model's raw logits on the public set."""
    with one_thread():
        return predict_logits(model, setting_for(recipe).public)

"""A transport that runs every client in this process, one after another.

It calls the same client functions a Flower ``ClientApp`` calls; tests use it to check the
algorithms without an engine, and to inject faults (a client that fails, or never answers).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from distill.federated.averaging import StateDict
from distill.federated.client import TrainReply, public_logits, run_local_training
from distill.federated.server import ClientRef
from distill.federated.spec import FedRecipe


class InProcessTransport:
    """Clients in this process; ``unreachable`` clients never answer (as on a timeout)."""

    def __init__(self, recipe: FedRecipe, unreachable: frozenset[ClientRef] = frozenset()) -> None:
        self.recipe = recipe
        self.unreachable = unreachable
        self._local: dict[ClientRef, torch.nn.Module] = {}

    def train(
        self, round_index: int, tasks: Mapping[ClientRef, StateDict]
    ) -> tuple[dict[ClientRef, TrainReply], dict[ClientRef, str]]:
        replies: dict[ClientRef, TrainReply] = {}
        missing: dict[ClientRef, str] = {}
        self._local.clear()
        for ref, state in sorted(tasks.items()):
            if ref in self.unreachable:
                missing[ref] = "no reply before the timeout"
                continue
            reply, model = run_local_training(self.recipe, ref.prototype, ref.client, round_index, state)
            replies[ref] = reply
            self._local[ref] = model
        return replies, missing

    def query(
        self, round_index: int, clients: list[ClientRef]
    ) -> tuple[dict[ClientRef, torch.Tensor], dict[ClientRef, str]]:
        answers = {ref: public_logits(self.recipe, self._local[ref]) for ref in clients if ref in self._local}
        missing = {ref: "no local model to query" for ref in clients if ref not in self._local}
        return answers, missing

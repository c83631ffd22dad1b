"""Rounds over a Flower ``Grid``: the server's side of :class:`~distill.federated.server.Transport`."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping

import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from distill.engine.flower.records import record_state, record_tensor, state_record
from distill.errors import DistillError
from distill.federated.averaging import StateDict
from distill.federated.client import TrainReply
from distill.federated.server import ClientRef
from distill.federated.spec import FedRecipe

LOG = logging.getLogger("distill")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_summary(reason: str | None) -> str:
    """The last line of a client's error (Flower's simulation wraps it in Ray's colored text)."""
    lines = [line.strip() for line in _ANSI.sub("", reason or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no reason given"


def client_slots(recipe: FedRecipe) -> list[ClientRef]:
    """Every client in partition-id order: prototype 0's clients first, then prototype 1's, …"""
    return [
        ClientRef(index, client)
        for index, prototype in enumerate(recipe.prototypes)
        for client in range(prototype.clients)
    ]


class FlowerTransport:
    """Sends each round's ``train`` and ``query.logits`` messages to the nodes that hold the
    sampled clients; replies that fail or miss ``recipe.timeout_s`` cost only their client."""

    def __init__(self, grid: Grid, recipe: FedRecipe, nodes: Mapping[ClientRef, int]) -> None:
        self.grid = grid
        self.recipe = recipe
        self.recipe_json = recipe.model_dump_json()
        self.nodes = dict(nodes)

    @classmethod
    def connect(cls, grid: Grid, recipe: FedRecipe, wait_s: float = 300.0) -> FlowerTransport:
        """Wait until a node per client has connected, and map partition ids to clients."""
        slots = client_slots(recipe)
        deadline = time.monotonic() + wait_s
        node_ids: list[int] = []
        while time.monotonic() < deadline:
            node_ids = sorted(grid.get_node_ids())
            if len(node_ids) >= len(slots):
                break
            time.sleep(0.2)
        if len(node_ids) < len(slots):
            raise DistillError(
                f"the recipe has {len(slots)} clients but only {len(node_ids)} nodes connected within "
                f'{wait_s:.0f} s; start one SuperNode per client (--node-config "partition-id=K")'
            )
        messages = [
            Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=node, message_type="query.info")
            for node in node_ids
        ]
        partition_of: dict[int, int] = {}
        for reply in grid.send_and_receive(messages, timeout=wait_s):
            if not reply.has_error():
                partition = reply.content.config_records["info"]["partition-id"]
                if isinstance(partition, int):
                    partition_of[reply.metadata.src_node_id] = partition
        nodes: dict[ClientRef, int] = {}
        for node, partition in sorted(partition_of.items()):
            if 0 <= partition < len(slots) and slots[partition] not in nodes:
                nodes[slots[partition]] = node
        absent = [index for index, slot in enumerate(slots) if slot not in nodes]
        if absent:
            raise DistillError(
                f"no connected node has partition-id {absent[:5]} (of 0..{len(slots) - 1}); give each "
                'SuperNode its own --node-config "partition-id=K"'
            )
        return cls(grid, recipe, nodes)

    def _config(self, ref: ClientRef, round_index: int) -> ConfigRecord:
        return ConfigRecord(
            {
                "recipe": self.recipe_json,
                "prototype": ref.prototype,
                "client": ref.client,
                "round": round_index,
            }
        )

    def _exchange(
        self, round_index: int, message_type: str, contents: Mapping[ClientRef, RecordDict]
    ) -> tuple[dict[ClientRef, Message], dict[ClientRef, str]]:
        sent = {
            ref: Message(
                content, dst_node_id=self.nodes[ref], message_type=message_type, group_id=str(round_index)
            )
            for ref, content in contents.items()
        }
        answers = list(self._send(list(sent.values())))
        # a reply names the message it answers; an error the SuperLink reports for a lost node
        # comes from the SuperLink, not from the node, so the sender is not a reliable key
        by_message = {message.metadata.message_id: ref for ref, message in sent.items()}
        replies: dict[ClientRef, Message] = {}
        missing: dict[ClientRef, str] = {}
        for reply in answers:
            ref = by_message.get(reply.metadata.reply_to_message_id)
            if ref is None:
                continue
            if reply.has_error():
                missing[ref] = f"failed: {error_summary(reply.error.reason)}"
            else:
                replies[ref] = reply
        for ref in contents:
            if ref not in replies and ref not in missing:
                missing[ref] = f"no reply within {self.recipe.timeout_s:g} s"
        for ref, why in sorted(missing.items()):
            LOG.warning(
                "round %d: %s of prototype '%s' client %d: %s",
                round_index + 1,
                message_type,
                self.recipe.prototypes[ref.prototype].name,
                ref.client,
                why,
            )
        return replies, missing

    def _send(self, messages: list[Message]) -> Iterable[Message]:
        return self.grid.send_and_receive(messages, timeout=self.recipe.timeout_s)

    def train(
        self, round_index: int, tasks: Mapping[ClientRef, StateDict]
    ) -> tuple[dict[ClientRef, TrainReply], dict[ClientRef, str]]:
        contents = {
            ref: RecordDict({"arrays": state_record(state), "config": self._config(ref, round_index)})
            for ref, state in tasks.items()
        }
        replies, missing = self._exchange(round_index, "train", contents)
        results = {}
        for ref, reply in replies.items():
            metrics = reply.content.metric_records["metrics"]
            samples, loss = metrics["samples"], metrics["loss"]
            assert isinstance(samples, int) and isinstance(loss, float)
            results[ref] = TrainReply(record_state(reply.content.array_records["arrays"]), samples, loss)
        return results, missing

    def query(
        self, round_index: int, clients: list[ClientRef]
    ) -> tuple[dict[ClientRef, torch.Tensor], dict[ClientRef, str]]:
        contents = {ref: RecordDict({"config": self._config(ref, round_index)}) for ref in clients}
        replies, missing = self._exchange(round_index, "query.logits", contents)
        return {
            ref: record_tensor(reply.content.array_records["logits"], "logits")
            for ref, reply in replies.items()
        }, missing

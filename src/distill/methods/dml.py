"""Deep Mutual Learning: a cohort of peers trained together, each mimicking the others.

Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning" (CVPR 2018). Every peer k of a cohort of
K ≥ 2 minimizes its own cross-entropy plus the mean KL divergence from each other peer's
prediction to its own (Sec. 3.1 for two peers, Sec. 3.2 for K)::

    L_Θk = L_Ck + 1/(K−1) · Σ_{l≠k} D_KL(p_l ‖ p_k)

**Update order.** The paper's Algorithm 1 updates the peers in turn on each mini-batch: peer 1
steps on its loss, then the predictions are recomputed and peer 2 steps against peer 1's
*updated* prediction, and so on. That is the default here (``update: sequential``): each peer
has its own optimizer and schedule, and before peer k steps, the peers that stepped earlier in
the batch are re-run (without gradient, in train mode, their batch-norm running statistics left
untouched so that each batch counts once). ``update: simultaneous`` instead computes every
peer's loss from one forward pass and steps them together with one optimizer — cheaper
(one forward per peer instead of up to K), and the only order data-parallel training supports.

Peers may differ in architecture (``cohort``); peer 0 is the student's model, initialized from
the run's seed exactly as the student trained alone would be, so ``dml/peer0`` is directly
comparable with a ``scratch`` run of the same model and seed. Peer k is initialized from
``seed + k``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, cast

import torch
from pydantic import Field, field_validator
from torch import nn

from distill.errors import DistillError
from distill.losses.mutual import mimicry_loss
from distill.methods.base import Batch, Method, MethodSpec, Update, total_loss
from distill.methods.registry import METHODS, MethodContext
from distill.methods.scratch import classification_loss
from distill.models.fields import validate_model_spec


class DMLSpec(MethodSpec):
    """``dml``: Deep Mutual Learning over a cohort of peers.

    ``peers``: cohort size when every peer has the student's architecture. ``cohort``: model
    specs of peers 1..K−1 when they differ (peer 0 is always the student's model); it sets
    K = 1 + len(cohort) and overrides ``peers``. ``temperature``: softening of both
    distributions in the mimicry term (the paper uses 1; T ≠ 1 scales the term by T²).
    """

    name: Literal["dml"] = "dml"
    peers: int = Field(default=2, ge=2, le=64)
    cohort: list[Any] = Field(default_factory=list)
    update: Literal["sequential", "simultaneous"] = "sequential"
    temperature: float = Field(default=1.0, gt=0.0)
    mimicry_weight: float = Field(default=1.0, ge=0.0)

    @field_validator("cohort")
    @classmethod
    def _cohort_models(cls, cohort: list[Any]) -> list[Any]:
        if not cohort:
            return cohort
        from pydantic import ValidationError

        models = []
        for index, entry in enumerate(cohort):
            try:
                models.append(validate_model_spec(entry))
            except ValidationError as error:
                problem = error.errors()[0]
                where = ".".join(str(part) for part in problem["loc"])
                raise ValueError(f"cohort[{index}] ({where}): {problem['msg']}") from None
        return models

    def cohort_size(self) -> int:
        return 1 + len(self.cohort) if self.cohort else self.peers


@contextmanager
def frozen_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in train mode without moving batch-norm running statistics."""
    norms = [
        module
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    ]
    # a norm layer that tracks running statistics has a num_batches_tracked tensor (None otherwise)
    saved = [(module.momentum, cast(torch.Tensor, module.num_batches_tracked).clone()) for module in norms]
    for module in norms:
        module.momentum = 0.0  # running = (1 − 0)·running + 0·batch
    try:
        yield
    finally:
        for module, (momentum, tracked) in zip(norms, saved, strict=True):
            module.momentum = momentum
            cast(torch.Tensor, module.num_batches_tracked).copy_(tracked)


class DeepMutualLearning(Method):
    """A cohort of peers, each trained on CE + the mean KL from the others (see module doc)."""

    def __init__(
        self,
        peers: list[nn.Module],
        update: Literal["sequential", "simultaneous"] = "sequential",
        temperature: float = 1.0,
        mimicry_weight: float = 1.0,
        peer_specs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        if len(peers) < 2:
            raise ValueError(f"Deep Mutual Learning needs at least 2 peers, got {len(peers)}")
        super().__init__(peers[0])
        self.peers = nn.ModuleList(peers)
        self.update = update
        self.temperature = temperature
        self.mimicry_weight = mimicry_weight
        self._peer_specs = peer_specs or {}

    def _peer_loss(self, index: int, logits: list[torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        others = [other for position, other in enumerate(logits) if position != index]
        mimicry = mimicry_loss(logits[index], others, self.temperature)
        return {
            f"peer{index}_ce": classification_loss(logits[index], batch),
            f"peer{index}_kl": mimicry if self.mimicry_weight == 1 else self.mimicry_weight * mimicry,
        }

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Every peer's loss from one forward pass (the simultaneous update)."""
        logits = [peer(batch.inputs) for peer in self.peers]
        terms: dict[str, torch.Tensor] = {}
        for index in range(len(self.peers)):
            terms.update(self._peer_loss(index, logits, batch))
        return terms

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        if self.update == "simultaneous":
            return super().optimizer_groups()
        return {
            f"peer{index}": [parameter for parameter in peer.parameters() if parameter.requires_grad]
            for index, peer in enumerate(self.peers)
        }

    def train_step(self, batch: Batch, update: Update) -> dict[str, torch.Tensor]:
        if self.update == "simultaneous":
            return super().train_step(batch, update)
        logits = [peer(batch.inputs) for peer in self.peers]
        terms: dict[str, torch.Tensor] = {}
        for index in range(len(self.peers)):
            if index > 0:  # Algorithm 1: recompute the predictions of the peers updated so far
                with torch.no_grad():
                    for earlier in range(index):
                        with frozen_norm_statistics(self.peers[earlier]):
                            logits[earlier] = self.peers[earlier](batch.inputs)
            peer_terms = self._peer_loss(index, logits, batch)
            update.minimize(total_loss(peer_terms), f"peer{index}")
            terms.update({name: value.detach() for name, value in peer_terms.items()})
        return terms

    def evaluated_models(self) -> dict[str, nn.Module]:
        return {f"peer{index}": peer for index, peer in enumerate(self.peers)}

    def model_specs(self) -> dict[str, dict[str, Any]]:
        return dict(self._peer_specs)


@METHODS.register_factory("dml", "Deep Mutual Learning: a cohort of peers that learn from each other")
def build_dml(spec: DMLSpec, context: MethodContext) -> Method:
    peers = [context.student]
    specs: dict[str, dict[str, Any]] = {}
    for index in range(1, spec.cohort_size()):
        model_spec = spec.cohort[index - 1] if spec.cohort else None
        try:
            peers.append(context.new_model(model_spec, f"peer{index}", context.seed + index))
        except ValueError as error:
            raise DistillError(f"{context.owner}: {error}") from None
        if model_spec is not None:
            specs[f"peer{index}"] = model_spec.model_dump(mode="json")
    return DeepMutualLearning(peers, spec.update, spec.temperature, spec.mimicry_weight, specs)

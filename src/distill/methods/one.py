"""ONE — On-the-fly Native Ensemble: one multi-branch network distils its own gated ensemble.

Lan, Zhu & Gong, "Knowledge Distillation by On-the-Fly Native Ensemble" (NeurIPS 2018). The
student's backbone becomes a multi-branch network (:mod:`distill.models.branches`; paper Sec. 3):
shared low layers up to ``split``, ``branches`` copies of the layers after it, and a gate over
the branches computed from the shared features. The gated ensemble of branch logits,
``z_e = Σ_i g_i · z_i``, is the teacher. The overall objective (paper Sec. 3; equation numbers
were not verified here — see ``docs/methods/online.md`` for the official code read) is

    L = Σ_i CE(z_i, y) + CE(z_e, y) + T² · Σ_i KL(σ(z_e/T) ‖ σ(z_i/T))

with T = 3 (Sec. 4, and ``T=3`` in the official ``loss/kl_loss.py``). The ensemble's soft target
is detached in the KL term (the official code takes ``.data``): only the cross-entropy trains
the gate.

The KL term is multiplied by ``kd_weight · w(e)``, where ``w`` is the official ramp-up
(``cifar_one.py``: ``consistency_weight = ramps.sigmoid_rampup(epoch, args.consistency_rampup)``,
the sigmoid ramp of Laine & Aila / mean teacher, arXiv 1610.02242), computed once per epoch
``e = 0, 1, …``::

    w(e) = exp(−5 (1 − min(e, R)/R)²)          w(0) = e⁻⁵ ≈ 0.0067,  w(e ≥ R) = 1

The official run ramps over ``R = 80`` epochs of a 300-epoch schedule (``--consistency_rampup
80``, ``--epochs 300``, ``scripts/ONE_ResNet32.sh``): full weight from 27 % of training on,
before the first learning-rate drop (epoch 150). That is the default here, kept as that share
of the student's budget: ``R = 80 · epochs / 300`` (53.3 of the quickstart's 200 epochs;
exactly 80 at 300). Taken literally, 80 epochs would never finish within a budget under 80
epochs (at 40 epochs the weight would end at 0.27), so this is the one departure: the ramp
scales with the budget. ``rampup_epochs: R`` sets the length in epochs; ``0`` gives the
constant weight the paper's text describes (it does not mention a ramp). Without a known
budget (a method built outside a run) the default is the literal 80.

Evaluated every epoch: every branch (``one/branch0`` is the deployable student — it has the
backbone's architecture, and its checkpoint loads into the plain backbone) and the ensemble
(``one/ensemble``, a ``multibranch`` model). Branch 0 is initialized from the run's seed, like
the student trained alone; branch i from ``seed + i``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from distill.errors import DistillError
from distill.losses.kd import kd_loss
from distill.methods.base import Batch, EpochStart, Method, MethodSpec
from distill.methods.registry import METHODS, MethodContext
from distill.methods.scratch import classification_loss
from distill.models.branches import MultiBranch, default_split
from distill.schema import EpochsOrZero


class ONESpec(MethodSpec):
    """``one``: On-the-fly Native Ensemble over ``branches`` copies of the student's layers after
    module ``split`` (a module name of the student's model, e.g. ``layer2`` of a ResNet or
    ``body.2`` of an MLP; default: see :func:`~distill.models.branches.default_split`).
    ``rampup_epochs``: the KL weight's sigmoid ramp-up length in epochs; ``None`` (default) is
    the official 80 of 300 epochs as that share of the budget, ``0`` a constant weight."""

    name: Literal["one"] = "one"
    split: str | None = None
    branches: int = Field(default=3, ge=2, le=64)
    temperature: float = Field(default=3.0, gt=0.0)
    kd_weight: float = Field(default=1.0, ge=0.0)
    rampup_epochs: EpochsOrZero | None = None


#: The official ramp: ``--consistency_rampup 80`` of ``--epochs 300`` (``cifar_one.py``).
OFFICIAL_RAMPUP_EPOCHS = 80
OFFICIAL_EPOCHS = 300


def rampup_length(rampup_epochs: int | None, budget_epochs: int | None) -> float:
    """The ramp's length in epochs: ``rampup_epochs`` when given, else the official 80 of 300
    epochs as that share of ``budget_epochs`` (the literal 80 when the budget is unknown)."""
    if rampup_epochs is not None:
        return float(rampup_epochs)
    if budget_epochs is None:
        return float(OFFICIAL_RAMPUP_EPOCHS)
    return OFFICIAL_RAMPUP_EPOCHS * budget_epochs / OFFICIAL_EPOCHS


def sigmoid_rampup(epoch: int, length: float) -> float:
    """``exp(−5 (1 − min(epoch, length)/length)²)`` (1 when ``length`` is 0), as the official
    ``ramps.sigmoid_rampup`` (which clips ``epoch`` to ``[0, length]``)."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(epoch, 0), length) / length
    return math.exp(-5.0 * phase * phase)


class OnTheFlyNativeEnsemble(Method):
    """Train a :class:`~distill.models.branches.MultiBranch` network with ONE's overall loss;
    the KL weight is ``kd_weight · sigmoid_rampup(epoch, rampup_epochs)`` (a length in epochs,
    possibly fractional; 0: constant)."""

    def __init__(
        self,
        network: MultiBranch,
        temperature: float = 3.0,
        kd_weight: float = 1.0,
        rampup_epochs: float = 0.0,
        ensemble_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(network.branches[0])
        self.network = network
        self.temperature = temperature
        self.kd_weight = kd_weight
        self.rampup_epochs = rampup_epochs
        self.ensemble_spec = ensemble_spec
        self._ramp = sigmoid_rampup(0, rampup_epochs)

    def on_epoch_start(self, epoch: EpochStart) -> None:
        self._ramp = sigmoid_rampup(epoch.epoch, self.rampup_epochs)

    def outputs(self, inputs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Branch logits, gate weights (batch, m) and ensemble logits."""
        logits, shared = self.network.branch_logits(inputs)
        gates = self.network.gate(shared)
        return logits, gates, self.network.ensemble(logits, gates)

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits, _gates, ensemble = self.outputs(batch.inputs)
        terms = {
            "ce_branches": torch.stack([classification_loss(z, batch) for z in logits]).sum(),
            "ce_ensemble": classification_loss(ensemble, batch),
        }
        weight = self.kd_weight * self._ramp
        if weight:
            target = ensemble.detach()
            kl = torch.stack([kd_loss(z, target, self.temperature) for z in logits]).sum()
            terms["kd"] = kl if weight == 1 else weight * kl
        return terms

    def evaluated_models(self) -> dict[str, nn.Module]:
        models: dict[str, nn.Module] = {
            f"branch{index}": branch for index, branch in enumerate(self.network.branches)
        }
        models["ensemble"] = self.network
        return models

    def model_specs(self) -> dict[str, dict[str, Any]]:
        return {} if self.ensemble_spec is None else {"ensemble": self.ensemble_spec}


@METHODS.register_factory(
    "one", "On-the-fly Native Ensemble: branches of the student distil their gated ensemble"
)
def build_one(spec: ONESpec, context: MethodContext) -> Method:
    def branch(index: int) -> nn.Module:
        return (
            context.student if index == 0 else context.new_model(None, f"branch{index}", context.seed + index)
        )

    try:
        split = spec.split or default_split(context.student, context.example_inputs)
        network = MultiBranch(
            [branch(index) for index in range(spec.branches)], split, context.example_inputs
        )
    except ValueError as error:
        raise DistillError(f"{context.owner}.split: {error}") from None
    ensemble_spec = None
    if context.student_spec is not None:
        ensemble_spec = {
            "name": "multibranch",
            "backbone": context.student_spec.model_dump(mode="json"),
            "branches": spec.branches,
            "split": split,
        }
    budget_epochs = None if context.budget is None else context.budget.epochs
    return OnTheFlyNativeEnsemble(
        network,
        spec.temperature,
        spec.kd_weight,
        rampup_length(spec.rampup_epochs, budget_epochs),
        ensemble_spec,
    )

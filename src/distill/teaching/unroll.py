"""Differentiating a validation objective through a student's unrolled SGD steps.

Learning-to-teach methods train a teacher whose parameters θ shape the student's loss. The
student's weights after ``T`` steps of plain SGD,

    w_{t+1} = w_t − η · ∇_w ℓ_θ(w_t; batch_t),                                  (1)

are a function of θ, and so is a validation objective ``M(w_T)``. Its gradient ``dM/dθ`` is taken
in reverse mode over the stored trajectory (Maclaurin, Duvenaud & Adams, ICML 2015, Alg. 2 with
exact stored weights instead of reversible arithmetic): with ``d_T = ∂M/∂w_T``,

    dM/dθ = Σ_t (∂w_{t+1}/∂θ)ᵀ d_{t+1},      d_t = (∂w_{t+1}/∂w_t)ᵀ d_{t+1}
          = Σ_t −η ∂²ℓ/∂θ∂w · d_{t+1},      d_t = d_{t+1} − η ∂²ℓ/∂w² · d_{t+1},

one vector–Jacobian product of the step (1) per step — a Hessian-vector product, never a
Hessian. Memory is the ``T + 1`` stored weight vectors plus one step's graph, whatever ``T``.
Everything is :mod:`torch.func`: :func:`~torch.func.functional_call` runs the student on a
weight dictionary, :func:`~torch.func.grad` gives the inner gradient, :func:`~torch.func.vjp`
the reverse step. Nothing is differentiated by hand and no module is modified in place.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, replace_all_batch_norm_modules_, vjp

from distill.data.bundle import Split

Params = dict[str, torch.Tensor]

#: ``loss(logits, targets, theta, step_index) -> scalar``: the student's loss under teacher θ.
InnerLoss = Callable[[torch.Tensor, torch.Tensor, Params, int], torch.Tensor]
#: ``objective(logits, targets, theta) -> scalar``: the validation objective (lower is better).
Objective = Callable[[torch.Tensor, torch.Tensor, Params], torch.Tensor]


def minibatches(
    split: Split, batch_size: int, steps: int, generator: torch.Generator, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` training batches ``(inputs, targets)`` of a :class:`~distill.data.bundle.Split`,
    epoch after epoch of seeded permutations."""
    order = torch.empty(0, dtype=torch.long)
    position = 0
    for _ in range(steps):
        if position + batch_size > len(order):
            order = torch.randperm(len(split.targets), generator=generator)
            position = 0
        rows = order[position : position + batch_size]
        position += batch_size
        yield split.inputs[rows].to(device), split.targets[rows].to(device)


def functional_student(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that :mod:`torch.func` can run on weight dictionaries.

    Batch-norm layers of the copy normalize with batch statistics and keep no running
    statistics (:func:`torch.func.replace_all_batch_norm_modules_`), so a functional step
    mutates nothing.
    """
    twin = copy.deepcopy(model).train()
    replace_all_batch_norm_modules_(twin)
    return twin


def detached(params: Params) -> Params:
    """The same weights, cut from any graph."""
    return {name: value.detach() for name, value in params.items()}


#: offset of the seed of :func:`warm_start_batches` from the meta-training seed
WARM_START_SEED_OFFSET = 104_729


def warm_start_batches(
    split: Split, batch_size: int, steps: int, seed: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The ``steps`` batches of a warm start: :func:`minibatches` from a generator of their own
    (seed ``seed + WARM_START_SEED_OFFSET``), so that every student warmed from one
    initialization sees the same batches and reaches the same warm state, whatever else the
    meta-training has drawn before."""
    generator = torch.Generator().manual_seed(seed + WARM_START_SEED_OFFSET)
    return minibatches(split, batch_size, steps, generator, device)


def cross_entropy_steps(
    model: nn.Module,
    params: Params,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    after_step: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> Params:
    """A warm start: plain SGD on cross-entropy, ``w ← w − lr · ∇_w CE(w; batch)``, one step
    per batch from ``params``, on ``model`` run functionally (see :func:`functional_student`:
    batch statistics, no running statistics); returns the detached weights it reaches.

    As the L2T-DLF demo (``apeterswu/L2T_loss``, ``model_pretrain_iterations``) pretrains its
    student before the learned loss takes over. ``after_step(logits, targets)`` sees each step's
    detached logits (e.g. to fold them into the student's state). Only the current weights are
    held, whatever the number of steps.
    """

    def loss(logits: torch.Tensor, targets: torch.Tensor, _theta: Params, _index: int) -> torch.Tensor:
        return F.cross_entropy(logits, targets)

    unroll = Unroll(model, loss, lr)
    weights = detached(params)
    for index, (inputs, targets) in enumerate(batches):
        weights, _, logits = unroll.step_with_loss(weights, {}, inputs, targets, index)
        if after_step is not None:
            after_step(logits, targets)
    return weights


@dataclass
class Unroll:
    """Plain SGD on a functional student: ``step`` is Eq. (1), ``reverse`` its adjoint."""

    model: nn.Module
    loss: InnerLoss
    lr: float

    def logits(self, params: Params, inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (inputs,))

    def step(
        self, params: Params, theta: Params, inputs: torch.Tensor, targets: torch.Tensor, index: int
    ) -> Params:
        """``w − η ∇_w ℓ_θ(w)`` (differentiable in ``params`` and ``theta``)."""

        def inner(weights: Params) -> torch.Tensor:
            return self.loss(self.logits(weights, inputs), targets, theta, index)

        gradient = grad(inner)(params)
        return {name: params[name] - self.lr * gradient[name] for name in params}

    def step_with_loss(
        self, params: Params, theta: Params, inputs: torch.Tensor, targets: torch.Tensor, index: int
    ) -> tuple[Params, torch.Tensor, torch.Tensor]:
        """One undifferentiated step; also the loss it descended and the logits it saw."""

        def inner(weights: Params) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.logits(weights, inputs)
            return self.loss(logits, targets, detached(theta), index), logits

        gradient, (value, logits) = grad_and_value(inner, has_aux=True)(params)
        following = {name: (params[name] - self.lr * gradient[name]).detach() for name in params}
        return following, value.detach(), logits.detach()

    def run(
        self,
        params: Params,
        theta: Params,
        batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
        first_index: int = 0,
        before_step: Callable[[int, Params], None] | None = None,
        after_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    ) -> tuple[list[Params], list[float]]:
        """Unroll one step per batch from ``params``; returns the ``T + 1`` weights visited
        (``trajectory[0]`` is ``params``) and the ``T`` inner losses.

        ``before_step(index, weights)`` runs before each step (e.g. to record the student's
        state the loss will read); ``after_step(index, logits, targets)`` after it, with the
        step's detached logits.
        """
        trajectory = [detached(params)]
        losses = []
        for offset, (inputs, targets) in enumerate(batches):
            index = first_index + offset
            if before_step is not None:
                before_step(index, trajectory[-1])
            following, value, logits = self.step_with_loss(trajectory[-1], theta, inputs, targets, index)
            if after_step is not None:
                after_step(index, logits, targets)
            trajectory.append(following)
            losses.append(float(value))
        return trajectory, losses

    def reverse(
        self,
        trajectory: Sequence[Params],
        theta: Params,
        batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
        final_gradient: Params,
        first_index: int = 0,
    ) -> tuple[Params, Params]:
        """``(dM/dθ, dM/dw_0)`` from ``dM/dw_T`` by the reverse recursion in the module doc."""
        adjoint = {name: value.detach() for name, value in final_gradient.items()}
        theta_gradient = {name: torch.zeros_like(value) for name, value in theta.items()}
        for offset in range(len(batches) - 1, -1, -1):
            inputs, targets = batches[offset]
            index = first_index + offset

            def transition(weights: Params, teacher: Params) -> Params:
                return self.step(weights, teacher, inputs, targets, index)  # noqa: B023

            # torch types vjp's result as a 2- or 3-tuple; without has_aux it is (output, pullback)
            _, pullback = cast(
                "tuple[Params, Callable[[Params], tuple[Params, Params]]]",
                vjp(transition, trajectory[offset], detached(theta)),
            )
            weights_adjoint, teacher_adjoint = pullback(adjoint)
            adjoint = detached(weights_adjoint)
            for name, value in teacher_adjoint.items():
                theta_gradient[name] = theta_gradient[name] + value.detach()
        return theta_gradient, adjoint


@dataclass(frozen=True)
class Hypergradient:
    """A validation objective after an unrolled segment and its gradient in the teacher's θ."""

    objective: float
    theta_gradient: Params
    final_params: Params
    inner_losses: list[float]


def hypergradient(
    unroll: Unroll,
    params: Params,
    theta: Params,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    objective: Objective,
    validation: tuple[torch.Tensor, torch.Tensor],
    first_index: int = 0,
) -> Hypergradient:
    """Unroll ``batches`` from ``params`` under θ, score ``objective`` on ``validation`` and
    return ``dM/dθ`` (θ may also enter the objective directly; both paths are summed)."""
    trajectory, losses = unroll.run(params, theta, batches, first_index)
    return hypergradient_of(unroll, trajectory, losses, theta, batches, objective, validation, first_index)


def hypergradient_of(
    unroll: Unroll,
    trajectory: Sequence[Params],
    losses: list[float],
    theta: Params,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    objective: Objective,
    validation: tuple[torch.Tensor, torch.Tensor],
    first_index: int = 0,
) -> Hypergradient:
    """:func:`hypergradient` for a trajectory already unrolled by :meth:`Unroll.run`."""
    inputs, targets = validation

    def score(weights: Params, teacher: Params) -> torch.Tensor:
        return objective(unroll.logits(weights, inputs), targets, teacher)

    (final_gradient, direct), value = grad_and_value(score, argnums=(0, 1))(trajectory[-1], detached(theta))
    theta_gradient, _ = unroll.reverse(trajectory, theta, batches, final_gradient, first_index)
    theta_gradient = {name: theta_gradient[name] + direct[name].detach() for name in theta_gradient}
    return Hypergradient(float(value), theta_gradient, dict(trajectory[-1]), list(losses))

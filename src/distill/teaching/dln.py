"""The pieces of L2T-DLN: a dynamic loss network and a coordinate-wise LSTM teacher.

Hai, Pan, Liu, Liu & Yunita, "L2T-DLN: Learning to Teach with Dynamic Loss Network"
(NeurIPS 2023, arXiv 2310.19313); official code ``1017137588qqcom/L2T-DLN`` (``DLN_LSTM.py``).

**Dynamic loss network (DLN).** The student's loss is a small network over a one-vs-one view
of its logits z: for each example with target y and each non-target class j one row

    r_{i,j} = [σ(z_y), σ(z_j), 1, 0]                                            (DLN input)

(the two scores after a sigmoid, then the pair's labels: the target scores 1, class j 0). An
MLP 4 → 40 → 40 → 40 → 40 → 1 with LeakyReLU and no biases maps each row to a loss value; the
student's loss is the mean over rows. The official code also feeds the target's own row as
zeros, which the bias-free network maps to 0: its mean is ours times (C − 1)/C, a constant
factor we drop.

**Teacher.** A coordinate-wise LSTM in the learning-to-learn style (Andrychowicz et al., NeurIPS
2016): every coordinate of the DLN's parameters φ is one batch row of the same LSTM (4 stacked
cells, 2 → 64 → 64 → 64 → 1), so the teacher is shared across coordinates and keeps a memory
(hidden and cell state) per coordinate. Its input is the gradient of the validation loss with
respect to that coordinate, preprocessed as in Andrychowicz et al. Sec. 3.2 (p = 10):

    g ↦ (log|g| / p, sign g)   if |g| ≥ e^{−p},      (−1, e^{p} · g)   otherwise,

and the DLN is updated by its output: φ ← φ − β · LSTM(∇_φ L_val) with β = 10⁻³.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from distill.data.bundle import Split
from distill.losses import LOSSES
from distill.teaching.unroll import (
    Params,
    Unroll,
    cross_entropy_steps,
    detached,
    functional_student,
    hypergradient,
    minibatches,
    warm_start_batches,
)


def one_vs_one_rows(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The DLN's input: one row ``[σ(z_y), σ(z_j), 1, 0]`` per (example, non-target class j),
    shape ``(B·(C − 1), 4)``, rows of one example consecutive, classes in increasing order."""
    if logits.dim() != 2:
        raise ValueError(f"logits: expected (batch, classes), got shape {tuple(logits.shape)}")
    batch, classes = logits.shape
    scores = torch.sigmoid(logits)
    target_score = scores.gather(1, targets.view(-1, 1))  # (B, 1)
    others = torch.ones_like(scores, dtype=torch.bool).scatter(1, targets.view(-1, 1), False)
    other_scores = scores[others].view(batch, classes - 1)  # row-major: classes in order
    pair = torch.stack([target_score.expand(-1, classes - 1), other_scores], dim=2)
    labels = torch.tensor([1.0, 0.0], dtype=logits.dtype, device=logits.device).expand(batch, classes - 1, 2)
    return torch.cat([pair, labels], dim=2).reshape(-1, 4)


def score_grid(points: int = 5) -> torch.Tensor:
    """One-vs-one rows on a ``points × points`` grid of (σ(z_y), σ(z_j)) in [0.05, 0.95]²."""
    axis = torch.linspace(0.05, 0.95, points)
    pairs = torch.cartesian_prod(axis, axis)
    return torch.cat([pairs, torch.tensor([1.0, 0.0]).expand(len(pairs), 2)], dim=1)


class DynamicLossNetwork(nn.Module):
    """The MLP 4 → 40 → 40 → 40 → 40 → 1 (LeakyReLU, no biases) scoring one-vs-one rows;
    weights Kaiming-normal (fan-out) as in the official code.

    With ``normalize`` (the default) a row's loss is the network's output divided by its mean
    absolute output over a fixed grid of score pairs (:func:`score_grid`). The bias-free network
    is positively homogeneous in its weights, so without this a teacher can raise the loss's
    scale — the student's effective learning rate — which a look-ahead of a few steps rewards:
    on MNIST-1D the official scheme was seen to do exactly that until the student diverged.
    Normalized, the teacher shapes the loss but not its scale. ``normalize=False`` is the
    official network.
    """

    grid: torch.Tensor  # buffer: the score_grid() rows

    def __init__(self, width: int = 40, depth: int = 4, normalize: bool = True) -> None:
        super().__init__()
        sizes = [4] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in itertools.pairwise(sizes))
        self.output = nn.Linear(width, 1, bias=False)
        for layer in [*self.hidden, self.output]:
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="leaky_relu")
        self.normalize = normalize
        self.register_buffer("grid", score_grid(), persistent=False)

    def raw(self, rows: torch.Tensor) -> torch.Tensor:
        """The network's output per row, unnormalized."""
        for layer in self.hidden:
            rows = F.leaky_relu(layer(rows))
        return self.output(rows).squeeze(-1)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        values = self.raw(rows)
        if not self.normalize:
            return values
        return values / self.raw(self.grid.to(rows.dtype)).abs().mean().clamp_min(1e-12)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The student's loss: the mean DLN output over the one-vs-one rows."""
        return self(one_vs_one_rows(logits, targets)).mean()


def dln_loss(
    network: DynamicLossNetwork, phi: Params, logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """:meth:`DynamicLossNetwork.loss` with the network's weights ``phi`` (for :mod:`torch.func`)."""
    return functional_call(network, phi, (one_vs_one_rows(logits, targets),)).mean()


def preprocess_gradient(gradient: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """Andrychowicz et al. (2016) Sec. 3.2: ``(…, 2)`` features of a gradient of any shape —
    ``(log|g|/p, sign g)`` where ``|g| ≥ e^{−p}``, else ``(−1, e^{p} g)``."""
    large = gradient.abs() >= math.exp(-p)
    magnitude = torch.where(
        large, torch.log(gradient.abs().clamp_min(1e-38)) / p, torch.full_like(gradient, -1.0)
    )
    direction = torch.where(large, torch.sign(gradient), math.exp(p) * gradient)
    return torch.stack([magnitude, direction], dim=-1)


class CoordinateLSTM(nn.Module):
    """The L2T-DLN teacher: four stacked LSTM cells (2 → 64 → 64 → 64 → 1) applied to every
    coordinate of φ as a separate batch row; returns the per-coordinate update and the new
    memory. The last cell's hidden state (in (−1, 1)) is the update direction."""

    def __init__(self, hidden: int = 64, preprocess: float = 10.0) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.cells = nn.ModuleList(
            [
                nn.LSTMCell(2, hidden),
                nn.LSTMCell(hidden, hidden),
                nn.LSTMCell(hidden, hidden),
                nn.LSTMCell(hidden, 1),
            ]
        )

    def initial_memory(
        self, coordinates: int, device: torch.device | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Zero hidden and cell states for ``coordinates`` rows."""
        return [
            (
                torch.zeros(coordinates, cell.hidden_size, device=device),
                torch.zeros(coordinates, cell.hidden_size, device=device),
            )
            for cell in cast(Iterable[nn.LSTMCell], self.cells)
        ]

    def forward(
        self, gradient: torch.Tensor, memory: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``gradient``: the flat gradient (one entry per coordinate). Returns the flat update
        and the next memory."""
        inputs = preprocess_gradient(gradient.reshape(-1), self.preprocess)
        following = []
        for cell, state in zip(self.cells, memory, strict=True):
            hidden, cell_state = cell(inputs, state)
            following.append((hidden, cell_state))
            inputs = hidden
        return inputs.squeeze(-1), following


def flatten(params: Params) -> torch.Tensor:
    """One vector of every coordinate, in the dictionary's order."""
    return torch.cat([value.reshape(-1) for value in params.values()])


def unflatten(vector: torch.Tensor, like: Params) -> Params:
    """The inverse of :func:`flatten` for tensors shaped as ``like``."""
    result = {}
    offset = 0
    for name, value in like.items():
        result[name] = vector[offset : offset + value.numel()].view_as(value)
        offset += value.numel()
    return result


def pairwise_cross_entropy(rows: torch.Tensor) -> torch.Tensor:
    """The binary cross-entropy of a one-vs-one row: ``−log σ(z_y) − log(1 − σ(z_j))``."""
    return -torch.log(rows[:, 0].clamp_min(1e-6)) - torch.log((1 - rows[:, 1]).clamp_min(1e-6))


def fit_to_pairwise_cross_entropy(network: DynamicLossNetwork, steps: int = 300, seed: int = 0) -> float:
    """Start the DLN as a sensible loss: regress it onto :func:`pairwise_cross_entropy` over
    uniformly drawn score pairs (Adam, seeded); returns the final mean squared error.

    The official code starts from random Kaiming weights, a loss that may reward wrong answers
    until the teacher has moved it; over its 2,500 rounds that start washes out, over the few
    hundred rounds of a small budget it does not.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    error = torch.zeros(())
    # normalized, the target keeps its shape at the network's scale (mean |value| 1 on the grid)
    scale = pairwise_cross_entropy(network.grid).abs().mean() if network.normalize else 1.0
    for _ in range(steps):
        scores = torch.rand(256, 2, generator=generator) * 0.98 + 0.01
        rows = torch.cat([scores, torch.tensor([1.0, 0.0]).expand(256, 2)], dim=1)
        error = F.mse_loss(network(rows), pairwise_cross_entropy(rows) / scale)
        optimizer.zero_grad(set_to_none=True)
        error.backward()
        optimizer.step()
    return float(error.detach())


Memory = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class RoundResult:
    """One teaching round: the DLN's new weights φ', the teacher's next memory, the student's
    weights after the look-ahead unroll with φ' (``None`` when the teacher did not learn), the
    look-ahead validation loss with φ, and the mean |φ' − φ|."""

    phi: Params
    memory: Memory
    student_params: Params | None
    validation_loss: float
    step: float


def teaching_round(
    unroll: Unroll,
    lstm: CoordinateLSTM,
    optimizer: torch.optim.Optimizer | None,
    params: Params,
    phi: Params,
    memory: Memory,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    validation: tuple[torch.Tensor, torch.Tensor],
    dln_step: float,
    rule: str = "lstm",
) -> RoundResult:
    """Stages (b) and (c) of L2T-DLN from the student's weights ``params``.

    (b) ``g = ∂ CE_val(w_K(φ)) / ∂φ`` through the K unrolled steps of ``unroll`` (whose loss is
    the DLN with weights φ), ``φ' = φ − dln_step · LSTM(g)``; (c) with an ``optimizer`` over the
    LSTM: unroll again with φ', differentiate the validation cross-entropy in φ' and back
    through ``φ'(LSTM)`` into the LSTM's weights, and step.

    ``rule="sign"`` is a diagnostic oracle in place of the LSTM: ``φ' = φ − dln_step · sign(g)``,
    the step the look-ahead validation gradient itself points to (no stage (c), memory kept).
    """

    def validation_ce(logits: torch.Tensor, targets: torch.Tensor, _phi: Params) -> torch.Tensor:
        return F.cross_entropy(logits, targets)

    phi = detached(phi)
    looked = hypergradient(unroll, params, phi, batches, validation_ce, validation)  # (b)
    if rule == "sign":
        updated = flatten(phi) - dln_step * torch.sign(flatten(looked.theta_gradient))
        return RoundResult(
            unflatten(updated, phi),
            list(memory),
            None,
            looked.objective,
            float((updated - flatten(phi)).abs().mean()),
        )
    learn = optimizer is not None
    with torch.set_grad_enabled(learn):
        direction, following = lstm(flatten(looked.theta_gradient), memory)
        updated = flatten(phi) - dln_step * direction
    student_params = None
    if optimizer is not None:  # (c)
        again = hypergradient(
            unroll, params, detached(unflatten(updated, phi)), batches, validation_ce, validation
        )
        optimizer.zero_grad(set_to_none=True)
        updated.backward(flatten(again.theta_gradient))
        optimizer.step()
        student_params = again.final_params
    updated = updated.detach()
    return RoundResult(
        unflatten(updated, phi),
        [(hidden.detach(), cell.detach()) for hidden, cell in following],
        student_params,
        looked.objective,
        float((updated - flatten(phi)).abs().mean()),
    )


def dln_unroll(model: nn.Module, network: DynamicLossNetwork, lr: float) -> Unroll:
    """Plain SGD at ``lr`` on the DLN loss (weights passed as θ) for a functional copy of ``model``."""
    return Unroll(
        functional_student(model),
        lambda logits, targets, phi, _i: dln_loss(network, phi, logits, targets),
        lr,
    )


@dataclass(frozen=True)
class DLNSchedule:
    """Meta-training of the LSTM teacher: ``episodes`` fresh students, each trained for
    ``episode_steps`` SGD steps (``lr``, ``batch_size``) in rounds of ``unroll`` steps, the DLN
    restarting from the teacher's initial network each episode. ``warm_start_steps``: each
    student first takes that many plain-SGD cross-entropy steps at ``lr``
    (:func:`~distill.teaching.unroll.cross_entropy_steps`; the official code has no warm start)."""

    episodes: int
    episode_steps: int
    unroll: int
    lr: float
    batch_size: int
    dln_step: float
    teacher_lr: float
    val_batch_size: int
    warm_start_steps: int = 0


def meta_train(
    lstm: CoordinateLSTM,
    initial_dln: DynamicLossNetwork,
    new_student: Callable[[int], nn.Module],
    train: Split,
    dev: Split,
    schedule: DLNSchedule,
    device: torch.device,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Train ``lstm`` in place by the official three-stage loop: the student's weights after
    each round are the look-ahead unroll's with φ' (stage (a) as the official code runs it).
    Returns one row per episode (dev accuracy as the rounds start — after the warm start, if
    any — and at the end, mean validation loss, seconds)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(lstm.parameters(), lr=schedule.teacher_lr)
    network = copy.deepcopy(initial_dln).requires_grad_(False)
    coordinates = sum(value.numel() for value in network.parameters())
    rows = []
    started = time.perf_counter()
    for episode in range(schedule.episodes):
        model = new_student(episode)
        unroll = dln_unroll(model, network, schedule.lr)
        params = {name: value.detach().clone() for name, value in model.named_parameters()}
        if schedule.warm_start_steps > 0:
            warm = warm_start_batches(train, schedule.batch_size, schedule.warm_start_steps, seed, device)
            params = cross_entropy_steps(unroll.model, params, warm, schedule.lr)
        with torch.no_grad():
            logits = unroll.logits(params, dev.inputs.to(device))
            start_accuracy = float((logits.argmax(dim=1) == dev.targets.to(device)).float().mean())
        phi = {name: value.detach().clone() for name, value in initial_dln.named_parameters()}
        memory = lstm.initial_memory(coordinates, device)
        losses = []
        stream = minibatches(train, schedule.batch_size, schedule.episode_steps, generator, device)
        for first in range(0, schedule.episode_steps, schedule.unroll):
            batches = [next(stream) for _ in range(min(schedule.unroll, schedule.episode_steps - first))]
            validation = _draw(dev, schedule.val_batch_size, generator, device)
            result = teaching_round(
                unroll, lstm, optimizer, params, phi, memory, batches, validation, schedule.dln_step
            )
            assert result.student_params is not None
            params, phi, memory = detached(result.student_params), result.phi, result.memory
            losses.append(result.validation_loss)
        with torch.no_grad():
            logits = unroll.logits(params, dev.inputs.to(device))
            accuracy = float((logits.argmax(dim=1) == dev.targets.to(device)).float().mean())
        rows.append(
            {
                "episode": float(episode),
                "start_dev_accuracy": start_accuracy,
                "dev_accuracy": accuracy,
                "validation_loss": sum(losses) / len(losses),
                "seconds": time.perf_counter() - started,
            }
        )
    return rows


def _draw(
    split: Split, size: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.randint(0, len(split.targets), (min(size, len(split.targets)),), generator=generator)
    return split.inputs[rows].to(device), split.targets[rows].to(device)


LOSSES.register("dln", "L2T-DLN's dynamic loss network over one-vs-one score pairs (Hai et al. 2023)")(
    dln_loss
)

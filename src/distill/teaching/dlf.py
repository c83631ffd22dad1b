"""L2T-DLF: a teacher model that outputs the student's loss function at every step.

Wu, Tian, Xia, Fan, Qin, Lai & Liu, "Learning to Teach with Dynamic Loss Functions" (NeurIPS
2018, arXiv 1810.12081); authors' demo ``apeterswu/L2T_loss`` (``loss_lenet_light_dynamic.py``).
Research notes and what could not be checked: ``docs/methods/learned-losses.md``.

**Student loss.** A bilinear family over the student's log-probabilities ``log p`` and the
one-hot target ``e_y``,

    l_Φ(p, y) = −σ( log(p)ᵀ W e_y + b_y ),      Φ = (W ∈ R^{C×C}, b ∈ R^C),          (DLF loss)

which at ``W = I, b = 0`` is ``−σ(log p_y) = −p_y / (1 + p_y)``: its gradient in the logits is
``σ(1−σ)·(p − e_y)``, a positive multiple of cross-entropy's.

**Teacher.** ``Φ_t = μ_θ(s_t)`` attends over N learnable loss parameters (the form the issue
gives for the paper, ``Φ_t = W · softmax(V s_t)``):

    a_t = softmax(V s_t),   W_t = Σ_i a_{t,i} W_i,   b_t = Σ_i a_{t,i} b_i,      θ = (V, W_{1..N}, b_{1..N}).

``s_t`` is the student's state: a constant 1, training progress t/T, moving averages of its
training-batch accuracy and (normalized) loss, and its accuracy on the development split
(measured once per epoch) — the iteration number and train/dev accuracy the paper names.
``W_i`` start at ``I`` and ``b_i`` at 0 (the loss starts as ``−p_y/(1+p_y)`` whatever the
state); the attention ``V`` starts small and random, so the ``W_i`` receive different shares
``a_i`` of each update and separate (the demo's all-zero dynamic part never does: its
meta-gradient is exactly zero). Optional ``noise`` perturbs the ``W_i``; note that any negative
off-diagonal entry ``W_{jy}`` lets a student lower its loss by driving ``p_j`` to 0 instead of
raising ``p_y``.

**Teacher training.** The teacher minimizes a smooth development error (demo, k = 50)

    M = mean_i [ 2σ(k · (max_j p_ij − p_i,y_i)) − 1 ],                                (dev measure)

0 for a correct example and → 1 for a wrong one, through the student's plain-SGD steps in
reverse mode (:mod:`distill.teaching.unroll`: stored weights and Hessian-vector products, as
the demo's reverse loop). Episodes as in the paper: θ is held fixed while a fresh student
trains, then updated once from the episode's hypergradient; a long episode is differentiated in
segments of ``unroll`` steps, each scored on the dev set at its end (truncated reverse mode,
which bounds memory), and their hypergradients averaged. The teacher kept is the one whose
student ended with the best dev accuracy, as the demo keeps its best meta-iteration. (The
demo's scheme, an update after every segment, is ``update: segment``.)

**Warm start.** The demo first pretrains its student by ``model_pretrain_iterations`` = 1,000
plain-SGD cross-entropy steps, and every meta-iteration restarts from that pretrained student.
From random weights the family is a poor start: at ``W = I`` the logit gradient is
``σ(1−σ)`` times cross-entropy's, about 0.08× at chance on ten classes (p_y ≈ 0.1). With
``MetaSchedule.warm_start_steps`` each episode's student first takes that many cross-entropy
steps (the same batches in every episode, so the episodes of one student restart from one warm
state, as the demo's do) before the teacher's loss takes over.

Where the demo and the paper differ we follow the paper: a teacher that reads dev accuracy and
progress (the demo reads step and batch error only), and a student trained with the learned
teacher at the end (the demo continues its own). Episodes restart the run's own student
(``episode_student: same``, as the demo restarts its one student) or fresh ones.
The teacher's optimizer is Adam (the demo uses plain SGD, lr 0.01; the paper's is not known here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
    hypergradient_of,
    minibatches,
    warm_start_batches,
)

#: what :class:`StudentState` holds, in order
STATE_FEATURES = ("bias", "progress", "train_accuracy", "train_loss", "dev_accuracy")


def dlf_loss(
    logits: torch.Tensor, targets: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """The DLF loss ``−σ(log(p)ᵀ W e_y + b_y)``, averaged over the batch."""
    log_probs = F.log_softmax(logits, dim=1)
    score = (log_probs @ matrix).gather(1, targets.view(-1, 1)).squeeze(1) + bias[targets]
    return -torch.sigmoid(score).mean()


def smooth_error(logits: torch.Tensor, targets: torch.Tensor, sharpness: float = 50.0) -> torch.Tensor:
    """The dev measure ``mean(2σ(k (max_j p_j − p_y)) − 1)``: a differentiable 0/1 error."""
    probs = F.softmax(logits, dim=1)
    gap = probs.max(dim=1).values - probs.gather(1, targets.view(-1, 1)).squeeze(1)
    return (2 * torch.sigmoid(sharpness * gap) - 1).mean()


class LossTeacher(nn.Module):
    """``μ_θ``: the student's state → the loss parameters ``(W_t, b_t)`` by attention over
    ``matrices`` learnable pairs ``(W_i, b_i)``.

    With ``nonnegative`` (the default) each ``W_i = exp(R_i)`` elementwise, starting at ``I``
    with off-diagonal entries ``off_diagonal`` (10⁻³). A negative off-diagonal ``W_{jy}`` makes
    the family degenerate — the student lowers its loss by driving ``p_j`` to 0 instead of
    raising ``p_y`` — and the truncated meta-gradient was seen to walk into that region at
    MNIST-1D scale; ``W ≥ 0`` keeps every loss of the family minimized at ``p_y → 1``, the
    off-diagonal mass acting like learned label smoothing. ``nonnegative: false`` learns ``W``
    unconstrained, as the paper writes it.
    """

    def __init__(
        self,
        num_classes: int,
        matrices: int = 4,
        noise: float = 0.0,
        seed: int = 0,
        nonnegative: bool = True,
        off_diagonal: float = 1e-3,
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.nonnegative = nonnegative
        shape = (matrices, num_classes, num_classes)
        eye = torch.eye(num_classes).expand(*shape)
        if nonnegative:
            start = torch.where(eye > 0, torch.zeros(shape), torch.full(shape, math.log(off_diagonal)))
        else:
            start = eye.clone()
        self.matrices = nn.Parameter(start + noise * torch.randn(*shape, generator=generator))
        self.biases = nn.Parameter(torch.zeros(matrices, num_classes))
        self.attention = nn.Parameter(0.1 * torch.randn(matrices, len(STATE_FEATURES), generator=generator))

    @property
    def num_classes(self) -> int:
        return self.matrices.shape[-1]

    def loss_matrices(self) -> torch.Tensor:
        """The ``W_i`` (exponentiated when ``nonnegative``)."""
        return self.matrices.exp() if self.nonnegative else self.matrices

    def weights(self, state: torch.Tensor) -> torch.Tensor:
        """The attention ``softmax(V s)`` over the loss parameters."""
        return torch.softmax(self.attention @ state, dim=0)

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.weights(state)
        return torch.einsum("n,nij->ij", weights, self.loss_matrices()), weights @ self.biases


def teacher_loss(
    teacher: LossTeacher, theta: Params, state: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """``l_{μ_θ(s)}(logits, targets)`` with the teacher's parameters ``theta`` (for :mod:`torch.func`)."""
    matrix, bias = functional_call(teacher, theta, (state,))
    return dlf_loss(logits, targets, matrix, bias)


class StudentState(nn.Module):
    """The state ``s_t`` the teacher reads, updated as the student trains; one implementation
    for meta-training and for the student a learned teacher trains.

    Train accuracy and loss are exponential moving averages of the training batches (``decay``;
    the first batch sets them), the loss divided by ``log C`` (1 at chance); dev accuracy is the
    last measurement; ``seen`` counts the batches observed. Held in buffers, on the student's
    device: observing a batch needs no host sync, and a resume checkpoint restores the state.
    """

    values: torch.Tensor  # buffer: train acc, train loss, dev acc
    seen: torch.Tensor  # buffer: batches observed

    def __init__(self, num_classes: int, decay: float = 0.9) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.decay = decay
        self.register_buffer("values", torch.tensor([0.0, 1.0, 0.0]))  # train acc, train loss, dev acc
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    @property
    def train_accuracy(self) -> float:
        return float(self.values[0])

    @property
    def train_loss(self) -> float:
        return float(self.values[1])

    @property
    def dev_accuracy(self) -> float:
        return float(self.values[2])

    @torch.no_grad()
    def observe(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Fold one training batch's logits into the moving averages."""
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        loss = F.cross_entropy(logits, targets) / math.log(self.num_classes)
        decay = torch.where(self.seen > 0, self.decay, 0.0)
        self.values[:2] = decay * self.values[:2] + (1 - decay) * torch.stack([accuracy, loss])
        self.seen += 1

    @torch.no_grad()
    def set_dev_accuracy(self, accuracy: float | torch.Tensor) -> None:
        self.values[2] = accuracy

    def vector(self, progress: float | torch.Tensor) -> torch.Tensor:
        """``s_t`` in the order of :data:`STATE_FEATURES`."""
        head = torch.stack(
            [
                torch.ones((), device=self.values.device),
                torch.as_tensor(progress, device=self.values.device).float(),
            ]
        )
        return torch.cat([head, self.values])


@dataclass(frozen=True)
class MetaSchedule:
    """How the teacher is trained: ``episodes`` fresh students of ``episode_steps`` SGD steps
    (``lr``, ``batch_size``), reverse mode through segments of ``unroll`` steps; θ updated by
    Adam (``teacher_lr``) once per episode from the segments' mean hypergradient (``update:
    episode``, the paper's Algorithm 1: θ fixed while a student trains) or after every segment
    (``update: segment``, the demo's many short meta-iterations); dev accuracy measured every
    ``dev_every`` steps; dev measure sharpness ``sharpness``. ``select_best`` keeps the teacher
    whose episode ended with the best dev accuracy (the demo's model selection) — in
    ``episode`` mode exactly the θ that trained that student, in ``segment`` mode the θ at the
    end of the episode. ``warm_start_steps`` (the demo's ``model_pretrain_iterations``): each
    episode's student first takes that many plain-SGD cross-entropy steps at ``lr``
    (:func:`~distill.teaching.unroll.cross_entropy_steps`, on batches of their own, the same in
    every episode), and the episode's ``episode_steps`` steps on the teacher's loss start from
    there — so episodes of one student all restart from one warm state, as the demo's
    meta-iterations restart from its pretrained student. Steps are then numbered from
    ``warm_start_steps`` and progress is ``step / (warm_start_steps + episode_steps)``."""

    episodes: int
    episode_steps: int
    unroll: int
    lr: float
    batch_size: int
    teacher_lr: float
    dev_every: int
    sharpness: float = 50.0
    dev_rows: int = 2000
    update: str = "episode"
    select_best: bool = True
    warm_start_steps: int = 0


@dataclass
class MetaHistory:
    """One row per segment (episode, step, dev measure, dev accuracy, inner loss, seconds), one
    per episode (the dev accuracy of its student as the teacher's loss takes over — after the
    warm start, if any — and at its end), and the episode whose teacher was kept."""

    rows: list[dict[str, float]] = field(default_factory=list)
    episodes: list[dict[str, float]] = field(default_factory=list)
    best_episode: int = -1
    seconds: float = 0.0


def _accuracy(unroll: Unroll, params: Params, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    with torch.no_grad():
        return float((unroll.logits(params, inputs).argmax(dim=1) == targets).float().mean())


def _copy_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _teacher_step(
    teacher: LossTeacher, optimizer: torch.optim.Optimizer, gradient: Params, segments: int
) -> None:
    """One Adam step of the teacher on the mean of ``segments`` accumulated hypergradients."""
    optimizer.zero_grad(set_to_none=True)
    for name, parameter in teacher.named_parameters():
        parameter.grad = (gradient[name] / max(1, segments)).to(parameter.dtype)
    optimizer.step()


def meta_train(
    teacher: LossTeacher,
    new_student: Callable[[int], nn.Module],
    train: Split,
    dev: Split,
    schedule: MetaSchedule,
    device: torch.device,
    seed: int = 0,
    on_update: Callable[[dict[str, float]], None] | None = None,
) -> MetaHistory:
    """Train ``teacher`` in place (Algorithm: episodes of fresh students, reverse-mode updates).

    ``new_student(episode)`` builds the episode's student (already on ``device``); with
    ``schedule.warm_start_steps`` it is first warmed by cross-entropy (see :class:`MetaSchedule`).
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=schedule.teacher_lr)
    dev_rows = torch.randperm(len(dev.targets), generator=generator)[: schedule.dev_rows]
    dev_inputs, dev_targets = dev.inputs[dev_rows].to(device), dev.targets[dev_rows].to(device)
    history = MetaHistory()
    best_state: dict[str, torch.Tensor] | None = None
    best_accuracy = -1.0
    started = time.perf_counter()
    warm = schedule.warm_start_steps
    total_steps = warm + schedule.episode_steps
    for episode in range(schedule.episodes):
        model = new_student(episode)
        states: dict[int, torch.Tensor] = {}
        state = StudentState(teacher.num_classes).to(device)

        def loss(logits, targets, theta, index, states=states):
            return teacher_loss(teacher, theta, states[index], logits, targets)

        unroll = Unroll(functional_student(model), loss, schedule.lr)
        params = {name: value.detach().clone() for name, value in model.named_parameters()}
        if warm > 0:  # the demo's pretraining: cross-entropy, then the teacher's loss takes over
            warm_batches = warm_start_batches(train, schedule.batch_size, warm, seed, device)
            params = cross_entropy_steps(unroll.model, params, warm_batches, schedule.lr, state.observe)
        start_accuracy = _accuracy(unroll, params, dev_inputs, dev_targets)
        state.set_dev_accuracy(start_accuracy)
        stream = minibatches(train, schedule.batch_size, schedule.episode_steps, generator, device)

        def before(index: int, weights: Params, state=state, states=states, unroll=unroll) -> None:
            if index != warm and index % schedule.dev_every == 0:
                state.set_dev_accuracy(_accuracy(unroll, weights, dev_inputs, dev_targets))
            states[index] = state.vector(index / total_steps)

        def after(index: int, logits: torch.Tensor, targets: torch.Tensor, state=state) -> None:
            state.observe(logits, targets)

        starting_teacher = _copy_state(teacher)
        accumulated = {name: torch.zeros_like(value) for name, value in teacher.named_parameters()}
        segments = 0
        for first in range(0, schedule.episode_steps, schedule.unroll):
            batches = [next(stream) for _ in range(min(schedule.unroll, schedule.episode_steps - first))]
            theta = {name: value.detach() for name, value in teacher.named_parameters()}
            trajectory, losses = unroll.run(params, theta, batches, warm + first, before, after)
            result = hypergradient_of(
                unroll,
                trajectory,
                losses,
                theta,
                batches,
                lambda logits, targets, _theta: smooth_error(logits, targets, schedule.sharpness),
                (dev_inputs, dev_targets),
                warm + first,
            )
            segments += 1
            for name in accumulated:
                accumulated[name] += result.theta_gradient[name]
            if schedule.update == "segment":
                _teacher_step(teacher, optimizer, accumulated, 1)
                accumulated = {name: torch.zeros_like(value) for name, value in accumulated.items()}
            params = detached(result.final_params)
            for index in list(states):  # a segment's states are no longer needed
                del states[index]
            row = {
                "episode": float(episode),
                "step": float(warm + first + len(batches)),
                "dev_measure": result.objective,
                "dev_accuracy": _accuracy(unroll, params, dev_inputs, dev_targets),
                "inner_loss": sum(losses) / len(losses),
                "seconds": time.perf_counter() - started,
            }
            history.rows.append(row)
            if on_update is not None:
                on_update(row)
        final_accuracy = history.rows[-1]["dev_accuracy"]
        trained_by = starting_teacher if schedule.update == "episode" else _copy_state(teacher)
        if schedule.update == "episode":
            _teacher_step(teacher, optimizer, accumulated, segments)
        history.episodes.append(
            {"episode": float(episode), "start_dev_accuracy": start_accuracy, "dev_accuracy": final_accuracy}
        )
        if best_state is None or final_accuracy > best_accuracy:
            best_state, best_accuracy, history.best_episode = trained_by, final_accuracy, episode
    if schedule.select_best and best_state is not None:
        teacher.load_state_dict(best_state)
    else:
        history.best_episode = -1
    history.seconds = time.perf_counter() - started
    return history


LOSSES.register("dlf", "L2T-DLF's bilinear loss family −σ(log(p)ᵀW e_y + b_y) (Wu et al. 2018)")(dlf_loss)

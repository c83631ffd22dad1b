"""``l2t-dln``: a student trained on a dynamic loss network that an LSTM teacher keeps adjusting.

L2T-DLN (Hai et al., NeurIPS 2023); the network, the one-vs-one view and the LSTM teacher are in
:mod:`distill.teaching.dln`. Three stages alternate, as in the official ``main.py``:

(a) the student trains ``unroll`` (K = 15) steps on the mean DLN loss;
(b) the DLN is updated through the teacher from the validation gradient: from the student's
    weights before those K steps, K plain-SGD steps (``inner_lr``) on the same batches are
    unrolled with the DLN's weights φ, the validation cross-entropy (a batch of 100) is
    differentiated in φ through them (reverse mode, :mod:`distill.teaching.unroll`), and
    ``φ' = φ − β · LSTM(∇_φ L_val)`` (β = 10⁻³);
(c) the teacher learns: the K steps are unrolled again with φ', the validation cross-entropy is
    differentiated in φ' and back through ``φ' = φ − β·LSTM(g)`` into the LSTM's weights, which
    Adam steps (``teacher_lr`` 10⁻³). The LSTM's memory is carried from round to round and cut
    from the graph after each (as the official code does).

**Meta-training, then the student.** As ``l2t-dlf`` does, the run first meta-trains the teacher
(:func:`~distill.teaching.dln.meta_train`, in :meth:`prepare`): ``episodes`` fresh students, each
trained over the student's budget by the official loop exactly — the student's weights after a
round are the look-ahead unroll's with φ' — the DLN restarting from its initial network and the
LSTM's memory from zero each episode, the LSTM's weights carried over. The official code runs one
long episode (2,500 rounds on CIFAR); at the few hundred rounds of a small budget an untrained
LSTM mostly random-walks the DLN, so the teacher needs this experience before it teaches.

**Then, while the student trains** (the teacher still learning unless ``learn_teacher: false``),
the student is trained by the recipe's optimizer (its schedule, weight decay and checkpoints
apply) on φ, and φ' takes effect from the next round, where the official code redoes the
round's steps with φ' by SGD: the look-ahead unroll is plain SGD at ``inner_lr``, which equals
the official scheme when the recipe's optimizer is SGD without momentum at that rate, up to the
one-round delay. The official DLN mean also counts the target's all-zero row (a constant factor
(C − 1)/C, dropped). A resumed run restores the DLN, the teacher and its memory, and draws the
same validation batches; the LSTM's Adam moments restart.

``RUN/<student>/loss_teacher.safetensors`` (the run's artifact ``loss_teacher``) holds the LSTM
teacher and the DLN it starts from (saved after meta-training, and again after the student if
the teacher kept learning);
``loss_teacher: PATH`` trains another student with it (teacher frozen unless
``learn_teacher: true``), the DLN again starting from that initial network.

**Warm start** (``warm_start_steps``, default 0). The official ``main.py`` has none: its student
starts from random weights and the DLN teaches from the first round, over about 2,500 rounds
(10 passes over 25,000 validation images in batches of 100). As an option, as in L2T-DLF's
demo, the student's first ``warm_start_steps`` steps of its budget are on cross-entropy (the
recipe's optimizer and batches) and rounds start after them; each meta-training episode's
student is warmed by as many plain-SGD cross-entropy steps at ``inner_lr`` first (a warm start
that would take the whole budget is cut to half of it). ``update_rule: fixed`` trains on the
starting DLN throughout, with no rounds and no meta-training: the fixed-loss baseline of a
comparison.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import PositiveFloat
from torch import nn

from distill.data.bundle import Split
from distill.errors import DistillError
from distill.methods.base import (
    Batch,
    EpochStart,
    Method,
    MethodArtifacts,
    MethodSpec,
    ModuleReader,
    Update,
)
from distill.methods.loss_teachers import (
    LossTaughtMethod,
    context_reader,
    episode_students,
    log_warm_start,
    loss_teacher_metadata,
    require_validation_and_budget,
    warm_start_steps,
)
from distill.methods.registry import METHODS, MethodContext
from distill.schema import BatchSize, EpochsOrZero, FilePath, NonNegativeInt, PositiveInt, Width
from distill.teaching.dln import (
    CoordinateLSTM,
    DLNSchedule,
    DynamicLossNetwork,
    dln_loss,
    fit_to_pairwise_cross_entropy,
    meta_train,
    teaching_round,
)
from distill.teaching.unroll import Params, Unroll, functional_student

LOG = logging.getLogger(__name__)
TEACHER_KIND = "l2t-dln-loss-teacher"
#: (σ(z_y), σ(z_j)) pairs at which the plot reads the DLN's loss over training
PROBES = {"right (.9 vs .1)": (0.9, 0.1), "tie (.5 vs .5)": (0.5, 0.5), "wrong (.1 vs .9)": (0.1, 0.9)}


class L2TDLNSpec(MethodSpec):
    """``l2t-dln``: K = ``unroll`` student steps per round, look-ahead SGD at ``inner_lr``
    (default: the recipe's learning rate), DLN step ``dln_step``, teacher Adam at
    ``teacher_lr``, validation batches of ``val_batch_size``; ``loss_teacher`` loads a saved
    teacher (frozen unless ``learn_teacher``). ``dln_init``: ``pairwise-ce`` starts the DLN
    fitted to the pairs' binary cross-entropy
    (:func:`~distill.teaching.dln.fit_to_pairwise_cross_entropy`), ``random`` from the official
    code's random weights. ``episodes`` meta-trains the teacher first on that many fresh
    students over the student's budget (0: the teacher learns only alongside this student).
    ``normalize`` divides the DLN's output by its mean magnitude on a fixed grid so that the
    teacher cannot change the loss's scale (see :class:`DynamicLossNetwork`; ``false``: official).
    ``update_rule: sign`` replaces the LSTM by a diagnostic oracle, ``φ' = φ − dln_step ·
    sign(g)`` from the look-ahead validation gradient ``g`` (no meta-training, nothing learned):
    it shows whether the gradient's direction itself helps the student. ``update_rule: fixed``
    never changes the DLN (no rounds, no meta-training): the student trains on the starting
    loss, the baseline the teacher is measured against. ``warm_start_steps`` (default 0: the
    official code has no warm start): the student's first steps of its budget are on
    cross-entropy, and meta-training episodes warm their students alike (see the module doc)."""

    needs_hard_labels: ClassVar[bool] = True

    name: Literal["l2t-dln"] = "l2t-dln"
    loss_teacher: FilePath | None = None
    learn_teacher: bool | None = None
    unroll: PositiveInt = 15
    inner_lr: PositiveFloat | None = None
    dln_step: PositiveFloat = 1e-3
    teacher_lr: PositiveFloat = 1e-3
    val_batch_size: BatchSize = 100
    width: Width = 40
    dln_init: Literal["pairwise-ce", "random"] = "pairwise-ce"
    episodes: EpochsOrZero = 2
    normalize: bool = True
    update_rule: Literal["lstm", "sign", "fixed"] = "lstm"
    warm_start_steps: NonNegativeInt = 0


class DLNTeacher(nn.Module):
    """What is saved and transferred: the LSTM teacher and the DLN it starts from."""

    def __init__(self, width: int = 40, normalize: bool = True) -> None:
        super().__init__()
        self.lstm = CoordinateLSTM()
        self.initial_dln = DynamicLossNetwork(width, normalize=normalize)


class DynamicLossNetworkTeaching(LossTaughtMethod):
    """Stages (a)–(c) of the module doc; the student's loss term is ``dln``."""

    rounds: torch.Tensor  # buffer: teaching rounds done (restored on resume)
    warm_steps_taken: torch.Tensor  # buffer, with a warm start only: its steps taken
    loss_history: torch.Tensor  # buffer: (epochs, probes + 2), NaN for epochs not reached

    method_name = "l2t-dln"

    def __init__(
        self, student: nn.Module, teacher: DLNTeacher, spec: L2TDLNSpec, context: MethodContext, learn: bool
    ) -> None:
        super().__init__(student)
        assert context.budget is not None and context.data is not None and context.data.val is not None
        self.teacher = teacher
        self.dln = DynamicLossNetwork(spec.width, normalize=teacher.initial_dln.normalize)
        self.dln.load_state_dict(teacher.initial_dln.state_dict())
        self.dln.requires_grad_(False)
        self.teacher.initial_dln.requires_grad_(False)
        self.teacher.lstm.requires_grad_(learn)
        self.spec = spec
        self.learn = learn
        self.inner_lr = spec.inner_lr or context.budget.lr
        self.dev: Split = context.data.val
        self.loaded = spec.loss_teacher is not None
        self.seed = context.seed
        self.budget = context.budget
        self.train_split: Split = context.data.train
        self.new_model = context.new_model
        self.data_fingerprint = context.data.fingerprint
        self.optimizer = (
            torch.optim.Adam(self.teacher.lstm.parameters(), lr=spec.teacher_lr) if learn else None
        )
        coordinates = sum(value.numel() for value in self.dln.parameters())
        for index, (hidden, cell) in enumerate(self.teacher.lstm.initial_memory(coordinates)):
            self.register_buffer(f"memory_hidden{index}", hidden)
            self.register_buffer(f"memory_cell{index}", cell)
        self.register_buffer("rounds", torch.zeros((), dtype=torch.long))
        self.warm_steps = warm_start_steps(spec.warm_start_steps, context.budget.steps)
        if self.warm_steps > 0:  # a buffer only then: a run without a warm start keeps its state
            self.register_buffer("warm_steps_taken", torch.zeros((), dtype=torch.long))
        self._warm_taken: int | None = None  # read from the buffer on the first step
        self._warming_now = False
        self.register_buffer("loss_history", torch.full((context.budget.epochs, len(PROBES) + 2), math.nan))
        self._twin: nn.Module | None = None
        self._round: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._start: Params = {}
        self._val_losses: list[float] = []
        self._steps: list[float] = []

    # ------------------------------------------------------------------ memory
    def memory(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [
            (getattr(self, f"memory_hidden{index}"), getattr(self, f"memory_cell{index}"))
            for index in range(len(self.teacher.lstm.cells))
        ]

    def _remember(self, memory: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for index, (hidden, cell) in enumerate(memory):
            getattr(self, f"memory_hidden{index}").copy_(hidden.detach())
            getattr(self, f"memory_cell{index}").copy_(cell.detach())

    # ------------------------------------------------------------------ stages
    def warming(self) -> bool:
        """Whether the step about to be taken is one of the warm start's (counts it)."""
        if self.warm_steps == 0:
            return False
        if self._warm_taken is None:  # one host read per run; a resumed run continues its count
            self._warm_taken = int(self.warm_steps_taken)
        if self._warm_taken >= self.warm_steps:
            return False
        self._warm_taken += 1
        self.warm_steps_taken += 1
        return True

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.hard_labels(batch)
        logits = self.student(batch.inputs)
        if self.warm_steps == 0:
            return {"dln": self.dln.loss(logits, batch.targets)}
        if self._warming_now:
            loss = F.cross_entropy(logits, batch.targets)
            return {"ce": loss, "dln": loss.new_zeros(())}
        loss = self.dln.loss(logits, batch.targets)
        return {"ce": loss.new_zeros(()), "dln": loss}  # the same terms every step

    def train_step(self, batch: Batch, update: Update) -> dict[str, torch.Tensor]:
        self._warming_now = self.warming()
        if self._warming_now or self.spec.update_rule == "fixed":  # no round: a plain step
            terms = update.forward(batch)
            update.minimize(terms["ce" if self._warming_now else "dln"])
            return terms
        if not self._round:
            self._start = {name: value.detach().clone() for name, value in self.student.named_parameters()}
        terms = update.forward(batch)  # (a): the student's step on the current DLN
        update.minimize(terms["dln"])
        self._round.append((batch.inputs.detach(), batch.targets.detach()))
        if len(self._round) == self.spec.unroll:
            self.teach()
            self._round = []
        return terms

    def on_epoch_start(self, epoch: EpochStart) -> None:
        self._round = []  # rounds do not straddle epochs, so a resumed run repeats none
        if epoch.epoch < len(self.loss_history):
            with torch.no_grad():
                probes = torch.tensor([[y, j, 1.0, 0.0] for y, j in PROBES.values()], device=epoch.device)
                values = self.dln(probes)
            val_ce = sum(self._val_losses) / len(self._val_losses) if self._val_losses else math.nan
            step = sum(self._steps) / len(self._steps) if self._steps else math.nan
            summary = torch.tensor([val_ce, step], device=epoch.device)
            self.loss_history[epoch.epoch] = torch.cat([values, summary])
            self._val_losses, self._steps = [], []

    def _validation_batch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # drawn from (seed, round): a resumed run draws the same batches
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.rounds))
        rows = torch.randperm(len(self.dev.targets), generator=generator)[: self.spec.val_batch_size]
        return self.dev.inputs[rows].to(device), self.dev.targets[rows].to(device)

    def teach(self) -> None:
        """Stages (b) and (c) on the round's batches, from the weights before the round."""
        if self._twin is None:
            self._twin = functional_student(self.student)
        device = self._round[0][0].device
        phi = {name: value.detach() for name, value in self.dln.named_parameters()}
        result = teaching_round(
            Unroll(self._twin, self._twin_loss, self.inner_lr),
            self.teacher.lstm,
            self.optimizer,
            self._start,
            phi,
            self.memory(),
            self._round,
            self._validation_batch(device),
            self.spec.dln_step,
            rule=self.spec.update_rule,
        )
        self._steps.append(result.step)
        self._val_losses.append(result.validation_loss)
        with torch.no_grad():
            for name, value in result.phi.items():
                self.dln.get_parameter(name).copy_(value)
        self._remember(result.memory)
        self.rounds += 1

    def _twin_loss(
        self, logits: torch.Tensor, targets: torch.Tensor, phi: Params, _index: int
    ) -> torch.Tensor:
        return dln_loss(self.dln, phi, logits, targets)

    # ------------------------------------------------------------------ meta-training
    def prepare(self, artifacts: MethodArtifacts) -> None:
        log_warm_start("l2t-dln", self.spec.warm_start_steps, self.warm_steps, self.budget.steps)
        if self.loaded or self.spec.episodes == 0 or self.spec.update_rule != "lstm" or int(self.rounds) > 0:
            return  # a loaded teacher, none to meta-train, or a resumed run (its state is restored)
        metadata = artifacts.module_metadata("loss_teacher")
        if metadata is not None and metadata.get("data_fingerprint") == self.data_fingerprint:
            artifacts.load_module("loss_teacher", self.teacher)  # meta-trained before an interruption
            return
        budget = self.budget
        schedule = DLNSchedule(
            episodes=self.spec.episodes,
            episode_steps=max(1, budget.steps - self.warm_steps),
            unroll=self.spec.unroll,
            lr=self.inner_lr,
            batch_size=budget.batch_size,
            dln_step=self.spec.dln_step,
            teacher_lr=self.spec.teacher_lr,
            val_batch_size=self.spec.val_batch_size,
            warm_start_steps=self.warm_steps,
        )
        LOG.info(
            "l2t-dln: meta-training the LSTM teacher — %d episodes × %d steps after %d warm-up steps",
            schedule.episodes,
            schedule.episode_steps,
            self.warm_steps,
        )
        device = next(self.student.parameters()).device
        self.teacher.lstm.requires_grad_(True)
        rows = meta_train(
            self.teacher.lstm,
            self.teacher.initial_dln,
            episode_students(self.new_model, self.seed),
            self.train_split,
            self.dev,
            schedule,
            device,
            seed=self.seed,
        )
        self.teacher.lstm.requires_grad_(self.learn)
        artifacts.write_table("meta_history", rows)
        self._save(artifacts, {"meta_episodes": rows})

    def _save(self, artifacts: MethodArtifacts, extra: dict[str, Any]) -> None:
        artifacts.save_module(
            "loss_teacher",
            self.teacher,
            {
                "kind": TEACHER_KIND,
                "width": self.spec.width,
                "normalize": self.teacher.initial_dln.normalize,
                "dln_step": self.spec.dln_step,
                "data_fingerprint": self.data_fingerprint,
                **extra,
            },
        )

    # ------------------------------------------------------------------ reports
    def finish(self, artifacts: MethodArtifacts) -> dict[str, Any]:
        names = [f"dln_loss_{name}" for name in PROBES] + ["val_ce_lookahead", "mean_dln_step"]
        table = [
            {
                "epoch": epoch + 1,
                **dict(zip(names, (_finite_or_none(float(value)) for value in row), strict=True)),
            }
            for epoch, row in enumerate(self.loss_history.cpu())
            if not math.isnan(float(row[0]))
        ]
        artifacts.write_table("loss_parameters", table)  # plotted by the application
        location = artifacts.module_location("loss_teacher")
        if not self.learn:  # a frozen teacher: the file it came from, if any
            if self.loaded:
                return {"loss_teacher": str(self.spec.loss_teacher)}
            return {"loss_teacher": location} if artifacts.has_module("loss_teacher") else {}
        self._save(artifacts, {"rounds_with_this_student": int(self.rounds)})  # as it ends, still learning
        return {"loss_teacher": location}


_PAIRWISE_STARTS: dict[tuple[int, int, bool], dict[str, torch.Tensor]] = {}


def _pairwise_start(width: int, seed: int, network: DynamicLossNetwork) -> dict[str, torch.Tensor]:
    """The DLN fitted to the pairwise cross-entropy from ``network``'s (seeded) weights; fitted
    once per process for a (width, seed, normalize), since a recipe builds each method twice."""
    key = (width, seed, network.normalize)
    if key not in _PAIRWISE_STARTS:
        fitted = copy.deepcopy(network).cpu()
        fit_to_pairwise_cross_entropy(fitted, seed=seed)
        _PAIRWISE_STARTS[key] = {name: value.detach().clone() for name, value in fitted.state_dict().items()}
    return _PAIRWISE_STARTS[key]


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def load_dln_teacher(path: Path, owner: str, reader: ModuleReader) -> DLNTeacher:
    """A saved :class:`DLNTeacher`, read by ``reader``; another kind of file is refused with a
    message naming it."""
    metadata = loss_teacher_metadata(path, TEACHER_KIND, "l2t-dln", owner, reader)
    teacher = DLNTeacher(int(metadata.get("width", 40)), bool(metadata.get("normalize", True)))
    reader.load_module_file(path, teacher)
    return teacher


@METHODS.register_factory(
    "l2t-dln", "learning to teach with a dynamic loss network and an LSTM teacher (Hai et al. 2023)"
)
def build_l2t_dln(spec: L2TDLNSpec, context: MethodContext) -> Method:
    require_validation_and_budget(context, "l2t-dln")
    if spec.loss_teacher is not None:
        teacher = load_dln_teacher(spec.loss_teacher, context.owner, context_reader(context))
        width = teacher.initial_dln.output.in_features
        if width != spec.width:
            raise DistillError(
                f"{context.owner}.width: the loaded teacher's DLN is {width} wide, not {spec.width}"
            )
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed + 15485863)
            teacher = DLNTeacher(spec.width, spec.normalize)
        if spec.dln_init == "pairwise-ce":
            teacher.initial_dln.load_state_dict(
                _pairwise_start(spec.width, context.seed, teacher.initial_dln)
            )
    learn = spec.learn_teacher if spec.learn_teacher is not None else spec.loss_teacher is None
    learn = learn and spec.update_rule == "lstm"
    method = DynamicLossNetworkTeaching(context.student, teacher, spec, context, learn)
    return method.to(context.example_inputs.device)

"""``l2t-dlf``: train a student on the loss a learned teacher writes at every step.

Learning to Teach with Dynamic Loss Functions (Wu et al., NeurIPS 2018): the loss family, the
teacher and its reverse-mode training are in :mod:`distill.teaching.dlf`. This method

1. before the student trains (:meth:`Method.prepare`), meta-trains a :class:`LossTeacher` on
   the recipe's data — episodes of students of the student's architecture, warmed by
   ``warm_start_steps`` cross-entropy steps and then trained by plain SGD on the teacher's loss,
   the teacher updated by the gradient of a smooth dev error —
   and hands it to the run's artifacts as ``loss_teacher``
   (``RUN/<student>/loss_teacher.safetensors`` + ``.json`` metadata; tables ``meta_history``
   and ``meta_episodes``); or loads a saved one (``loss_teacher: PATH``: teacher transfer to
   another student or dataset with the same number of classes);
2. trains the student with the recipe's optimizer — its first ``warm_start_steps`` steps on
   cross-entropy (within its budget), the rest on ``l_{Φ_t}``, ``Φ_t = μ_θ(s_t)`` from the
   frozen teacher and the student's live state ``s_t`` (progress, moving train accuracy and
   loss, dev accuracy measured before each epoch);
3. hands over the loss it was given over training (table ``loss_parameters``; the application
   plots it as ``loss_parameters.png``).

**Warm start** (``warm_start_steps``, default 1,000). The authors' demo
(``apeterswu/L2T_loss``, ``loss_lenet_light_dynamic.py``) first trains its student by
``model_pretrain_iterations`` = 1,000 plain-SGD cross-entropy steps at the student's learning
rate, and every meta-iteration restarts from that pretrained student. Here the run's student
takes its first ``warm_start_steps`` steps of its own budget on cross-entropy (the recipe's
optimizer and batches: the same steps a ``scratch`` student takes), and each meta-training
episode first warms its student by as many plain-SGD cross-entropy steps at ``inner_lr``, on
batches of its own that are the same in every episode — so with ``episode_student: same`` every
episode restarts from one warm state, as the demo's meta-iterations do. The two warm states
are not the same weights (other batches, and the recipe's optimizer in the run). A warm start
that would take the whole budget is cut to half of it, with a warning; ``0`` is the previous
behaviour, the teacher's loss from the first step.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat
from torch import nn

from distill.data.bundle import Split
from distill.errors import CheckpointError
from distill.methods.base import Batch, EpochStart, Method, MethodArtifacts, MethodSpec, ModuleReader
from distill.methods.loss_teachers import (
    LossTaughtMethod,
    check_loss_teacher_kind,
    context_reader,
    episode_students,
    log_warm_start,
    loss_teacher_metadata,
    require_validation_and_budget,
    warm_start_steps,
)
from distill.methods.registry import METHODS, Budget, MethodContext
from distill.schema import EpochsOrZero, FilePath, NonNegativeInt, Positive, PositiveInt
from distill.teaching.dlf import (
    STATE_FEATURES,
    LossTeacher,
    MetaHistory,
    MetaSchedule,
    StudentState,
    dlf_loss,
    meta_train,
)

LOG = logging.getLogger(__name__)
TEACHER_KIND = "l2t-dlf-loss-teacher"


class L2TDLFSpec(MethodSpec):
    """``l2t-dlf``: meta-train a loss teacher (or load ``loss_teacher``), then train the
    student on its dynamic loss.

    Meta-training: ``episodes`` students of ``episode_steps`` plain-SGD steps (default:
    the student's own budget) at ``inner_lr`` (default: the recipe's learning rate), reverse
    mode through segments of ``unroll`` steps, the teacher updated by Adam at ``teacher_lr``
    once per episode (``update: episode``) or per segment (``segment``), the best episode's
    teacher kept (``select_best``); ``matrices`` loss parameters to
    attend over (``nonnegative``: ``W ≥ 0``, see :class:`LossTeacher`); ``sharpness`` the k of
    the smooth dev error. ``episode_student: same`` (the paper's) restarts the run's own
    student from its initialisation in every episode, as Algorithm 1 retrains one student
    (NeurIPS 2018 review; the authors' demo restores the episode's start weights);
    ``fresh`` draws a new initialisation per episode, for a teacher meant to transfer.

    ``warm_start_steps`` (the demo's ``model_pretrain_iterations``, default 1,000; ``0``: off):
    the student trains that many steps of its budget on cross-entropy before the learned loss
    takes over, and every meta-training episode restarts from a student warmed by as many
    plain-SGD cross-entropy steps (see the module doc; one that would take the whole budget is
    cut to half of it).
    ``episodes: 0`` meta-trains nothing: the student trains on the teacher's starting loss
    (``W ≈ I``, ``b = 0``: ``−p_y/(1+p_y)``), the fixed-loss baseline of a comparison.
    """

    needs_hard_labels: ClassVar[bool] = True

    name: Literal["l2t-dlf"] = "l2t-dlf"
    loss_teacher: FilePath | None = None
    matrices: Annotated[int, Field(le=10_000), Positive] = 4
    episodes: EpochsOrZero = 4
    episode_steps: PositiveInt | None = None
    unroll: PositiveInt = 100
    inner_lr: PositiveFloat | None = None
    teacher_lr: PositiveFloat = 0.01
    sharpness: PositiveFloat = 50.0
    init_noise: float = Field(default=0.0, ge=0.0)
    nonnegative: bool = True
    update: Literal["episode", "segment"] = "episode"
    select_best: bool = True
    episode_student: Literal["same", "fresh"] = "same"
    warm_start_steps: NonNegativeInt = 1000


def load_loss_teacher(
    path: Path, num_classes: int, owner: str, reader: ModuleReader
) -> tuple[LossTeacher, dict[str, Any]]:
    """A saved :class:`LossTeacher` and its metadata, read by ``reader``; a file of another kind
    or class count is refused with a message naming it."""
    metadata = loss_teacher_metadata(path, TEACHER_KIND, "l2t-dlf", owner, reader)
    teacher = loss_teacher_for(metadata, num_classes, path, owner)
    reader.load_module_file(path, teacher)
    return teacher, metadata


def loss_teacher_for(metadata: dict[str, Any], num_classes: int, path: Path | str, owner: str) -> LossTeacher:
    """An untrained :class:`LossTeacher` of the shape ``metadata`` describes (of the teacher
    saved at ``path``); a teacher for another class count is refused."""
    if metadata.get("num_classes") != num_classes:
        raise CheckpointError(
            f"{owner}.loss_teacher: {path} writes losses for {metadata.get('num_classes')} classes; "
            f"this data has {num_classes}"
        )
    return LossTeacher(
        num_classes, int(metadata["matrices"]), nonnegative=bool(metadata.get("nonnegative", True))
    )


class DynamicLossDistillation(LossTaughtMethod):
    """The student minimizes ``l_{μ_θ(s_t)}`` (see module doc); the teacher is frozen here."""

    loss_history: torch.Tensor  # buffer: (epochs, weights + 3), NaN for epochs not reached

    method_name = "l2t-dlf"

    def __init__(
        self,
        student: nn.Module,
        teacher: LossTeacher,
        spec: L2TDLFSpec,
        context: MethodContext,
        loaded_metadata: dict[str, Any] | None,
    ) -> None:
        super().__init__(student)
        assert context.budget is not None and context.data is not None and context.data.val is not None
        self.loss_teacher = teacher.requires_grad_(False)
        self.spec = spec
        self.budget: Budget = context.budget
        self.dev: Split = context.data.val
        self.train_split: Split = context.data.train
        self.new_model = context.new_model
        self.seed = context.seed
        self.data_fingerprint = context.data.fingerprint
        self.loaded_metadata = loaded_metadata
        self.meta_seconds = 0.0
        self.warm_steps = warm_start_steps(spec.warm_start_steps, self.budget.steps)
        self._steps_taken: int | None = None  # read from the state's buffer on the first step
        self.student_state = StudentState(teacher.num_classes)  # buffers: resumed with the run
        # per epoch: attention weights, then mean diagonal / off-diagonal of W_t, mean b_t
        self.register_buffer(
            "loss_history", torch.full((self.budget.epochs, teacher.matrices.shape[0] + 3), math.nan)
        )

    # ------------------------------------------------------------------ the teacher
    def prepare(self, artifacts: MethodArtifacts) -> None:
        log_warm_start("l2t-dlf", self.spec.warm_start_steps, self.warm_steps, self.budget.steps)
        if self.loaded_metadata is not None:
            return
        metadata = artifacts.module_metadata("loss_teacher")
        if metadata is not None and metadata.get("data_fingerprint") == self.data_fingerprint:
            location = artifacts.module_location("loss_teacher")
            check_loss_teacher_kind(metadata, location, TEACHER_KIND, "l2t-dlf", "l2t-dlf")
            teacher = loss_teacher_for(metadata, self.loss_teacher.num_classes, location, "l2t-dlf")
            artifacts.load_module("loss_teacher", teacher)
            self.loss_teacher.load_state_dict(teacher.state_dict())
            self.meta_seconds = float(metadata.get("meta_seconds", 0.0))
            LOG.info("l2t-dlf: reusing the loss teacher meta-trained earlier (%s)", location)
            return
        schedule = self.schedule()
        LOG.info(
            "l2t-dlf: meta-training the loss teacher — %d episodes × %d steps after %d warm-up "
            "steps, unroll %d",
            schedule.episodes,
            schedule.episode_steps,
            schedule.warm_start_steps,
            schedule.unroll,
        )
        device = next(self.student.parameters()).device
        if schedule.episodes == 0:  # the fixed start: the teacher as initialized
            history = MetaHistory()
        else:
            self.loss_teacher.requires_grad_(True)
            history = meta_train(
                self.loss_teacher,
                episode_students(self.new_model, self.seed, same=self.spec.episode_student == "same"),
                self.train_split,
                self.dev,
                schedule,
                device,
                seed=self.seed,
            )
            self.loss_teacher.requires_grad_(False)
        self.meta_seconds = history.seconds
        artifacts.write_table("meta_history", history.rows)
        artifacts.write_table(
            "meta_episodes", {"episodes": history.episodes, "kept_episode": history.best_episode}
        )
        artifacts.save_module(
            "loss_teacher",
            self.loss_teacher,
            {
                "kind": TEACHER_KIND,
                "num_classes": self.loss_teacher.num_classes,
                "matrices": int(self.loss_teacher.matrices.shape[0]),
                "nonnegative": self.loss_teacher.nonnegative,
                "state_features": list(STATE_FEATURES),
                "schedule": schedule.__dict__,
                "episode_student": self.spec.episode_student,
                "data_fingerprint": self.data_fingerprint,
                "meta_seconds": round(history.seconds, 3),
                "kept_episode": history.best_episode,
                "episode_dev_accuracy": [row["dev_accuracy"] for row in history.episodes],
            },
        )

    def schedule(self) -> MetaSchedule:
        spec, budget = self.spec, self.budget
        return MetaSchedule(
            episodes=spec.episodes,
            episode_steps=spec.episode_steps or max(1, budget.steps - self.warm_steps),
            unroll=spec.unroll,
            lr=spec.inner_lr or budget.lr,
            batch_size=budget.batch_size,
            teacher_lr=spec.teacher_lr,
            dev_every=budget.steps_per_epoch,
            sharpness=spec.sharpness,
            update=spec.update,
            select_best=spec.select_best,
            warm_start_steps=self.warm_steps,
        )

    # ------------------------------------------------------------------ the student
    def state_vector(self) -> torch.Tensor:
        """``s_t`` as the teacher reads it (see :data:`~distill.teaching.dlf.STATE_FEATURES`)."""
        return self.student_state.vector(self.student_state.seen.float() / max(1, self.budget.steps))

    def on_epoch_start(self, epoch: EpochStart) -> None:
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            inputs, targets = self.dev.inputs.to(epoch.device), self.dev.targets.to(epoch.device)
            correct = sum(
                (self.student(inputs[i : i + 1024]).argmax(dim=1) == targets[i : i + 1024]).sum()
                for i in range(0, len(targets), 1024)
            )
            self.student_state.set_dev_accuracy(correct.float() / len(targets))
            state = self.state_vector()
            weights = self.loss_teacher.weights(state)
            matrix, bias = self.loss_teacher(state)
            diagonal = matrix.diagonal().mean()
            off = (matrix.sum() - matrix.diagonal().sum()) / max(1, matrix.numel() - len(matrix))
            if epoch.epoch < len(self.loss_history):
                self.loss_history[epoch.epoch] = torch.cat(
                    [weights, torch.stack([diagonal, off, bias.mean()])]
                )
        self.student.train(was_training)

    def warming(self) -> bool:
        """Whether the step about to be taken is one of the warm start's (counts it)."""
        if self.warm_steps == 0:
            return False
        if self._steps_taken is None:  # one host read per run; a resumed run continues its count
            self._steps_taken = int(self.student_state.seen)
        self._steps_taken += 1
        return self._steps_taken <= self.warm_steps

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.hard_labels(batch)
        logits = self.student(batch.inputs)
        warming = self.warming()
        if warming:
            loss = F.cross_entropy(logits, batch.targets)
        else:
            with torch.no_grad():
                matrix, bias = self.loss_teacher(self.state_vector())
            loss = dlf_loss(logits, batch.targets, matrix, bias)
        self.student_state.observe(logits.detach(), batch.targets)
        if self.warm_steps == 0:
            return {"dlf": loss}
        zero = loss.new_zeros(())  # the same terms every step: the trainer sums them per epoch
        return {"ce": loss, "dlf": zero} if warming else {"ce": zero, "dlf": loss}

    def finish(self, artifacts: MethodArtifacts) -> dict[str, Any]:
        matrices = int(self.loss_teacher.matrices.shape[0])
        names = [f"attention_{i}" for i in range(matrices)] + ["W_diagonal", "W_off_diagonal", "b_mean"]
        table = [
            {"epoch": epoch + 1, **dict(zip(names, (float(value) for value in row), strict=True))}
            for epoch, row in enumerate(self.loss_history.cpu())
            if not math.isnan(float(row[0]))
        ]
        artifacts.write_table("loss_parameters", table)  # plotted by the application
        if self.spec.loss_teacher is not None:
            teacher = str(self.spec.loss_teacher)
        else:
            teacher = artifacts.module_location("loss_teacher")
        return {
            "loss_teacher": teacher,
            "meta_seconds": round(self.meta_seconds, 3),
            "warm_start_steps": self.warm_steps,
        }


@METHODS.register_factory("l2t-dlf", "learning to teach with dynamic loss functions (Wu et al. 2018)")
def build_l2t_dlf(spec: L2TDLFSpec, context: MethodContext) -> Method:
    require_validation_and_budget(context, "l2t-dlf")
    metadata = None
    if spec.loss_teacher is not None:
        teacher, metadata = load_loss_teacher(
            spec.loss_teacher, context.num_classes, context.owner, context_reader(context)
        )
    else:
        teacher = LossTeacher(
            context.num_classes,
            spec.matrices,
            spec.init_noise,
            seed=context.seed,
            nonnegative=spec.nonnegative,
        )
    teacher = teacher.to(context.example_inputs.device)
    return DynamicLossDistillation(context.student, teacher, spec, context, metadata)

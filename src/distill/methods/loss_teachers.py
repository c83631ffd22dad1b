"""What the learning-to-teach methods share: their saved loss teachers and their preconditions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from distill.errors import CheckpointError, DistillError
from distill.methods.base import Batch, Method, ModuleReader
from distill.methods.registry import MethodContext

LOG = logging.getLogger(__name__)


def check_loss_teacher_kind(
    metadata: dict[str, Any], path: Path | str, kind: str, method: str, owner: str
) -> None:
    """Refuse the loss teacher at ``path`` (``metadata`` its metadata) unless it is of ``kind``."""
    if metadata.get("kind") != kind:
        raise CheckpointError(
            f"{owner}.loss_teacher: {path} is not an {method} loss teacher (its metadata says kind "
            f"{metadata.get('kind')!r}; expected {kind!r})"
        )


def loss_teacher_metadata(
    path: Path, kind: str, method: str, owner: str, reader: ModuleReader
) -> dict[str, Any]:
    """The metadata of the loss teacher saved at ``path`` (read by ``reader``); a missing file or
    a file of another kind is refused with a message naming the recipe field
    (``<owner>.loss_teacher``)."""
    metadata = reader.module_file_metadata(path)
    if metadata is None:
        raise CheckpointError(f"{owner}.loss_teacher: file not found: {path}")
    check_loss_teacher_kind(metadata, path, kind, method, owner)
    return metadata


def context_reader(context: MethodContext) -> ModuleReader:
    """The reader of modules named by path that the application handed the method factory."""
    if context.module_reader is None:
        raise DistillError(f"{context.owner}: loading a saved loss teacher needs a module reader")
    return context.module_reader


def require_validation_and_budget(context: MethodContext, method: str) -> None:
    """Learned-loss teachers learn from a validation split and plan over the student's budget."""
    if context.data is None or context.data.val is None or len(context.data.val) == 0:
        raise DistillError(
            f"{context.owner}: {method} teaches from a validation split; set data.val_fraction > 0"
        )
    if context.budget is None:
        raise DistillError(f"{context.owner}: {method} needs the student's training budget")


def warm_start_steps(requested: int, budget_steps: int) -> int:
    """The cross-entropy steps a learned-loss student takes before its learned loss: the
    ``warm_start_steps`` asked for, unless that leaves no step of the student's budget of
    ``budget_steps`` to the learned loss — then half the budget."""
    return requested if requested < budget_steps else budget_steps // 2


def log_warm_start(method: str, requested: int, steps: int, budget_steps: int) -> None:
    """Say how the student starts; warn when the warm start asked for was cut to half the budget."""
    if steps < requested:
        LOG.warning(
            "%s: warm_start_steps %d would take all of the student's %d steps; warming for %d",
            method,
            requested,
            budget_steps,
            steps,
        )
    elif steps > 0:
        LOG.info("%s: the student's first %d of %d steps are on cross-entropy", method, steps, budget_steps)


def episode_students(
    new_model: Callable[[Any, str, int], nn.Module], seed: int, same: bool = False
) -> Callable[[int], nn.Module]:
    """``episode -> a student`` of the student's architecture for meta-training: with ``same``,
    every episode restarts the run's own student from its initialisation (seed ``seed``);
    otherwise each episode gets a fresh one from its own seed (none equal to the run's)."""
    if same:
        return lambda episode: new_model(None, f"episode{episode}", seed)
    return lambda episode: new_model(None, f"episode{episode}", seed + 7919 * (episode + 1))


class LossTaughtMethod(Method):
    """A student trained on the loss a teacher writes. Only the student is optimized by the
    trainer (the loss teacher, and whatever it adjusts, learn by their own rules), and the
    learned losses are defined on hard labels."""

    method_name = "learned-loss"

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"": list(self.student.parameters())}

    def hard_labels(self, batch: Batch) -> None:
        """Refuse a mixed (mixup) batch, with the recipe field to change."""
        if batch.mixing is not None:
            raise DistillError(
                f"{self.method_name}: the learned loss needs hard labels; set train.augment.mixup_alpha: 0"
            )

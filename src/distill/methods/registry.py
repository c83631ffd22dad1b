"""The method registry and what a method factory receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from distill.data.bundle import DataBundle
from distill.errors import DistillError
from distill.methods.base import ModuleReader, TeacherOutputStore
from distill.registry import SpecRegistry


@dataclass(frozen=True)
class Budget:
    """The student's training budget as the trainer will run it (for methods that plan
    ahead, e.g. a teacher that reads training progress)."""

    epochs: int
    batch_size: int
    steps_per_epoch: int
    lr: float

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class MethodContext:
    """Everything a method factory may need: the student, the teacher (if any), the data shape.

    ``example_inputs`` is a small batch used to infer feature shapes (e.g. for hint regressors).
    ``teacher_cache`` is an opened teacher-output cache when the recipe asks for one.
    ``build_model(spec, owner, seed)`` builds (and checks) a further model for the same data,
    initialized from ``seed`` — for methods with several trainable models (DML peers, ONE
    branches); ``student_spec`` is the student's model spec and ``seed`` the run's seed (the
    student was initialized from it). ``data`` is what the student trains and is validated on
    (for unlabeled-data methods: L followed by U, and V; U's labels are hidden).
    ``budget`` is the student's training budget (epochs, batch size, steps, learning rate).
    ``trained_students`` holds the primary models of the recipe's students trained before this
    one, by name (see :meth:`MethodSpec.depends_on`). ``module_reader`` reads modules a recipe
    names by path (e.g. a saved loss teacher), so that no method opens a file itself.
    """

    student: nn.Module
    teacher: nn.Module | None
    example_inputs: torch.Tensor
    num_classes: int
    owner: str = "method"
    teacher_cache: TeacherOutputStore | None = None
    build_model: Callable[[Any, str, int], nn.Module] | None = None
    student_spec: Any = None
    seed: int = 0
    data: DataBundle | None = None
    trained_students: dict[str, nn.Module] = field(default_factory=dict)
    budget: Budget | None = None
    module_reader: ModuleReader | None = None

    def require_teacher(self, method: str) -> nn.Module:
        """The teacher, or a :class:`~distill.errors.DistillError` saying ``method`` needs one."""
        if self.teacher is None:
            raise DistillError(f"{self.owner}: method '{method}' needs a teacher; add a 'teacher' section")
        return self.teacher

    def new_model(self, spec: Any, owner: str, seed: int) -> nn.Module:
        """A fresh model for ``spec`` (the student's architecture when ``None``) from ``seed``."""
        if self.build_model is None:
            raise ValueError(f"{self.owner}: this method builds further models; give a build_model")
        return self.build_model(self.student_spec if spec is None else spec, owner, seed)


#: Training methods; ``build(spec, context) -> Method``.
METHODS = SpecRegistry("method")

"""The method registry and what a method factory receives."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distill.methods.base import TeacherOutputStore
from distill.registry import SpecRegistry


@dataclass(frozen=True)
class MethodContext:
    """Everything a method factory may need: the student, the teacher (if any), the data shape.

    ``example_inputs`` is a small batch used to infer feature shapes (e.g. for hint regressors).
    ``teacher_cache`` is an opened teacher-output cache when the recipe asks for one.
    """

    student: nn.Module
    teacher: nn.Module | None
    example_inputs: torch.Tensor
    num_classes: int
    owner: str = "method"
    teacher_cache: TeacherOutputStore | None = None


#: Training methods; ``build(spec, context) -> Method``.
METHODS = SpecRegistry("method")

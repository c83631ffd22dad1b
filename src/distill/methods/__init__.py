"""Training methods: each defines one step that turns a batch into named loss terms."""

from distill.methods import (  # noqa: F401  (registration side effects)
    crd,
    ctkd,
    distiller,
    dml,
    kd,
    l2t_dlf,
    l2t_dln,
    moonshine,
    one,
    pseudo,
    reviewkd,
    scratch,
    skd,
    slam,
    weighted,
)
from distill.methods.base import (
    Batch,
    CachedTeacher,
    EpochStart,
    FrozenTeacher,
    Method,
    MethodSpec,
    TeacherOutput,
    TeacherOutputStore,
)
from distill.methods.registry import METHODS, MethodContext


def build_method(spec: MethodSpec, context: MethodContext) -> Method:
    """Instantiate the method ``spec`` names."""
    method = METHODS.get(spec.name).build(spec, context)
    assert isinstance(method, Method)
    return method


__all__ = [
    "METHODS",
    "Batch",
    "CachedTeacher",
    "EpochStart",
    "FrozenTeacher",
    "Method",
    "MethodContext",
    "MethodSpec",
    "TeacherOutput",
    "TeacherOutputStore",
    "build_method",
]

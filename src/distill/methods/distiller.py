"""A student trained with a distiller from the KD-Zero grammar (e.g. one found by ``distill search``).

Loss (Li et al., KD-Zero, NeurIPS 2023: cross-entropy plus the searched distiller)::

    L = ce_weight · CE(y, z_s) + Σ_k w_k · d_k(T_k(K_s), T_k(K_t))

with the terms of :class:`~distill.losses.distiller.Distiller` (``kl`` compares distributions
and carries the ``T²`` of the chain's final ``softmax[T]``/``log_softmax[T]``: ``w·kl`` of
``softmax[T]`` is ``w`` times Hinton's KD at ``T``; see that module). Knowledge inputs are the
logits (``logits``) and the feature pairs listed under ``features``; where a student feature's shape
differs from its teacher feature's, a learned projection maps it onto the teacher's shape (a
1×1 convolution when only channels differ, else a linear map of the flattened feature),
trained with the student. The teacher side is always detached: gradients reach the student
(and its projections) only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from distill.errors import DistillError
from distill.losses import HintRegressor
from distill.losses.distiller import Distiller, Shape, Term
from distill.methods.base import Batch, EpochStart, FrozenTeacher, Method, MethodSpec, Teacher, TeacherOutput
from distill.methods.registry import METHODS, MethodContext
from distill.methods.scratch import classification_loss
from distill.methods.terms import TERMS, LossTerm, LossTermSpec, TermContext, TermInputs
from distill.models.taps import FeatureTaps
from distill.schema import Section

_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"


class FeatureKnowledgeSpec(Section):
    """A feature pair a distiller may use: student and teacher module names, and its name in
    the terms' ``knowledge`` field."""

    name: str = Field(pattern=_NAME)
    student: str
    teacher: str


class TermSpec(Section):
    """One term ``weight · distance(T(K_s), T(K_t))``; ``transforms`` in order of application,
    e.g. ``[softmax:4]`` or ``[spatial_attention, l2_norm]`` (``kl`` after ``softmax:4`` is
    ``weight · 4² · KL(p_t ‖ p_s)``)."""

    knowledge: str = "logits"
    transforms: list[str] = Field(default_factory=list)
    distance: str
    weight: float = Field(default=1.0, gt=0.0)

    @model_validator(mode="after")
    def _known_operations(self) -> TermSpec:
        try:
            self.term()
        except DistillError as error:
            raise ValueError(str(error)) from None
        return self

    def term(self) -> Term:
        return Term.from_dict(self.model_dump())


def unique_feature_names(features: list[FeatureKnowledgeSpec]) -> list[FeatureKnowledgeSpec]:
    names = [feature.name for feature in features]
    if "logits" in names or len(set(names)) != len(names):
        raise ValueError(f"feature names must be unique and not 'logits', got {names}")
    return features


def check_knowledge(terms: list[TermSpec], features: list[FeatureKnowledgeSpec]) -> None:
    """Every term reads ``logits`` or a feature named under ``features``."""
    known = {"logits", *(feature.name for feature in features)}
    for index, term in enumerate(terms):
        if term.knowledge not in known:
            raise ValueError(
                f"terms[{index}].knowledge: '{term.knowledge}' is not 'logits' or a name under "
                f"'features' ({', '.join(sorted(known))})"
            )


class DistillerSpec(MethodSpec):
    """``distiller``: cross-entropy plus a KD-Zero distiller (a sum of terms)."""

    name: Literal["distiller"] = "distiller"
    terms: list[TermSpec] = Field(min_length=1)
    ce_weight: float = Field(default=1.0, ge=0.0)
    features: list[FeatureKnowledgeSpec] = Field(default_factory=list)

    uses_teacher: ClassVar[bool] = True

    @field_validator("features")
    @classmethod
    def _unique_feature_names(cls, features: list[FeatureKnowledgeSpec]) -> list[FeatureKnowledgeSpec]:
        return unique_feature_names(features)

    @model_validator(mode="after")
    def _knowledge_exists(self) -> DistillerSpec:
        check_knowledge(self.terms, self.features)
        return self

    def distiller(self) -> Distiller:
        return Distiller(tuple(term.term() for term in self.terms))


def feature_projection(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module | None:
    """What maps a student feature onto its teacher feature's shape: nothing when they agree,
    a 1×1 convolution (FitNet's regressor) when only the channels differ, else a linear map of
    the flattened feature reshaped to the teacher's."""
    if tuple(student_shape[1:]) == tuple(teacher_shape[1:]):
        return None
    if len(student_shape) == len(teacher_shape) and tuple(student_shape[2:]) == tuple(teacher_shape[2:]):
        return HintRegressor(student_shape, teacher_shape)
    return _FlatProjection(student_shape, teacher_shape)


class _FlatProjection(nn.Module):
    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size) -> None:
        super().__init__()
        self.shape = tuple(teacher_shape[1:])
        self.linear = nn.Linear(
            int(torch.Size(student_shape[1:]).numel()), int(torch.Size(self.shape).numel())
        )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.linear(feature.reshape(feature.shape[0], -1)).reshape(feature.shape[0], *self.shape)


class DistillerKnowledge(nn.Module):
    """A distiller with what it reads: the student's logits and tapped features (projected onto
    the teacher's shapes where they differ), the teacher's raw logits and features. Shapes are
    checked once, on example outputs, when it is built."""

    def __init__(
        self,
        distiller: Distiller,
        features: list[FeatureKnowledgeSpec],
        student_shapes: dict[str, torch.Size],
        teacher_shapes: dict[str, torch.Size],
        logits_shape: Shape,
    ) -> None:
        super().__init__()
        self.distiller = distiller
        self.features = list(features)
        self.projections = nn.ModuleDict()
        shapes: dict[str, Shape] = {"logits": logits_shape}
        for pair in self.features:
            teacher_shape = teacher_shapes[pair.teacher]
            projection = feature_projection(student_shapes[pair.student], teacher_shape)
            if projection is not None:
                self.projections[pair.name] = projection
            shapes[pair.name] = tuple(teacher_shape)
        distiller.check(shapes)

    def knowledge(
        self,
        student_logits: torch.Tensor,
        student_features: Mapping[str, torch.Tensor],
        teacher: TeacherOutput,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Student and teacher knowledge tensors by name."""
        if teacher.logits is None:
            raise ValueError(
                "a distiller transforms the teacher's raw logits; it cannot read a teacher-output cache"
            )
        student: dict[str, torch.Tensor] = {"logits": student_logits}
        teacher_knowledge = {"logits": teacher.logits}
        for pair in self.features:
            feature = student_features[pair.student]
            if pair.name in self.projections:
                feature = self.projections[pair.name](feature)
            student[pair.name] = feature
            teacher_knowledge[pair.name] = teacher.features[pair.teacher]
        return student, teacher_knowledge

    def losses(
        self,
        student_logits: torch.Tensor,
        student_features: Mapping[str, torch.Tensor],
        teacher: TeacherOutput,
    ) -> list[torch.Tensor]:
        """The distiller's weighted terms, in order."""
        return self.distiller.losses(*self.knowledge(student_logits, student_features, teacher))


def _example_shapes(
    student: nn.Module,
    student_taps: FeatureTaps,
    teacher: Teacher,
    example_inputs: torch.Tensor,
) -> tuple[Shape, dict[str, torch.Size], dict[str, torch.Size]]:
    was_training = student.training
    student.eval()
    with torch.no_grad():
        logits = student(example_inputs)
    student_shapes = {name: value.shape for name, value in student_taps.features.items()}
    student.train(was_training)
    teacher_shapes = {name: value.shape for name, value in teacher(example_inputs, None).features.items()}
    return tuple(logits.shape), student_shapes, teacher_shapes


class DistillerMethod(Method):
    """Student trained on ``ce_weight · CE`` plus a :class:`~distill.losses.distiller.Distiller`.

    ``teacher`` is any :class:`~distill.methods.base.Teacher`. Shapes are checked on ``example_inputs`` before
    training.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: Teacher,
        distiller: Distiller,
        ce_weight: float,
        features: list[FeatureKnowledgeSpec],
        example_inputs: torch.Tensor,
        owner: str = "method",
    ) -> None:
        super().__init__(student)
        self.teacher = teacher
        self.ce_weight = ce_weight
        self.student_taps = FeatureTaps(
            student, [pair.student for pair in features], owner=f"{owner}.features (student)"
        )
        shapes = _example_shapes(student, self.student_taps, teacher, example_inputs)
        try:
            self.reader = DistillerKnowledge(distiller, features, shapes[1], shapes[2], shapes[0])
        except DistillError as error:
            raise DistillError(f"{owner}.{error}") from None

    @property
    def distiller(self) -> Distiller:
        return self.reader.distiller

    @property
    def projections(self) -> nn.ModuleDict:
        return self.reader.projections

    def on_epoch_start(self, epoch: EpochStart) -> None:
        self.teacher.prepare(epoch)

    def knowledge(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Student and teacher knowledge tensors by name for ``batch`` (the student's forward)."""
        teacher = self.teacher(batch.inputs, batch)
        logits = self.student(batch.inputs)
        return self.reader.knowledge(logits, self.student_taps.features, teacher)

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        student, teacher = self.knowledge(batch)
        terms: dict[str, torch.Tensor] = {}
        if self.ce_weight:
            terms["ce"] = self.ce_weight * classification_loss(student["logits"], batch)
        for index, loss in enumerate(self.distiller.losses(student, teacher)):
            terms[f"d{index}:{self.distiller.terms[index].distance}"] = loss
        return terms


class DistillerTermSpec(LossTermSpec):
    """``distiller`` as a loss term of ``kd``: a KD-Zero distiller (``terms``, over ``logits``
    and the named ``features``) beside other terms, weighted as a whole by ``weight``."""

    name: Literal["distiller"] = "distiller"
    terms: list[TermSpec] = Field(min_length=1)
    features: list[FeatureKnowledgeSpec] = Field(default_factory=list)

    @field_validator("features")
    @classmethod
    def _unique_feature_names(cls, features: list[FeatureKnowledgeSpec]) -> list[FeatureKnowledgeSpec]:
        return unique_feature_names(features)

    @model_validator(mode="after")
    def _knowledge_exists(self) -> DistillerTermSpec:
        check_knowledge(self.terms, self.features)
        return self

    def needs_full_distribution(self) -> bool:
        return True

    def reads_raw_logits(self) -> bool:
        return True

    def student_layers(self) -> list[str]:
        return [pair.student for pair in self.features]

    def teacher_layers(self) -> list[str]:
        return [pair.teacher for pair in self.features]


class _DistillerTerm(LossTerm):
    spec: DistillerTermSpec

    def __init__(self, spec: DistillerTermSpec, reader: DistillerKnowledge) -> None:
        super().__init__(spec)
        self.reader = reader

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        if inputs.teacher is None:
            raise ValueError("a distiller reads the teacher, but the method has none")
        return total_loss_of(
            self.reader.losses(inputs.student_logits, inputs.student_features, inputs.teacher)
        )


def total_loss_of(losses: list[torch.Tensor]) -> torch.Tensor:
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    return total


@TERMS.register_factory("distiller", "a KD-Zero distiller: Σ w·d(T(student), T(teacher)) (Li et al. 2023)")
def _build_distiller_term(spec: DistillerTermSpec, context: TermContext) -> LossTerm:
    distiller = Distiller(tuple(term.term() for term in spec.terms))
    logits_shape = tuple(context.logits_shape)
    student_shapes = dict(context.student_shapes)
    teacher_shapes = dict(context.teacher_shapes)
    try:
        reader = DistillerKnowledge(distiller, spec.features, student_shapes, teacher_shapes, logits_shape)
    except DistillError as error:
        raise ValueError(str(error)) from None
    return _DistillerTerm(spec, reader)


@METHODS.register_factory(
    "distiller", "CE + a KD-Zero distiller: Σ w·d(T(student), T(teacher)) (Li et al. 2023)"
)
def build_distiller(spec: DistillerSpec, context: MethodContext) -> Method:
    teacher = FrozenTeacher(context.require_teacher("distiller"), [pair.teacher for pair in spec.features])
    return DistillerMethod(
        context.student,
        teacher,
        spec.distiller(),
        spec.ce_weight,
        spec.features,
        context.example_inputs,
        owner=context.owner,
    )

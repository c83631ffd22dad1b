"""Offline knowledge distillation from a frozen teacher, with optional feature terms.

Loss (Hinton et al. 2015, Sec. 2; see :func:`distill.losses.kd_loss`)::

    L = ce_weight · CE(y, s(x̃)) + kd_weight · T² · KL(σ(t(x̃)/T) ‖ σ(s(x̃)/T))
        + Σ_pairs weight · feature_loss(student_layer(x̃), teacher_layer(x̃))

where ``x̃`` is the augmented batch: student and teacher always see the *same* input, which is
what makes distillation on mixup/shifted inputs "function matching" (Beyer et al., CVPR 2022).
When the student's recipe sets ``teacher_cache``, the teacher's outputs come from a
memory-mapped teacher-output cache (:mod:`distill.engine.cache`) that replays each augmentation
draw exactly. Feature pairs use FitNet hints (Romero et al. 2015, Eq. 3) or attention transfer
(Zagoruyko & Komodakis 2017, Eq. 2); an attention pair's ``weight`` is the paper's β, by default
on the map-size-free scale (``beta_scale: size_free``, pull β/N_ref per sample at any map size;
``raw`` is the authors' code, β/N — see :mod:`distill.losses.attention`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from distill.errors import DistillError
from distill.losses import HintRegressor, attention_transfer_loss, fitnet_hint_loss, weighted
from distill.losses.attention import AttentionScale
from distill.methods.base import (
    Batch,
    CachedTeacher,
    EpochStart,
    FrozenTeacher,
    Method,
    MethodSpec,
    Teacher,
    TeacherOutputStore,
)
from distill.methods.registry import METHODS, MethodContext
from distill.methods.scratch import classification_loss
from distill.models.taps import FeatureTaps
from distill.schema import Section


class FeaturePairSpec(Section):
    """One feature-matching term between a student layer and a teacher layer (module names)."""

    student: str
    teacher: str
    loss: Literal["hint", "attention"] = "hint"
    weight: float = Field(default=1.0, ge=0.0)
    beta_scale: AttentionScale = "size_free"

    @model_validator(mode="after")
    def _scale_is_for_attention(self) -> FeaturePairSpec:
        if self.loss != "attention" and "beta_scale" in self.model_fields_set:
            raise ValueError("beta_scale applies to attention pairs only (loss: attention)")
        return self


class KDSpec(MethodSpec):
    """``kd``: cross-entropy + Hinton KD (+ optional hint / attention-transfer feature terms)."""

    name: Literal["kd"] = "kd"
    temperature: float = Field(default=4.0, gt=0.0)
    kd_weight: float = Field(default=0.9, ge=0.0)
    ce_weight: float = Field(default=0.1, ge=0.0)
    features: list[FeaturePairSpec] = Field(default_factory=list)
    teacher_precision: Literal["float32", "bfloat16"] = "float32"

    uses_teacher: ClassVar[bool] = True

    @model_validator(mode="after")
    def _some_term_isweighted(self) -> KDSpec:
        if not (self.kd_weight or self.ce_weight or any(pair.weight for pair in self.features)):
            raise ValueError("every loss weight is 0; give kd_weight, ce_weight or a feature weight > 0")
        return self

    def cacheable_temperature(self) -> float | None:
        return self.temperature

    def cached_teacher_layers(self) -> list[str]:
        return [pair.teacher for pair in self.features]


class KnowledgeDistillation(Method):
    """Student trained against a frozen teacher's softened outputs (and tapped features)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        temperature: float,
        kd_weight: float,
        ce_weight: float,
        features: list[FeaturePairSpec],
        example_inputs: torch.Tensor,
        owner: str = "method",
        teacher_cache: TeacherOutputStore | None = None,
        teacher_precision: str = "float32",
    ) -> None:
        super().__init__(student)
        self.temperature = temperature
        self.kd_weight = kd_weight
        self.ce_weight = ce_weight
        self.pairs = list(features)
        self.live_teacher = FrozenTeacher(teacher, [pair.teacher for pair in self.pairs], teacher_precision)
        self.teacher: Teacher = self.live_teacher
        if teacher_cache is not None:
            self.teacher = CachedTeacher(self.live_teacher, teacher_cache)
        self.student_taps = FeatureTaps(
            student, [pair.student for pair in self.pairs], owner=f"{owner}.features (student)"
        )
        self.regressors = nn.ModuleDict()
        if self.pairs:
            self._build_regressors(example_inputs, owner)

    def _build_regressors(self, example_inputs: torch.Tensor, owner: str) -> None:
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            self.student(example_inputs)
        student_features = dict(self.student_taps.features)
        teacher_features = self.live_teacher(example_inputs).features
        self.student.train(was_training)
        for index, pair in enumerate(self.pairs):
            student_shape = student_features[pair.student].shape
            teacher_shape = teacher_features[pair.teacher].shape
            try:
                if pair.loss == "hint":
                    self.regressors[str(index)] = HintRegressor(student_shape, teacher_shape)
                elif student_shape[2:] != teacher_shape[2:] or len(student_shape) < 3:
                    raise ValueError(
                        f"attention transfer needs (batch, C, *spatial) features of equal "
                        f"spatial size, got student {tuple(student_shape)} and teacher "
                        f"{tuple(teacher_shape)}"
                    )
            except ValueError as error:
                raise DistillError(f"{owner}.features[{index}]: {error}") from None

    def on_epoch_start(self, epoch: EpochStart) -> None:
        self.teacher.prepare(epoch)

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        teacher = self.teacher(batch.inputs, batch)
        student_logits = self.student(batch.inputs)
        terms: dict[str, torch.Tensor] = {}
        if self.kd_weight:
            terms["kd"] = teacher.kd_loss(student_logits, self.temperature, self.kd_weight)
        if self.ce_weight:
            terms["ce"] = weighted(self.ce_weight, classification_loss(student_logits, batch))
        for index, pair in enumerate(self.pairs):
            student_feature = self.student_taps.features[pair.student]
            teacher_feature = teacher.features[pair.teacher]
            if pair.loss == "hint":
                regressed = self.regressors[str(index)](student_feature)
                term = fitnet_hint_loss(regressed, teacher_feature)
            else:
                term = attention_transfer_loss(student_feature, teacher_feature, scale=pair.beta_scale)
            terms[f"{pair.loss}:{pair.student}"] = weighted(pair.weight, term)
        return terms


@METHODS.register_factory("kd", "Hinton KD from a frozen teacher, optional FitNet/attention feature terms")
def build_kd(spec: KDSpec, context: MethodContext) -> Method:
    if context.teacher is None:
        raise DistillError(f"{context.owner}: method 'kd' needs a teacher; add a 'teacher' section")
    return KnowledgeDistillation(
        context.student,
        context.teacher,
        spec.temperature,
        spec.kd_weight,
        spec.ce_weight,
        spec.features,
        context.example_inputs,
        owner=context.owner,
        teacher_cache=context.teacher_cache,
        teacher_precision=spec.teacher_precision,
    )

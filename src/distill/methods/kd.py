"""Offline knowledge distillation from a frozen teacher: a weighted sum of loss terms.

The loss is a sum of registered terms (:mod:`distill.methods.terms`), each with its weight::

    L = Σ_i weight_i · term_i(student(x̃), teacher(x̃), tapped layers)

e.g. Hinton KD (Hinton et al. 2015, Sec. 2) ``ce_weight · CE + kd_weight · T²·KL(σ(t/T) ‖ σ(s/T))``
plus feature terms — FitNet hints (Romero et al. 2015, Eq. 3), attention transfer (Zagoruyko &
Komodakis 2017, Eq. 2) — or DKD, DIST, MLKD, RKD, PKT, SP. A recipe either lists ``terms``, or
keeps the classic fields ``temperature``/``kd_weight``/``ce_weight``/``features``, which mean
the terms ``kd``, ``ce`` and one ``hint``/``attention`` term per feature pair.

``x̃`` is the augmented batch: student and teacher always see the *same* input, which is what
makes distillation on mixup/shifted inputs "function matching" (Beyer et al., CVPR 2022). When
the student's recipe sets ``teacher_cache``, the teacher's outputs come from a memory-mapped
teacher-output cache (:mod:`distill.engine.cache`) that replays each augmentation draw exactly;
logit terms other than plain KD read the cached distribution as logits up to a per-sample
constant (exact for every softmax), so they work from the cache too, unless it keeps only the
top k classes. An attention pair's ``weight`` is the paper's β, by default on the map-size-free
scale (``beta_scale: size_free``; ``raw`` is the authors' code — see
:mod:`distill.losses.attention`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, SerializeAsAny, TypeAdapter, field_validator, model_validator
from torch import nn

from distill.errors import DistillError
from distill.losses import weighted
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
from distill.methods.terms import (
    TERMS,
    AttentionTermSpec,
    CrossEntropyTermSpec,
    HintTermSpec,
    KDTermSpec,
    LossTerm,
    LossTermSpec,
    TermContext,
    TermInputs,
    build_term,
)
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
        if self.loss != "attention" and self.off_default("beta_scale"):
            raise ValueError("beta_scale applies to attention pairs only (loss: attention)")
        return self

    def term(self) -> LossTermSpec:
        """The pair as the loss term it stands for (``hint`` or ``attention``)."""
        if self.loss == "hint":
            return HintTermSpec(student=self.student, teacher=self.teacher, weight=self.weight)
        return AttentionTermSpec(
            student=self.student, teacher=self.teacher, weight=self.weight, beta_scale=self.beta_scale
        )


class KDSpec(MethodSpec):
    """``kd``: a weighted sum of loss terms against a frozen teacher — ``terms``, or the classic
    Hinton KD fields (cross-entropy + KD, optional hint / attention-transfer feature pairs)."""

    name: Literal["kd"] = "kd"
    temperature: float = Field(default=4.0, gt=0.0)
    kd_weight: float = Field(default=0.9, ge=0.0)
    ce_weight: float = Field(default=0.1, ge=0.0)
    features: list[FeaturePairSpec] = Field(default_factory=list)
    #: the loss as registered terms (instead of the four classic fields)
    terms: list[SerializeAsAny[LossTermSpec]] | None = None
    teacher_precision: Literal["float32", "bfloat16"] = "float32"

    uses_teacher: ClassVar[bool] = True

    @field_validator("terms", mode="before")
    @classmethod
    def _registered_terms(cls, terms: Any) -> Any:
        """Validate each term against every term registered *now* (plugins included)."""
        if terms is None:
            return None
        return TypeAdapter(list[TERMS.union("loss term")]).validate_python(terms)  # type: ignore[misc]

    @model_validator(mode="after")
    def _terms_are_consistent(self) -> KDSpec:
        if self.terms is not None:
            classic = self.off_default("ce_weight", "features", "kd_weight", "temperature")
            if classic:
                raise ValueError(
                    f"give the loss either as 'terms' or with {', '.join(classic)}, not both "
                    "(a 'kd' term has its own temperature and weight)"
                )
            if not self.terms:
                raise ValueError("terms: give at least one loss term")
        labels = [term.label() for term in self.resolved_terms()]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(
                f"terms: {', '.join(repeated)} appear(s) twice; each term is reported by its name"
            )
        if not any(term.weight for term in self.resolved_terms()):
            raise ValueError("every loss weight is 0; give kd_weight, ce_weight or a feature weight > 0")
        return self

    def resolved_terms(self) -> list[LossTermSpec]:
        """The loss as terms: ``terms`` as given, or the classic fields as terms."""
        return [term for _, term in self.located_terms()]

    def located_terms(self) -> list[tuple[str, LossTermSpec]]:
        """Each term with the recipe field it comes from (``terms[2]``, ``features[0]``, …)."""
        if self.terms is not None:
            return [(f"terms[{index}]", term) for index, term in enumerate(self.terms)]
        return [
            ("kd_weight", KDTermSpec(temperature=self.temperature, weight=self.kd_weight)),
            ("ce_weight", CrossEntropyTermSpec(weight=self.ce_weight)),
            *((f"features[{index}]", pair.term()) for index, pair in enumerate(self.features)),
        ]

    def cacheable_temperature(self) -> float | None:
        """A ``kd`` term's temperature (so its cached fast path applies), else 1: the cache keeps
        the whole distribution, which serves every logit term at any temperature."""
        if any(term.reads_raw_logits() for term in self.active_terms()):
            return None
        kd_terms = [term for term in self.active_terms() if isinstance(term, KDTermSpec)]
        return kd_terms[0].temperature if kd_terms else 1.0

    def cached_teacher_layers(self) -> list[str]:
        return list(dict.fromkeys(layer for term in self.active_terms() for layer in term.teacher_layers()))

    def terms_needing_full_distribution(self) -> list[str]:
        return [term.label() for term in self.active_terms() if term.needs_full_distribution()]

    def active_terms(self) -> list[LossTermSpec]:
        """The terms with a weight above 0 (a zero weight drops a term)."""
        return [term for term in self.resolved_terms() if term.weight]


class KnowledgeDistillation(Method):
    """Student trained against a frozen teacher by a weighted sum of loss terms."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        terms: list[tuple[str, LossTermSpec]],
        example_inputs: torch.Tensor,
        num_classes: int,
        owner: str = "method",
        teacher_cache: TeacherOutputStore | None = None,
        teacher_precision: str = "float32",
    ) -> None:
        """``terms``: each term with the recipe field it comes from (for error messages); terms
        of weight 0 are dropped."""
        super().__init__(student)
        located = [(field, spec) for field, spec in terms if spec.weight]
        self.specs = [spec for _, spec in located]
        self.fields = [field for field, _ in located]
        student_layers = list(dict.fromkeys(layer for spec in self.specs for layer in spec.student_layers()))
        teacher_layers = list(dict.fromkeys(layer for spec in self.specs for layer in spec.teacher_layers()))
        self.live_teacher = FrozenTeacher(teacher, teacher_layers, teacher_precision)
        self.teacher: Teacher = self.live_teacher
        if teacher_cache is not None:
            keep = any(spec.needs_full_distribution() for spec in self.specs)
            self.teacher = CachedTeacher(self.live_teacher, teacher_cache, keep_log_probs=keep)
        self.student_taps = FeatureTaps(student, student_layers, owner=f"{owner} (student layers)")
        self.terms = nn.ModuleList(
            self._build_terms(example_inputs, num_classes, owner, bool(student_layers or teacher_layers))
        )
        self.epoch = 0

    def _build_terms(
        self, example_inputs: torch.Tensor, num_classes: int, owner: str, tapped: bool
    ) -> list[LossTerm]:
        # one forward pass of each model gives the logits' and the tapped layers' shapes
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            logits_shape = self.student(example_inputs).shape
        student_shapes = {name: value.shape for name, value in self.student_taps.features.items()}
        self.student.train(was_training)
        teacher_shapes: dict[str, torch.Size] = {}
        if tapped:
            teacher_shapes = {
                name: value.shape for name, value in self.live_teacher(example_inputs).features.items()
            }
        built = []
        for field, spec in zip(self.fields, self.specs, strict=True):
            context = TermContext(
                student_shapes, teacher_shapes, logits_shape, num_classes, f"{owner}.{field}"
            )
            try:
                built.append(build_term(spec, context))
            except ValueError as error:
                raise DistillError(f"{owner}.{field}: {error}") from None
        return built

    def on_epoch_start(self, epoch: EpochStart) -> None:
        self.epoch = epoch.epoch
        self.teacher.prepare(epoch)

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        teacher = self.teacher(batch.inputs, batch)
        student_logits = self.student(batch.inputs)
        inputs = TermInputs(batch, student_logits, teacher, self.student_taps.features, self.epoch)
        terms: dict[str, torch.Tensor] = {}
        for term in self.terms:
            assert isinstance(term, LossTerm)
            terms[term.spec.label()] = weighted(term.spec.weight, term(inputs))
        return terms


@METHODS.register_factory(
    "kd", "weighted loss terms against a frozen teacher: Hinton KD, DKD, DIST, MLKD, hints, …"
)
def build_kd(spec: KDSpec, context: MethodContext) -> Method:
    teacher = context.require_teacher("kd")
    method = KnowledgeDistillation(
        context.student,
        teacher,
        spec.located_terms(),
        context.example_inputs,
        context.num_classes,
        owner=context.owner,
        teacher_cache=context.teacher_cache,
        teacher_precision=spec.teacher_precision,
    )
    return method

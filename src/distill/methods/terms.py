"""Composable loss terms: the one registry a recipe names distillation terms from.

A ``kd`` recipe lists its loss as weighted, typed terms, validated before anything trains::

    method:
      name: kd
      terms:
        - {name: ce, weight: 1.0}
        - {name: dkd, alpha: 1.0, beta: 8.0, temperature: 4.0, warmup_epochs: 20}
        - {name: rkd, student: pool, teacher: pool, weight: 1.0}

Each term is registered once, beside its definition, with ``@TERMS.register_factory(name,
sentence)`` on a factory ``build(spec: ItsSpec, context: TermContext) -> LossTerm``; a plugin
registers its own the same way and a recipe can use it at once (``distill list`` prints them).
A spec says what the term reads — the student's logits, the teacher's output, tapped student and
teacher layers (module names) — so the method taps exactly those layers, a teacher-output cache
stores exactly those teacher layers, and a recipe that asks a top-k cache for a term that needs
the teacher's whole distribution is refused at validation.

A term returns its *unweighted* value; the method multiplies by ``weight`` and reports it under
the term's :meth:`LossTermSpec.label` (``kd``, ``ce``, ``dkd``, ``hint:layer2``, …). The loss
functions themselves live in :mod:`distill.losses`; a term adapts one to the method's inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from distill.losses import HintRegressor, attention_transfer_loss, fitnet_hint_loss
from distill.losses.attention import AttentionScale
from distill.losses.logit import (
    MLKD_TEMPERATURES,
    dist_loss,
    dkd_loss,
    multilevel_logit_loss,
    standardize_logits,
)
from distill.losses.relational import pkt_loss, rkd_loss, sp_loss
from distill.methods.base import Batch, TeacherOutput
from distill.methods.scratch import classification_loss
from distill.registry import SpecRegistry
from distill.schema import Section

#: Loss terms a ``kd`` recipe can name; ``build(spec, context) -> LossTerm``.
TERMS = SpecRegistry("loss term")


class LossTermSpec(Section):
    """Base of every term: its registry ``name`` and its ``weight`` in the sum."""

    name: str
    weight: float = Field(default=1.0, ge=0.0)

    #: reads the teacher's output (logits, or a cache's distribution)
    reads_teacher: ClassVar[bool] = True

    def needs_full_distribution(self) -> bool:
        """Whether the term needs the teacher's whole class distribution (a top-k
        teacher-output cache cannot serve it)."""
        return True

    def reads_raw_logits(self) -> bool:
        """Whether the term transforms the teacher's raw logits in ways a per-sample shift
        changes (then no teacher-output cache can serve it)."""
        return False

    def student_layers(self) -> list[str]:
        """Student modules whose outputs the term reads."""
        return []

    def teacher_layers(self) -> list[str]:
        """Teacher modules whose outputs the term reads."""
        return []

    def label(self) -> str:
        """The name the term's value is reported under (unique within a recipe's terms)."""
        return self.name


class LayerPairSpec(LossTermSpec):
    """A term between one student layer and one teacher layer (module names)."""

    student: str
    teacher: str

    def needs_full_distribution(self) -> bool:
        return False

    def student_layers(self) -> list[str]:
        return [self.student]

    def teacher_layers(self) -> list[str]:
        return [self.teacher]

    def label(self) -> str:
        return f"{self.name}:{self.student}"


@dataclass(frozen=True)
class TermContext:
    """What a term factory may need: example feature shapes (from one forward pass of each model
    on a small batch), the number of classes and where in the recipe the term is."""

    student_shapes: Mapping[str, torch.Size]
    teacher_shapes: Mapping[str, torch.Size]
    logits_shape: torch.Size
    num_classes: int
    owner: str = "method.terms"


@dataclass(frozen=True)
class TermInputs:
    """One batch as a term sees it. ``epoch`` is 0-based (for warm-ups)."""

    batch: Batch
    student_logits: torch.Tensor
    teacher: TeacherOutput | None
    student_features: Mapping[str, torch.Tensor] = field(default_factory=dict)
    epoch: int = 0

    def teacher_logits(self) -> torch.Tensor:
        """The teacher's logits — from a cache, up to a per-sample constant, which no softmax and
        no standardization can see (see :meth:`TeacherOutput.logits_up_to_shift`)."""
        if self.teacher is None:
            raise ValueError("this term reads the teacher, but the method has none")
        return self.teacher.logits_up_to_shift()

    def teacher_feature(self, layer: str) -> torch.Tensor:
        if self.teacher is None:
            raise ValueError("this term reads the teacher, but the method has none")
        return self.teacher.features[layer]


class LossTerm(nn.Module):
    """A built term: ``forward(inputs)`` is its unweighted value. Parameters it owns (a hint
    regressor) train with the student and are saved with the method."""

    spec: LossTermSpec

    def __init__(self, spec: LossTermSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        raise NotImplementedError


def build_term(spec: LossTermSpec, context: TermContext) -> LossTerm:
    """Instantiate the term ``spec`` names."""
    term = TERMS.get(spec.name).build(spec, context)
    assert isinstance(term, LossTerm)
    return term


def _maybe_standardized(logits: torch.Tensor, standardize: bool) -> torch.Tensor:
    return standardize_logits(logits) if standardize else logits


def dkd_warmup(epoch: int, warmup_epochs: int) -> float:
    """DKD's linear warm-up factor ``min(epoch / warmup, 1)`` with mdistiller's 1-based epochs
    (``epoch`` here is 0-based: the first epoch already has factor ``1/warmup``)."""
    return 1.0 if warmup_epochs <= 0 else min((epoch + 1) / warmup_epochs, 1.0)


# ------------------------------------------------------------------------------------------- ce


class CrossEntropyTermSpec(LossTermSpec):
    """``ce``: cross-entropy with the labels (mixed labels under mixup)."""

    name: Literal["ce"] = "ce"
    reads_teacher: ClassVar[bool] = False

    def needs_full_distribution(self) -> bool:
        return False


class _CrossEntropy(LossTerm):
    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return classification_loss(inputs.student_logits, inputs.batch)


@TERMS.register_factory("ce", "cross-entropy with the (possibly mixed) labels")
def _build_ce(spec: CrossEntropyTermSpec, context: TermContext) -> LossTerm:
    return _CrossEntropy(spec)


# ------------------------------------------------------------------------------------------- kd


class KDTermSpec(LossTermSpec):
    """``kd``: Hinton KD, ``T²·KL(σ(t/T) ‖ σ(s/T))`` (Hinton et al. 2015, Sec. 2). With
    ``standardize`` both logits are z-scored per sample first (logit standardization, Sun et
    al., CVPR 2024)."""

    name: Literal["kd"] = "kd"
    temperature: float = Field(default=4.0, gt=0.0)
    standardize: bool = False

    def needs_full_distribution(self) -> bool:
        return self.standardize  # plain KD is served by any cache, top-k included


class _HintonKD(LossTerm):
    spec: KDTermSpec

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        assert inputs.teacher is not None
        if not self.spec.standardize:  # the teacher's own form: a cache's fast path included
            return inputs.teacher.kd_loss(inputs.student_logits, self.spec.temperature)
        from distill.losses import kd_loss

        return kd_loss(
            standardize_logits(inputs.student_logits),
            standardize_logits(inputs.teacher_logits()),
            self.spec.temperature,
        )


@TERMS.register_factory("kd", "Hinton KD: T²·KL between temperature-softened outputs (Hinton et al. 2015)")
def _build_kd(spec: KDTermSpec, context: TermContext) -> LossTerm:
    return _HintonKD(spec)


# ------------------------------------------------------------------------------------------ dkd


class DKDTermSpec(LossTermSpec):
    """``dkd``: Decoupled KD, ``α·TCKD + β·NCKD`` (Zhao et al., CVPR 2022, Eqs. 1–7), times the
    linear warm-up ``min(epoch/warmup_epochs, 1)`` of mdistiller; defaults are its CIFAR-100
    settings (α 1, β 8, T 4, 20 warm-up epochs)."""

    name: Literal["dkd"] = "dkd"
    alpha: float = Field(default=1.0, ge=0.0)
    beta: float = Field(default=8.0, ge=0.0)
    temperature: float = Field(default=4.0, gt=0.0)
    warmup_epochs: int = Field(default=20, ge=0)
    standardize: bool = False


class _DecoupledKD(LossTerm):
    spec: DKDTermSpec

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        spec = self.spec
        loss = dkd_loss(
            _maybe_standardized(inputs.student_logits, spec.standardize),
            _maybe_standardized(inputs.teacher_logits(), spec.standardize),
            inputs.batch.targets,
            spec.alpha,
            spec.beta,
            spec.temperature,
        )
        return dkd_warmup(inputs.epoch, spec.warmup_epochs) * loss


@TERMS.register_factory("dkd", "decoupled KD: α·TCKD + β·NCKD with warm-up (Zhao et al. 2022)")
def _build_dkd(spec: DKDTermSpec, context: TermContext) -> LossTerm:
    return _DecoupledKD(spec)


# ----------------------------------------------------------------------------------------- dist


class DISTTermSpec(LossTermSpec):
    """``dist``: DIST, ``β·(1 − inter-class Pearson) + γ·(1 − intra-class Pearson)`` of the
    softened probabilities, each times ``T²`` (Huang et al., NeurIPS 2022)."""

    name: Literal["dist"] = "dist"
    beta: float = Field(default=1.0, ge=0.0)
    gamma: float = Field(default=1.0, ge=0.0)
    temperature: float = Field(default=1.0, gt=0.0)


class _DIST(LossTerm):
    spec: DISTTermSpec

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        spec = self.spec
        return dist_loss(
            inputs.student_logits, inputs.teacher_logits(), spec.beta, spec.gamma, spec.temperature
        )


@TERMS.register_factory("dist", "DIST: inter- and intra-class Pearson relations (Huang et al. 2022)")
def _build_dist(spec: DISTTermSpec, context: TermContext) -> LossTerm:
    return _DIST(spec)


# ----------------------------------------------------------------------------------------- mlkd


class MLKDTermSpec(LossTermSpec):
    """``mlkd``: multi-level logit distillation — instance, batch and class alignment summed
    over ``temperatures``, with the official confidence masks (Jin et al., CVPR 2023). One view:
    the batch the trainer augments (the official strong-view instance term needs a second
    augmentation of every batch and is not included)."""

    name: Literal["mlkd"] = "mlkd"
    temperatures: list[float] = Field(default_factory=lambda: list(MLKD_TEMPERATURES), min_length=1)
    masked: bool = True
    standardize: bool = False

    @field_validator("temperatures")
    @classmethod
    def _positive(cls, temperatures: list[float]) -> list[float]:
        if any(value <= 0 for value in temperatures):
            raise ValueError(f"temperatures must all be > 0, got {temperatures}")
        return temperatures


class _MultiLevelKD(LossTerm):
    spec: MLKDTermSpec

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        spec = self.spec
        levels = multilevel_logit_loss(
            _maybe_standardized(inputs.student_logits, spec.standardize),
            _maybe_standardized(inputs.teacher_logits(), spec.standardize),
            spec.temperatures,
            spec.masked,
        )
        return levels.instance + levels.batch + levels.class_level


@TERMS.register_factory("mlkd", "multi-level logit KD: instance, batch and class alignment (Jin et al. 2023)")
def _build_mlkd(spec: MLKDTermSpec, context: TermContext) -> LossTerm:
    return _MultiLevelKD(spec)


# ------------------------------------------------------------------------------ feature terms


class HintTermSpec(LayerPairSpec):
    """``hint``: FitNet hint, MSE after a learned regressor (Romero et al. 2015, Eq. 3)."""

    name: Literal["hint"] = "hint"


class _Hint(LossTerm):
    spec: HintTermSpec

    def __init__(self, spec: HintTermSpec, regressor: HintRegressor) -> None:
        super().__init__(spec)
        self.regressor = regressor

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        student = self.regressor(inputs.student_features[self.spec.student])
        return fitnet_hint_loss(student, inputs.teacher_feature(self.spec.teacher))


@TERMS.register_factory("hint", "FitNet hint: MSE after a learned regressor (Romero et al. 2015)")
def _build_hint(spec: HintTermSpec, context: TermContext) -> LossTerm:
    regressor = HintRegressor(context.student_shapes[spec.student], context.teacher_shapes[spec.teacher])
    return _Hint(spec, regressor)


class AttentionTermSpec(LayerPairSpec):
    """``attention``: attention transfer between normalized activation maps (Zagoruyko &
    Komodakis 2017, Eq. 2); ``beta_scale`` as in :mod:`distill.losses.attention`."""

    name: Literal["attention"] = "attention"
    beta_scale: AttentionScale = "size_free"


class _Attention(LossTerm):
    spec: AttentionTermSpec

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        spec = self.spec
        return attention_transfer_loss(
            inputs.student_features[spec.student], inputs.teacher_feature(spec.teacher), scale=spec.beta_scale
        )


@TERMS.register_factory(
    "attention", "attention transfer: normalized activation maps (Zagoruyko & Komodakis 2017)"
)
def _build_attention(spec: AttentionTermSpec, context: TermContext) -> LossTerm:
    student, teacher = context.student_shapes[spec.student], context.teacher_shapes[spec.teacher]
    if len(student) < 3 or student[2:] != teacher[2:]:
        raise ValueError(
            f"attention transfer needs (batch, C, *spatial) features of equal spatial size, got "
            f"student {tuple(student)} and teacher {tuple(teacher)}"
        )
    return _Attention(spec)


class _LayerPairLoss(LossTerm):
    """A term that is a function of one tapped student layer and one tapped teacher layer."""

    spec: LayerPairSpec

    def __init__(
        self, spec: LayerPairSpec, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> None:
        super().__init__(spec)
        self.loss = loss

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return self.loss(
            inputs.student_features[self.spec.student], inputs.teacher_feature(self.spec.teacher)
        )


class RKDTermSpec(LayerPairSpec):
    """``rkd``: relational KD, distance and angle potentials (Park et al., CVPR 2019, Eqs. 4–7),
    weighted 25 and 50 inside the term as the official code."""

    name: Literal["rkd"] = "rkd"
    distance_weight: float = Field(default=25.0, ge=0.0)
    angle_weight: float = Field(default=50.0, ge=0.0)


@TERMS.register_factory("rkd", "relational KD: pairwise distances and triplet angles (Park et al. 2019)")
def _build_rkd(spec: RKDTermSpec, context: TermContext) -> LossTerm:
    return _LayerPairLoss(
        spec, partial(rkd_loss, distance_weight=spec.distance_weight, angle_weight=spec.angle_weight)
    )


class PKTTermSpec(LayerPairSpec):
    """``pkt``: probabilistic knowledge transfer, KL between cosine-kernel affinity
    distributions (Passalis & Tefas, ECCV 2018)."""

    name: Literal["pkt"] = "pkt"


@TERMS.register_factory(
    "pkt", "probabilistic knowledge transfer: cosine-affinity distributions (Passalis & Tefas 2018)"
)
def _build_pkt(spec: PKTTermSpec, context: TermContext) -> LossTerm:
    return _LayerPairLoss(spec, pkt_loss)


class SPTermSpec(LayerPairSpec):
    """``sp``: similarity-preserving KD, ``‖G_s − G_t‖²_F / b²`` of row-normalized batch Gram
    matrices (Tung & Mori, ICCV 2019)."""

    name: Literal["sp"] = "sp"


@TERMS.register_factory("sp", "similarity-preserving KD: batch similarity matrices (Tung & Mori 2019)")
def _build_sp(spec: SPTermSpec, context: TermContext) -> LossTerm:
    return _LayerPairLoss(spec, sp_loss)

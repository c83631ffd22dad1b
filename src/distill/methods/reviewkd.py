"""ReviewKD: distilling knowledge via knowledge review (Chen, Liu, Zhao & Jia, CVPR 2021).

arXiv 2104.09044; official code ``dvlab-research/ReviewKD`` (``CIFAR-100/model/reviewkd.py``,
``CIFAR-100/train.py``), re-implemented in mdistiller (``mdistiller/distillers/ReviewKD.py``).

Each student level ``i`` (shallow → deep, ``i = 1 … n``) is matched to teacher level ``i``, but
the student side *reviews* the deeper levels: the residual learning framework of the paper
(Sec. 3.3, the recursive fusion that replaces the review sum of Eq. 4)::

    F̂_s^n     = F_s^n                       (the deepest level, projected only)
    F̂_s^i     = ABF(F_s^i, F̂_s^{i+1})       i = n−1 … 1
    L_review  = Σ_i HCL(C_i(F̂_s^i), F_t^i)

ABF (attention based fusion, Sec. 3.4, Fig. 3a): a 1×1 conv + BN takes level ``i`` to ``mid``
channels; the deeper level's fused map is upsampled (nearest) to level ``i``'s size; both are
concatenated, a 1×1 conv with two sigmoid outputs gives one spatial weight map each, and the
weighted sum is the fused map ``F̂_s^i`` (handed on to the next shallower level). ``C_i`` is a
3×3 conv + BN to the teacher's channels (after a nearest resize to the teacher's spatial size
when the two differ).

HCL (hierarchical context loss, Sec. 3.4, Fig. 3b), per level with spatial height ``h``::

    HCL = (MSE(f_s, f_t) + Σ_k w_k · MSE(P_k f_s, P_k f_t)) / (1 + Σ_k w_k)

where ``P_k`` is adaptive average pooling to ``k × k`` for ``k`` in (4, 2, 1) *with k < h*
(levels as large as the map are skipped), and the weights halve per level actually used:
``w = 1/2, 1/4, 1/8`` in turn (so an 8×8 map uses 4, 2, 1 with 1/2, 1/4, 1/8; a 4×4 map uses
2, 1 with 1/2, 1/4; a 1×1 map uses the full-size MSE alone). MSEs are means over elements.

Training loss (official ``train.py``; mdistiller's ``REVIEWKD`` section)::

    L = ce_weight · CE(y, s(x)) + review_weight · min(epoch / warmup_epochs, 1) · L_review

with the trainer's 0-based ``epoch`` (as ``train.py``'s ``for epoch in range(epochs)``: the
review term has weight 0 in the first epoch; mdistiller counts from 1, one epoch ahead).

Levels are module names tapped on both models. As in the official code the last level is the
globally pooled feature seen as a 1×1 map (``pool`` in :mod:`distill.models.resnet`; an output
shaped ``(batch, C)`` is read as ``(batch, C, 1, 1)``). The mid width is the official
``min(512, C)`` with ``C`` the deepest student level's channels unless ``mid_channels`` is set.

Deviation: the official code takes the *teacher's* stage features before their final ReLU
(``preact=True``; the student's are post-ReLU, ``STU_PREACT: False``). A forward hook on our
blocks sees only their post-ReLU output, so the teacher's taps here are post-ReLU too.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from distill.errors import DistillError, unknown_name_message
from distill.losses import weighted
from distill.methods.base import Batch, EpochStart, FrozenTeacher, Method, MethodSpec
from distill.methods.registry import METHODS, MethodContext
from distill.methods.scratch import classification_loss
from distill.models.taps import FeatureTaps, module_names
from distill.schema import EpochsOrZero, Width

#: The official cap on the fused width: ``mid_channel = min(512, in_channels[-1])``.
MAX_MID_CHANNELS = 512
#: HCL's pooled sizes, coarsest last (official ``hcl``: ``for l in [4, 2, 1]``).
HCL_LEVELS = (4, 2, 1)


def _default_layers() -> list[str]:
    return ["layer1", "layer2", "layer3", "pool"]


class ReviewKDSpec(MethodSpec):
    """``reviewkd``: CE + review-path features matched to the teacher's by HCL.

    ``student_layers`` / ``teacher_layers``: module names, shallow → deep, paired by position
    (default: the three resnet stages and the pooled feature, as the official CIFAR code).
    ``ce_weight`` 1.0, ``review_weight`` 1.0 and ``warmup_epochs`` 20 are the defaults of both
    the official ``train.py`` (``--ce-loss-weight``, ``--kd-loss-weight``, ``--kd-warm-up``) and
    mdistiller (``CE_WEIGHT``, ``REVIEWKD_WEIGHT``, ``WARMUP_EPOCHS``); their CIFAR-100 runs
    raise the review weight per pair (5.0 for resnet32x4 → resnet8x4 and the WRN pairs, 0.6
    for resnet56 → resnet20). ``mid_channels``: the ABF width, by default ``min(512, C)``.
    """

    name: Literal["reviewkd"] = "reviewkd"
    student_layers: list[str] = Field(default_factory=_default_layers, min_length=1)
    teacher_layers: list[str] = Field(default_factory=_default_layers, min_length=1)
    ce_weight: float = Field(default=1.0, ge=0.0)
    review_weight: float = Field(default=1.0, ge=0.0)
    warmup_epochs: EpochsOrZero = 20
    mid_channels: Width | None = None
    teacher_precision: Literal["float32", "bfloat16"] = "float32"

    uses_teacher: ClassVar[bool] = True

    @model_validator(mode="after")
    def _check(self) -> ReviewKDSpec:
        if len(self.student_layers) != len(self.teacher_layers):
            raise ValueError(
                f"student_layers ({len(self.student_layers)}) and teacher_layers "
                f"({len(self.teacher_layers)}) must pair up: give lists of the same length"
            )
        if not (self.ce_weight or self.review_weight):
            raise ValueError("every loss weight is 0; give ce_weight or review_weight > 0")
        return self


class AttentionBasedFusion(nn.Module):
    """One level of the review path (ABF, Sec. 3.4): fuse a student level with the deeper
    levels' fused map and project the result onto the teacher's channels.

    ``forward(feature, residual, out_size)`` returns ``(projected, fused)``: ``projected`` is
    compared with the teacher (``out_channels`` × ``out_size``), ``fused`` (``mid`` channels)
    is the residual handed to the next shallower level. The deepest level has ``fuse=False``.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        reduce = nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False)
        project = nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False)
        # as the official ABF: Kaiming-uniform with a = 1 on both non-attention convolutions
        nn.init.kaiming_uniform_(reduce.weight, a=1)
        nn.init.kaiming_uniform_(project.weight, a=1)
        self.reduce = nn.Sequential(reduce, nn.BatchNorm2d(mid_channels))
        self.attention: nn.Sequential | None = None
        if fuse:
            self.attention = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid())
        self.project = nn.Sequential(project, nn.BatchNorm2d(out_channels))

    def forward(
        self, feature: torch.Tensor, residual: torch.Tensor | None, out_size: torch.Size
    ) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.reduce(feature)
        if self.attention is not None:
            if residual is None:
                raise ValueError("a fusing ABF needs the deeper level's fused map")
            residual = F.interpolate(residual, size=fused.shape[-2:], mode="nearest")
            maps = self.attention(torch.cat([fused, residual], dim=1))
            fused = fused * maps[:, 0:1] + residual * maps[:, 1:2]
        if fused.shape[-2:] != out_size:
            fused = F.interpolate(fused, size=tuple(out_size), mode="nearest")
        return self.project(fused), fused


def hierarchical_context_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """HCL of one level (Sec. 3.4): the full-size MSE plus the MSEs after adaptive average
    pooling to 4, 2, 1 (those smaller than the map's height), weighted 1, 1/2, 1/4, 1/8 in
    the order used and divided by the sum of the weights used."""
    if student.shape != teacher.shape or student.ndim != 4:
        raise ValueError(
            f"HCL compares (batch, C, H, W) maps of one shape, got {tuple(student.shape)} and "
            f"{tuple(teacher.shape)}"
        )
    teacher = teacher.detach()
    loss = F.mse_loss(student, teacher)
    weight, total = 1.0, 1.0
    height = student.shape[2]
    for size in HCL_LEVELS:
        if size >= height:
            continue
        weight /= 2
        pooled = F.mse_loss(F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size))
        loss = loss + weight * pooled
        total += weight
    return loss / total


def review_loss(students: list[torch.Tensor], teachers: list[torch.Tensor]) -> torch.Tensor:
    """``Σ_i HCL(student_i, teacher_i)`` over the levels (official ``hcl``)."""
    if len(students) != len(teachers) or not students:
        raise ValueError(f"review_loss pairs levels: got {len(students)} student, {len(teachers)} teacher")
    terms = [hierarchical_context_loss(s, t) for s, t in zip(students, teachers, strict=True)]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def warmup_factor(epoch: int, warmup_epochs: int) -> float:
    """``min(epoch / warmup_epochs, 1)`` for the 0-based ``epoch`` (1 without a warm-up)."""
    if warmup_epochs <= 0:
        return 1.0
    return min(max(epoch, 0) / warmup_epochs, 1.0)


def as_map(feature: torch.Tensor) -> torch.Tensor:
    """A tapped feature as a ``(batch, C, H, W)`` map: a pooled ``(batch, C)`` vector is 1×1."""
    if feature.ndim == 2:
        return feature[:, :, None, None]
    if feature.ndim != 4:
        raise ValueError(
            f"expected a (batch, C, H, W) map or a (batch, C) vector, got {tuple(feature.shape)}"
        )
    return feature


def _check_layers(model: nn.Module, names: list[str], field: str) -> None:
    available = module_names(model)
    for index, name in enumerate(names):
        if name not in available:
            raise DistillError(f"{field}[{index}]: " + unknown_name_message("layer", name, available))


class ReviewKD(Method):
    """Student + review path (one ABF per level, submodule ``abfs``) against a frozen teacher.

    ``abfs[i]`` serves level ``i`` (shallow → deep); the review runs from the deepest level to
    the shallowest. The ABFs train with the student and are dropped at deployment.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        student_layers: list[str],
        teacher_layers: list[str],
        example_inputs: torch.Tensor,
        ce_weight: float = 1.0,
        review_weight: float = 1.0,
        warmup_epochs: int = 20,
        mid_channels: int | None = None,
        owner: str = "method",
        teacher_precision: str = "float32",
    ) -> None:
        super().__init__(student)
        if len(student_layers) != len(teacher_layers) or not student_layers:
            raise DistillError(
                f"{owner}: student_layers ({len(student_layers)}) and teacher_layers "
                f"({len(teacher_layers)}) must be non-empty lists of the same length"
            )
        self.student_layers = list(student_layers)
        self.teacher_layers = list(teacher_layers)
        self.ce_weight = ce_weight
        self.review_weight = review_weight
        self.warmup_epochs = warmup_epochs
        #: the trainer's 0-based epoch, set by :meth:`on_epoch_start` (drives the warm-up)
        self.epoch = 0
        _check_layers(student, self.student_layers, f"{owner}.student_layers")
        _check_layers(teacher, self.teacher_layers, f"{owner}.teacher_layers")
        self.teacher = FrozenTeacher(teacher, self.teacher_layers, teacher_precision)
        self.student_taps = FeatureTaps(student, self.student_layers, owner=f"{owner}.student_layers")
        self.abfs = self._build_abfs(example_inputs, mid_channels, owner)

    def _build_abfs(
        self, example_inputs: torch.Tensor, mid_channels: int | None, owner: str
    ) -> nn.ModuleList:
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            self.student(example_inputs)
        self.student.train(was_training)
        students = self._shapes(self.student_taps.features, self.student_layers, "student", owner)
        teacher_features = self.teacher(example_inputs).features
        teachers = self._shapes(teacher_features, self.teacher_layers, "teacher", owner)
        mid = mid_channels if mid_channels is not None else min(MAX_MID_CHANNELS, students[-1][0])
        last = len(students) - 1
        return nn.ModuleList(
            AttentionBasedFusion(s[0], mid, t[0], fuse=index < last)
            for index, (s, t) in enumerate(zip(students, teachers, strict=True))
        )

    @staticmethod
    def _shapes(
        features: dict[str, torch.Tensor], names: list[str], side: str, owner: str
    ) -> list[tuple[int, ...]]:
        shapes = []
        for index, name in enumerate(names):
            try:
                shapes.append(tuple(as_map(features[name]).shape[1:]))
            except ValueError as error:
                raise DistillError(f"{owner}.{side}_layers[{index}] ('{name}'): {error}") from None
        return shapes

    def on_epoch_start(self, epoch: EpochStart) -> None:
        """Record the 0-based epoch for the warm-up (so a resumed run continues it exactly)."""
        self.teacher.prepare(epoch)
        self.epoch = epoch.epoch

    def review(self, student_features: list[torch.Tensor], out_sizes: list[torch.Size]) -> list[torch.Tensor]:
        """The review path: the projected fused map of every level (shallow → deep), computed
        from the deepest level up (residual learning, Sec. 3.3)."""
        deep_first: list[torch.Tensor] = []
        residual: torch.Tensor | None = None
        for index in reversed(range(len(student_features))):
            output, residual = self.abfs[index](student_features[index], residual, out_sizes[index])
            deep_first.append(output)
        return deep_first[::-1]

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        teacher = self.teacher(batch.inputs, batch)
        logits = self.student(batch.inputs)
        terms: dict[str, torch.Tensor] = {}
        if self.ce_weight:
            terms["ce"] = weighted(self.ce_weight, classification_loss(logits, batch))
        if self.review_weight:
            students = [as_map(self.student_taps.features[name]) for name in self.student_layers]
            teachers = [as_map(teacher.features[name]) for name in self.teacher_layers]
            outputs = self.review(students, [t.shape[-2:] for t in teachers])
            # in the first warm-up epoch the factor is 0: the term stays in the graph (value 0)
            factor = self.review_weight * warmup_factor(self.epoch, self.warmup_epochs)
            terms["review"] = weighted(factor, review_loss(outputs, teachers))
        return terms


@METHODS.register_factory("reviewkd", "ReviewKD: review-path feature distillation with ABF + HCL (CVPR 2021)")
def build_reviewkd(spec: ReviewKDSpec, context: MethodContext) -> Method:
    teacher = context.require_teacher("reviewkd")
    return ReviewKD(
        context.student,
        teacher,
        spec.student_layers,
        spec.teacher_layers,
        context.example_inputs,
        ce_weight=spec.ce_weight,
        review_weight=spec.review_weight,
        warmup_epochs=spec.warmup_epochs,
        mid_channels=spec.mid_channels,
        owner=context.owner,
        teacher_precision=spec.teacher_precision,
    )

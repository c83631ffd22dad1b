"""Shadow Knowledge Distillation (SHAKE): a trainable shadow of the teacher, distilled both ways.

Li & Jin, "Shadow Knowledge Distillation: Bridging Offline and Online Knowledge Transfer"
(NeurIPS 2022). Offline KD lags online KD because the teacher never adapts to the student: online
methods distil in reverse too, student → teacher. SHAKE keeps the pretrained teacher frozen and
attaches a small trainable *shadow head* to its features; the shadow head ends in the teacher's
own (frozen) classifier, mimics the pretrained teacher's logits, and is distilled from the
student (the reversed term), while the student is distilled from the shadow head.

Followed here from the official code (github.com/lliai/SHAKE: ``helper/loops.py``
``train_distill``, ``models/util.py`` ``Shake``; notes in ``docs/methods/online.md``;
the paper's equation numbers were not available to check), with ``sg`` = stop-gradient and
``KL_T(a ← b) = T² · KL(σ(b/T) ‖ σ(a/T))``::

    L = γ · CE(ẑ_s, y) + α · KL_T(ẑ_s ← ẑ_t)
      + β · [ KL_T(ẑ_sh ← sg ẑ_s)      reversed distillation: the shadow adapts to the student
            + KL_T(ẑ_s ← sg ẑ_sh)      the student learns from the adapted shadow
            + CE(ẑ_sh, y)              the shadow stays a classifier
            + MSE(ẑ_sh, sg ẑ_t) ]      and stays close to the pretrained teacher

with the official defaults γ = 1, α = 0, β = 1, T = 4 (so the student learns from the shadow, and
from the teacher only through it). Every logit vector is first layer-normalized over classes
(no affine, ε = 1e−7) and scaled by π — ``ẑ = π · LN(z)`` — as the official code does before
every loss (``logit_norm``; this changes no prediction, only the losses' scale). One optimizer
trains the student and the shadow head together; the teacher gets no gradient.

**Shadow head.** Official: on teacher features f₁, f₂, f₃ (the three CIFAR-ResNet stages),
``fuse5(fuse3(fuse1(f₁) + fuse2(f₂)) + fuse4(f₃))`` with conv–BN–ReLU blocks (3×3 stride-2
"down" convs between stages, 1×1 lateral convs), global average pooling, then the teacher's
classifier with detached weights. Generalized to any n ≥ 1 tapped layers (``teacher_layers``)
with 0, 1 or 2 spatial dims: ``h = f₁; h = down_i(h) + lateral_i(f_i)`` for i = 2..n, then a
final block, pooling and the teacher's classifier. With ``teacher_layers`` empty (the default)
the head works on the input of the teacher's classifier (any teacher whose last layer is an
``nn.Linear``): one Linear–BN–ReLU block, then the classifier.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distill.errors import DistillError
from distill.losses.kd import kd_loss
from distill.methods.base import Batch, FrozenTeacher, Method, MethodSpec
from distill.methods.registry import METHODS, MethodContext
from distill.methods.scratch import classification_loss
from distill.models.branches import forward_completion_order


class ShadowKDSpec(MethodSpec):
    """``skd``: Shadow Knowledge Distillation (SHAKE) with the official code's defaults.

    ``teacher_layers``: teacher modules whose outputs feed the shadow head (empty: the input of
    the teacher's classifier). ``classifier``: the teacher's final ``nn.Linear`` (default: the
    last one its forward calls). ``ce_weight`` γ, ``kd_weight`` α (plain KD from the frozen
    teacher), ``shadow_weight`` β.
    """

    name: Literal["skd"] = "skd"
    temperature: float = Field(default=4.0, gt=0.0)
    ce_weight: float = Field(default=1.0, ge=0.0)
    kd_weight: float = Field(default=0.0, ge=0.0)
    shadow_weight: float = Field(default=1.0, gt=0.0)
    teacher_layers: list[str] = Field(default_factory=list)
    classifier: str | None = None
    logit_norm: bool = True

    uses_teacher: ClassVar[bool] = True


def normalized_logits(logits: torch.Tensor) -> torch.Tensor:
    """SHAKE's logit normalization: ``π · LayerNorm(z)`` over classes, no affine, ε = 1e−7."""
    return F.layer_norm(logits, logits.shape[-1:], None, None, 1e-7) * math.pi


def _block(rank: int, channels_in: int, channels_out: int, kernel: int, stride: int) -> nn.Module:
    """conv–BN–ReLU for ``rank`` spatial dims (Linear–BN–ReLU for vectors), no conv bias."""
    if rank == 0:
        linear = nn.Linear(channels_in, channels_out, bias=False)
        return nn.Sequential(linear, nn.BatchNorm1d(channels_out), nn.ReLU())
    conv = nn.Conv1d if rank == 1 else nn.Conv2d
    norm = nn.BatchNorm1d if rank == 1 else nn.BatchNorm2d
    return nn.Sequential(
        conv(channels_in, channels_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        norm(channels_out),
        nn.ReLU(),
    )


class ShadowHead(nn.Module):
    """SHAKE's shadow head over teacher features of the given shapes (see module doc), ending
    in a classifier ``(weight, bias)`` passed at call time (the teacher's, detached)."""

    def __init__(self, shapes: list[torch.Size]) -> None:
        super().__init__()
        ranks = {len(shape) - 2 for shape in shapes}
        if len(ranks) != 1 or not ranks <= {0, 1, 2}:
            raise ValueError(
                "shadow head: teacher features must all be (batch, C), (batch, C, L) or "
                f"(batch, C, H, W); got {[tuple(shape) for shape in shapes]}"
            )
        self.rank = ranks.pop()
        self.sizes = [tuple(shape[2:]) for shape in shapes]
        channels = [shape[1] for shape in shapes]
        self.down = nn.ModuleList()
        self.lateral = nn.ModuleList()
        for previous, (size_in, size_out) in enumerate(zip(self.sizes, self.sizes[1:], strict=False)):
            stride = size_in[0] // size_out[0] if self.rank and size_in[0] % size_out[0] == 0 else 1
            self.down.append(_block(self.rank, channels[previous], channels[previous + 1], 3, stride))
            self.lateral.append(_block(self.rank, channels[previous + 1], channels[previous + 1], 1, 1))
        self.final = _block(self.rank, channels[-1], channels[-1], 3, 1)
        self.out_features = channels[-1]
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(
        self, features: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        hidden = features[0]
        for index, feature in enumerate(features[1:]):
            down = self.down[index](hidden)
            if self.rank and tuple(down.shape[2:]) != tuple(feature.shape[2:]):
                pool = F.adaptive_avg_pool2d if self.rank == 2 else F.adaptive_avg_pool1d
                # output_size is the feature's spatial shape (length rank); the stubs want a fixed tuple
                down = pool(down, feature.shape[2:])  # type: ignore[arg-type]
            hidden = down + self.lateral[index](feature)
        hidden = self.final(hidden)
        pooled = hidden.flatten(2).mean(dim=2) if self.rank else hidden
        return F.linear(pooled, weight.detach(), None if bias is None else bias.detach())


def last_linear(model: nn.Module, example_inputs: torch.Tensor) -> str:
    """The name of the last ``nn.Linear`` that ``model``'s forward calls."""
    order = forward_completion_order(model, example_inputs)
    linears = [name for name in order if isinstance(model.get_submodule(name), nn.Linear)]
    if not linears:
        raise ValueError("the teacher calls no nn.Linear; name its classifier or set teacher_layers")
    return linears[-1]


class ShadowKnowledgeDistillation(Method):
    """SHAKE: student + trainable shadow head on a frozen teacher (see module doc)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        example_inputs: torch.Tensor,
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        shadow_weight: float = 1.0,
        teacher_layers: list[str] | None = None,
        classifier: str | None = None,
        logit_norm: bool = True,
        owner: str = "method",
    ) -> None:
        super().__init__(student)
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.shadow_weight = shadow_weight
        self.logit_norm = logit_norm
        self.teacher_layers = list(teacher_layers or [])
        self.teacher = FrozenTeacher(teacher, self.teacher_layers)
        try:
            self.classifier_name = classifier or last_linear(teacher, example_inputs)
            classifier_module = teacher.get_submodule(self.classifier_name)
        except (ValueError, AttributeError) as error:
            raise DistillError(f"{owner}.classifier: {error}") from None
        if not isinstance(classifier_module, nn.Linear):
            raise DistillError(
                f"{owner}.classifier: teacher module '{self.classifier_name}' is a "
                f"{type(classifier_module).__name__}, not an nn.Linear"
            )
        self._classifier = (classifier_module,)  # a tuple: the teacher's layer is not a submodule
        self._classifier_input: torch.Tensor | None = None
        classifier_module.register_forward_pre_hook(self._record_classifier_input)
        shapes = [feature.shape for feature in self._teacher_features(example_inputs)[0]]
        try:
            self.shadow = ShadowHead(shapes)
        except ValueError as error:
            raise DistillError(f"{owner}.teacher_layers: {error}") from None
        if self.shadow.out_features != classifier_module.in_features:
            raise DistillError(
                f"{owner}.teacher_layers: the last layer ('{self.teacher_layers[-1]}') has "
                f"{self.shadow.out_features} channels but the teacher's classifier "
                f"'{self.classifier_name}' takes {classifier_module.in_features} features; end "
                "teacher_layers at the classifier's input, or leave it empty"
            )

    def _record_classifier_input(self, _module: nn.Module, inputs: tuple[Any, ...]) -> None:
        self._classifier_input = inputs[0]

    def _teacher_features(self, inputs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The shadow head's input features and the teacher's logits (no gradient)."""
        output = self.teacher(inputs)
        assert output.logits is not None
        if self.teacher_layers:
            return [output.features[name] for name in self.teacher_layers], output.logits
        assert self._classifier_input is not None
        return [self._classifier_input.flatten(1).float().clone()], output.logits

    def shadow_logits(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The shadow head's logits (trainable) and the frozen teacher's logits."""
        features, teacher_logits = self._teacher_features(inputs)
        (classifier,) = self._classifier
        return self.shadow(features, classifier.weight, classifier.bias), teacher_logits

    def _norm(self, logits: torch.Tensor) -> torch.Tensor:
        return normalized_logits(logits) if self.logit_norm else logits

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        shadow, teacher = self.shadow_logits(batch.inputs)
        student = self._norm(self.student(batch.inputs))
        shadow, teacher = self._norm(shadow), self._norm(teacher)
        beta, temperature = self.shadow_weight, self.temperature
        terms = {
            "ce": self.ce_weight * classification_loss(student, batch),
            "kd_shadow": beta * kd_loss(student, shadow.detach(), temperature),
            "reverse": beta * kd_loss(shadow, student.detach(), temperature),
            "shadow_ce": beta * classification_loss(shadow, batch),
            "shadow_mse": beta * F.mse_loss(shadow, teacher.detach()),
        }
        if self.kd_weight:
            terms["kd_teacher"] = self.kd_weight * kd_loss(student, teacher, temperature)
        return terms


@METHODS.register_factory("skd", "Shadow KD (SHAKE): a trainable teacher shadow, distilled both ways")
def build_skd(spec: ShadowKDSpec, context: MethodContext) -> Method:
    teacher = context.require_teacher("skd")
    return ShadowKnowledgeDistillation(
        context.student,
        teacher,
        context.example_inputs,
        spec.temperature,
        spec.ce_weight,
        spec.kd_weight,
        spec.shadow_weight,
        spec.teacher_layers,
        spec.classifier,
        spec.logit_norm,
        owner=context.owner,
    )

"""CTKD: curriculum temperature for knowledge distillation (Li et al., AAAI 2023).

arXiv 2211.16231; official code ``zhengli97/CTKD`` (``models/temp_global.py`` ``Global_T`` and
its gradient reversal layer, ``helper/loops.py`` ``train_distill``, ``train_student.py``
``CosineDecay`` and the arguments, ``scripts/run_cifar_distill.sh``).

The KD temperature is a learnable scalar trained *adversarially*: the student minimizes the
distillation loss, the temperature maximizes it. The paper's min–max problem::

    min_θs max_θτ  L(θs, θτ) = α₁ · CE(y, s(x)) + α₂ · τ² · KL(σ(t(x)/τ) ‖ σ(s(x)/τ))

is solved in one backward pass by a gradient reversal layer (GRL; Ganin & Lempitsky 2015) in
front of the temperature module: identity forward, gradient times ``−λ`` backward, so one
descent step on ``L`` is a descent step for the student and an ascent step (scaled by ``λ``)
for the temperature. The global temperature module (paper Sec. "Global and instance-wise
temperature"; official ``Global_T`` + ``loops.py``)::

    τ = τ_min + (τ_max − τ_min) · sigmoid(GRL_λ(θτ))        θτ ∈ ℝ, initialized to 1

The official arguments ``--t_start 1 --t_end 20`` compute ``t_start + t_end · sigmoid(θτ)``,
so their temperature lies in ``(1, 21)``: ``temperature_range`` here is that interval itself,
``[1, 21]`` by default, and gives the same temperature. The initial τ is ``1 + 20·σ(1) ≈ 15.62``.

Curriculum (paper's cosine schedule; official ``CosineDecay`` with ``--cosine_decay 1
--decay_max 0 --decay_min -1 --decay_loops 10``), for the official 1-based epoch ``E``::

    λ_E = λ_min + ½ (λ_max − λ_min) (1 − cos(π · min(E, E_loops) / E_loops))

from ``λ_min = 0`` to ``λ_max = 1`` over ``E_loops = 10`` epochs. The official code passes the
negated value (``decay_max 0 → decay_min −1``) to a GRL that multiplies by it; we pass ``λ ≥ 0``
to a GRL that multiplies by ``−λ``: the same gradient. Our trainer's epochs are 0-based, so epoch
``e`` uses ``E = e + 1`` (the first epoch's λ is ``(1 − cos(π/10))/2 ≈ 0.0245``, as officially).

The KD term uses the learned τ on *both* softmaxes and keeps the ``τ²`` factor (official
``DistillKL``: ``KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T)) · T · T``), so the
temperature's gradient flows through the teacher's softened distribution and ``τ²`` as well.
The temperature parameter is trained by the *same* optimizer as the student (official
``trainable_list = [model_s, mlp]`` in one SGD with the same learning rate, momentum, weight
decay and schedule): here it is an ordinary submodule, ``temperature``, in the one group.

Only the global variant is implemented; the instance-wise temperature (an MLP predicting one τ
per sample from the two models' logits) is not. The default weights are the official CIFAR
script's ``-r 0.1 -a 0.9`` (CE 0.1, KD 0.9).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from distill.losses import weighted
from distill.methods.base import (
    Batch,
    CachedTeacher,
    EpochStart,
    FrozenTeacher,
    Method,
    MethodArtifacts,
    MethodSpec,
    Teacher,
    TeacherOutputStore,
)
from distill.methods.registry import METHODS, MethodContext
from distill.methods.scratch import classification_loss
from distill.schema import EpochsOrZero


class _GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``−λ``."""

    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = lambda_
        return inputs.clone()

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grads[0] * (-ctx.lambda_), None


def reverse_gradient(inputs: torch.Tensor, lambda_: float) -> torch.Tensor:
    """The gradient reversal layer: ``inputs`` unchanged, their gradient times ``−lambda_``."""
    output = _GradientReversal.apply(inputs, lambda_)
    assert isinstance(output, torch.Tensor)
    return output


def curriculum_lambda(epoch: int, lambda_min: float, lambda_max: float, loops: int) -> float:
    """The cosine curriculum's λ for the trainer's 0-based ``epoch`` (official epoch ``epoch+1``):
    ``λ_min + ½(λ_max − λ_min)(1 − cos(π · min(E, loops) / loops))``; ``λ_max`` when ``loops``
    is 0 (no curriculum)."""
    if loops <= 0:
        return lambda_max
    progress = min(max(epoch + 1, 0), loops)
    return lambda_min + 0.5 * (lambda_max - lambda_min) * (1.0 - math.cos(math.pi * progress / loops))


def learned_temperature_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: torch.Tensor
) -> torch.Tensor:
    """``τ² · KL(σ(t/τ) ‖ σ(s/τ))`` averaged over the batch, differentiable in ``τ`` (a scalar
    tensor; the paper's Eq. for L_kd with the learned temperature). No gradient reaches the
    teacher's logits; ``τ``'s gradient includes the teacher side."""
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"expected (batch, classes) logits of one shape, got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}"
        )
    tau = temperature.reshape(())
    student_log_probs = F.log_softmax(student_logits / tau, dim=1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach() / tau, dim=1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return kl * tau * tau


class GlobalTemperature(nn.Module):
    """One learnable temperature ``τ = low + (high − low) · sigmoid(θ)`` behind a GRL.

    ``forward(lambda_)`` returns ``τ`` as a 1-element tensor; in backward ``θ`` receives
    ``−lambda_`` times the gradient of the loss, so descending the loss ascends it in ``θ``.
    """

    def __init__(self, low: float, high: float, initial: float = 1.0) -> None:
        super().__init__()
        self.low = low
        self.high = high
        #: the official ``Global_T.global_T``: ``nn.Parameter(torch.ones(1))``
        self.parameter = nn.Parameter(torch.full((1,), float(initial)))

    def forward(self, lambda_: float) -> torch.Tensor:
        theta = reverse_gradient(self.parameter, lambda_)
        return self.low + (self.high - self.low) * torch.sigmoid(theta)

    def value(self) -> float:
        """The current temperature as a number."""
        with torch.no_grad():
            return float(self.low + (self.high - self.low) * torch.sigmoid(self.parameter).item())


class CTKDSpec(MethodSpec):
    """``ctkd``: CE + KD at a global temperature learned adversarially under a λ curriculum.

    Defaults: ``ce_weight`` 0.1 and ``kd_weight`` 0.9 (official ``-r 0.1 -a 0.9``);
    ``temperature_range`` [1, 21] (official ``--t_start 1 --t_end 20``, i.e. ``1 + 20·σ``);
    ``initial_logit`` 1.0 (``Global_T``'s ``torch.ones(1)``); ``lambda_min`` 0, ``lambda_max``
    1 and ``lambda_epochs`` 10 (official ``--decay_max 0 --decay_min -1 --decay_loops 10``).
    """

    name: Literal["ctkd"] = "ctkd"
    ce_weight: float = Field(default=0.1, ge=0.0)
    kd_weight: float = Field(default=0.9, gt=0.0)
    temperature_range: list[float] = Field(default_factory=lambda: [1.0, 21.0])
    initial_logit: float = 1.0
    lambda_min: float = Field(default=0.0, ge=0.0)
    lambda_max: float = Field(default=1.0, ge=0.0)
    lambda_epochs: EpochsOrZero = 10
    teacher_precision: Literal["float32", "bfloat16"] = "float32"

    uses_teacher: ClassVar[bool] = True

    def cacheable_temperature(self) -> float | None:
        """Any: the learned temperature softens logits that a cache of the whole distribution
        gives up to a per-sample constant (no softmax sees it); stored at T = 1."""
        return 1.0

    def terms_needing_full_distribution(self) -> list[str]:
        return ["kd"]  # at a temperature only known during training

    @model_validator(mode="after")
    def _check(self) -> CTKDSpec:
        if len(self.temperature_range) != 2:
            raise ValueError(f"temperature_range is [low, high], got {self.temperature_range}")
        low, high = self.temperature_range
        if not 0 < low < high:
            raise ValueError(f"temperature_range needs 0 < low < high, got [{low}, {high}]")
        if self.lambda_min > self.lambda_max:
            raise ValueError(f"lambda_min ({self.lambda_min}) exceeds lambda_max ({self.lambda_max})")
        return self


class CurriculumTemperatureKD(Method):
    """Student + learnable global temperature (submodule ``temperature``) against a frozen
    teacher; ``λ`` follows the cosine curriculum of the 0-based epoch from :meth:`on_epoch_start`."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        temperature_range: tuple[float, float] = (1.0, 21.0),
        initial_logit: float = 1.0,
        lambda_min: float = 0.0,
        lambda_max: float = 1.0,
        lambda_epochs: int = 10,
        teacher_precision: str = "float32",
        teacher_cache: TeacherOutputStore | None = None,
    ) -> None:
        super().__init__(student)
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.lambda_min = lambda_min
        self.lambda_max = lambda_max
        self.lambda_epochs = lambda_epochs
        live = FrozenTeacher(teacher, [], teacher_precision)
        self.teacher: Teacher = live
        if teacher_cache is not None:
            self.teacher = CachedTeacher(live, teacher_cache, keep_log_probs=True)
        self.temperature = GlobalTemperature(temperature_range[0], temperature_range[1], initial_logit)
        #: the trainer's 0-based epoch, set by :meth:`on_epoch_start` (drives λ)
        self.epoch = 0

    @property
    def lambda_(self) -> float:
        """The GRL's λ this epoch."""
        return curriculum_lambda(self.epoch, self.lambda_min, self.lambda_max, self.lambda_epochs)

    def on_epoch_start(self, epoch: EpochStart) -> None:
        """Record the 0-based epoch (λ is a function of it, so a resumed run continues exactly)."""
        self.teacher.prepare(epoch)
        self.epoch = epoch.epoch

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        teacher = self.teacher(batch.inputs, batch).logits_up_to_shift()
        logits = self.student(batch.inputs)
        terms: dict[str, torch.Tensor] = {}
        if self.ce_weight:
            terms["ce"] = weighted(self.ce_weight, classification_loss(logits, batch))
        tau = self.temperature(self.lambda_)
        terms["kd"] = weighted(self.kd_weight, learned_temperature_kd_loss(logits, teacher, tau))
        return terms

    def finish(self, artifacts: MethodArtifacts) -> dict[str, Any]:
        """Reports the learned temperature at the end of training."""
        return {"ctkd_temperature": self.temperature.value()}


@METHODS.register_factory("ctkd", "CTKD: KD with an adversarially learned curriculum temperature (AAAI 2023)")
def build_ctkd(spec: CTKDSpec, context: MethodContext) -> Method:
    teacher = context.require_teacher("ctkd")
    low, high = spec.temperature_range
    return CurriculumTemperatureKD(
        context.student,
        teacher,
        ce_weight=spec.ce_weight,
        kd_weight=spec.kd_weight,
        temperature_range=(low, high),
        initial_logit=spec.initial_logit,
        lambda_min=spec.lambda_min,
        lambda_max=spec.lambda_max,
        lambda_epochs=spec.lambda_epochs,
        teacher_precision=spec.teacher_precision,
        teacher_cache=context.teacher_cache,
    )

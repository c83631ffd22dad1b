"""The method contract: participants plus one training step that returns named loss terms."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distill.data.augment import Mixing
from distill.models.taps import FeatureTaps
from distill.schema import Section


class MethodSpec(Section):
    """Base of every method spec; ``name`` selects the registry entry."""

    name: str


@dataclass(frozen=True)
class Batch:
    """One (augmented) training batch as every method sees it.

    ``inputs`` are what the models see after augmentation; ``targets`` the original class ids;
    ``mixing`` the mixup draw if any (targets are then mixed distributions, see
    :meth:`soft_targets`); ``indices`` the dataset rows of the batch; ``draw`` which
    augmentation draw produced it (see :class:`~distill.data.augment.AugmentPlan`).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    num_classes: int
    mixing: Mixing | None = None
    draw: int = 0

    def soft_targets(self) -> torch.Tensor | None:
        """Mixed label distributions under mixup, else ``None`` (use the hard ``targets``)."""
        if self.mixing is None:
            return None
        return self.mixing.mix_targets(self.targets, self.num_classes)


class Method(nn.Module):
    """A training method. Subclasses own their participants and implement :meth:`step`.

    The registered submodules (``self.student`` and any auxiliary modules such as hint
    regressors) are what the optimizer steps and what a resume checkpoint stores. A frozen
    teacher is held by a :class:`FrozenTeacher`, which is not a submodule, so it is never
    optimized, never put in train mode, and never wrapped for distributed training.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named, already weighted loss terms for one batch; their sum is minimized."""
        raise NotImplementedError

    def evaluated_model(self) -> nn.Module:
        """The model that is evaluated, checkpointed and reported."""
        return self.student


@dataclass(frozen=True)
class TeacherOutput:
    logits: torch.Tensor
    features: dict[str, torch.Tensor]


class FrozenTeacher:
    """A pretrained teacher queried in eval mode under ``torch.inference_mode``.

    Outputs are cloned out of inference mode (a cheap copy of the logits and tapped features)
    so that student losses can save them for backward.
    """

    def __init__(self, model: nn.Module, tapped_layers: list[str] | None = None) -> None:
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.taps = FeatureTaps(model, tapped_layers or [], owner="teacher")

    def __call__(self, inputs: torch.Tensor) -> TeacherOutput:
        self.model.eval()
        with torch.inference_mode():
            logits = self.model(inputs)
            features = dict(self.taps.features)
        return TeacherOutput(logits.clone(), {name: value.clone() for name, value in features.items()})

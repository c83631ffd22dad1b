"""KD-Zero's loss-rejection protocol: discard a candidate before any training.

KD-Zero (Li et al., NeurIPS 2023) rejects distillers whose loss is unusable before spending a
proxy training on them. Here a candidate is probed once, on the student at initialisation and
one training batch, and rejected when:

- building or evaluating it raises (e.g. an operation that cannot run on these tensors);
- its loss is NaN or infinite (e.g. ``log`` of a negative logit);
- its loss explodes: more than ``max_loss_ratio`` times the cross-entropy;
- its gradient with respect to the student is NaN/inf, or explodes (more than
  ``max_grad_ratio`` times the cross-entropy's gradient norm);
- it does not change the student's gradients: its gradient norm is below ``min_grad_ratio``
  times the cross-entropy's (a constant candidate, or one blind to the student).

The probe is deterministic (fixed batch, fixed initialisation), so a seeded search rejects the
same candidates on every run and on every backend.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from distill.losses.distiller import Distiller, Shape
from distill.methods.base import Batch, FrozenTeacher
from distill.methods.distiller import DistillerMethod, FeatureKnowledgeSpec
from distill.methods.scratch import classification_loss


@dataclass(frozen=True)
class RejectionLimits:
    """Thresholds of the protocol, relative to the cross-entropy at initialisation."""

    max_loss_ratio: float = 1e3
    max_grad_ratio: float = 1e3
    min_grad_ratio: float = 1e-6


class RejectionProbe:
    """Probes candidates on ``student`` (at initialisation; never modified) and one ``batch``."""

    def __init__(
        self,
        student: nn.Module,
        teacher: FrozenTeacher,
        batch: Batch,
        features: list[FeatureKnowledgeSpec],
        seed: int,
        limits: RejectionLimits | None = None,
    ) -> None:
        self.student = student
        self.teacher = teacher
        self.batch = batch
        self.features = list(features)
        self.seed = seed
        self.limits = limits or RejectionLimits()
        self.shapes = self._shapes()

    def _shapes(self) -> dict[str, Shape]:
        """Knowledge input shapes (teacher side, on the probe batch)."""
        output = self.teacher(self.batch.inputs, None)
        assert output.logits is not None
        shapes: dict[str, Shape] = {"logits": tuple(output.logits.shape)}
        for pair in self.features:
            shapes[pair.name] = tuple(output.features[pair.teacher].shape)
        return shapes

    def reason(self, distiller: Distiller) -> str | None:
        """Why ``distiller`` is rejected, or ``None`` when it may be trained."""
        limits = self.limits
        student = copy.deepcopy(self.student).train()
        torch.manual_seed(self.seed)  # projections start the same on every probe
        method = None
        try:
            method = DistillerMethod(
                student, self.teacher, distiller, 0.0, self.features, self.batch.inputs[:2], owner="candidate"
            )
            parameters = [p for p in method.parameters() if p.requires_grad]
            student_knowledge, teacher_knowledge = method.knowledge(self.batch)
            ce = classification_loss(student_knowledge["logits"], self.batch)
            loss = torch.stack(distiller.losses(student_knowledge, teacher_knowledge)).sum()
            if not torch.isfinite(loss):
                return f"loss is {loss.item()} at initialisation"
            if loss.abs().item() > limits.max_loss_ratio * max(ce.item(), 1e-8):
                return f"loss explodes: {loss.item():.3g} vs cross-entropy {ce.item():.3g} at initialisation"
            ce_norm = _norm(torch.autograd.grad(ce, parameters, retain_graph=True, allow_unused=True))
            norm = _norm(torch.autograd.grad(loss, parameters, allow_unused=True))
        except Exception as error:  # any failure of the candidate rejects it, with its reason
            return f"raises {type(error).__name__}: {str(error).splitlines()[0]}"
        finally:
            if method is not None:
                method.student_taps.remove()
        if not torch.isfinite(torch.tensor(norm)):
            return f"gradient is {norm} at initialisation"
        if norm > limits.max_grad_ratio * ce_norm:
            return f"gradient explodes: norm {norm:.3g} vs cross-entropy's {ce_norm:.3g}"
        if norm <= limits.min_grad_ratio * ce_norm:
            return f"does not change the student's gradients (gradient norm {norm:.3g})"
        return None


def _norm(gradients: tuple[torch.Tensor | None, ...]) -> float:
    squares = [g.double().pow(2).sum() for g in gradients if g is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0

"""Weighted distillation with unlabeled examples: reweight teacher labels by their local reliability.

Iliopoulos, Kontonis, Baykal, Menghani, Trinh & Vee, "Weighted Distillation with Unlabeled
Examples" (NeurIPS 2022, arXiv 2210.06711), the baseline SLaM improves on. Two stages:

1. a student is trained by plain distillation on the teacher's labels (:mod:`~distill.methods.pseudo`;
   here: the recipe's student named by ``stage1``, trained earlier in the same run);
2. every training example x gets a weight w(x) ∈ [0, 1] estimated on the labeled validation set
   V, and a fresh student (same initialization) is trained on the weighted distillation loss
   ``Σ_x w(x) · CE(y_t(x), f(x))`` plus the true labels on L.

**Weights (EstimateWeights).** Each example is placed by (teacher confidence, stage-1 student
confidence) — their top probabilities. Among its m nearest validation examples in that plane
(m = ⌈√|V|⌉) the teacher's label is wrong with frequency p(x), and the *distortion* d(x) is how
much loss a wrong teacher label carries compared with a right one: the stage-1 student's mean
loss against the teacher's labels on the wrong neighbours over that on the right ones. The
weight is the share of the neighbourhood's distillation loss that comes from right labels,

    w(x) = (1 − p(x)) / (1 − p(x) + p(x) · d(x))     ∈ [0, 1],

1 where the teacher is never wrong nearby, falling as its errors become more frequent or weigh
more in the loss.

The paper calls the procedure hyperparameter-free. Its text was not available to check here
(``docs/methods/unlabeled.md``): the neighbourhood size m and the exact confidence features
are this implementation's reconstruction, stated so that they can be corrected.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distill.errors import DistillError
from distill.methods.base import Batch, Method, MethodSpec
from distill.methods.pseudo import (
    UnlabeledDistillation,
    pool_teacher_outputs,
    predicted_probabilities,
    teacher_labels,
)
from distill.methods.registry import METHODS, MethodContext


class WeightedSpec(MethodSpec):
    """``weighted``: weighted distillation; ``stage1`` names the recipe's earlier ``pseudo``
    student whose predictions place the examples."""

    name: Literal["weighted"] = "weighted"
    stage1: str = "pseudo"
    labels: Literal["soft", "hard"] = "soft"
    labeled_weight: float = Field(default=1.0, ge=0.0)

    uses_teacher: ClassVar[bool] = True
    uses_unlabeled: ClassVar[bool] = True

    def depends_on(self) -> list[str]:
        return [self.stage1]


def _loss_per_row(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicted ``probabilities`` against target distributions, per row."""
    return -(targets * probabilities.clamp_min(1e-12).log()).sum(dim=1)


def estimate_weights(
    teacher_train: torch.Tensor,
    student_train: torch.Tensor,
    teacher_val: torch.Tensor,
    student_val: torch.Tensor,
    val_labels: torch.Tensor,
    labels: str = "soft",
) -> torch.Tensor:
    """Per-training-row weights ``(1 − p) / (1 − p + p·d)`` (see module doc).

    Arguments are softmax outputs ``(rows, classes)`` of the teacher and the stage-1 student on
    the training rows and on V, and V's labels.
    """
    from sklearn.neighbors import NearestNeighbors

    def place(teacher: torch.Tensor, student: torch.Tensor) -> np.ndarray:
        return torch.stack([teacher.max(dim=1).values, student.max(dim=1).values], dim=1).double().numpy()

    neighbours = max(1, min(len(val_labels), math.ceil(math.sqrt(len(val_labels)))))
    index = NearestNeighbors(n_neighbors=neighbours).fit(place(teacher_val, student_val))
    _, nearest = index.kneighbors(place(teacher_train, student_train))
    nearest_t = torch.from_numpy(nearest)
    wrong = (teacher_val.argmax(dim=1) != val_labels).double()[nearest_t]  # (rows, m)
    loss = _loss_per_row(student_val, teacher_labels(teacher_val, labels)).double()[nearest_t]
    right = 1.0 - wrong
    p = wrong.mean(dim=1)
    loss_wrong = (loss * wrong).sum(dim=1) / wrong.sum(dim=1).clamp_min(1)
    loss_right = (loss * right).sum(dim=1) / right.sum(dim=1).clamp_min(1)
    distortion = torch.where(
        (wrong.sum(dim=1) > 0) & (right.sum(dim=1) > 0),
        loss_wrong / loss_right.clamp_min(1e-12),
        torch.ones_like(p),
    )
    weights = (1.0 - p) / (1.0 - p + p * distortion).clamp_min(1e-12)
    return weights.clamp(0.0, 1.0).float()


class WeightedDistillation(UnlabeledDistillation):
    """``Σ w(x)·CE(y_t(x), f(x)) / |B|`` plus CE on L's true labels."""

    row_tables = ("teacher_targets", "weights")

    def __init__(
        self,
        student: nn.Module,
        probabilities: torch.Tensor,
        weights: torch.Tensor,
        labels: str = "soft",
        labeled_weight: float = 1.0,
    ) -> None:
        super().__init__(student, probabilities, labels, labeled_weight)
        self.weights = weights

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.student(batch.inputs)
        targets = self._rows(self.teacher_targets, batch)
        per_row = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
        terms = {"weighted_teacher": (self._rows(self.weights, batch) * per_row).mean()}
        terms.update(self._labeled_terms(logits, batch))
        return terms


@METHODS.register_factory("weighted", "weighted distillation: teacher labels reweighted by local reliability")
def build_weighted(spec: WeightedSpec, context: MethodContext) -> Method:
    train_probs, val_probs = pool_teacher_outputs(context, "weighted")
    stage1 = context.trained_students.get(spec.stage1)
    if stage1 is None:
        raise DistillError(
            f"{context.owner}.stage1: no student named '{spec.stage1}' trained before this one; "
            "list a 'pseudo' student earlier in the recipe"
        )
    assert context.data is not None and context.data.val is not None
    device = context.example_inputs.device
    student_train = predicted_probabilities(stage1, context.data.train, device)
    student_val = predicted_probabilities(stage1, context.data.val, device)
    weights = estimate_weights(
        train_probs, student_train, val_probs, student_val, context.data.val.targets, spec.labels
    )
    return WeightedDistillation(context.student, train_probs, weights, spec.labels, spec.labeled_weight)

"""SLaM — Student-Label Mixing for distillation with unlabeled examples.

Kontonis, Iliopoulos, Trinh, Baykal, Menghani & Vee (NeurIPS 2023, arXiv 2302.03806).
The loss is :func:`distill.losses.slam_loss` on the teacher's labels of L ∪ U, plus the true labels
on L as in :mod:`distill.methods.pseudo`. Its mixing is by default the unnormalized one that the
paper's appendix (Remark B.1) says its experiments used; ``normalize: true`` divides by k − 1 as in
the main text. With one-hot labels the unnormalized form pushes the student away from the
teacher's label wherever α(x) < ½ (the normalized one only where α(x) < 1/k) and ignores k: see
:mod:`distill.losses.slam`.

Its two inputs are estimated once, on the labeled validation set V, before training:

- **α(x)**, the probability that the teacher's label is correct, as a *monotone* function of the
  teacher's confidence on x (``alpha_feature``: the margin between its two highest probabilities,
  by default, or its top probability), fitted by isotonic regression of the teacher's correctness
  on V (scikit-learn's ``IsotonicRegression``);
- **k**, from the teacher's top-k accuracy on V: the smallest k ≥ 2 whose top-k accuracy reaches
  ``coverage`` (the classes the true label hides among when the teacher is wrong), or a fixed
  ``top_k``. One k for every example.

Neither depends on the student, so they are computed for every training row up front and no
gradient reaches them.

**The teacher's label is its top class** (``labels: hard``, the default): SLaM models the
teacher's label as one class, correct with probability α(x). With soft labels as targets
(``labels: soft``) every top-k class carries target mass, and where α(x) < 1/2 the unnormalized
mixing ``(2α − 1)·f_i + (1 − α)`` *decreases* in f_i for all of them at once, pushing the
student's mass out of the teacher's top k (the two are compared in the closing note of the
unlabeled-data issue).

Details not verifiable here (the paper's supplementary code, on OpenReview, was unreachable, and
of its text only Remark B.1 could be read, through a quotation): whether its experiments trained
on soft or one-hot teacher labels, whether k varies per example, and the exact confidence
feature; all three are options.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from distill.losses.slam import slam_loss
from distill.methods.base import Batch, Method, MethodSpec
from distill.methods.pseudo import UnlabeledDistillation, pool_teacher_outputs
from distill.methods.registry import METHODS, MethodContext
from distill.schema import MAX_COUNT


class SLaMSpec(MethodSpec):
    """``slam``: Student-Label Mixing (see module doc for ``alpha_feature``, ``top_k``,
    ``coverage``; ``normalize`` divides the mixing's second term by k − 1 as in the main text, off
    by default as in the paper's experiments, Remark B.1)."""

    name: Literal["slam"] = "slam"
    labels: Literal["soft", "hard"] = "hard"
    labeled_weight: float = Field(default=1.0, ge=0.0)
    normalize: bool = False
    alpha_feature: Literal["margin", "confidence"] = "margin"
    top_k: int | None = Field(default=None, ge=2, le=MAX_COUNT)
    coverage: float = Field(default=0.9, gt=0.0, le=1.0)

    uses_teacher: ClassVar[bool] = True
    uses_unlabeled: ClassVar[bool] = True


def teacher_confidence(probabilities: torch.Tensor, feature: str = "margin") -> np.ndarray:
    """Per row: top probability minus the second (``margin``) or the top probability."""
    top2 = probabilities.topk(2, dim=1).values
    values = top2[:, 0] - top2[:, 1] if feature == "margin" else top2[:, 0]
    return values.double().numpy()


class AlphaEstimator:
    """α(confidence) = P(teacher correct | confidence), monotone non-decreasing, fitted by
    isotonic regression on labeled examples and clipped to [0, 1]."""

    def __init__(self, feature: str = "margin") -> None:
        from sklearn.isotonic import IsotonicRegression

        self.feature = feature
        self.model = IsotonicRegression(increasing=True, y_min=0.0, y_max=1.0, out_of_bounds="clip")

    def fit(self, probabilities: torch.Tensor, labels: torch.Tensor) -> AlphaEstimator:
        correct = (probabilities.argmax(dim=1) == labels).double().numpy()
        self.model.fit(teacher_confidence(probabilities, self.feature), correct)
        return self

    def predict(self, probabilities: torch.Tensor) -> torch.Tensor:
        alpha = self.model.predict(teacher_confidence(probabilities, self.feature))
        return torch.from_numpy(np.clip(alpha, 0.0, 1.0)).float()


def choose_k(probabilities: torch.Tensor, labels: torch.Tensor, coverage: float) -> int:
    """The smallest k ≥ 2 whose top-k accuracy on (probabilities, labels) reaches ``coverage``
    (all classes if none does)."""
    classes = probabilities.shape[1]
    ranks = (probabilities > probabilities.gather(1, labels.view(-1, 1))).sum(dim=1)  # 0 = top-1
    for k in range(2, classes + 1):
        if (ranks < k).double().mean().item() >= coverage:
            return k
    return classes


def top_k_mask(probabilities: torch.Tensor, k: int) -> torch.Tensor:
    """0/1 mask of each row's k highest classes."""
    mask = torch.zeros_like(probabilities, dtype=torch.bool)
    return mask.scatter_(1, probabilities.topk(k, dim=1).indices, True)


class StudentLabelMixing(UnlabeledDistillation):
    """SLaM's loss on the teacher's labels of L ∪ U plus CE on L's true labels."""

    row_tables = ("teacher_targets", "alpha", "top_mask")

    def __init__(
        self,
        student: torch.nn.Module,
        probabilities: torch.Tensor,
        alpha: torch.Tensor,
        k: int,
        labels: str = "soft",
        labeled_weight: float = 1.0,
        normalize: bool = False,
    ) -> None:
        super().__init__(student, probabilities, labels, labeled_weight)
        self.alpha = alpha
        self.k = k
        self.top_mask = top_k_mask(probabilities, k)
        self.normalize = normalize

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.student(batch.inputs)
        terms = {
            "slam": slam_loss(
                logits,
                self._rows(self.teacher_targets, batch),
                self._rows(self.alpha, batch),
                self._rows(self.top_mask, batch),
                self.normalize,
            )
        }
        terms.update(self._labeled_terms(logits, batch))
        return terms


@METHODS.register_factory(
    "slam", "SLaM: student-label mixing against noisy teacher labels (Kontonis et al. 2023)"
)
def build_slam(spec: SLaMSpec, context: MethodContext) -> Method:
    train_probs, val_probs = pool_teacher_outputs(context, "slam")
    assert context.data is not None and context.data.val is not None
    val_labels = context.data.val.targets
    estimator = AlphaEstimator(spec.alpha_feature).fit(val_probs, val_labels)
    k = spec.top_k or choose_k(val_probs, val_labels, spec.coverage)
    k = min(k, train_probs.shape[1])
    return StudentLabelMixing(
        context.student,
        train_probs,
        estimator.predict(train_probs),
        k,
        spec.labels,
        spec.labeled_weight,
        spec.normalize,
    )

"""Student-Label Mixing (SLaM): a forward loss adjustment for noisy teacher labels.

Kontonis, Iliopoulos, Trinh, Baykal, Menghani & Vee, "SLaM: Student-Label Mixing for
Distillation with Unlabeled Examples" (NeurIPS 2023, arXiv 2302.03806). The teacher's label on
an unlabeled example x is modeled as correct with probability α(x) and otherwise as one of the
teacher's other top-k(x) classes. Instead of correcting the label, SLaM *mixes the student's
prediction* f(x) the same way and keeps the teacher's label as the target::

    mix(f(x)) = α(x) · f(x) + (1 − α(x)) · (1 − f(x)) ⊙ top(y_t(x), k(x)) [/ (k(x) − 1)]

where ``top(y, k)`` is the 0/1 mask of the teacher's k highest classes. The main text divides
the second term by k(x) − 1; the paper's appendix, Remark B.1, says that *not* normalizing "resulted
in better results overall" and that the unnormalized mix is "the mixing operation used in our
experimental evaluation of SLaM" — hence the default here (``normalize=False``). The loss is the
cross-entropy between the teacher's label and mix(f(x)).

The two forms differ where the teacher is unreliable. On a one-hot teacher label j the loss is
−log(c·f_j + b) with c = 2α − 1 unnormalized and c = (kα − 1)/(k − 1) normalized, so gradient
descent pushes the student *away* from the teacher's label where α < ½ (unnormalized) or α < 1/k
(normalized), and the unnormalized loss on one-hot labels does not depend on k at all (j is always
in the teacher's own top k). ``tests/losses/test_slam.py`` checks both against these equations.

Source of Remark B.1's text: a quotation of the NeurIPS paper (the supplementary code it refers to,
on OpenReview, was not reachable here). Equation numbers of the main text are not cited.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: mixed probabilities are clamped here before the log (the unnormalized mix can reach 0 only
#: through float underflow, e.g. f_i → 0 on a class outside the teacher's top-k)
MIX_FLOOR = 1e-12


def slam_mix(
    student_probs: torch.Tensor,
    alpha: torch.Tensor,
    top_mask: torch.Tensor,
    normalize: bool = False,
) -> torch.Tensor:
    """``α·f + (1 − α)·(1 − f) ⊙ top`` (divided by ``k − 1`` when ``normalize``).

    Args:
        student_probs: ``(batch, classes)`` softmax outputs f(x).
        alpha: ``(batch,)`` probability that the teacher's label is correct (no gradient).
        top_mask: ``(batch, classes)`` 0/1 mask of the teacher's top-k classes (no gradient).
    """
    alpha = alpha.detach().to(student_probs.dtype).unsqueeze(1)
    mask = top_mask.detach().to(student_probs.dtype)
    second = (1 - student_probs) * mask
    if normalize:
        second = second / (mask.sum(dim=1, keepdim=True) - 1).clamp_min(1)
    return alpha * student_probs + (1 - alpha) * second


def slam_loss(
    student_logits: torch.Tensor,
    teacher_labels: torch.Tensor,
    alpha: torch.Tensor,
    top_mask: torch.Tensor,
    normalize: bool = False,
) -> torch.Tensor:
    """Cross-entropy between the teacher's labels ``(batch, classes)`` (soft or one-hot) and the
    mixed student prediction, batch mean. With ``alpha ≡ 1`` it is plain cross-entropy against
    the teacher's labels."""
    if student_logits.shape != teacher_labels.shape or student_logits.shape != top_mask.shape:
        raise ValueError(
            f"slam_loss: logits {tuple(student_logits.shape)}, teacher labels "
            f"{tuple(teacher_labels.shape)} and top-k mask {tuple(top_mask.shape)} must match"
        )
    mixed = slam_mix(F.softmax(student_logits, dim=1), alpha, top_mask, normalize)
    return -(teacher_labels.detach() * mixed.clamp_min(MIX_FLOOR).log()).sum(dim=1).mean()

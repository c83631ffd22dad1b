"""Relational distillation losses: match how a batch's embeddings relate to each other.

These losses compare structures *within* a batch (pairwise distances, triplet angles, similarity
kernels, Gram matrices), so the student's and the teacher's features need the same batch size
but not the same width; any trailing dimensions are flattened. Each reproduces the arithmetic
of the authors' released code (reductions, epsilons), noted where it departs from the paper. No
gradient flows into the teacher's features.

- RKD: Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019 (arXiv 1904.05068),
  Eqs. 4–7; code: ``lenscloth/RKD``, ``metric/loss.py`` (``RkdDistance``, ``RKdAngle``); the
  25/50 weights are RepDistiller's and mdistiller's.
- PKT: Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer",
  ECCV 2018; code: ``passalis/probabilistic_kt`` (``nn/pkt.py``), as in RepDistiller
  ``distiller_zoo/PKT.py``.
- SP: Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019; code: RepDistiller
  ``distiller_zoo/SP.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _flatten_pair(
    name: str, student: torch.Tensor, teacher: torch.Tensor, min_batch: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    if student.ndim < 2 or teacher.ndim < 2:
        raise ValueError(
            f"{name} expects (batch, ...) features, got student {tuple(student.shape)} and teacher "
            f"{tuple(teacher.shape)}"
        )
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"{name}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must have the "
            "same batch size (dimension 0)"
        )
    if student.shape[0] < min_batch:
        raise ValueError(f"{name} needs a batch of at least {min_batch}, got student {tuple(student.shape)}")
    return student.flatten(1), teacher.detach().flatten(1)


# --------------------------------------------------------------------------------------------
# RKD


def pairwise_distances(embeddings: torch.Tensor, squared: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """``(batch, batch)`` Euclidean distances between the rows of a ``(batch, dim)`` matrix, as
    RKD's code computes them: ``‖a‖² + ‖b‖² − 2 a·b`` clamped below at ``eps`` (so the square
    root has a finite gradient), then the diagonal set to exactly zero."""
    square_norms = embeddings.pow(2).sum(dim=1)
    gram = embeddings @ embeddings.t()
    squared_distances = square_norms.unsqueeze(1) + square_norms.unsqueeze(0) - 2 * gram
    distances = squared_distances.clamp(min=eps)
    if not squared:
        distances = distances.sqrt()
    eye = torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    return distances.masked_fill(eye, 0.0)


def _normalized_distances(embeddings: torch.Tensor, squared: bool, eps: float) -> torch.Tensor:
    distances = pairwise_distances(embeddings, squared, eps)
    n = len(embeddings)
    # the code divides by the mean of the positive entries: every off-diagonal one, as the clamp
    # keeps them ≥ sqrt(eps)
    return distances / (distances.sum() / (n * (n - 1)))


def rkd_distance_loss(
    student: torch.Tensor, teacher: torch.Tensor, squared: bool = False, eps: float = 1e-12
) -> torch.Tensor:
    """RKD-D (Park et al., distance-wise loss): Huber loss between the student's and the teacher's pairwise
    distances, each divided by its mean over the off-diagonal pairs.

    The Huber loss is PyTorch's smooth-L1 with threshold 1 (the paper's ``δ = 1``). As in the
    code it is averaged over all ``batch²`` entries of the distance matrices, the zero diagonal
    included, where the paper sums over the distinct pairs; the two differ by a constant factor.

    Args:
        student: ``(batch, ...)`` student embeddings or features, ``batch ≥ 2``.
        teacher: ``(batch, ...)`` teacher embeddings (any width).
        squared: compare squared distances instead (mdistiller's ``PDIST.SQUARED``, off by default).
        eps: lower clamp on the squared distances.

    Unchanged when the student's embeddings are rotated, translated or uniformly scaled.
    """
    student, teacher = _flatten_pair("rkd_distance_loss", student, teacher, min_batch=2)
    return F.smooth_l1_loss(
        _normalized_distances(student, squared, eps), _normalized_distances(teacher, squared, eps)
    )


def _triplet_cosines(embeddings: torch.Tensor) -> torch.Tensor:
    # differences[i, j] = e_j − e_i; cosines[i, j, k] = cos of the angle at vertex i between j and k
    differences = F.normalize(embeddings.unsqueeze(0) - embeddings.unsqueeze(1), p=2, dim=2)
    return torch.bmm(differences, differences.transpose(1, 2))


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD-A (Park et al., angle-wise loss): Huber loss between the cosines of the angles that every
    triplet of embeddings forms, student against teacher.

    As in the code it runs over all ``batch³`` ordered triplets and averages: a triplet with a
    repeated index has cosine 0 (a zero difference normalises to zero) or 1 on both sides and
    adds nothing, so the loss is the paper's sum over distinct triplets divided by ``batch³``.
    Memory is ``O(batch² · dim)``.

    Unchanged when the student's embeddings are rotated, translated or uniformly scaled.
    """
    student, teacher = _flatten_pair("rkd_angle_loss", student, teacher, min_batch=2)
    return F.smooth_l1_loss(_triplet_cosines(student).reshape(-1), _triplet_cosines(teacher).reshape(-1))


def rkd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
    squared: bool = False,
    eps: float = 1e-12,
) -> torch.Tensor:
    """RKD: ``distance_weight · RKD-D + angle_weight · RKD-A``. The 25 and 50 are RepDistiller's
    and mdistiller's defaults for CIFAR-100 penultimate features (the lenscloth code takes both
    weights as arguments, default 0)."""
    distance = rkd_distance_loss(student, teacher, squared, eps)
    return distance_weight * distance + angle_weight * rkd_angle_loss(student, teacher)


# --------------------------------------------------------------------------------------------
# PKT


def _cosine_kernel_probabilities(features: torch.Tensor, eps: float) -> torch.Tensor:
    unit = features / (features.norm(dim=1, keepdim=True) + eps)
    kernel = (unit @ unit.t() + 1) / 2  # cosine similarity mapped to [0, 1]
    return kernel / kernel.sum(dim=1, keepdim=True)


def pkt_loss(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """PKT: KL divergence between the teacher's and the student's conditional probability
    distributions built from a cosine-similarity kernel over the batch.

    For each side: rows divided by their L2 norm (plus ``eps``), kernel ``K = (x xᵀ + 1) / 2``,
    each row of ``K`` divided by its sum to give ``P[i, j]``; then
    ``mean_{i,j} P^T[i,j] · log((P^T[i,j] + eps) / (P^S[i,j] + eps))``. As in the code, the self
    pairs ``j = i`` stay in the kernel and the KL is averaged over all ``batch²`` entries
    rather than summed. The code also sets NaN entries of the normalised features to zero; we
    do not, so a NaN in the features shows in the loss instead of being hidden. RepDistiller
    and mdistiller weight the term 30000 on CIFAR-100.

    Unchanged when the student's feature vectors are each multiplied by a positive number or
    rotated together.
    """
    student, teacher = _flatten_pair("pkt_loss", student, teacher)
    p_student = _cosine_kernel_probabilities(student, eps)
    p_teacher = _cosine_kernel_probabilities(teacher, eps)
    return (p_teacher * torch.log((p_teacher + eps) / (p_student + eps))).mean()


# --------------------------------------------------------------------------------------------
# SP


def similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """SP's ``(batch, batch)`` similarity: the Gram matrix ``f fᵀ`` of the flattened features with
    each row divided by its L2 norm (``F.normalize``, floor ``1e-12``)."""
    flat = features.flatten(1)
    return F.normalize(flat @ flat.t(), p=2, dim=1)


def sp_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD: ``‖G^T − G^S‖²_F / batch²`` with ``G`` the row-normalised Gram
    matrix of the flattened features (Tung & Mori; RepDistiller ``SP.py``).

    RepDistiller and mdistiller sum this over the chosen layer pairs and weight it 3000 on
    CIFAR-100. Unlike RepDistiller, which returns a one-element vector, this returns a scalar.
    (torchdistill's ``SPKDLoss`` calls ``normalize(G, 1)``, which is the L1 norm, since the
    second argument of ``torch.nn.functional.normalize`` is ``p``; we follow the L2 of the paper
    and RepDistiller.)

    Unchanged when the student's features are rotated or all multiplied by the same positive
    number.
    """
    student, teacher = _flatten_pair("sp_loss", student, teacher)
    return (similarity_matrix(teacher) - similarity_matrix(student)).pow(2).sum() / student.shape[0] ** 2

"""Retrieval metrics for embedding models on unseen classes (deep metric learning's evaluation).

ooDML (Milbich et al., NeurIPS 2021, arXiv 2107.09562) scores a metric-learning model on the test
classes of a split by Recall@1: every test example queries the others, and it counts as a hit when
its nearest neighbour (by cosine similarity of the embeddings, as the official code's default of
L2-normalised embeddings) has its class. :func:`nearest_neighbours` finds them,
:func:`recall_at_1` scores them, and :func:`neighbour_agreement` says how often two models (a
teacher and its student) pick the same neighbour — agreement on the shifted test set when the
classes are new, where argmax agreement means nothing.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _check(embeddings: torch.Tensor, name: str) -> torch.Tensor:
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"{name} must be (N, D) with N ≥ 2, got {tuple(embeddings.shape)}")
    if not torch.isfinite(embeddings).all():
        raise ValueError(f"{name} holds non-finite values")
    return embeddings.double()


def nearest_neighbours(embeddings: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Index of every row's nearest other row by cosine similarity (ties: the lowest index)."""
    normed = F.normalize(_check(embeddings, "embeddings"), dim=1)
    parts = []
    for start in range(0, normed.shape[0], chunk):
        similarity = normed[start : start + chunk] @ normed.T
        rows = torch.arange(similarity.shape[0])
        similarity[rows, rows + start] = -torch.inf  # never one's own neighbour
        parts.append(similarity.argmax(dim=1))
    return torch.cat(parts)


def recall_at_1(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of rows whose nearest other row (cosine) has the same label."""
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(
            f"labels must be ({embeddings.shape[0]},) to match embeddings, got {tuple(labels.shape)}"
        )
    return float((labels[nearest_neighbours(embeddings)] == labels).double().mean())


def neighbour_agreement(first: torch.Tensor, second: torch.Tensor) -> float:
    """The fraction of rows whose nearest neighbour is the same example under both embeddings."""
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"both embeddings must embed the same rows, got {first.shape[0]} and {second.shape[0]}"
        )
    return float((nearest_neighbours(first) == nearest_neighbours(second)).double().mean())

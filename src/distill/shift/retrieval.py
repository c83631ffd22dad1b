"""Retrieval metrics for embedding models on unseen classes (deep metric learning's evaluation).

ooDML (Milbich et al., NeurIPS 2021, arXiv 2107.09562) scores a metric-learning model on the test
classes of a split by Recall@1: every test example queries the others, and it counts as a hit when
its nearest neighbour (by cosine similarity of the embeddings, as the official code's default of
L2-normalised embeddings) has its class. :func:`nearest_neighbours` finds them,
:func:`recall_at_1` scores them, and :func:`neighbour_agreement` says how often two models (a
teacher and its student) pick the same neighbour (``recall_of_neighbours`` and ``same_neighbours``
do the same from neighbours found once) — agreement on the shifted test set when the
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


def recall_of_neighbours(neighbours: torch.Tensor, labels: torch.Tensor) -> float:
    """Recall@1 from :func:`nearest_neighbours`' indices: how often a row's neighbour shares its label."""
    if labels.shape != neighbours.shape:
        raise ValueError(
            f"labels must be {tuple(neighbours.shape)} to match the rows, got {tuple(labels.shape)}"
        )
    return float((labels[neighbours] == labels).double().mean())


def same_neighbours(first: torch.Tensor, second: torch.Tensor) -> float:
    """How often two :func:`nearest_neighbours` results pick the same neighbour for a row."""
    if first.shape != second.shape:
        raise ValueError(
            f"both embeddings must embed the same rows, got {first.shape[0]} and {second.shape[0]}"
        )
    return float((first == second).double().mean())


def recall_at_1(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of rows whose nearest other row (cosine) has the same label."""
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(
            f"labels must be ({embeddings.shape[0]},) to match embeddings, got {tuple(labels.shape)}"
        )
    return recall_of_neighbours(nearest_neighbours(embeddings), labels)


def neighbour_agreement(first: torch.Tensor, second: torch.Tensor) -> float:
    """The fraction of rows whose nearest neighbour is the same example under both embeddings."""
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"both embeddings must embed the same rows, got {first.shape[0]} and {second.shape[0]}"
        )
    return same_neighbours(nearest_neighbours(first), nearest_neighbours(second))

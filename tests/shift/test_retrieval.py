"""Recall@1 and nearest-neighbour agreement: golden values on hand-made embeddings, properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.shift.retrieval import nearest_neighbours, neighbour_agreement, recall_at_1


def test_recall_at_1_on_a_hand_made_layout() -> None:
    # two tight pairs by direction; the fifth row sits next to a row of another class
    embeddings = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99], [0.98, -0.2]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    assert nearest_neighbours(embeddings).tolist() == [1, 0, 3, 2, 0]
    assert recall_at_1(embeddings, labels) == pytest.approx(4 / 5)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 30), st.integers(1, 6), st.floats(0.1, 10.0), st.integers(0, 1000))
def test_recall_ignores_scale_and_agreement_with_itself_is_one(
    n: int, d: int, scale: float, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(n, d, generator=generator)
    labels = torch.randint(0, 3, (n,), generator=generator)
    assert recall_at_1(scale * embeddings, labels) == recall_at_1(embeddings, labels)
    assert neighbour_agreement(embeddings, scale * embeddings) == 1.0
    assert (nearest_neighbours(embeddings) != torch.arange(n)).all()


def test_chunking_does_not_change_the_neighbours() -> None:
    embeddings = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(nearest_neighbours(embeddings, chunk=7), nearest_neighbours(embeddings))


def test_bad_embeddings_are_refused() -> None:
    with pytest.raises(ValueError, match="embeddings must be"):
        recall_at_1(torch.zeros(1, 3), torch.zeros(1))
    with pytest.raises(ValueError, match="labels must be"):
        recall_at_1(torch.randn(4, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        nearest_neighbours(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))

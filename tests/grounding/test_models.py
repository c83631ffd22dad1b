"""The SimVG-style model: shapes, TB's fast path equals the full forward and skips the decoder,
DB's prediction is its best-scoring query, words matter, sine-cosine positions."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from distill.grounding.models import GroundingModelSpec, best_query_boxes, sincos_positions
from distill.grounding.training import build_model
from distill.grounding.world import GroundingSpec, generate_examples

SPEC = GroundingModelSpec(dim=16, heads=2, feedforward=32, queries=3, decoder_layers=2)


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return generate_examples(GroundingSpec(image_size=16, objects=2), 5, seed=0)


def test_shapes_and_fast_paths(data) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build_model(SPEC, 16).eval()
    out = model(data.images, data.tokens)
    assert out.tb_boxes.shape == (5, 4) and out.tb_logits.shape == (5, 2)
    assert len(out.db_layers) == 2 and out.db_boxes.shape == (5, 3, 4) and out.db_scores.shape == (5, 3)
    assert ((out.tb_boxes > 0) & (out.tb_boxes < 1)).all() and ((out.db_boxes > 0) & (out.db_boxes < 1)).all()
    assert torch.allclose(model.predict_token(data.images, data.tokens), out.tb_boxes, atol=1e-6)
    assert torch.allclose(model.predict_decoder(data.images, data.tokens), out.db_prediction(), atol=1e-6)
    # TB never touches the decoder: changing DB's weights leaves it unchanged
    with torch.no_grad():
        for parameter in model.decoder_parameters():
            parameter.add_(1.0)
    assert torch.allclose(model.predict_token(data.images, data.tokens), out.tb_boxes, atol=1e-6)
    assert not torch.allclose(model.predict_decoder(data.images, data.tokens), out.db_prediction())
    # the words reach both branches
    other = model(data.images, data.tokens.roll(1, dims=0))
    assert not torch.allclose(other.tb_boxes, out.tb_boxes)


def test_best_query_boxes() -> None:
    boxes = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    scores = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.1, 0.2]])
    assert torch.equal(best_query_boxes(boxes, scores), torch.stack([boxes[0, 1], boxes[1, 0]]))


def test_parameter_groups_are_disjoint_and_cover_the_heads() -> None:
    model = build_model(SPEC, 16)
    decoder = {id(p) for p in model.decoder_parameters()}
    token = {id(p) for p in model.token_parameters()}
    assert decoder and token and not decoder & token
    assert {id(p) for p in model.encoder.parameters()}.isdisjoint(decoder | token)


def test_sincos_positions_distinct() -> None:
    table = sincos_positions(4, 16)
    assert table.shape == (16, 16)
    assert torch.cdist(table, table).add(torch.eye(16)).min() > 1e-3


def test_bad_sizes() -> None:
    with pytest.raises(ValidationError, match="divisible by heads"):
        GroundingModelSpec(dim=10, heads=4)
    with pytest.raises(ValueError, match=r"multiple of model\.patch"):
        build_model(GroundingModelSpec(patch=5), 16)

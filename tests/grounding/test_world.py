"""The synthetic grounding world: every expression picks exactly one shape, its box is the shape's
drawn extent, generation is seeded and extends, the tokenizer round-trips and rejects bad words."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from distill.errors import DataError
from distill.grounding.world import (
    COLOURS,
    MAX_WORDS,
    GroundingSpec,
    Shape,
    detokenize,
    generate_example,
    generate_examples,
    referents,
    shape_mask,
    tokenize,
)

SPEC = GroundingSpec()


def examples(count: int = 40, seed: int = 3, spec: GroundingSpec = SPEC) -> list:
    return [generate_example(spec, child) for child in np.random.SeedSequence(seed).spawn(count)]


def test_every_expression_denotes_exactly_its_referent() -> None:
    margin = SPEC.relation_margin * SPEC.image_size
    drawn = examples(80)
    for example in drawn:
        assert referents(example.text, example.shapes, margin) == [example.referent], example.text
    kinds = {example.relational for example in drawn}
    assert kinds == {True, False}  # both attribute and relation phrases occur


def test_relation_semantics_by_hand() -> None:
    left = Shape("circle", "red", 2, 10, 6)
    right = Shape("circle", "red", 20, 10, 6)
    anchor = Shape("square", "blue", 11, 10, 6)
    shapes = [left, right, anchor]
    assert referents("the circle left of the blue square", shapes, 1.0) == [0]
    assert referents("the red circle right of the square", shapes, 1.0) == [1]
    assert referents("the red circle", shapes, 1.0) == [0, 1]  # ambiguous: never generated
    assert referents("the square above the circle", shapes, 1.0) == []  # anchor not unique


def test_box_matches_the_drawn_shape() -> None:
    spec = GroundingSpec(noise=0.0)
    for example in examples(30, seed=5, spec=spec):
        shape = example.shapes[example.referent]
        colour = torch.tensor(COLOURS[shape.colour]).view(3, 1, 1)
        painted = (torch.from_numpy(example.image) - colour).abs().amax(0) < 1e-6
        mask = torch.from_numpy(shape_mask(shape, spec.image_size))
        assert (painted & mask).sum() == mask.sum() > 0  # the shape is drawn in its colour
        ys, xs = torch.nonzero(mask, as_tuple=True)
        size = spec.image_size
        cx, cy, w, h = example.box
        # the mask's pixel extent lies inside the box and fills it to within a pixel
        assert xs.min() >= round((cx - w / 2) * size) and xs.max() + 1 <= round((cx + w / 2) * size)
        assert ys.min() >= round((cy - h / 2) * size) and ys.max() + 1 <= round((cy + h / 2) * size)
        assert (xs.max() + 1 - xs.min()) >= w * size - 1 and (ys.max() + 1 - ys.min()) >= h * size - 1


def test_shapes_do_not_overlap() -> None:
    for example in examples(30):
        masks = [shape_mask(shape, SPEC.image_size) for shape in example.shapes]
        assert np.sum(np.stack(masks), axis=0).max() == 1


def test_seeded_reproducible_and_extending() -> None:
    a = generate_examples(SPEC, 12, seed=7)
    b = generate_examples(SPEC, 12, seed=7)
    longer = generate_examples(SPEC, 20, seed=7)
    other = generate_examples(SPEC, 12, seed=8)
    assert torch.equal(a.images, b.images) and a.texts == b.texts and torch.equal(a.boxes, b.boxes)
    assert torch.equal(longer.images[:12], a.images) and longer.texts[:12] == a.texts
    assert not torch.equal(a.images, other.images)
    assert a.images.shape == (12, 3, 32, 32) and a.tokens.shape == (12, MAX_WORDS)
    assert ((a.boxes > 0) & (a.boxes <= 1)).all()
    assert a.images.min() >= 0 and a.images.max() <= 1


def test_tokenizer_round_trip_and_errors() -> None:
    ids = tokenize("the red circle left of the blue square")
    assert len(ids) == MAX_WORDS and 0 not in ids
    assert detokenize(ids) == "the red circle left of the blue square"
    assert tokenize("the one")[2:] == [0] * (MAX_WORDS - 2)
    with pytest.raises(DataError, match="unknown word"):
        tokenize("the purple circle")
    with pytest.raises(DataError, match="at most"):
        tokenize("the red circle left of the blue square please".replace(" please", " the"))


def test_bad_specs_are_clear() -> None:
    with pytest.raises(ValidationError, match="size_range"):
        GroundingSpec(size_range=(0.5, 0.2))
    with pytest.raises(ValidationError, match="image_size"):
        GroundingSpec(image_size=4)
    crowded = GroundingSpec(objects=12, size_range=(0.6, 0.7))
    with pytest.raises(DataError, match="no scene"):
        generate_examples(crowded, 1, seed=0)

"""A synthetic visual-grounding world: small RGB images of coloured shapes and a referring
expression that picks exactly one of them.

A stand-in for RefCOCO-style data (SimVG, Dai et al., NeurIPS 2024, arXiv 2409.17531), generated
offline and seeded. Each example is

* an ``image_size × image_size`` RGB image (float32 in [0, 1]) on a dark, noisy background with
  ``objects`` shapes drawn from ``circle``, ``square``, ``triangle`` × ``red``, ``green``,
  ``blue``, ``yellow``; each shape's size (its bounding-box side) is a uniform fraction
  ``size_range`` of the image side; shapes keep a gap of ``gap`` pixels between their boxes, so no
  shape hides another and a box is exactly what is drawn;
* a referring expression from a fixed word-level vocabulary (:data:`VOCABULARY`), one of

  - an *attribute* phrase: ``"the red circle"``, ``"the circle"``, ``"the red one"``;
  - a *relation* phrase: ``"the circle left of the blue square"``, with ``left of``, ``right of``,
    ``above``, ``below`` (centres compared, with a margin of ``relation_margin`` of the image side);

  chosen so that it denotes exactly one shape: an attribute phrase denotes the shapes that have
  the named attributes; a relation phrase needs its anchor (after the relation) to denote exactly
  one shape, and denotes the shapes matching its head that stand in the relation to that anchor.
  Every phrase with exactly one referent in the scene is a candidate; a relation phrase is chosen
  with probability ``relation_rate`` when the scene has one. A scene without any candidate is
  drawn again (rejection sampling, :data:`MAX_TRIES` tries per example);
* the referent's box, normalized ``(cx, cy, w, h)`` in [0, 1] (x to the right, y down).

Shapes are drawn from a smaller palette than the 12 kinds allow (``kinds`` distinct
colour-shape pairs per scene at most, drawn with replacement), so repeated kinds are common and
many expressions need a relation to be unique.

Held-out evaluation: *held-out scenes*. The test examples come from another seed
(``test_seed`` in the recipe), so test scenes and their expressions were never seen in training;
the vocabulary, templates and attribute/relation combinations are shared.

Generation is deterministic: example ``k`` of ``generate_examples(spec, count, seed)`` depends only
on ``(spec, seed, k)`` (the ``k``-th child of ``numpy.random.SeedSequence(seed)``), so a longer
set extends a shorter one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from pydantic import Field, Strict, model_validator

from distill.errors import DataError
from distill.schema import Section

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (0.9, 0.15, 0.15),
    "green": (0.15, 0.8, 0.2),
    "blue": (0.2, 0.3, 0.95),
    "yellow": (0.95, 0.9, 0.15),
}
RELATIONS = ("left of", "right of", "above", "below")

PAD, UNKNOWN = "<pad>", "<unk>"
#: Every word an expression may use; index 0 is padding.
VOCABULARY: tuple[str, ...] = (
    PAD,
    "the",
    "one",
    *SHAPES,
    *COLOURS,
    "left",
    "right",
    "of",
    "above",
    "below",
)
#: Longest expression in words ("the red circle left of the blue square").
MAX_WORDS = 8
#: Scenes drawn per example before giving up.
MAX_TRIES = 200

#: A ``[min, max]`` range (a list in a recipe).
FractionRange = Annotated[tuple[float, float], Strict(False)]


class GroundingSpec(Section):
    """The world :func:`generate_examples` draws from (see the module docstring).

    ``image_size``: pixels a side. ``objects``: shapes per image. ``kinds``: at most this many
    distinct colour-shape pairs per image (repeats make relations necessary). ``size_range``: a
    shape's side as a fraction of the image side. ``gap``: pixels kept between shape boxes.
    ``noise``: standard deviation of the pixel noise. ``relation_rate``: probability of a
    relation phrase when one fits. ``relation_margin``: centres must differ by this fraction of
    the image side for a relation to hold.
    """

    image_size: int = Field(default=32, ge=8, le=512)
    objects: int = Field(default=3, ge=1, le=12)
    kinds: int = Field(default=3, ge=1, le=12)
    size_range: FractionRange = (0.2, 0.34)
    gap: int = Field(default=1, ge=0, le=64)
    noise: float = Field(default=0.04, ge=0.0, le=1.0)
    relation_rate: float = Field(default=0.5, ge=0.0, le=1.0)
    relation_margin: float = Field(default=0.05, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> GroundingSpec:
        low, high = self.size_range
        if not 0 < low <= high <= 1:
            raise ValueError(f"size_range must be [min, max] with 0 < min <= max <= 1, got [{low}, {high}]")
        if high * self.image_size < 3:
            raise ValueError(
                f"size_range: the largest shape is {high * self.image_size:.1f} pixels; "
                "it must be at least 3 (raise image_size or size_range)"
            )
        return self


@dataclass(frozen=True)
class Shape:
    """One drawn shape: its kind and its pixel box ``[x0, y0, x0 + side) × [y0, y0 + side)``."""

    shape: str
    colour: str
    x0: int
    y0: int
    side: int

    @property
    def centre(self) -> tuple[float, float]:
        return self.x0 + self.side / 2, self.y0 + self.side / 2


@dataclass(frozen=True)
class Examples:
    """``N`` grounding examples as tensors (``S = image_size``, ``L = MAX_WORDS``).

    ``images``: ``(N, 3, S, S)`` float32 in [0, 1]. ``tokens``: ``(N, L)`` int64 word indices into
    :data:`VOCABULARY`, 0-padded. ``boxes``: ``(N, 4)`` float32 normalized ``cxcywh`` of the
    referent. ``texts``: the expressions. ``relational``: ``(N,)`` bool, whether the expression
    uses a relation.
    """

    images: torch.Tensor
    tokens: torch.Tensor
    boxes: torch.Tensor
    texts: tuple[str, ...]
    relational: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, index: torch.Tensor) -> Examples:
        """The examples at ``index`` (integer indices)."""
        rows = index.tolist()
        return Examples(
            self.images[index],
            self.tokens[index],
            self.boxes[index],
            tuple(self.texts[i] for i in rows),
            self.relational[index],
        )


def tokenize(text: str, length: int = MAX_WORDS) -> list[int]:
    """Word indices of ``text`` into :data:`VOCABULARY`, padded with 0 to ``length``.

    Raises:
        DataError: a word is not in the vocabulary, or the text is longer than ``length`` words.
    """
    words = text.lower().split()
    unknown = [word for word in words if word not in VOCABULARY or word == PAD]
    if unknown:
        raise DataError(f"expression {text!r}: unknown word(s) {unknown}; the vocabulary is {VOCABULARY[1:]}")
    if len(words) > length:
        raise DataError(f"expression {text!r} has {len(words)} words; at most {length}")
    ids = [VOCABULARY.index(word) for word in words]
    return ids + [0] * (length - len(ids))


def detokenize(ids: list[int]) -> str:
    """The words of ``ids`` without padding."""
    return " ".join(VOCABULARY[i] for i in ids if i != 0)


def shape_mask(shape: Shape, size: int) -> np.ndarray:
    """``(size, size)`` bool: the pixels ``shape`` covers (pixel centres inside the continuous shape)."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    x0, y0, side = shape.x0, shape.y0, shape.side
    if shape.shape == "square":
        return (xs >= x0) & (xs < x0 + side) & (ys >= y0) & (ys < y0 + side)
    if shape.shape == "circle":
        cx, cy, radius = x0 + side / 2, y0 + side / 2, side / 2
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
    # an upward triangle: apex at the top middle, base along the bottom edge of the box
    inside_rows = (ys >= y0) & (ys < y0 + side)
    half_width = (ys - y0) / side * side / 2
    return inside_rows & (np.abs(xs - (x0 + side / 2)) <= half_width + 0.5)


def _matches(shape: Shape, colour: str | None, kind: str | None) -> bool:
    return (colour is None or shape.colour == colour) and (kind is None or shape.shape == kind)


def _phrase(colour: str | None, kind: str | None) -> str:
    return f"the {colour or ''} {kind or 'one'}".replace("  ", " ")


def _relation_holds(a: Shape, relation: str, b: Shape, margin: float) -> bool:
    (ax, ay), (bx, by) = a.centre, b.centre
    return {
        "left of": ax < bx - margin,
        "right of": ax > bx + margin,
        "above": ay < by - margin,
        "below": ay > by + margin,
    }[relation]


def _descriptions() -> list[tuple[str | None, str | None]]:
    colours: list[str | None] = [*COLOURS, None]
    kinds: list[str | None] = [*SHAPES, None]
    return [(c, k) for c in colours for k in kinds if (c, k) != (None, None)]


def candidate_expressions(
    shapes: list[Shape], margin: float
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Every attribute phrase and every relation phrase with exactly one referent in ``shapes``,
    as ``(text, index of the referent)`` (see the module docstring for the semantics)."""
    attributes, relations = [], []
    for colour, kind in _descriptions():
        hits = [i for i, s in enumerate(shapes) if _matches(s, colour, kind)]
        if len(hits) == 1:
            attributes.append((_phrase(colour, kind), hits[0]))
    for colour_b, kind_b in _descriptions():
        if kind_b is None:  # an anchor names its shape ("the blue square", not "the blue one")
            continue
        anchor = [i for i, s in enumerate(shapes) if _matches(s, colour_b, kind_b)]
        if len(anchor) != 1:
            continue
        b = shapes[anchor[0]]
        for colour, kind in _descriptions():
            if kind is None:
                continue
            for relation in RELATIONS:
                hits = [
                    i
                    for i, s in enumerate(shapes)
                    if i != anchor[0]
                    and _matches(s, colour, kind)
                    and _relation_holds(s, relation, b, margin)
                ]
                if len(hits) == 1:
                    text = f"{_phrase(colour, kind)} {relation} {_phrase(colour_b, kind_b)}"
                    relations.append((text, hits[0]))
    return attributes, relations


def referents(text: str, shapes: list[Shape], margin: float) -> list[int]:
    """The indices of the shapes ``text`` denotes (an independent reading of the phrase)."""
    words = text.split()
    relation_at = next(
        (i for i, word in enumerate(words) if word in ("left", "right", "above", "below")), None
    )

    def parse(part: list[str]) -> tuple[str | None, str | None]:
        colour = next((w for w in part if w in COLOURS), None)
        kind = next((w for w in part if w in SHAPES), None)
        return colour, kind

    if relation_at is None:
        colour, kind = parse(words)
        return [i for i, s in enumerate(shapes) if _matches(s, colour, kind)]
    relation = "above" if words[relation_at] == "above" else "below"
    rest = words[relation_at + 1 :]
    if words[relation_at] in ("left", "right"):
        relation, rest = f"{words[relation_at]} of", words[relation_at + 2 :]
    colour, kind = parse(words[:relation_at])
    colour_b, kind_b = parse(rest)
    anchor = [i for i, s in enumerate(shapes) if _matches(s, colour_b, kind_b)]
    if len(anchor) != 1:
        return []
    b = shapes[anchor[0]]
    return [
        i
        for i, s in enumerate(shapes)
        if i != anchor[0] and _matches(s, colour, kind) and _relation_holds(s, relation, b, margin)
    ]


def _place(spec: GroundingSpec, rng: np.random.Generator) -> list[Shape] | None:
    size = spec.image_size
    low, high = spec.size_range
    palette = [(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))) for _ in range(spec.kinds)]
    shapes: list[Shape] = []
    for _ in range(spec.objects):
        kind, colour = palette[int(rng.integers(len(palette)))]
        for _attempt in range(50):
            side = round(float(rng.uniform(low, high)) * size)
            side = max(3, min(side, size))
            x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
            if all(
                x0 + side + spec.gap <= s.x0
                or s.x0 + s.side + spec.gap <= x0
                or y0 + side + spec.gap <= s.y0
                or s.y0 + s.side + spec.gap <= y0
                for s in shapes
            ):
                shapes.append(Shape(kind, colour, x0, y0, side))
                break
        else:
            return None
    return shapes


def render(shapes: list[Shape], size: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``(3, size, size)`` float32 image of ``shapes`` on a dark noisy background."""
    image = np.full((3, size, size), 0.12, dtype=np.float32)
    for shape in shapes:
        mask = shape_mask(shape, size)
        for channel, value in enumerate(COLOURS[shape.colour]):
            image[channel][mask] = value
    if noise > 0:
        image = image + rng.normal(0.0, noise, size=image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0)


@dataclass(frozen=True)
class Example:
    """One generated example before batching (its shapes kept for tests and pictures)."""

    image: np.ndarray
    text: str
    shapes: list[Shape]
    referent: int
    relational: bool

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The referent's normalized ``(cx, cy, w, h)``."""
        shape = self.shapes[self.referent]
        size = self.image.shape[-1]
        cx, cy = shape.centre
        return cx / size, cy / size, shape.side / size, shape.side / size


def generate_example(spec: GroundingSpec, seed: np.random.SeedSequence) -> Example:
    """One example from ``seed`` (see the module docstring).

    Raises:
        DataError: no scene with a uniquely referring expression in :data:`MAX_TRIES` draws (the
            shapes do not fit in the image, for instance).
    """
    rng = np.random.default_rng(seed)
    margin = spec.relation_margin * spec.image_size
    for _ in range(MAX_TRIES):
        shapes = _place(spec, rng)
        if shapes is None:
            continue
        attributes, relations = candidate_expressions(shapes, margin)
        if not attributes and not relations:
            continue
        use_relation = bool(relations) and (not attributes or rng.random() < spec.relation_rate)
        pool = relations if use_relation else attributes
        text, referent = pool[int(rng.integers(len(pool)))]
        image = render(shapes, spec.image_size, spec.noise, rng)
        return Example(image, text, shapes, referent, use_relation)
    raise DataError(
        f"no scene with a uniquely referring expression in {MAX_TRIES} draws: {spec.objects} shapes of "
        f"size {spec.size_range} may not fit in {spec.image_size}×{spec.image_size} pixels "
        "(lower objects or size_range, or raise image_size)"
    )


def generate_examples(spec: GroundingSpec, count: int, seed: int) -> Examples:
    """Draw ``count`` examples of ``spec`` from ``seed`` (see the module docstring)."""
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    drawn = [generate_example(spec, child) for child in np.random.SeedSequence(seed).spawn(count)]
    return Examples(
        images=torch.from_numpy(np.stack([example.image for example in drawn])),
        tokens=torch.tensor([tokenize(example.text) for example in drawn], dtype=torch.long),
        boxes=torch.tensor([example.box for example in drawn], dtype=torch.float32),
        texts=tuple(example.text for example in drawn),
        relational=torch.tensor([example.relational for example in drawn], dtype=torch.bool),
    )

"""Evolution over distillers: random initialisation, crossover, mutation, parents, shrinkage.

KD-Zero (Li et al., NeurIPS 2023; abstract) evolves distillers with crossover and mutation over a
population and shrinks the search space as it goes. The operators here follow the same
group's released evolutionary searcher (Auto-DAS, ``evo_kd_searcher``; notes in
``docs/methods/kd-zero.md``): parents are drawn uniformly from the best half of what
has been evaluated, a child is a crossover of two parents with probability ``crossover`` and
is mutated with probability ``mutation`` (always, when it did not cross over). Unlike that
steady-state loop (one child per iteration), each generation here has ``population`` new
children, so a generation can be evaluated in parallel.

Every operator returns a *valid* tree: it only picks operations whose input shape fits
(:class:`SearchSpace`), and falls back to a parent when no valid edit is found. Randomness comes
from a NumPy generator the caller seeds, so a seeded search is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from distill.losses.distiller import (
    DISTANCES,
    TRANSFORMS,
    WEIGHTS,
    Distiller,
    Op,
    Shape,
    ShapeError,
    Term,
)

_ATTEMPTS = 50

_T = TypeVar("_T")


@dataclass(frozen=True)
class SearchSpace:
    """What a search may build: knowledge inputs and their (teacher-side) shapes, the
    transforms and distances still allowed (shrinkage removes some), weights, and tree sizes."""

    shapes: dict[str, Shape]
    transforms: tuple[str, ...]
    distances: tuple[str, ...]
    weights: tuple[float, ...] = WEIGHTS
    max_terms: int = 2
    max_transforms: int = 3

    @classmethod
    def full(cls, shapes: dict[str, Shape], **options: Any) -> SearchSpace:
        """Every registered transform (but the no-op: a shorter chain is the no-op) and distance."""
        transforms = tuple(name for name in TRANSFORMS.names() if name != "identity")
        return cls(shapes, transforms, tuple(DISTANCES.names()), **options)

    def ops(self) -> list[Op]:
        """Every (transform, parameter) the space allows."""
        ops: list[Op] = []
        for name in self.transforms:
            params = TRANSFORMS.get(name).params
            ops.extend(Op(name, float(p)) for p in params) if params else ops.append(Op(name))
        return ops

    def without(self, operations: Iterable[str]) -> SearchSpace:
        """The space with ``transform:NAME`` / ``distance:NAME`` entries removed."""
        dropped = set(operations)
        return replace(
            self,
            transforms=tuple(name for name in self.transforms if f"transform:{name}" not in dropped),
            distances=tuple(name for name in self.distances if f"distance:{name}" not in dropped),
        )

    def allows(self, distiller: Distiller) -> bool:
        """Whether ``distiller`` is valid (shapes) and built only from allowed operations."""
        if not 1 <= len(distiller.terms) <= self.max_terms:
            return False
        for term in distiller.terms:
            if term.distance not in self.distances or len(term.transforms) > self.max_transforms:
                return False
            if any(op.name not in self.transforms for op in term.transforms):
                return False
        return distiller.is_valid(self.shapes)


def _pick(rng: np.random.Generator, items: Sequence[_T]) -> _T:
    return items[int(rng.integers(len(items)))]


def _fits(op: Op, shape: Shape) -> Shape | None:
    try:
        return op.output_shape(shape)
    except ShapeError:
        return None


def random_chain(rng: np.random.Generator, space: SearchSpace, shape: Shape, length: int) -> tuple[Op, ...]:
    """``length`` ops (fewer if no op fits), each chosen among those that take the current shape."""
    chain: list[Op] = []
    ops = space.ops()
    for _ in range(length):
        fitting = [(op, out) for op in ops if (out := _fits(op, shape)) is not None]
        if not fitting:
            break
        op, shape = _pick(rng, fitting)
        chain.append(op)
    return tuple(chain)


def random_term(rng: np.random.Generator, space: SearchSpace) -> Term:
    """A valid term: knowledge, a chain of 0..max_transforms ops, a distance, a weight."""
    for _ in range(_ATTEMPTS):
        knowledge = str(_pick(rng, sorted(space.shapes)))
        length = int(rng.integers(space.max_transforms + 1))
        chain = random_chain(rng, space, space.shapes[knowledge], length)
        term = Term(
            knowledge, chain, str(_pick(rng, list(space.distances))), float(_pick(rng, list(space.weights)))
        )
        if Distiller((term,)).is_valid(space.shapes):
            return term
    raise ValueError("the search space cannot build a valid term (too few operations left?)")


def random_distiller(rng: np.random.Generator, space: SearchSpace) -> Distiller:
    """A valid distiller of 1..max_terms random terms."""
    count = 1 + int(rng.integers(space.max_terms))
    return Distiller(tuple(random_term(rng, space) for _ in range(count)))


def mutate(rng: np.random.Generator, parent: Distiller, space: SearchSpace) -> Distiller:
    """One random edit of one term (replace, insert or delete an op; change the distance,
    weight or knowledge input) or of the term list (add or drop a term), retried until the
    child is valid and different; the parent itself if no such edit is found."""
    for _ in range(_ATTEMPTS):
        terms = list(parent.terms)
        index = int(rng.integers(len(terms)))
        term = terms[index]
        kind = str(_pick(rng, ["replace", "insert", "delete", "distance", "weight", "knowledge", "terms"]))
        chain = list(term.transforms)
        if kind == "replace" and chain:
            position = int(rng.integers(len(chain)))
            chain[position] = _pick(rng, space.ops())
            terms[index] = replace(term, transforms=tuple(chain))
        elif kind == "insert" and len(chain) < space.max_transforms:
            chain.insert(int(rng.integers(len(chain) + 1)), _pick(rng, space.ops()))
            terms[index] = replace(term, transforms=tuple(chain))
        elif kind == "delete" and chain:
            del chain[int(rng.integers(len(chain)))]
            terms[index] = replace(term, transforms=tuple(chain))
        elif kind == "distance":
            terms[index] = replace(term, distance=str(_pick(rng, list(space.distances))))
        elif kind == "weight":
            terms[index] = replace(term, weight=float(_pick(rng, list(space.weights))))
        elif kind == "knowledge" and len(space.shapes) > 1:
            knowledge = str(_pick(rng, sorted(space.shapes)))
            chain_out = random_chain(rng, space, space.shapes[knowledge], len(chain))
            terms[index] = replace(term, knowledge=knowledge, transforms=chain_out)
        elif kind == "terms":
            if len(terms) > 1 and (len(terms) == space.max_terms or rng.random() < 0.5):
                del terms[index]
            elif len(terms) < space.max_terms:
                terms.append(random_term(rng, space))
        child = Distiller(tuple(terms))
        if child.key() != parent.key() and space.allows(child):
            return child
    return parent


def crossover(rng: np.random.Generator, first: Distiller, second: Distiller, space: SearchSpace) -> Distiller:
    """Uniform crossover: the child has ``first``'s number of terms; term ``i`` takes each gene
    (knowledge with its chain, or a one-point splice of both chains; distance; weight) from
    either parent's term ``i`` with probability ½ (from ``first`` where ``second`` has no
    term ``i``). Retried until valid; ``first`` if no valid child is found."""
    for _ in range(_ATTEMPTS):
        terms = []
        for index, own in enumerate(first.terms):
            other = second.terms[index] if index < len(second.terms) else own
            if own.knowledge == other.knowledge and rng.random() < 0.5:
                cut_own = int(rng.integers(len(own.transforms) + 1))
                cut_other = int(rng.integers(len(other.transforms) + 1))
                chain = (own.transforms[:cut_own] + other.transforms[cut_other:])[: space.max_transforms]
                knowledge = own.knowledge
            else:
                source = own if rng.random() < 0.5 else other
                knowledge, chain = source.knowledge, source.transforms
            distance = own.distance if rng.random() < 0.5 else other.distance
            weight = own.weight if rng.random() < 0.5 else other.weight
            terms.append(Term(knowledge, chain, distance, weight))
        child = Distiller(tuple(terms))
        if space.allows(child):
            return child
    return first


@dataclass(frozen=True)
class Scored:
    """An evaluated candidate: its tree, and its fitness (``None`` when rejected or failed)."""

    distiller: Distiller
    fitness: float | None
    val_loss: float | None = None

    def rank_key(self) -> tuple[float, float]:
        """Higher is better: fitness first, then lower validation loss."""
        return (self.fitness if self.fitness is not None else -np.inf, -(self.val_loss or 0.0))


def best_half(evaluated: list[Scored], share: float = 0.5) -> list[Scored]:
    """The parents: the best ``share`` of the candidates that trained (at least one)."""
    ranked = sorted((s for s in evaluated if s.fitness is not None), key=Scored.rank_key, reverse=True)
    return ranked[: max(1, int(np.ceil(share * len(ranked))))]


def offspring(
    rng: np.random.Generator,
    parents: list[Scored],
    space: SearchSpace,
    crossover_probability: float,
    mutation_probability: float,
) -> Distiller:
    """One child of two parents drawn uniformly from ``parents``."""
    first = parents[int(rng.integers(len(parents)))].distiller
    second = parents[int(rng.integers(len(parents)))].distiller
    crossed = rng.random() < crossover_probability
    child = crossover(rng, first, second, space) if crossed else first
    if not crossed or child.key() in (first.key(), second.key()) or rng.random() < mutation_probability:
        child = mutate(rng, child, space)
    return child if space.allows(child) else mutate(rng, first, space)


@dataclass(frozen=True)
class ShrinkRule:
    """Search-space shrinkage: an operation is dropped once at least ``min_uses`` candidates
    used it and at least ``share`` of them were rejected or below the median fitness."""

    min_uses: int = 6
    share: float = 0.8


def operations_to_drop(evaluated: list[Scored], space: SearchSpace, rule: ShrinkRule) -> list[str]:
    """The ``transform:NAME`` / ``distance:NAME`` entries that keep producing poor candidates.
    Never drops the last two distances or the last three transforms."""
    fitnesses = [s.fitness for s in evaluated if s.fitness is not None]
    if not fitnesses:
        return []
    median = float(np.median(fitnesses))
    uses: dict[str, int] = {}
    poor: dict[str, int] = {}
    for scored in evaluated:
        bad = scored.fitness is None or scored.fitness < median
        for operation in scored.distiller.operations():
            uses[operation] = uses.get(operation, 0) + 1
            poor[operation] = poor.get(operation, 0) + int(bad)
    candidates = sorted(
        (name for name, count in uses.items() if count >= rule.min_uses and poor[name] / count >= rule.share),
        key=lambda name: (-poor[name] / uses[name], name),
    )
    dropped: list[str] = []
    transforms, distances = len(space.transforms), len(space.distances)
    for name in candidates:
        kind, _, op = name.partition(":")
        if kind == "transform" and op in space.transforms and transforms > 3:
            transforms -= 1
            dropped.append(name)
        elif kind == "distance" and op in space.distances and distances > 2:
            distances -= 1
            dropped.append(name)
    return dropped

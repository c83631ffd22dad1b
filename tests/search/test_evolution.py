"""Evolution operators, shrinkage and the loss-rejection protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.losses.distiller import TRANSFORMS, Distiller, Op, Term, Transform
from distill.methods import Batch, FrozenTeacher
from distill.models import build_model
from distill.models.cnn import CNN1dSpec
from distill.models.mlp import MLPSpec
from distill.registry import Entry
from distill.search.evolution import (
    Scored,
    SearchSpace,
    ShrinkRule,
    best_half,
    crossover,
    mutate,
    offspring,
    operations_to_drop,
    random_distiller,
)
from distill.search.rejection import RejectionProbe

SPACE = SearchSpace.full({"logits": (8, 10), "f0": (8, 6, 12)})


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 1_000_000))
def test_crossover_and_mutation_always_yield_valid_trees(seed):
    rng = np.random.default_rng(seed)
    first, second = random_distiller(rng, SPACE), random_distiller(rng, SPACE)
    assert SPACE.allows(first) and SPACE.allows(second)
    assert SPACE.allows(crossover(rng, first, second, SPACE))
    mutated = mutate(rng, first, SPACE)
    assert SPACE.allows(mutated)
    parents = [Scored(first, 1.0), Scored(second, 2.0)]
    assert SPACE.allows(offspring(rng, parents, SPACE, 0.5, 0.5))


def test_mutation_changes_the_tree_and_respects_a_shrunk_space():
    rng = np.random.default_rng(0)
    shrunk = SPACE.without(["transform:exp", "transform:log", "distance:l1"])
    for _ in range(200):
        parent = random_distiller(rng, shrunk)
        child = mutate(rng, parent, shrunk)
        assert child.key() != parent.key()
        assert "transform:exp" not in child.operations() and "distance:l1" not in child.operations()


def test_random_generation_is_seeded():
    first = [random_distiller(np.random.default_rng(7), SPACE).key() for _ in range(3)]
    assert len(set(first)) == 1
    assert random_distiller(np.random.default_rng(8), SPACE).key() != first[0]


def _term(distance, *ops, weight=1.0):
    return Distiller((Term("logits", tuple(Op(o) for o in ops), distance, weight),))


def test_parents_are_the_best_half_and_rejected_ones_never_are():
    scored = [
        Scored(_term("mse"), 10.0),
        Scored(_term("l1"), 30.0),
        Scored(_term("kl"), None),
        Scored(_term("cosine"), 20.0),
        Scored(_term("pearson"), 5.0),
    ]
    assert [s.fitness for s in best_half(scored)] == [30.0, 20.0]
    tie = [Scored(_term("mse"), 10.0, val_loss=2.0), Scored(_term("l1"), 10.0, val_loss=1.0)]
    assert best_half(tie, 0.5)[0].distiller.terms[0].distance == "l1"


def test_shrinkage_drops_an_operation_that_keeps_producing_poor_candidates():
    good = [Scored(_term("mse", "abs"), 50.0 + i) for i in range(6)]
    poor = [Scored(_term("l1", "exp"), 10.0 + i) for i in range(6)]
    dropped = operations_to_drop(good + poor, SPACE, ShrinkRule(min_uses=6, share=0.8))
    assert set(dropped) == {"distance:l1", "transform:exp"}
    few = operations_to_drop(good + poor[:5], SPACE, ShrinkRule(min_uses=6, share=0.8))
    assert "transform:exp" not in few  # five uses are not enough evidence
    shrunk = SPACE.without(dropped)
    assert "exp" not in shrunk.transforms and "l1" not in shrunk.distances


def _probe():
    torch.manual_seed(0)
    student = build_model(MLPSpec(hidden=[16]), (1, 24), 5)
    teacher = build_model(CNN1dSpec(channels=[8, 8]), (1, 24), 5)
    inputs = torch.randn(16, 1, 24)
    batch = Batch(inputs, torch.arange(16) % 5, torch.arange(16), 5)
    return RejectionProbe(student, FrozenTeacher(teacher), batch, [], seed=0)


@pytest.fixture
def test_transforms(monkeypatch):
    """Two operations no search space holds: one that poisons the loss with NaN, one that makes
    it constant (blind to the student)."""
    entries = dict(TRANSFORMS._entries)
    entries["nan_test"] = Entry("nan_test", Transform(lambda x, p: x * float("nan"), lambda s, p: s), "")
    entries["zero_test"] = Entry("zero_test", Transform(lambda x, p: x * 0.0, lambda s, p: s), "")
    monkeypatch.setattr(TRANSFORMS, "_entries", entries)


def test_rejection_protocol_rejects_nan_constant_and_exploding_candidates(test_transforms):
    probe = _probe()
    assert probe.shapes == {"logits": (16, 5)}
    assert "raises TypeError" in probe.reason(_term("kl", "log_softmax"))  # no temperature given
    assert probe.reason(Distiller((Term("logits", (Op("log_softmax", 4.0),), "kl", 16.0),))) is None
    assert "loss is nan" in probe.reason(_term("mse", "nan_test"))
    assert "does not change the student's gradients" in probe.reason(_term("mse", "zero_test"))
    exploding = Distiller((Term("logits", (Op("exp"), Op("exp"), Op("square")), "mse", 16.0),))
    assert "explodes" in probe.reason(exploding)
    before = [p.clone() for p in probe.student.parameters()]
    probe.reason(_term("mse", "abs"))
    assert all(torch.equal(a, b) for a, b in zip(before, probe.student.parameters(), strict=True))

"""Partitions: per-prototype class shares, Dirichlet label skew, client sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.errors import DataError
from distill.federated.partition import class_shares, dirichlet_split, prototype_partitions, sample_clients


def _targets(per_class: int = 100, classes: int = 10) -> torch.Tensor:
    return torch.arange(classes).repeat_interleave(per_class)


def test_class_shares_take_the_share_of_every_class_disjointly():
    targets = _targets()
    parts = class_shares(targets, [0.1, 0.3, 0.6], seed=0)
    assert [len(part) for part in parts] == [100, 300, 600]
    for share, part in zip([0.1, 0.3, 0.6], parts, strict=True):
        counts = torch.bincount(targets[part], minlength=10)
        assert torch.all(counts == int(share * 100))  # the same share of *every* class
    joined = torch.cat(parts)
    assert len(joined.unique()) == len(joined)  # disjoint


def test_class_shares_refuse_shares_above_one():
    with pytest.raises(ValueError, match="sum to at most 1"):
        class_shares(_targets(), [0.6, 0.6], seed=0)


@settings(max_examples=20, deadline=None)
@given(clients=st.integers(1, 6), beta=st.floats(0.05, 50.0), seed=st.integers(0, 1000))
def test_dirichlet_split_is_a_partition_with_minimum_size(clients, beta, seed):
    targets = _targets(60)
    rows = torch.arange(len(targets))
    parts = dirichlet_split(rows, targets, clients, beta, seed, min_size=5)
    joined = torch.cat(parts)
    assert len(joined) == len(rows) and len(joined.unique()) == len(rows)
    assert min(len(part) for part in parts) >= 5


def test_smaller_beta_gives_each_client_fewer_classes():
    targets = _targets(200)
    rows = torch.arange(len(targets))

    def classes_per_client(beta: float) -> float:
        counts = []
        for seed in range(5):
            for part in dirichlet_split(rows, targets, 10, beta, seed, min_size=5):
                shares = torch.bincount(targets[part], minlength=10).float() / len(part)
                counts.append(int((shares > 0.05).sum()))
        return float(np.mean(counts))

    assert classes_per_client(0.1) < classes_per_client(1.0) < classes_per_client(100.0)


def test_dirichlet_split_is_seeded():
    targets = _targets()
    rows = torch.arange(len(targets))
    first = dirichlet_split(rows, targets, 4, 0.3, seed=3)
    again = dirichlet_split(rows, targets, 4, 0.3, seed=3)
    other = dirichlet_split(rows, targets, 4, 0.3, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_dirichlet_split_refuses_too_few_examples():
    targets = _targets(2)
    with pytest.raises(DataError, match="cannot give 5 clients 10 examples"):
        dirichlet_split(torch.arange(20), targets, 5, 0.5, seed=0)


def test_prototype_partitions_index_into_the_given_rows():
    targets = _targets()
    rows = torch.arange(200, 1000)  # the first 200 rows went elsewhere (public, validation)
    shards = prototype_partitions(targets, rows, [0.2, 0.8], [3, 2], beta=0.5, seed=0, min_size=5)
    assert [len(prototype) for prototype in shards] == [3, 2]
    joined = torch.cat([part for prototype in shards for part in prototype])
    assert joined.min() >= 200 and len(joined.unique()) == len(joined)
    assert sum(len(part) for part in shards[0]) == 160 and sum(len(part) for part in shards[1]) == 640


def test_sample_clients_takes_floor_fraction_at_least_one():
    rng = np.random.default_rng(0)
    assert len(sample_clients(10, 0.3, rng)) == 3
    assert len(sample_clients(5, 0.1, rng)) == 1  # max(⌊0.5⌋, 1)
    chosen = sample_clients(10, 1.0, rng)
    assert chosen == list(range(10))

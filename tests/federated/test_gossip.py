"""Decentralized gossip over time-varying links: graphs, mixing weights, rounds, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.federated.gossip import Gossip, GossipRecipe, link_graph, mixing_weights


def gossip_recipe(**changes) -> GossipRecipe:
    data = {
        "name": "gossip-test",
        "data": {"name": "mnist1d", "num_samples": 1200, "val_fraction": 0.0},
        "model": {"name": "mlp", "hidden": [16]},
        "devices": 6,
        "dirichlet_alpha": 0.5,
        "density": 0.5,
        "rounds": 2,
        "local": {"epochs": 1, "batch_size": 32, "lr": 0.01},
    }
    data.update(changes)
    return GossipRecipe.model_validate(data)


def test_link_graphs_are_symmetric_seeded_and_as_dense_as_asked():
    graphs = [link_graph(40, 0.2, seed=0, round_index=r) for r in range(20)]
    for graph in graphs:
        assert np.array_equal(graph, graph.T) and not graph.diagonal().any()
    density = np.mean([graph[np.triu_indices(40, 1)].mean() for graph in graphs])
    assert 0.17 < density < 0.23
    assert np.array_equal(link_graph(40, 0.2, 0, 3), graphs[3])
    assert not np.array_equal(graphs[3], graphs[4])  # time-varying


@pytest.mark.parametrize("rule", ["metropolis", "uniform"])
def test_mixing_weights_are_row_stochastic_over_links_and_self(rule):
    graph = link_graph(12, 0.3, seed=1, round_index=0)
    weights = mixing_weights(graph, rule)
    assert np.allclose(weights.sum(axis=1), 1.0) and (weights >= 0).all()
    assert ((weights > 0) == (graph | np.eye(12, dtype=bool))).all()
    if rule == "metropolis":  # Metropolis–Hastings weights are symmetric, hence doubly stochastic
        assert np.allclose(weights, weights.T) and np.allclose(weights.sum(axis=0), 1.0)


def test_a_complete_graph_with_uniform_linear_mixing_reaches_consensus_in_one_round():
    gossip = Gossip(gossip_recipe(density=1.0, mixing="uniform", aggregation={"rule": "linear"}))
    gossip.run_round(0)
    first = gossip.states[0]
    assert all(torch.allclose(state[key], first[key], atol=1e-6) for state in gossip.states for key in first)


@pytest.mark.parametrize(
    "aggregation", [{"rule": "linear"}, {"rule": "power", "degree": 5.0}, {"rule": "hyperprism"}]
)
def test_every_rule_runs_and_reports_its_degrees(aggregation):
    gossip = Gossip(gossip_recipe(aggregation=aggregation))
    record = gossip.run_round(0)
    assert record.mean_accuracy is not None and record.min_accuracy <= record.mean_accuracy
    assert set(record.degrees) == {"body.1", "head"}
    expected = {"linear": 1.0, "power": 5.0}.get(aggregation["rule"])
    if expected is not None:
        assert all(degree == expected for degree in record.degrees.values())
    else:
        assert all(1.0 <= degree <= 9.0 for degree in record.degrees.values())


def test_a_restored_snapshot_continues_exactly():
    recipe = gossip_recipe(aggregation={"rule": "hyperprism"})
    straight = Gossip(recipe)
    straight.run_round(0)
    snapshot = straight.snapshot()
    straight.run_round(1)
    resumed = Gossip(recipe)
    resumed.restore(snapshot)
    resumed.run_round(1)
    assert all(
        torch.equal(a[key], b[key]) for a, b in zip(straight.states, resumed.states, strict=True) for key in a
    )

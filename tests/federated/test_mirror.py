"""The weighted power mean of AIMS/HyperPrism and the degree hypernetwork."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from distill.federated.averaging import cpu_state, weighted_average
from distill.federated.hypernetwork import DegreeHypernetwork, adaptive_aggregate, layer_of
from distill.federated.mirror import aggregate_states, power_mean

values_strategy = st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=6, max_size=6)


def test_degree_one_is_weighted_averaging_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    states = []
    for _ in range(3):
        for parameter in model.parameters():
            nn.init.normal_(parameter)
        states.append(cpu_state(model))
    merged = aggregate_states(states, [1.0, 2.0, 5.0], 1.0)
    expected = weighted_average(states, [1.0, 2.0, 5.0])
    for key in expected:
        assert torch.allclose(merged[key].double(), expected[key].double(), atol=1e-5), key


@settings(max_examples=50, deadline=None)
@given(
    values=values_strategy,
    degree=st.floats(1.0, 12.0),
    weights=st.lists(st.floats(0.1, 5.0), min_size=3, max_size=3),
)
def test_the_mean_lies_between_the_smallest_and_largest_value(values, degree, weights):
    stacked = torch.tensor(values, dtype=torch.float64).reshape(3, 2)
    mean = power_mean(stacked, torch.tensor(weights, dtype=torch.float64), degree)
    assert torch.all(mean >= stacked.min(0).values - 1e-9) and torch.all(mean <= stacked.max(0).values + 1e-9)


@settings(max_examples=30, deadline=None)
@given(values=values_strategy, degree=st.floats(1.0, 9.0), factor=st.floats(0.01, 100.0))
def test_the_mean_is_positively_homogeneous_and_odd(values, degree, factor):
    stacked = torch.tensor(values, dtype=torch.float64).reshape(3, 2)
    weights = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    mean = power_mean(stacked, weights, degree)
    assert torch.allclose(power_mean(factor * stacked, weights, degree), factor * mean, rtol=1e-6, atol=1e-9)
    assert torch.allclose(power_mean(-stacked, weights, degree), -mean, atol=1e-9)


def test_a_small_coordinate_beside_a_large_one_keeps_its_own_scale():
    """Found by hypothesis: with one scale per tensor, 0.0078 beside 3.0 vanished under p = 12."""
    stacked = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0078125]], dtype=torch.float64)
    weights = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)
    mean = power_mean(stacked, weights, 12.0)
    assert torch.allclose(mean, stacked[2] * 0.5 ** (1 / 12))  # (½·x^12)^(1/12), coordinate by coordinate


def test_large_degree_on_large_weights_does_not_overflow_and_favours_the_largest_magnitude():
    stacked = torch.tensor([[300.0, -2.0], [100.0, -900.0]], dtype=torch.float32)
    mean = power_mean(stacked, torch.tensor([1.0, 1.0]), 20.0)
    assert torch.isfinite(mean).all()
    assert 280.0 < float(mean[0]) <= 300.0 and -900.0 <= float(mean[1]) < -850.0


def test_gradients_reach_the_degree_and_the_hypernetwork():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    states = []
    for _ in range(3):
        for parameter in model.parameters():
            nn.init.normal_(parameter)
        states.append(cpu_state(model))
    degree = torch.tensor(3.0, requires_grad=True)
    power_mean(torch.stack([s["0.weight"] for s in states]), torch.ones(3), degree).sum().backward()
    assert degree.grad is not None and torch.isfinite(degree.grad) and degree.grad != 0

    layers = sorted({layer_of(key) for key in states[0]})
    hypernetwork = DegreeHypernetwork(layers, max_degree=9.0)
    before = [p.detach().clone() for p in hypernetwork.parameters()]
    optimizer = torch.optim.Adam(hypernetwork.parameters(), lr=0.1)
    batch = (torch.randn(16, 4), torch.randint(0, 3, (16,)))
    merged, used = adaptive_aggregate(model, hypernetwork, optimizer, states, [1.0, 1.0, 1.0], batch)
    assert set(used) == {"0", "2"} and all(1.0 <= p <= 9.0 for p in used.values())
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, hypernetwork.parameters(), strict=True))
    assert not any(value.requires_grad for value in merged.values())

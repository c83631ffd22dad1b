"""L2T-DLN: the one-vs-one view, the dynamic loss network and the coordinate-wise LSTM teacher."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.teaching.dln import (
    CoordinateLSTM,
    DynamicLossNetwork,
    fit_to_pairwise_cross_entropy,
    one_vs_one_rows,
    pairwise_cross_entropy,
    preprocess_gradient,
)


def test_one_row_per_example_and_non_target_class():
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.5]])
    targets = torch.tensor([1, 0])
    rows = one_vs_one_rows(logits, targets)
    assert rows.shape == (2 * 2, 4)
    s = torch.sigmoid(logits)
    expected = torch.tensor(
        [
            [s[0, 1], s[0, 0], 1.0, 0.0],
            [s[0, 1], s[0, 2], 1.0, 0.0],
            [s[1, 0], s[1, 1], 1.0, 0.0],
            [s[1, 0], s[1, 2], 1.0, 0.0],
        ]
    )
    torch.testing.assert_close(rows, expected)


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 10), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_loss_is_invariant_to_permuting_non_target_classes(classes, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    network = DynamicLossNetwork()
    logits = torch.randn(batch, classes, generator=generator)
    targets = torch.randint(0, classes, (batch,), generator=generator)
    permuted = logits.clone()
    for row in range(batch):  # shuffle every class but the target, per example
        others = [c for c in range(classes) if c != int(targets[row])]
        order = torch.randperm(len(others), generator=generator)
        permuted[row, others] = logits[row, [others[i] for i in order]]
    torch.testing.assert_close(network.loss(permuted, targets), network.loss(logits, targets))


def test_gradient_preprocessing_values():
    p = 10.0
    gradient = torch.tensor([1.0, -math.exp(-5), 1e-6, -2e-6, 0.0])
    features = preprocess_gradient(gradient, p)
    expected = torch.tensor(
        [
            [0.0, 1.0],  # log 1 / 10, sign +
            [-0.5, -1.0],  # log e^-5 / 10, sign −
            [-1.0, math.exp(10) * 1e-6],  # below e^-10: (−1, e^p g)
            [-1.0, -math.exp(10) * 2e-6],
            [-1.0, 0.0],
        ]
    )
    torch.testing.assert_close(features, expected)


def test_teacher_is_shared_across_coordinates():
    torch.manual_seed(0)
    teacher = CoordinateLSTM()
    gradient = torch.randn(50) * 1e-3
    memory = teacher.initial_memory(50)
    memory = [(h + 0.1 * torch.randn_like(h), c + 0.1 * torch.randn_like(c)) for h, c in memory]
    update, following = teacher(gradient, memory)
    order = torch.randperm(50)
    permuted_update, permuted_following = teacher(gradient[order], [(h[order], c[order]) for h, c in memory])
    torch.testing.assert_close(permuted_update, update[order])
    for (h, c), (hp, cp) in zip(following, permuted_following, strict=True):
        torch.testing.assert_close(hp, h[order])
        torch.testing.assert_close(cp, c[order])
    assert update.shape == (50,) and bool((update.abs() < 1).all())


def test_pairwise_start_makes_right_answers_cheaper():
    torch.manual_seed(0)
    network = DynamicLossNetwork()
    error = fit_to_pairwise_cross_entropy(network, steps=300)
    probes = torch.tensor([[0.9, 0.1, 1.0, 0.0], [0.5, 0.5, 1.0, 0.0], [0.1, 0.9, 1.0, 0.0]])
    values = network(probes).detach()
    assert error < 0.1
    assert values[0] < values[1] < values[2]
    torch.testing.assert_close(values, pairwise_cross_entropy(probes), atol=0.4, rtol=0.1)

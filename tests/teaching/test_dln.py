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
    network = DynamicLossNetwork(normalize=False)
    error = fit_to_pairwise_cross_entropy(network, steps=300)
    probes = torch.tensor([[0.9, 0.1, 1.0, 0.0], [0.5, 0.5, 1.0, 0.0], [0.1, 0.9, 1.0, 0.0]])
    values = network(probes).detach()
    assert error < 0.1
    assert values[0] < values[1] < values[2]
    torch.testing.assert_close(values, pairwise_cross_entropy(probes), atol=0.4, rtol=0.1)


def test_normalized_loss_has_a_fixed_scale_whatever_the_weights():
    torch.manual_seed(0)
    network = DynamicLossNetwork()
    logits, targets = torch.randn(6, 5), torch.randint(0, 5, (6,))
    before = network.loss(logits, targets)
    raw_before = network.raw(one_vs_one_rows(logits, targets)).mean()
    assert torch.isclose(network(network.grid).abs().mean(), torch.tensor(1.0))
    with torch.no_grad():  # the bias-free network is homogeneous: scaling layers scales its output
        network.output.weight.mul_(7.0)
        network.hidden[0].weight.mul_(3.0)
    torch.testing.assert_close(network.raw(one_vs_one_rows(logits, targets)).mean(), 21 * raw_before)
    torch.testing.assert_close(network.loss(logits, targets), before)  # normalized: unchanged


def test_meta_training_teaches_the_lstm_and_is_seeded():
    from torch import nn

    from distill.data.bundle import Split
    from distill.teaching.dln import DLNSchedule, meta_train

    generator = torch.Generator().manual_seed(0)
    centers = 0.6 * torch.randn(3, 6, generator=generator)
    targets = torch.randint(0, 3, (200,), generator=generator)
    inputs = centers[targets] + torch.randn(200, 6, generator=generator)
    train, dev = Split(inputs[:150], targets[:150]), Split(inputs[150:], targets[150:])

    def new_student(episode):
        torch.manual_seed(episode)
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    schedule = DLNSchedule(
        episodes=2,
        episode_steps=6,
        unroll=3,
        lr=0.5,
        batch_size=16,
        dln_step=1e-2,
        teacher_lr=1e-2,
        val_batch_size=20,
    )

    def run():
        torch.manual_seed(5)
        lstm, network = CoordinateLSTM(), DynamicLossNetwork(width=8, depth=2)
        before = [value.clone() for value in lstm.parameters()]
        start = [value.clone() for value in network.parameters()]
        rows = meta_train(lstm, network, new_student, train, dev, schedule, torch.device("cpu"), seed=2)
        assert any(not torch.equal(a, b) for a, b in zip(before, lstm.parameters(), strict=True))
        for a, b in zip(start, network.parameters(), strict=True):  # the initial DLN is kept as it was
            torch.testing.assert_close(a, b)
        return rows, [value.detach() for value in lstm.parameters()]

    rows, weights = run()
    assert [row["episode"] for row in rows] == [0.0, 1.0]
    assert all(0.0 <= row["dev_accuracy"] <= 1.0 and math.isfinite(row["validation_loss"]) for row in rows)
    again_rows, again_weights = run()
    assert [row["dev_accuracy"] for row in again_rows] == [row["dev_accuracy"] for row in rows]
    for a, b in zip(weights, again_weights, strict=True):
        torch.testing.assert_close(a, b)

"""The reverse-mode hypergradient through unrolled SGD equals finite differences."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.teaching.unroll import Unroll, functional_student, hypergradient


def _weighted_ce(logits, targets, theta, index):
    # the teacher scales each class's loss; step index shifts it so that steps differ
    weights = torch.sigmoid(theta["scale"] + 0.1 * index)
    return (weights[targets] * F.cross_entropy(logits, targets, reduction="none")).mean()


def _smooth_error(logits, targets, theta):
    return F.cross_entropy(logits, targets)


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    batches = [(torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 3, (5,))) for _ in range(4)]
    validation = (torch.randn(7, 3, dtype=torch.float64), torch.randint(0, 3, (7,)))
    params = {name: value.detach().clone() for name, value in model.named_parameters()}
    theta = {"scale": torch.randn(3, dtype=torch.float64)}
    return Unroll(functional_student(model), _weighted_ce, lr=0.5), params, theta, batches, validation


def _objective_after_unroll(unroll, params, theta, batches, validation):
    trajectory, _ = unroll.run(params, theta, batches)
    return float(_smooth_error(unroll.logits(trajectory[-1], validation[0]), validation[1], theta))


def test_hypergradient_matches_finite_differences():
    unroll, params, theta, batches, validation = _setup()
    result = hypergradient(unroll, params, theta, batches, _smooth_error, validation)
    epsilon = 1e-6
    for coordinate in range(3):
        shift = torch.zeros(3, dtype=torch.float64)
        shift[coordinate] = epsilon
        up = _objective_after_unroll(unroll, params, {"scale": theta["scale"] + shift}, batches, validation)
        down = _objective_after_unroll(unroll, params, {"scale": theta["scale"] - shift}, batches, validation)
        numeric = (up - down) / (2 * epsilon)
        assert abs(float(result.theta_gradient["scale"][coordinate]) - numeric) < 1e-7 * max(
            1.0, abs(numeric)
        )
    assert abs(result.objective - _objective_after_unroll(unroll, params, theta, batches, validation)) < 1e-12


def test_hypergradient_matches_autograd_through_the_whole_unroll():
    unroll, params, theta, batches, validation = _setup()
    result = hypergradient(unroll, params, theta, batches, _smooth_error, validation)
    # the same derivative by plain autograd over a graph kept across every step
    scale = theta["scale"].clone().requires_grad_(True)
    weights = {name: value.clone().requires_grad_(True) for name, value in params.items()}
    for index, (inputs, targets) in enumerate(batches):
        loss = _weighted_ce(unroll.logits(weights, inputs), targets, {"scale": scale}, index)
        grads = torch.autograd.grad(loss, list(weights.values()), create_graph=True)
        weights = {name: value - 0.5 * g for (name, value), g in zip(weights.items(), grads, strict=True)}
    objective = _smooth_error(unroll.logits(weights, validation[0]), validation[1], None)
    (expected,) = torch.autograd.grad(objective, scale)
    torch.testing.assert_close(result.theta_gradient["scale"], expected)


def test_functional_student_leaves_batch_norm_statistics_alone():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    before = model[1].running_mean.clone()
    unroll = Unroll(functional_student(model), lambda lg, t, th, i: F.cross_entropy(lg, t), lr=0.1)
    params = {name: value.detach() for name, value in model.named_parameters()}
    trajectory, losses = unroll.run(params, {}, [(torch.randn(6, 3), torch.randint(0, 2, (6,)))] * 2)
    assert len(trajectory) == 3 and len(losses) == 2
    torch.testing.assert_close(model[1].running_mean, before)
    assert not torch.equal(trajectory[0]["0.weight"], trajectory[2]["0.weight"])

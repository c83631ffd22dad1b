"""L2T-DLF: the loss family, the smooth dev error, the attention teacher and its meta-training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from distill.data.bundle import Split
from distill.teaching.dlf import LossTeacher, MetaSchedule, StudentState, dlf_loss, meta_train, smooth_error


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_identity_loss_is_minus_p_over_one_plus_p(classes, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, classes, (batch,), generator=generator)
    p_y = F.softmax(logits, dim=1).gather(1, targets.view(-1, 1)).squeeze(1)
    eye, zero = torch.eye(classes, dtype=torch.float64), torch.zeros(classes, dtype=torch.float64)
    torch.testing.assert_close(dlf_loss(logits, targets, eye, zero), (-p_y / (1 + p_y)).mean())


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(0, 2**31 - 1))
def test_identity_loss_gradient_points_as_cross_entropy(classes, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(1, classes, generator=generator, dtype=torch.float64)).requires_grad_(True)
    target = torch.randint(0, classes, (1,), generator=generator)
    eye, zero = torch.eye(classes, dtype=torch.float64), torch.zeros(classes, dtype=torch.float64)
    (dlf_gradient,) = torch.autograd.grad(dlf_loss(logits, target, eye, zero), logits)
    (ce_gradient,) = torch.autograd.grad(F.cross_entropy(logits, target), logits)
    # a positive multiple: σ(1 − σ) of the score log p_y
    ratio = dlf_gradient / ce_gradient
    assert torch.all(ratio > 0)
    torch.testing.assert_close(ratio, ratio[0, 0].expand_as(ratio))
    sigma = torch.sigmoid(F.log_softmax(logits.detach(), dim=1)[0, target])
    torch.testing.assert_close(ratio[0, 0], (sigma * (1 - sigma))[0])


def test_smooth_error_is_zero_when_right_and_near_one_when_confidently_wrong():
    targets = torch.tensor([0, 1])
    right = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    wrong = torch.tensor([[0.0, 5.0], [5.0, 0.0]])
    assert float(smooth_error(right, targets)) == 0.0
    assert float(smooth_error(wrong, targets)) > 0.99


def test_teacher_attends_over_its_loss_parameters():
    teacher = LossTeacher(num_classes=5, matrices=3, noise=0.0)
    state = StudentState(5).vector(0.5)
    matrix, bias = teacher(state)
    weights = teacher.weights(state)
    assert torch.isclose(weights.sum(), torch.tensor(1.0))
    torch.testing.assert_close(matrix, torch.einsum("n,nij->ij", weights, teacher.loss_matrices()))
    torch.testing.assert_close(matrix, torch.eye(5), atol=1e-3, rtol=0)  # every W_i starts at ≈ I
    assert bool((teacher.loss_matrices() >= 0).all())
    free = LossTeacher(num_classes=5, matrices=3, nonnegative=False)
    torch.testing.assert_close(free(state)[0], torch.eye(5))
    torch.testing.assert_close(bias, torch.zeros(5))


def test_state_moving_averages():
    state = StudentState(2, decay=0.5)
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    state.observe(logits, torch.tensor([0, 0]))
    assert state.train_accuracy == 1.0
    state.observe(logits, torch.tensor([1, 1]))
    assert state.train_accuracy == 0.5
    assert state.vector(0.25).tolist()[:3] == [1.0, 0.25, 0.5]


def _toy_task(seed=0):
    generator = torch.Generator().manual_seed(seed)
    centers = 0.6 * torch.randn(3, 6, generator=generator)  # overlapping classes: dev errors remain
    targets = torch.randint(0, 3, (240,), generator=generator)
    inputs = centers[targets] + torch.randn(240, 6, generator=generator)
    return Split(inputs[:160], targets[:160]), Split(inputs[160:], targets[160:])


def test_meta_training_changes_the_teacher_and_lowers_the_dev_measure():
    train, dev = _toy_task()
    teacher = LossTeacher(3, matrices=2, seed=0)
    before = {name: value.clone() for name, value in teacher.state_dict().items()}

    def new_student(episode):
        torch.manual_seed(episode)
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    schedule = MetaSchedule(
        episodes=2,
        episode_steps=40,
        unroll=20,
        lr=0.5,
        batch_size=32,
        teacher_lr=0.05,
        dev_every=5,
        update="segment",
        select_best=False,
    )
    history = meta_train(teacher, new_student, train, dev, schedule, torch.device("cpu"), seed=1)
    assert len(history.rows) == 4  # 2 episodes × 2 segments
    assert all(torch.isfinite(torch.tensor(row["dev_measure"])) for row in history.rows)
    changed = [name for name, value in teacher.state_dict().items() if not torch.equal(value, before[name])]
    assert set(changed) == {"matrices", "biases", "attention"}
    # within each episode the student learns: the second segment ends with a lower dev error
    assert history.rows[1]["dev_measure"] < history.rows[0]["dev_measure"] + 1e-6
    again = LossTeacher(3, matrices=2, seed=0)
    meta_train(again, new_student, train, dev, schedule, torch.device("cpu"), seed=1)
    for name, value in again.state_dict().items():  # seeded: the same teacher again
        torch.testing.assert_close(value, teacher.state_dict()[name])


def test_episode_updates_hold_the_teacher_fixed_and_keep_the_best_episode():
    train, dev = _toy_task()

    def new_student(episode):
        torch.manual_seed(episode)
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    schedule = MetaSchedule(
        episodes=3, episode_steps=40, unroll=20, lr=0.5, batch_size=32, teacher_lr=0.2, dev_every=5
    )
    seen = []
    teacher = LossTeacher(3, matrices=2, seed=0)
    snapshots = []

    def on_update(row):  # θ is fixed within an episode: the same at both of its segments
        seen.append(row["episode"])
        snapshots.append(teacher.matrices.detach().clone())

    history = meta_train(
        teacher, new_student, train, dev, schedule, torch.device("cpu"), seed=1, on_update=on_update
    )
    assert seen == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    for first, second in zip(snapshots[::2], snapshots[1::2], strict=True):
        torch.testing.assert_close(first, second)
    assert not torch.equal(snapshots[0], snapshots[2])  # updated between episodes
    accuracies = [row["dev_accuracy"] for row in history.episodes]
    assert history.best_episode == accuracies.index(max(accuracies))
    # the kept teacher is the one that trained the best episode's student
    torch.testing.assert_close(teacher.matrices.detach(), snapshots[2 * history.best_episode])

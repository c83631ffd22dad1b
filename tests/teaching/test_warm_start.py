"""The warm start of the learned-loss methods: cross-entropy steps before the learned loss takes
over (L2T-DLF's demo pretrains its student for ``model_pretrain_iterations`` steps), and
meta-training episodes that restart from that warm state."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from distill.data.bundle import Split
from distill.teaching import dlf, dln
from distill.teaching.unroll import (
    Params,
    Unroll,
    cross_entropy_steps,
    functional_student,
    warm_start_batches,
)

CPU = torch.device("cpu")


def _toy_task(seed: int = 0) -> tuple[Split, Split]:
    generator = torch.Generator().manual_seed(seed)
    centers = 0.6 * torch.randn(3, 6, generator=generator)
    targets = torch.randint(0, 3, (240,), generator=generator)
    inputs = centers[targets] + torch.randn(240, 6, generator=generator)
    return Split(inputs[:160], targets[:160]), Split(inputs[160:], targets[160:])


def _student(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def _weights(model: nn.Module) -> Params:
    return {name: value.detach().clone() for name, value in model.named_parameters()}


def _sgd_on_cross_entropy(model: nn.Module, batches, lr: float) -> Params:
    """The reference: ``torch.optim.SGD`` on ``F.cross_entropy``, one step per batch."""
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for inputs, targets in batches:
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return _weights(model)


def test_a_warm_start_is_plain_sgd_on_cross_entropy_from_the_same_init():
    train, _ = _toy_task()
    model = _student()
    initial = _weights(model)
    batches = list(warm_start_batches(train, 32, 12, seed=5, device=CPU))
    seen = []
    warm = cross_entropy_steps(
        functional_student(model), initial, batches, 0.3, lambda logits, targets: seen.append(len(targets))
    )
    expected = _sgd_on_cross_entropy(model, batches, 0.3)
    assert set(warm) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(warm[name], value)
    assert seen == [32] * 12  # every step's logits are handed on
    for name, value in model.named_parameters():  # the model itself is left alone
        assert torch.equal(value, initial[name])
    # no steps: the weights it was given
    unchanged = cross_entropy_steps(functional_student(model), initial, [], 0.3)
    assert all(torch.equal(unchanged[name], initial[name]) for name in initial)


def test_warm_start_batches_are_the_same_for_one_seed():
    train, _ = _toy_task()
    first = list(warm_start_batches(train, 32, 7, seed=2, device=CPU))
    again = list(warm_start_batches(train, 32, 7, seed=2, device=CPU))
    other = list(warm_start_batches(train, 32, 7, seed=3, device=CPU))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other, strict=True))


def _record_segment_starts(monkeypatch) -> list[tuple[int, Params]]:
    """Patch :meth:`Unroll.run` to record (first step index, starting weights) of every segment."""
    starts: list[tuple[int, Params]] = []
    original = Unroll.run

    def run(self, params, theta, batches, first_index=0, before_step=None, after_step=None):
        starts.append((first_index, {name: value.clone() for name, value in params.items()}))
        return original(self, params, theta, batches, first_index, before_step, after_step)

    monkeypatch.setattr(Unroll, "run", run)
    return starts


def test_dlf_episodes_restart_from_the_warm_student(monkeypatch):
    train, dev = _toy_task()
    starts = _record_segment_starts(monkeypatch)
    schedule = dlf.MetaSchedule(
        episodes=2,
        episode_steps=20,
        unroll=10,
        lr=0.5,
        batch_size=32,
        teacher_lr=0.05,
        dev_every=5,
        warm_start_steps=15,
    )
    history = dlf.meta_train(
        dlf.LossTeacher(3, matrices=2), lambda episode: _student(), train, dev, schedule, CPU, seed=1
    )
    # the demo's restart: every episode of the one student begins at the same warm state, that of
    # 15 plain-SGD cross-entropy steps from its initialization
    warm = _sgd_on_cross_entropy(_student(), warm_start_batches(train, 32, 15, seed=1, device=CPU), 0.5)
    episode_starts = [params for first, params in starts if first == 15]
    assert len(episode_starts) == 2 and [first for first, _ in starts] == [15, 25, 15, 25]
    for params in episode_starts:
        for name, value in warm.items():
            torch.testing.assert_close(params[name], value)
    assert [row["step"] for row in history.rows] == [25.0, 35.0, 25.0, 35.0]  # counted from the start
    with torch.no_grad():
        model = _student()
        model.load_state_dict(warm)
        accuracy = float((model(dev.inputs).argmax(dim=1) == dev.targets).float().mean())
    assert [row["start_dev_accuracy"] for row in history.episodes] == [accuracy, accuracy]


def test_dlf_without_a_warm_start_begins_at_the_initialization(monkeypatch):
    train, dev = _toy_task()
    starts = _record_segment_starts(monkeypatch)
    schedule = dlf.MetaSchedule(
        episodes=1, episode_steps=20, unroll=10, lr=0.5, batch_size=32, teacher_lr=0.05, dev_every=5
    )
    assert schedule.warm_start_steps == 0
    dlf.meta_train(dlf.LossTeacher(3, matrices=2), lambda episode: _student(), train, dev, schedule, CPU)
    assert [first for first, _ in starts] == [0, 10]
    initial = _weights(_student())
    assert all(torch.equal(starts[0][1][name], initial[name]) for name in initial)


def test_dln_episodes_start_from_warm_students(monkeypatch):
    train, dev = _toy_task()
    round_starts: list[Params] = []
    original = dln.teaching_round

    def teaching_round(unroll, lstm, optimizer, params, *rest, **options):
        round_starts.append({name: value.clone() for name, value in params.items()})
        return original(unroll, lstm, optimizer, params, *rest, **options)

    monkeypatch.setattr(dln, "teaching_round", teaching_round)
    schedule = dln.DLNSchedule(
        episodes=2,
        episode_steps=6,
        unroll=3,
        lr=0.5,
        batch_size=16,
        dln_step=1e-2,
        teacher_lr=1e-2,
        val_batch_size=20,
        warm_start_steps=9,
    )
    torch.manual_seed(5)
    lstm, network = dln.CoordinateLSTM(), dln.DynamicLossNetwork(width=8, depth=2)
    rows = dln.meta_train(lstm, network, _student, train, dev, schedule, CPU, seed=4)
    assert len(round_starts) == 4  # 2 episodes × 2 rounds
    for episode, first_round in enumerate(round_starts[::2]):  # fresh students, each warmed first
        batches = warm_start_batches(train, 16, 9, seed=4, device=CPU)
        expected = _sgd_on_cross_entropy(_student(episode), batches, 0.5)
        for name, value in expected.items():
            torch.testing.assert_close(first_round[name], value)
    assert all(0.0 <= row["start_dev_accuracy"] <= 1.0 for row in rows)

"""``warm_start_steps`` of ``l2t-dlf`` and ``l2t-dln``: the student's first steps are plain
cross-entropy steps (L2T-DLF's demo pretrains for ``model_pretrain_iterations``), the learned
loss takes over after them, and ``0`` is the previous behaviour; ``l2t-dlf`` with ``episodes: 0``
and ``l2t-dln`` with ``update_rule: fixed`` train on the fixed starting loss."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.methods.base import Batch
from distill.methods.registry import Budget
from distill.teaching.dlf import StudentState, dlf_loss
from tests.methods.learned_loss_setup import learned_loss_method
from tests.methods.test_l2t_artifacts import MemoryArtifacts

LR = 0.2
BUDGET = Budget(epochs=2, batch_size=32, steps_per_epoch=10, lr=LR)  # 20 steps


def _method(method: dict[str, Any]):
    return learned_loss_method(method, samples=400, hidden=16, epochs=2, budget=BUDGET)


class _SGD:
    """The trainer's side of a step: plain SGD on the method's student."""

    def __init__(self, method: nn.Module) -> None:
        self.method = method
        self.optimizer = torch.optim.SGD(method.student.parameters(), lr=LR)

    def forward(self, batch):
        return self.method(batch)

    def minimize(self, loss, group=""):
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


def _batches(data, count: int) -> list[Batch]:
    rows = [torch.arange(32 * index, 32 * index + 32) for index in range(count)]
    return [Batch(data.train.inputs[r], data.train.targets[r], r, data.num_classes) for r in rows]


def _cross_entropy_sgd(model: nn.Module, batches: list[Batch]) -> nn.Module:
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for batch in batches:
        optimizer.zero_grad()
        F.cross_entropy(model(batch.inputs), batch.targets).backward()
        optimizer.step()
    return model


def _assert_same_weights(model: nn.Module, other: nn.Module) -> None:
    for (name, value), (_, expected) in zip(model.named_parameters(), other.named_parameters(), strict=True):
        torch.testing.assert_close(value, expected, msg=name)


@pytest.mark.parametrize("name", ["l2t-dlf", "l2t-dln"])
def test_the_student_after_the_warm_start_is_n_cross_entropy_sgd_steps_from_its_init(name):
    method, data = _method({"name": name, "warm_start_steps": 3, "unroll": 2})
    initial = copy.deepcopy(method.student)
    update = _SGD(method)
    batches = _batches(data, 4)
    terms = [method.train_step(batch, update) for batch in batches[:3]]
    _assert_same_weights(method.student, _cross_entropy_sgd(initial, batches[:3]))
    loss = "dlf" if name == "l2t-dlf" else "dln"
    assert all(set(step) == {"ce", loss} and float(step[loss].detach()) == 0.0 for step in terms)
    assert all(float(step["ce"].detach()) > 0 for step in terms)
    after = method.train_step(batches[3], update)  # the learned loss takes over
    assert float(after["ce"]) == 0.0 and float(after[loss].detach()) != 0.0
    if name == "l2t-dln":  # rounds start with the learned loss: none during the warm start
        assert int(method.rounds) == 0 and int(method.warm_steps_taken) == 3
        method.train_step(batches[0], update)
        assert int(method.rounds) == 1


def test_a_resumed_dlf_student_continues_its_count_of_warm_steps():
    method, data = _method({"name": "l2t-dlf", "warm_start_steps": 2})
    update = _SGD(method)
    batches = _batches(data, 3)
    for batch in batches[:2]:
        method.train_step(batch, update)
    resumed, _ = _method({"name": "l2t-dlf", "warm_start_steps": 2})
    resumed.load_state_dict(method.state_dict())  # what a resume checkpoint restores
    assert float(resumed.train_step(batches[2], _SGD(resumed))["ce"]) == 0.0


def test_dlf_without_a_warm_start_trains_on_the_teachers_loss_from_the_first_step():
    method, data = _method({"name": "l2t-dlf", "warm_start_steps": 0})
    reference = copy.deepcopy(method.student)
    teacher = copy.deepcopy(method.loss_teacher)
    update = _SGD(method)
    batches = _batches(data, 3)
    terms = [method.train_step(batch, update) for batch in batches]
    assert all(set(step) == {"dlf"} for step in terms)
    # the previous behaviour, written out: the teacher reads the state, then the batch is observed
    state = StudentState(data.num_classes)
    optimizer = torch.optim.SGD(reference.parameters(), lr=LR)
    for batch in batches:
        logits = reference(batch.inputs)
        with torch.no_grad():
            matrix, bias = teacher(state.vector(state.seen.float() / BUDGET.steps))
        optimizer.zero_grad()
        dlf_loss(logits, batch.targets, matrix, bias).backward()
        optimizer.step()
        state.observe(logits.detach(), batch.targets)
    _assert_same_weights(method.student, reference)


@pytest.mark.parametrize(
    ("name", "requested", "expected"),
    [("l2t-dlf", 1000, 10), ("l2t-dlf", 19, 19), ("l2t-dln", 20, 10), ("l2t-dln", 15, 15)],
)
def test_a_warm_start_that_would_take_the_whole_budget_takes_half(name, requested, expected):
    method, _ = _method({"name": name, "warm_start_steps": requested})
    assert method.warm_steps == expected


def test_warm_start_defaults_follow_the_official_code():
    dlf, _ = _method({"name": "l2t-dlf"})
    dln, _ = _method({"name": "l2t-dln"})
    assert dlf.spec.warm_start_steps == 1000  # the DLF demo's model_pretrain_iterations
    assert dln.spec.warm_start_steps == 0 and dln.warm_steps == 0  # the DLN code has no warm start
    assert "warm_steps_taken" not in dln.state_dict()  # nor a new buffer: its state is as before


def test_dlf_with_no_episodes_trains_on_the_starting_loss():
    method, _ = _method({"name": "l2t-dlf", "episodes": 0, "matrices": 2})
    before = copy.deepcopy(method.loss_teacher.state_dict())
    artifacts = MemoryArtifacts()
    method.prepare(artifacts)
    assert artifacts.tables["meta_history"] == [] and method.meta_seconds == 0.0
    assert all(torch.equal(value, before[key]) for key, value in method.loss_teacher.state_dict().items())
    assert artifacts.module_metadata("loss_teacher")["schedule"]["episodes"] == 0


def test_a_fixed_dln_never_changes_and_never_teaches():
    method, data = _method({"name": "l2t-dln", "update_rule": "fixed", "unroll": 2})
    assert method.optimizer is None
    before = [value.clone() for value in method.dln.parameters()]
    artifacts = MemoryArtifacts()
    method.prepare(artifacts)
    assert artifacts.tables == {} and artifacts.modules == {}  # nothing meta-trained
    reference = copy.deepcopy(method.student)
    update = _SGD(method)
    batches = _batches(data, 4)
    for batch in batches:
        assert set(method.train_step(batch, update)) == {"dln"}
    assert int(method.rounds) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, method.dln.parameters(), strict=True))
    optimizer = torch.optim.SGD(reference.parameters(), lr=LR)
    for batch in batches:  # plain SGD on the starting DLN
        optimizer.zero_grad()
        method.dln.loss(reference(batch.inputs), batch.targets).backward()
        optimizer.step()
    _assert_same_weights(method.student, reference)

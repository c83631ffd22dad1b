"""TAKFL and FedDF: the properties that make each algorithm what it is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.data.bundle import Split
from distill.federated.averaging import cpu_state, merge_task_vectors, task_vector
from distill.federated.distillation import distill_into, distillation_loss, ensemble_logits
from distill.federated.merging import heuristic_candidates, select_candidate, tune_coefficients
from distill.federated.spec import DistillSpec


def test_heuristic_candidates_follow_the_official_recipe():
    candidates = heuristic_candidates([100, 10, 1000], per_exponent=4, seed=0)
    assert len(candidates) == 1 + 3 * 4  # the uniform vector, then 4 draws per exponent 1, 5, 10
    assert np.allclose(candidates[0], 1 / 3)
    for candidate in candidates:
        assert np.isclose(candidate.sum(), 1.0) and np.all(candidate >= 0)
        # sorted ascending *by teacher capacity*: teacher 1 (10) ≤ teacher 0 (100) ≤ teacher 2 (1000)
        assert candidate[1] <= candidate[0] <= candidate[2]
    again = heuristic_candidates([100, 10, 1000], per_exponent=4, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(candidates, again, strict=True))


def test_select_candidate_keeps_the_best_scoring_merge():
    base = {"w": torch.zeros(1)}
    vectors = [{"w": torch.ones(1, dtype=torch.float64)}, {"w": -torch.ones(1, dtype=torch.float64)}]
    candidates = [np.array([0.5, 0.5]), np.array([0.9, 0.1]), np.array([0.1, 0.9])]
    best, score = select_candidate(base, vectors, candidates, lambda state: float(state["w"]))
    assert np.array_equal(best, candidates[1]) and score == pytest.approx(0.8)


def test_distillation_loss_is_kd_plus_self_regularization():
    torch.manual_seed(0)
    student, teacher, own = torch.randn(8, 5), torch.randn(8, 5), torch.randn(8, 5)
    settings = DistillSpec(temperature=3.0, self_temperature=20.0)

    def kl(target: torch.Tensor, temperature: float) -> torch.Tensor:
        return F.kl_div(
            F.log_softmax(student / temperature, 1), F.softmax(target / temperature, 1), reduction="batchmean"
        )

    expected = 9 * kl(teacher, 3.0) + 0.01 * 400 * kl(own, 20.0)  # TAKFL Eq. 3-4, official T and T_s
    assert torch.allclose(distillation_loss(student, teacher, settings, own, 0.01), expected, atol=1e-6)
    assert torch.allclose(distillation_loss(student, teacher, settings), 9 * kl(teacher, 3.0), atol=1e-6)


def test_ensemble_logits_is_the_plain_mean_of_raw_logits():
    first, second = torch.tensor([[1.0, 3.0]]), torch.tensor([[3.0, -1.0]])
    assert torch.equal(ensemble_logits([first, second]), torch.tensor([[2.0, 1.0]]))


def _problem() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    return model, torch.randn(64, 4)


def test_distillation_moves_the_student_towards_its_teacher():
    model, inputs = _problem()
    teacher = inputs @ torch.randn(4, 3) * 2  # a teacher the student can fit
    settings = DistillSpec(epochs=40, batch_size=16, lr=1e-2)
    with torch.no_grad():
        before = float(distillation_loss(model(inputs), teacher, settings))
    distill_into(model, inputs, teacher, settings, seed=0)
    with torch.no_grad():
        assert float(distillation_loss(model(inputs), teacher, settings)) < 0.5 * before


def test_takfl_merge_with_a_one_hot_lambda_is_that_teachers_separate_distillation():
    """Separate tasks: with λ_i = e_j the merged student is exactly the student distilled
    towards teacher j alone (task arithmetic over whole state dicts)."""
    model, inputs = _problem()
    base = cpu_state(model)
    teachers = [torch.randn(64, 3), torch.randn(64, 3)]
    settings = DistillSpec(epochs=2, batch_size=16, lr=1e-2)
    tuned = []
    for index, target in enumerate(teachers):
        model.load_state_dict(base)
        distill_into(model, inputs, target, settings, seed=index)
        tuned.append(cpu_state(model))
    vectors = [task_vector(state, base) for state in tuned]
    merged = merge_task_vectors(base, vectors, [0.0, 1.0])
    assert all(torch.allclose(merged[key], tuned[1][key], atol=1e-6) for key in base)
    halfway = merge_task_vectors(base, vectors, [0.5, 0.5])
    assert not all(torch.allclose(halfway[key], tuned[1][key]) for key in base)


def test_tuned_lambda_prefers_the_task_vector_that_helps():
    torch.manual_seed(0)
    inputs = torch.randn(256, 4)
    targets = (inputs[:, 0] > 0).long() + (inputs[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    base = cpu_state(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):  # a helpful task vector: trained on the task
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    helpful = task_vector(cpu_state(model), base)
    harmful = {key: -value for key, value in helpful.items()}  # the opposite direction
    model.load_state_dict(base)
    weights = tune_coefficients(model, base, [harmful, helpful], Split(inputs, targets), seed=0, epochs=5)
    assert np.isclose(weights.sum(), 1.0) and weights[1] > 0.8

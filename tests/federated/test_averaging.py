"""FedAvg and task arithmetic over whole state dicts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.federated.averaging import (
    cpu_state,
    merge_task_vectors,
    state_bytes,
    task_vector,
    weighted_average,
)


def _state(value: float, counter: int = 0) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 2), value), "n": torch.tensor(counter)}


def test_weighted_average_weights_by_sample_count():
    averaged = weighted_average([_state(1.0, 2), _state(5.0, 6)], [1, 3])
    assert torch.allclose(averaged["w"], torch.full((2, 2), 4.0))  # (1·1 + 3·5) / 4
    assert averaged["n"].dtype == torch.int64 and int(averaged["n"]) == 5  # integer buffers stay integers


def test_weighted_average_of_one_state_is_that_state():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    state = cpu_state(model)
    averaged = weighted_average([state], [7])
    assert all(torch.equal(averaged[key], state[key]) for key in state)


def test_weighted_average_refuses_mismatched_states():
    with pytest.raises(ValueError, match="state dicts differ"):
        weighted_average([_state(1.0), {"w": torch.zeros(2, 2)}], [1, 1])
    with pytest.raises(ValueError, match="positive sum"):
        weighted_average([_state(1.0)], [0])


def test_merge_with_one_hot_weights_gives_that_tuned_state():
    base = _state(1.0, 3)
    tuned = [_state(2.0, 5), _state(-3.0, 4)]
    vectors = [task_vector(state, base) for state in tuned]
    merged = merge_task_vectors(base, vectors, [0.0, 1.0])
    assert torch.equal(merged["w"], tuned[1]["w"]) and int(merged["n"]) == 4


def test_merge_is_linear_in_the_task_vectors():
    base = _state(1.0)
    vectors = [task_vector(_state(3.0), base), task_vector(_state(0.0), base)]
    merged = merge_task_vectors(base, vectors, [0.25, 0.5])
    assert torch.allclose(merged["w"], torch.full((2, 2), 1.0 + 0.25 * 2.0 + 0.5 * -1.0))


def test_state_bytes_counts_every_entry():
    assert state_bytes(_state(1.0)) == 4 * 4 + 8

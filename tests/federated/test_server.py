"""Rounds of FedAvg, FedDF and TAKFL in-process: faults cost one update, resume repeats exactly."""

from __future__ import annotations

import pytest
import torch

from distill.fed.loop import load_round_checkpoint, round_records, run_rounds
from distill.federated.inprocess import InProcessTransport
from distill.federated.server import ClientRef, Federation
from distill.report.rundir import RunDirectory
from tests.federated.conftest import tiny_recipe


def _equal_states(first, second) -> bool:
    return all(torch.equal(a[key], b[key]) for a, b in zip(first, second, strict=True) for key in a)


@pytest.mark.parametrize("algorithm", ["fedavg", "feddf", "takfl", "takfl-noreg"])
def test_a_round_updates_every_prototype_and_records_it(algorithm):
    recipe = tiny_recipe(algorithm=algorithm)
    federation = Federation(recipe)
    before = [dict(state) for state in federation.states]
    record = federation.run_round(0, InProcessTransport(recipe))
    assert [entry.name for entry in record.prototypes] == ["small", "large"]
    for entry, old, new in zip(record.prototypes, before, federation.states, strict=True):
        assert entry.sampled == entry.replied and not entry.missing
        assert not all(torch.equal(old[key], new[key]) for key in old)
        assert entry.bytes_sent > 0 and entry.bytes_received > 0
        if algorithm == "fedavg":
            assert entry.merged_accuracy == entry.averaged_accuracy and entry.lambdas is None
        if algorithm.startswith("takfl"):
            assert entry.lambdas is not None and sum(entry.lambdas) == pytest.approx(1.0)


def test_fedavg_round_is_the_sample_weighted_average_of_local_models():
    recipe = tiny_recipe(algorithm="fedavg")
    federation = Federation(recipe)
    transport = InProcessTransport(recipe)
    start = [dict(state) for state in federation.states]
    federation.run_round(0, transport)
    replies, _ = InProcessTransport(recipe).train(0, {ClientRef(0, 0): start[0], ClientRef(0, 1): start[0]})
    total = replies[ClientRef(0, 0)].samples + replies[ClientRef(0, 1)].samples
    key = "layers.0.weight" if "layers.0.weight" in start[0] else next(iter(start[0]))
    expected = sum(
        replies[ClientRef(0, c)].state[key] * replies[ClientRef(0, c)].samples / total for c in (0, 1)
    )
    assert torch.allclose(federation.states[0][key], expected, atol=1e-6)


def test_a_missing_client_costs_its_update_not_the_round():
    recipe = tiny_recipe()
    federation = Federation(recipe)
    record = federation.run_round(0, InProcessTransport(recipe, unreachable=frozenset({ClientRef(0, 1)})))
    small, large = record.prototypes
    assert small.replied == [0] and small.missing == {"1": "no reply before the timeout"}
    assert large.replied == [0] and not large.missing
    assert small.lambdas is not None and large.lambdas is not None  # both teachers still taught


def test_a_prototype_without_replies_keeps_its_model_and_teaches_nothing():
    recipe = tiny_recipe()
    federation = Federation(recipe)
    kept = dict(federation.states[1])
    record = federation.run_round(0, InProcessTransport(recipe, unreachable=frozenset({ClientRef(1, 0)})))
    large = record.prototypes[1]
    assert large.replied == [] and large.averaged_accuracy == pytest.approx(federation.test_accuracy(1, kept))
    assert record.prototypes[0].lambdas == [1.0, 0.0]  # the only teacher left is the small prototype


def test_an_interrupted_run_resumes_with_identical_results(tmp_path):
    recipe = tiny_recipe(rounds=3)
    straight = RunDirectory(tmp_path / "straight")
    straight.open(recipe.model_dump(mode="json"), resume=False)
    run_rounds(recipe, straight, InProcessTransport(recipe))

    class Killed(Exception):
        pass

    def kill_after_first(record):
        if record.round == 1:
            raise Killed

    broken = RunDirectory(tmp_path / "broken")
    broken.open(recipe.model_dump(mode="json"), resume=False)
    with pytest.raises(Killed):
        run_rounds(recipe, broken, InProcessTransport(recipe), on_round=kill_after_first)
    broken.close()
    assert load_round_checkpoint(broken)["rounds"] == 1
    resumed = RunDirectory(tmp_path / "broken")
    resumed.open(recipe.model_dump(mode="json"), resume=True)
    run_rounds(recipe, resumed, InProcessTransport(recipe))

    assert _equal_states(load_round_checkpoint(straight)["states"], load_round_checkpoint(resumed)["states"])
    strip = [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in round_records(straight)]
    again = [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in round_records(resumed)]
    assert strip == again and [r["round"] for r in again] == [1, 2, 3]


def test_power_averaging_is_the_weighted_power_mean_of_the_replies():
    from distill.federated.mirror import aggregate_states

    recipe = tiny_recipe(algorithm="fedavg", averaging={"rule": "power", "degree": 5.0})
    federation = Federation(recipe)
    start = [dict(state) for state in federation.states]
    federation.run_round(0, InProcessTransport(recipe))
    replies, _ = InProcessTransport(recipe).train(0, {ClientRef(0, 0): start[0], ClientRef(0, 1): start[0]})
    states = [replies[ClientRef(0, c)].state for c in (0, 1)]
    expected = aggregate_states(states, [float(replies[ClientRef(0, c)].samples) for c in (0, 1)], 5.0)
    assert all(
        torch.allclose(federation.states[0][key].double(), expected[key].double(), atol=1e-6)
        for key in expected
    )


def test_hyperprism_averaging_records_degrees_and_resumes_exactly(tmp_path):
    recipe = tiny_recipe(algorithm="fedavg", rounds=2, averaging={"rule": "hyperprism"})
    straight = Federation(recipe)
    record = straight.run_round(0, InProcessTransport(recipe))
    assert set(record.degrees) == {"small"}  # the large prototype has one client: nothing to aggregate
    assert all(1.0 <= degree <= 9.0 for degree in record.degrees["small"].values())
    snapshot = straight.snapshot()
    straight.run_round(1, InProcessTransport(recipe))
    resumed = Federation(recipe)
    resumed.restore(snapshot)
    resumed.run_round(1, InProcessTransport(recipe))
    assert _equal_states(straight.states, resumed.states)


def test_runs_that_differ_only_in_algorithm_share_one_data_setting():
    from distill.federated.setting import setting_for

    assert setting_for(tiny_recipe(algorithm="fedavg")) is setting_for(tiny_recipe(algorithm="takfl"))
    assert setting_for(tiny_recipe(seed=1)) is not setting_for(tiny_recipe(seed=0))

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from distill.cli import main
from distill.methods import Batch, MethodContext, build_method
from distill.methods.base import EpochStart
from distill.methods.one import ONESpec, rampup_length, sigmoid_rampup
from distill.methods.registry import Budget
from distill.models import build_model
from distill.models.mlp import MLPSpec
from tests.conftest import tiny_recipe


def one_method(budget_epochs=None, **spec):
    def build(model_spec, owner, seed):
        torch.manual_seed(seed)
        return build_model(model_spec, (6,), 5)

    student = build(MLPSpec(hidden=[16, 16]), "student", 0)
    budget = None if budget_epochs is None else Budget(budget_epochs, 8, 1, 0.01)
    context = MethodContext(
        student,
        None,
        torch.randn(4, 6),
        5,
        build_model=build,
        student_spec=MLPSpec(hidden=[16, 16]),
        budget=budget,
    )
    return build_method(ONESpec(split="body.2", **spec), context)


def batch():
    torch.manual_seed(5)
    return Batch(torch.randn(8, 6), torch.arange(8) % 5, torch.arange(8), 5)


def test_loss_is_branch_ce_plus_ensemble_ce_plus_t2_kl_to_the_ensemble():
    method = one_method(temperature=3.0, rampup_epochs=0).train()  # the KL term at full weight
    data = batch()
    terms = method.step(data)
    logits, _gates, ensemble = method.outputs(data.inputs)  # the gate's BN: same batch, same statistics
    expected_ce = sum(F.cross_entropy(z, data.targets) for z in logits)
    expected_kl = sum(
        9.0 * F.kl_div(F.log_softmax(z / 3, 1), F.softmax(ensemble.detach() / 3, 1), reduction="batchmean")
        for z in logits
    )
    torch.testing.assert_close(terms["ce_branches"], expected_ce)
    torch.testing.assert_close(terms["ce_ensemble"], F.cross_entropy(ensemble, data.targets))
    torch.testing.assert_close(terms["kd"], expected_kl)
    assert method.student is method.network.branches[0]


def test_the_ensemble_target_is_detached_so_only_cross_entropy_trains_the_gate():
    method = one_method().train()
    method.step(batch())["kd"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in method.network.gate.parameters())
    method.zero_grad()
    method.step(batch())["ce_ensemble"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.network.gate.parameters())


def test_kl_ramp_up_follows_the_official_sigmoid_schedule():
    assert sigmoid_rampup(0, 0) == 1.0
    assert sigmoid_rampup(0, 80) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(40, 80) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(80, 80) == sigmoid_rampup(200, 80) == 1.0
    assert sigmoid_rampup(10, 32 / 3) == pytest.approx(math.exp(-5 * (1 - 10 / (32 / 3)) ** 2))


def test_the_official_ramp_is_the_default_as_its_share_of_the_budget():
    assert ONESpec().rampup_epochs is None
    assert rampup_length(None, 300) == 80.0  # cifar_one.py: --consistency_rampup 80, --epochs 300
    assert rampup_length(None, 200) == pytest.approx(160 / 3)
    assert rampup_length(None, None) == 80.0  # no budget known: the literal official length
    assert rampup_length(25, 200) == 25.0 and rampup_length(0, 200) == 0.0


def _kl_weight(method, epoch):
    """The KL term's weight at ``epoch``: its value over the unramped KL on the same batch."""
    method.on_epoch_start(EpochStart(epoch, 0, None, None, torch.device("cpu")))
    data = batch()
    kd = method.step(data)["kd"]
    method._ramp = 1.0
    full = method.step(data)["kd"]
    return (kd / full).item()


def test_the_kl_weight_ramps_from_exp_minus_5_to_1_at_the_ramps_end():
    method = one_method(budget_epochs=40).train()  # default ramp: 80/300 of 40 = 10.67 epochs
    length = 80 * 40 / 300
    weights = [_kl_weight(method, epoch) for epoch in range(40)]
    assert weights[0] == pytest.approx(math.exp(-5), rel=1e-5)
    for epoch, weight in enumerate(weights):
        assert weight == pytest.approx(math.exp(-5 * (1 - min(epoch, length) / length) ** 2), rel=1e-5)
    assert all(a < b for a, b in itertools.pairwise(weights[:12]))  # rising to the ramp's end
    assert weights[10] < 1 and all(weight == pytest.approx(1.0) for weight in weights[11:])
    constant = one_method(budget_epochs=40, rampup_epochs=0).train()
    assert _kl_weight(constant, 0) == pytest.approx(1.0)


def test_one_run_reports_branches_and_ensemble_and_both_checkpoints_evaluate(tmp_path, write_recipe, capsys):
    recipe = tiny_recipe(
        teacher=None,
        students=[
            {
                "name": "one",
                "model": {"name": "mlp", "hidden": [32, 32]},
                "method": {"name": "one", "split": "body.2", "branches": 2},
            }
        ],
    )
    out = tmp_path / "run"
    assert main(["run", str(write_recipe(recipe)), "--output-dir", str(out), "--quiet"]) == 0
    rows = {row["name"]: row for row in json.loads((out / "summary.json").read_text())["results"]}
    assert list(rows) == ["one/branch0", "one/branch1", "one/ensemble"]
    assert rows["one/ensemble"]["params"] > rows["one/branch0"]["params"]
    for member in ("branch0", "ensemble"):
        capsys.readouterr()
        assert main(["eval", str(out / "one" / member / "last.safetensors"), "--json"]) == 0
        evaluated = json.loads(capsys.readouterr().out)
        assert evaluated["accuracy"] == pytest.approx(rows[f"one/{member}"]["test_accuracy"])


def test_unknown_split_is_reported_with_the_field(tmp_path, write_recipe, capsys):
    recipe = tiny_recipe(
        teacher=None,
        students=[{"name": "one", "model": {"name": "mlp"}, "method": {"name": "one", "split": "body.7"}}],
    )
    assert main(["run", str(write_recipe(recipe)), "--output-dir", str(tmp_path / "r"), "--quiet"]) == 2
    assert "students[0].method.split" in capsys.readouterr().err

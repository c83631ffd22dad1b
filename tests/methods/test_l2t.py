"""L2T-DLF and L2T-DLN as methods: meta-training, the saved loss teachers, transfer, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from distill.cli import main
from distill.config import validate_recipe
from distill.data import load_data
from distill.errors import CheckpointError
from distill.methods import MethodContext, build_method
from distill.methods.registry import Budget
from distill.models import build_model

_BUDGET = {
    "epochs": 2,
    "batch_size": 32,
    "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.0, "weight_decay": 0.0},
    "schedule": {"name": "constant"},
}


def _recipe(students, name="l2t-tiny"):
    return {
        "name": name,
        "seed": 1,
        "data": {"name": "mnist1d", "num_samples": 400, "val_fraction": 0.2},
        "train": _BUDGET,
        "students": students,
    }


def _student(name, method, hidden=(16,)):
    return {"name": name, "model": {"name": "mlp", "hidden": list(hidden)}, "method": method}


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    import yaml

    folder = tmp_path_factory.mktemp("l2t")
    recipe = _recipe(
        [
            _student("dlf", {"name": "l2t-dlf", "episodes": 1, "unroll": 10, "matrices": 2}),
            _student("dln", {"name": "l2t-dln", "unroll": 4}),
        ]
    )
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--output-dir", str(folder / "run"), "--quiet"]) == 0
    return folder


def test_a_run_meta_trains_saves_and_plots_each_loss_teacher(taught):
    run = taught / "run"
    for name in ("dlf", "dln"):
        result = json.loads((run / name / "result.json").read_text())
        assert result["extras"]["loss_teacher"] == str(run / name / "loss_teacher.safetensors")
        assert (run / name / "loss_teacher.safetensors").is_file()
        assert (run / name / "loss_parameters.png").stat().st_size > 0
        table = json.loads((run / name / "loss_parameters.json").read_text())
        assert [row["epoch"] for row in table] == [1, 2]
    dlf_meta = json.loads((run / "dlf" / "loss_teacher.json").read_text())
    assert dlf_meta["kind"] == "l2t-dlf-loss-teacher" and dlf_meta["num_classes"] == 10
    history = json.loads((run / "dlf" / "meta_history.json").read_text())
    schedule = dlf_meta["schedule"]
    # an episode is the student's budget: a warm start (the default 1,000 steps would take all of
    # this 16-step budget: cut to half of it), then the teacher's loss
    assert schedule["warm_start_steps"] == schedule["dev_every"] == 8
    assert schedule["warm_start_steps"] + schedule["episode_steps"] == 2 * schedule["dev_every"]
    assert len(history) == -(-schedule["episode_steps"] // 10)  # one teacher update per unroll of 10
    assert history[-1]["step"] == 16.0  # steps counted from the warm start's first
    assert all(row["episode"] == 0.0 for row in history)


def test_saved_loss_teachers_train_another_student(taught, write_recipe):
    run = taught / "run"
    recipe = _recipe(
        [
            _student(
                "dlf",
                {"name": "l2t-dlf", "loss_teacher": str(run / "dlf" / "loss_teacher.safetensors")},
                (24, 24),
            ),
            _student(
                "dln",
                {
                    "name": "l2t-dln",
                    "loss_teacher": str(run / "dln" / "loss_teacher.safetensors"),
                    "unroll": 4,
                },
                (24, 24),
            ),
        ],
        name="transfer",
    )
    out = taught / "transfer"
    assert main(["run", str(write_recipe(recipe)), "--output-dir", str(out), "--quiet"]) == 0
    assert not (out / "dlf" / "meta_history.json").exists()  # loaded, not meta-trained again
    assert not (out / "dln" / "loss_teacher.safetensors").exists()  # frozen teacher: nothing new to save
    result = json.loads((out / "dln" / "result.json").read_text())
    assert result["extras"]["loss_teacher"].endswith("dln/loss_teacher.safetensors")


def test_a_loss_teacher_of_the_wrong_kind_is_refused(taught, write_recipe, capsys):
    wrong = str(taught / "run" / "dln" / "loss_teacher.safetensors")
    recipe = _recipe([_student("dlf", {"name": "l2t-dlf", "loss_teacher": wrong})], name="wrong")
    assert main(["run", str(write_recipe(recipe)), "--output-dir", str(taught / "wrong")]) != 0
    message = capsys.readouterr().err
    assert "students[0].method.loss_teacher" in message and "not an l2t-dlf loss teacher" in message
    with pytest.raises(CheckpointError, match="file not found"):
        from distill.engine.artifacts import ModuleFileReader
        from distill.methods.l2t_dlf import load_loss_teacher

        load_loss_teacher(taught / "missing.safetensors", 10, "x", ModuleFileReader())


def _dln_method(learn, **options):
    method = {"name": "l2t-dln", "unroll": 2, "learn_teacher": learn, "dln_init": "random", **options}
    recipe = validate_recipe(_recipe([_student("dln", method)]))
    data = load_data(recipe.data)
    spec = recipe.students[0]
    student = build_model(spec.model, data.input_shape, data.num_classes)
    context = MethodContext(
        student=student,
        teacher=None,
        example_inputs=data.train.inputs[:8],
        num_classes=data.num_classes,
        data=data,
        budget=Budget(2, 32, 10, 0.2),
    )
    return build_method(spec.method, context), data


class _SGD:
    def __init__(self, method):
        self.method = method
        self.optimizer = torch.optim.SGD(method.student.parameters(), lr=0.2)

    def forward(self, batch):
        return self.method(batch)

    def minimize(self, loss, group=""):
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


@pytest.mark.parametrize("learn", [True, False])
def test_a_round_updates_the_loss_network_and_only_a_learning_teacher(learn):
    from distill.methods.base import Batch

    method, data = _dln_method(learn)
    dln_before = [value.clone() for value in method.dln.parameters()]
    lstm_before = [value.clone() for value in method.teacher.lstm.parameters()]
    memory_before = method.memory_hidden0.clone()
    update = _SGD(method)
    for start in (0, 32):
        rows = torch.arange(start, start + 32)
        batch = Batch(data.train.inputs[rows], data.train.targets[rows], rows, data.num_classes)
        terms = method.train_step(batch, update)
        assert set(terms) == {"dln"} and torch.isfinite(terms["dln"])
    assert any(not torch.equal(a, b) for a, b in zip(dln_before, method.dln.parameters(), strict=True))
    lstm_changed = any(
        not torch.equal(a, b) for a, b in zip(lstm_before, method.teacher.lstm.parameters(), strict=True)
    )
    assert lstm_changed == learn
    assert not torch.equal(memory_before, method.memory_hidden0)  # the teacher's memory moves on
    # the student's optimizer never sees the loss network or the teacher
    assert [id(p) for p in method.optimizer_groups()[""]] == [id(p) for p in method.student.parameters()]


def test_an_interrupted_l2t_dlf_run_resumes_without_meta_training_again(taught, monkeypatch, capsys):
    from distill.report import rundir

    recipe = taught / "recipe.yaml"
    out = taught / "resumed"
    from tests.conftest import interrupt_after

    original = interrupt_after(monkeypatch, "dlf", 1)
    assert main(["run", str(recipe), "--output-dir", str(out), "--quiet"]) == 130
    teacher_file = out / "dlf" / "loss_teacher.safetensors"
    saved = teacher_file.read_bytes()
    meta_written = (out / "dlf" / "meta_history.json").stat().st_mtime_ns
    monkeypatch.setattr(rundir.RunDirectory, "append_metrics", original)
    assert main(["run", str(recipe), "--output-dir", str(out), "--resume", "--quiet"]) == 0
    assert teacher_file.read_bytes() == saved
    assert (out / "dlf" / "meta_history.json").stat().st_mtime_ns == meta_written  # not meta-trained again
    summary = json.loads((out / "summary.json").read_text())
    reference = json.loads((taught / "run" / "summary.json").read_text())
    accuracy = {row["name"]: row["test_accuracy"] for row in summary["results"]}
    expected = {row["name"]: row["test_accuracy"] for row in reference["results"]}
    assert accuracy["dlf"] == expected["dlf"]  # the student's state (progress, averages) resumed exactly


@pytest.mark.parametrize(
    "method",
    [{"name": "l2t-dln", "episodes": 0, "unroll": 2}, {"name": "l2t-dlf", "episodes": 1, "unroll": 5}],
)
def test_a_learned_loss_refuses_mixed_labels(method, write_recipe, tmp_path, capsys):
    recipe = _recipe([_student("taught", method)], name="mixed")
    recipe["train"] = {**_BUDGET, "epochs": 1, "augment": {"mixup_alpha": 1.0}}
    assert main(["run", str(write_recipe(recipe)), "--output-dir", str(tmp_path / "run"), "--quiet"]) != 0
    assert f"{method['name']}: the learned loss needs hard labels; set train.augment.mixup_alpha: 0" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()  # refused when the recipe is validated, before meta-training


def test_episode_students_restart_the_run_student_or_are_fresh():
    from distill.methods.loss_teachers import episode_students
    from distill.models.mlp import MLPSpec

    def new_model(spec, owner, seed):
        torch.manual_seed(seed)
        return build_model(MLPSpec(hidden=[8]), (4,), 3)

    run_student = new_model(None, "student", 5)
    same = episode_students(new_model, 5, same=True)
    fresh = episode_students(new_model, 5)

    def weights(model):
        return torch.cat([p.flatten() for p in model.parameters()])

    assert torch.equal(weights(same(0)), weights(run_student))
    assert torch.equal(weights(same(3)), weights(run_student))
    assert not torch.equal(weights(fresh(0)), weights(run_student))
    assert not torch.equal(weights(fresh(0)), weights(fresh(1)))


def test_the_sign_oracle_steps_each_coordinate_by_dln_step_and_learns_nothing():
    from distill.methods.base import Batch

    method, data = _dln_method(True, update_rule="sign", dln_step=1e-3)
    assert method.optimizer is None
    dln_before = torch.cat([value.flatten().clone() for value in method.dln.parameters()])
    lstm_before = [value.clone() for value in method.teacher.lstm.parameters()]
    update = _SGD(method)
    for start in (0, 32):
        rows = torch.arange(start, start + 32)
        method.train_step(Batch(data.train.inputs[rows], data.train.targets[rows], rows, 10), update)
    moved = (torch.cat([value.flatten() for value in method.dln.parameters()]) - dln_before).abs()
    assert moved.max().item() == pytest.approx(1e-3, rel=1e-4)  # one signed step per round
    assert ((moved < 1e-9) | ((moved - 1e-3).abs() < 1e-6)).all()
    assert all(torch.equal(a, b) for a, b in zip(lstm_before, method.teacher.lstm.parameters(), strict=True))

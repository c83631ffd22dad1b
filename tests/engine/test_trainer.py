import math

import pytest
import torch

from distill.data import load_data
from distill.data.sources import SyntheticSpec
from distill.engine import Trainer, TrainSpec, expected_calibration_error
from distill.engine.optim import OptimizerSpec, ScheduleSpec, build_schedule
from distill.errors import DistillError
from distill.methods.dml import DeepMutualLearning
from distill.methods.scratch import Scratch
from distill.models import build_model
from distill.models.mlp import MLPSpec


@pytest.fixture(scope="module")
def data():
    return load_data(SyntheticSpec(num_samples=300, num_test=100, num_classes=3, shape=[8], noise=0.5))


def fit(data, tmp_path=None, epochs=4, seed=0, stop_after=None, mutual=False, **train):
    torch.manual_seed(seed)
    model = build_model(MLPSpec(hidden=[32], dropout=0.1), data.input_shape, data.num_classes)
    method = Scratch(model)
    if mutual:  # two peers, two optimizers stepping in turn, two evaluated models
        peer = build_model(MLPSpec(hidden=[16], dropout=0.1), data.input_shape, data.num_classes)
        method = DeepMutualLearning([model, peer])
    spec = TrainSpec(epochs=epochs, batch_size=32, **train)

    def maybe_stop(record):
        if stop_after is not None and record["epoch"] == stop_after:
            raise KeyboardInterrupt

    trainer = Trainer(
        method,
        data,
        spec,
        seed=seed,
        device=torch.device("cpu"),
        model_name="m",
        model_dir=tmp_path,
        on_epoch_end=maybe_stop,
    )
    trainer.load_resume()
    return trainer.fit()


def test_training_learns_and_records_every_epoch(data):
    result = fit(data, epochs=6, augment={"noise": 0.05, "mixup_alpha": 0.2})
    assert [record["epoch"] for record in result.history] == list(range(1, 7))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.reported["test_accuracy"] > 0.6
    for key in ("val_accuracy", "val_loss", "val_ece", "test_ece", "lr", "train_ce"):
        assert key in result.reported


def test_same_seed_same_result_different_seed_different_result(data):
    first, second = fit(data, seed=1), fit(data, seed=1)
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]
    assert fit(data, seed=2).history[-1]["train_loss"] != first.history[-1]["train_loss"]


@pytest.mark.parametrize("mutual", [False, True], ids=["scratch", "dml"])
def test_resume_after_interruption_reproduces_the_uninterrupted_run(data, tmp_path, mutual):
    augment = {"mixup_alpha": 1.0, "noise": 0.1}
    uninterrupted = fit(data, tmp_path / "a", epochs=5, mutual=mutual, augment=augment)
    with pytest.raises(KeyboardInterrupt):
        fit(data, tmp_path / "b", epochs=5, stop_after=2, mutual=mutual, augment=augment)
    resumed = fit(data, tmp_path / "b", epochs=5, mutual=mutual, augment=augment)
    assert len(resumed.history) == 5 * (2 if mutual else 1)
    keys = ("model", "train_loss", "val_accuracy", "test_accuracy", "test_loss")
    assert [[r[k] for k in keys] for r in resumed.history] == [
        [r[k] for k in keys] for r in uninterrupted.history
    ]


def test_best_report_selects_on_validation_not_test(data):
    result = fit(data, epochs=5, report="best")
    best_val = max(r["val_accuracy"] for r in result.history)
    assert result.reported["val_accuracy"] == best_val


def test_divergence_is_reported_clearly(data):
    with pytest.raises(DistillError, match="training diverged in epoch 1"):
        fit(data, epochs=1, optimizer=OptimizerSpec(name="sgd", lr=1e30, momentum=0.0))


def test_schedule_warmup_cosine_and_step():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    schedule = build_schedule(ScheduleSpec(name="cosine", warmup_epochs=1), optimizer, 10, 5)
    factors = [schedule.lr_lambdas[0](step) for step in range(50)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert factors[30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 40)))
    step = build_schedule(ScheduleSpec(name="step", milestones=[2, 4], gamma=0.5), optimizer, 10, 5)
    assert [step.lr_lambdas[0](s) for s in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]


def test_expected_calibration_error_golden_values():
    # perfectly calibrated: confidence 1 and always right
    probabilities = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probabilities, torch.tensor([0, 1])) == pytest.approx(0.0)
    # confidence 0.8 on both, one right one wrong: |0.5 − 0.8| = 0.3
    probabilities = torch.tensor([[0.8, 0.2], [0.8, 0.2]])
    assert expected_calibration_error(probabilities, torch.tensor([0, 1])) == pytest.approx(0.3)


def test_sequential_updates_are_refused_under_data_parallelism(data, monkeypatch):
    from distill.engine import distributed

    monkeypatch.setattr(distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    peers = [build_model(MLPSpec(hidden=[8]), data.input_shape, data.num_classes) for _ in range(2)]
    with pytest.raises(DistillError, match="updates 2 optimizer groups in turn"):
        Trainer(
            DeepMutualLearning(peers),
            data,
            TrainSpec(epochs=1),
            seed=0,
            device=torch.device("cpu"),
            model_name="dml",
        )


def test_bf16_autocast_training_learns_and_keeps_float32_weights(data):
    """``precision: bfloat16`` runs the training forward under bf16 autocast (here on the CPU):
    the loss terms come back as float32, the weights stay float32, and it still learns — to
    within a few points of the float32 run."""
    bf16 = fit(data, epochs=6, precision="bfloat16")
    full = fit(data, epochs=6)
    assert bf16.history[-1]["train_loss"] < bf16.history[0]["train_loss"]
    assert abs(bf16.reported["test_accuracy"] - full.reported["test_accuracy"]) < 0.1
    assert bf16.history[0]["train_loss"] != full.history[0]["train_loss"]  # autocast did run
    assert TrainSpec(precision="bfloat16").precision == "bfloat16"
    with pytest.raises(ValueError):
        TrainSpec(precision="float16")


def test_sync_options_are_refused_off_their_rule_but_survive_a_round_trip():
    from distill.engine.trainer import SyncSpec

    with pytest.raises(ValueError, match="ports applies to rule: bml, not gradients"):
        SyncSpec(ports=3)
    with pytest.raises(ValueError, match="degree applies to rule: mirror, period applies to rule: mirror"):
        SyncSpec(rule="bml", degree=2.0, period=3)
    for spec in (SyncSpec(), SyncSpec(rule="bml", ports=3), SyncSpec(rule="mirror", degree=3.0)):
        assert SyncSpec.model_validate(spec.model_dump(mode="json")) == spec

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import distill.data.pools as pools_module
from distill.cli import main
from distill.config import validate_recipe
from distill.errors import RecipeError
from distill.losses import slam_loss, soft_cross_entropy
from distill.methods import Batch
from distill.methods.pseudo import PseudoLabelDistillation
from distill.methods.slam import AlphaEstimator, SLaMSpec, StudentLabelMixing, choose_k, top_k_mask
from distill.methods.weighted import WeightedDistillation, estimate_weights
from distill.models import build_model
from distill.models.mlp import MLPSpec
from tests.conftest import tiny_recipe


def synthetic_teacher(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Probabilities over 4 classes whose top-1 is correct with probability 0.2 + 0.7·margin."""
    rng = np.random.default_rng(seed)
    margin = rng.uniform(0, 0.8, count)
    top = rng.integers(0, 4, count)
    probabilities = np.full((count, 4), 0.0)
    second = (top + 1) % 4
    rest = (1 - margin) / 2  # top = rest + margin, second = rest... spread the remainder
    probabilities[np.arange(count), top] = rest + margin
    probabilities[np.arange(count), second] = rest
    correct = rng.uniform(size=count) < 0.2 + 0.7 * margin
    labels = np.where(correct, top, (top + 2 + rng.integers(0, 2, count)) % 4)
    return torch.tensor(probabilities, dtype=torch.float32), torch.tensor(labels), margin


def test_alpha_estimator_is_monotone_and_recovers_a_known_accuracy():
    probabilities, labels, _ = synthetic_teacher(20_000)
    estimator = AlphaEstimator("margin").fit(probabilities, labels)
    grid_probs, _, grid_margin = synthetic_teacher(2_000, seed=1)
    alpha = estimator.predict(grid_probs).numpy()
    order = np.argsort(grid_margin)
    assert np.all(np.diff(alpha[order]) >= -1e-9)  # monotone in confidence
    assert np.abs(alpha - (0.2 + 0.7 * grid_margin)).mean() < 0.04
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0


def test_k_is_the_smallest_with_the_wanted_top_k_accuracy():
    probabilities = torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
    labels = torch.tensor([0, 1, 1, 2])  # top-1 25%, top-2 75%, top-3 100%
    assert choose_k(probabilities, labels, 0.7) == 2
    assert choose_k(probabilities, labels, 0.9) == 3


def methods_on_one_batch():
    torch.manual_seed(0)
    student = build_model(MLPSpec(hidden=[16]), (6,), 5)
    probabilities = F.softmax(torch.randn(20, 5) * 2, dim=1)
    pseudo = PseudoLabelDistillation(student, probabilities, "soft", 1.0)
    slam = StudentLabelMixing(student, probabilities, torch.ones(20), 3, "soft", 1.0)
    targets = torch.tensor([0, 1, 2, -1, -1, -1, 3, -1])  # rows 3.. hide their labels
    batch = Batch(torch.randn(8, 6), targets, torch.tensor([0, 1, 2, 10, 11, 12, 3, 19]), 5)
    return pseudo, slam, batch, probabilities


def test_pseudo_is_teacher_cross_entropy_plus_true_labels_on_the_labeled_rows():
    pseudo, _, batch, probabilities = methods_on_one_batch()
    terms = pseudo.step(batch)
    logits = pseudo.student(batch.inputs)
    torch.testing.assert_close(terms["teacher"], soft_cross_entropy(logits, probabilities[batch.indices]))
    labeled = batch.targets >= 0
    expected = F.cross_entropy(logits[labeled], batch.targets[labeled], reduction="sum") / 8
    torch.testing.assert_close(terms["labeled_ce"], expected)


def test_slam_with_alpha_one_equals_pseudo_on_the_same_batch():
    pseudo, slam, batch, _ = methods_on_one_batch()
    pseudo_terms, slam_terms = pseudo.step(batch), slam.step(batch)
    torch.testing.assert_close(slam_terms["slam"], pseudo_terms["teacher"])
    torch.testing.assert_close(slam_terms["labeled_ce"], pseudo_terms["labeled_ce"])


def test_slam_defaults_to_the_unnormalized_mix_of_the_papers_experiments():
    """Remark B.1 of the paper: its experiments mix without ÷ (k − 1); ``normalize: true`` (the
    main text's form) reaches the loss unchanged."""
    assert SLaMSpec().normalize is False
    _, _, batch, probabilities = methods_on_one_batch()
    torch.manual_seed(1)
    student = build_model(MLPSpec(hidden=[16]), (6,), 5)
    alpha = torch.rand(20)
    hard = F.one_hot(probabilities.argmax(dim=1), 5).float()
    rows = batch.indices
    for normalize in (False, True):
        slam = StudentLabelMixing(student, probabilities, alpha, 3, "hard", 0.0, normalize)
        expected = slam_loss(
            student(batch.inputs), hard[rows], alpha[rows], top_k_mask(probabilities, 3)[rows], normalize
        )
        torch.testing.assert_close(slam.step(batch)["slam"], expected)


def unlabeled_recipe(**changes):
    recipe = tiny_recipe(
        data={"name": "mnist1d", "num_samples": 1200, "pools": {"labeled": 100, "validation": 100}},
        train={
            "epochs": 2,
            "batch_size": 64,
            "optimizer": {"name": "adamw", "lr": 0.005},
            "augment": {"shift": 2},
        },
        students=[
            {"name": "pseudo", "model": {"name": "mlp", "hidden": [32]}, "method": {"name": "pseudo"}},
            {"name": "slam", "model": {"name": "mlp", "hidden": [32]}, "method": {"name": "slam"}},
            {"name": "weighted", "model": {"name": "mlp", "hidden": [32]}, "method": {"name": "weighted"}},
        ],
    )
    recipe.update(changes)
    return recipe


def test_unlabeled_run_reports_pool_accuracies_and_alpha_quality(tmp_path, write_recipe, monkeypatch):
    out = tmp_path / "run"
    assert main(["run", str(write_recipe(unlabeled_recipe())), "--output-dir", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["pools"] == {"labeled": 100, "validation": 100, "unlabeled": 760}
    rows = json.loads((out / "pools.json").read_text())["rows"]
    assert [len(rows[pool]) for pool in ("labeled", "validation", "unlabeled")] == [100, 100, 760]
    assert len(set(rows["labeled"]) | set(rows["validation"]) | set(rows["unlabeled"])) == 960
    rows = {row["name"]: row for row in summary["results"]}
    assert 0 < rows["teacher"]["extras"]["unlabeled_accuracy"] <= 1
    slam = rows["slam"]["extras"]
    assert {
        "student_unlabeled_accuracy",
        "teacher_unlabeled_accuracy",
        "alpha_calibration_error",
        "top_k",
    } <= set(slam)
    assert slam["teacher_unlabeled_accuracy"] == pytest.approx(
        rows["teacher"]["extras"]["unlabeled_accuracy"]
    )

    # hide the pool's labels differently (permute the truth kept for reports): training must not change
    original = pools_module.split_pools

    def shuffled_truth(bundle, spec, seed):
        pooled = original(bundle, spec, seed)
        truth = pooled.unlabeled_truth[torch.randperm(len(pooled.unlabeled_truth))]
        return type(pooled)(**{**pooled.__dict__, "unlabeled_truth": truth})

    monkeypatch.setattr("distill.data.sources.split_pools", shuffled_truth)
    again = tmp_path / "again"
    assert (
        main(
            [
                "run",
                str(write_recipe(unlabeled_recipe(), "again.yaml")),
                "--output-dir",
                str(again),
                "--quiet",
            ]
        )
        == 0
    )
    rerun = {row["name"]: row for row in json.loads((again / "summary.json").read_text())["results"]}
    for name in ("teacher", "pseudo", "slam", "weighted"):
        assert rerun[name]["test_accuracy"] == rows[name]["test_accuracy"]
    assert rerun["slam"]["extras"]["teacher_unlabeled_accuracy"] != slam["teacher_unlabeled_accuracy"]


def test_unlabeled_methods_need_pools_and_no_mixup():
    recipe = unlabeled_recipe()
    recipe["data"] = {"name": "mnist1d", "num_samples": 600}
    with pytest.raises(RecipeError, match=r"set data\.pools"):
        validate_recipe(recipe)
    recipe = unlabeled_recipe()
    recipe["train"]["augment"] = {"mixup_alpha": 1.0}
    with pytest.raises(RecipeError, match="cannot use mixup"):
        validate_recipe(recipe)


def test_weighted_with_equal_weights_is_pseudo():
    pseudo, _, batch, probabilities = methods_on_one_batch()
    weighted = WeightedDistillation(pseudo.student, probabilities, torch.ones(20), "soft", 1.0)
    pseudo_terms, weighted_terms = pseudo.step(batch), weighted.step(batch)
    torch.testing.assert_close(weighted_terms["weighted_teacher"], pseudo_terms["teacher"])
    torch.testing.assert_close(weighted_terms["labeled_ce"], pseudo_terms["labeled_ce"])


def test_weights_are_one_where_the_teacher_is_right_and_lower_where_it_errs():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (400,), generator=generator)
    confident = torch.rand(400, generator=generator) < 0.5
    teacher = torch.full((400, 4), 0.1)
    # confident examples: the teacher is right with 0.7; unsure ones: always right
    wrong = confident & (torch.rand(400, generator=generator) < 0.3)
    predicted = torch.where(wrong, (labels + 1) % 4, labels)
    teacher[torch.arange(400), predicted] = torch.where(confident, 0.7, 0.4)
    student = teacher.clone()
    weights = estimate_weights(teacher, student, teacher, student, labels)
    assert ((weights >= 0) & (weights <= 1)).all()
    assert weights[~confident].min() == 1.0  # no error nearby: nothing to correct
    assert weights[confident].max() < 0.95  # the teacher errs around here: its labels count less


def test_weighted_needs_its_first_stage_student_before_it():
    recipe = unlabeled_recipe()
    recipe["students"] = [{"name": "w", "model": {"name": "mlp"}, "method": {"name": "weighted"}}]
    with pytest.raises(RecipeError, match="needs student 'pseudo' trained before it"):
        validate_recipe(recipe)

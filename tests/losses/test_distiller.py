"""The distiller grammar: distances, transforms, trees, serialisation, the distiller method."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.config import validate_recipe
from distill.errors import DistillError, RunDirectoryError
from distill.losses import LOSSES, kd_loss
from distill.losses.distiller import (
    DISTANCES,
    GRAMMAR_VERSION,
    TRANSFORMS,
    Distiller,
    Op,
    ShapeError,
    Term,
)
from distill.methods import Batch, MethodContext, build_method
from distill.methods.distiller import DistillerSpec
from distill.models import build_model
from distill.models.cnn import CNN1dSpec
from distill.models.mlp import MLPSpec
from distill.search.engine import DistillerSearch, SearchSettings
from distill.search.evolution import SearchSpace, random_distiller
from tests.conftest import tiny_recipe

SHAPES = {"logits": (6, 10), "f0": (6, 8, 12)}


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.integers(2, 7),
    dims=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    scale=st.floats(0.01, 20.0),
)
def test_every_distance_is_nonnegative_and_zero_on_identical_inputs(seed, batch, dims, scale):
    generator = torch.Generator().manual_seed(seed)
    student = scale * torch.randn(batch, *dims, generator=generator)
    teacher = scale * torch.randn(batch, *dims, generator=generator)
    for entry in DISTANCES:
        assert entry.obj.fn(student, teacher).item() >= -1e-6, entry.name
        assert entry.obj.fn(teacher, teacher).item() == pytest.approx(0.0, abs=1e-5), entry.name
        assert entry.obj.fn(teacher, teacher).dim() == 0


@pytest.mark.parametrize("shape", [(5, 10), (5, 4, 9), (5, 3, 6, 6)])
def test_every_transform_keeps_the_batch_and_its_documented_shape(shape):
    x = torch.randn(*shape)
    space = SearchSpace.full({"logits": shape})
    for op in [*space.ops(), Op("identity")]:
        try:
            expected = op.output_shape(shape)
        except ShapeError:
            assert len(shape) == 2 or op.name == "pyramid_pool", f"{op} refused {shape}"
            continue
        out = op(x)
        assert tuple(out.shape) == expected, op
        assert out.shape[0] == shape[0], op


def test_spatial_ops_refuse_logits_and_say_why():
    with pytest.raises(ShapeError, match="spatial_attention needs a \\(batch, channels, \\*spatial\\)"):
        Op("spatial_attention").output_shape((8, 10))
    distiller = Distiller((Term("logits", (Op("channel_gram"),), "mse", 1.0),))
    with pytest.raises(DistillError, match=r"terms\[0\].*channel_gram needs"):
        distiller.check({"logits": (8, 10)})


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000))
def test_a_random_valid_tree_gives_a_finite_scalar_with_gradients_to_the_student_only(seed):
    distiller = random_distiller(np.random.default_rng(seed), SearchSpace.full(SHAPES))
    torch.manual_seed(seed)
    student = {name: (3 * torch.randn(shape)).requires_grad_() for name, shape in SHAPES.items()}
    teacher = {name: (3 * torch.randn(shape)).requires_grad_() for name, shape in SHAPES.items()}
    loss = LOSSES.get("distiller")(distiller, student, teacher)
    assert loss.dim() == 0 and torch.isfinite(loss), distiller.formula()
    loss.backward()
    used = {term.knowledge for term in distiller.terms}
    for name in used:
        assert student[name].grad is not None and torch.isfinite(student[name].grad).all()
        assert teacher[name].grad is None, "the teacher side must be detached"


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000))
def test_serialisation_round_trips_through_a_recipe_fragment(seed):
    distiller = random_distiller(np.random.default_rng(seed), SearchSpace.full(SHAPES))
    fragment = yaml.safe_load(
        yaml.safe_dump(
            {
                "name": "distiller",
                "features": [{"name": "f0", "student": "body.1", "teacher": "features.1"}],
                **distiller.to_dict(),
            }
        )
    )
    spec = DistillerSpec.model_validate(fragment)
    assert spec.distiller() == distiller
    assert Distiller.from_dict(distiller.to_dict()).key() == distiller.key()


def test_formula_reads_as_the_expression():
    term = Term("logits", (Op("log_softmax", 4.0),), "kl", 16.0)
    feature = Term("f0", (Op("spatial_attention"), Op("l2_norm")), "mse", 2.0)
    assert Distiller((term, feature)).formula() == (
        "16·4²·kl(log_softmax[T=4](z_s), log_softmax[T=4](z_t)) + "
        "2·mse(l2_norm(spatial_attention(F_s[f0])), l2_norm(spatial_attention(F_t[f0])))"
    )
    assert Distiller((term, feature)).key() == Distiller((feature, term)).key()


def test_hinton_kd_is_a_distiller():
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    term = Term("logits", (Op("log_softmax", 4.0),), "kl", 1.0)
    torch.testing.assert_close(term.loss(student, teacher), kd_loss(student, teacher, 4.0))


def test_bad_terms_are_refused_with_the_field():
    with pytest.raises(ValueError, match="softmax' needs a parameter"):
        DistillerSpec.model_validate({"terms": [{"transforms": ["softmax"], "distance": "kl"}]})
    with pytest.raises(ValueError, match="unknown distance 'kll' \\(did you mean 'kl'\\?\\)"):
        DistillerSpec.model_validate({"terms": [{"distance": "kll"}]})
    with pytest.raises(ValueError, match=r"terms\[0\]\.knowledge: 'f9'"):
        DistillerSpec.model_validate({"terms": [{"knowledge": "f9", "distance": "kl"}]})
    with pytest.raises(ValueError, match="the parameter must be a positive number"):
        DistillerSpec.model_validate({"terms": [{"transforms": ["softmax:-3"], "distance": "kl"}]})
    spec = DistillerSpec.model_validate({"terms": [{"transforms": ["softmax:3"], "distance": "kl"}]})
    assert spec.distiller().terms[0].transforms == (Op("softmax", 3.0),)
    assert "identity" in TRANSFORMS


def _models():
    torch.manual_seed(0)
    student = build_model(MLPSpec(hidden=[16]), (1, 24), 5)
    teacher = build_model(CNN1dSpec(channels=[8, 8]), (1, 24), 5)
    return student, teacher


def test_distiller_method_projects_features_and_trains_only_the_student():
    student, teacher = _models()
    inputs = torch.randn(8, 1, 24)
    spec = DistillerSpec.model_validate(
        {
            "features": [{"name": "f0", "student": "body.0", "teacher": "features.1"}],
            "terms": [
                {"transforms": ["log_softmax:4"], "distance": "kl", "weight": 1},
                {"knowledge": "f0", "transforms": ["channel_attention"], "distance": "cosine"},
            ],
        }
    )
    method = build_method(spec, MethodContext(student, teacher, inputs[:4], 5, owner="students[0].method"))
    assert "f0" in method.projections  # (8, 16) student → (8, 8, L) teacher
    terms = method.step(Batch(inputs, torch.arange(8) % 5, torch.arange(8), 5))
    assert set(terms) == {"ce", "d0:kl", "d1:cosine"}
    sum(terms.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in method.projections.parameters())


def test_a_shape_incompatible_recipe_fails_before_training(tmp_path, write_recipe, capsys):
    from distill.cli import main

    recipe = tiny_recipe()
    recipe["students"] = [
        {
            "name": "bad",
            "model": {"name": "mlp", "hidden": [32]},
            "method": {
                "name": "distiller",
                "terms": [{"transforms": ["spatial_attention"], "distance": "mse"}],
            },
        }
    ]
    assert main(["run", str(write_recipe(recipe)), "--output-dir", str(tmp_path / "run")]) == 2
    message = capsys.readouterr().err
    assert "students[0].method.terms[0]" in message and "spatial_attention needs" in message
    assert not (tmp_path / "run" / "teacher").exists()


# ----------------------------------------------------------------------------- kl: golden values
# Each expected value is computed here from the equation KL(p_t ‖ p_s) = Σ_c p_t (log p_t − log p_s)
# (torch.distributions or explicit sums), never through the grammar's own code.


def _logits(seed: int, shape: tuple[int, ...] = (16, 10), scale: float = 4.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _categorical_kl(z_t: torch.Tensor, z_s: torch.Tensor) -> torch.Tensor:
    """Per-row KL(softmax(z_t) ‖ softmax(z_s)), by torch.distributions (from the scores: its
    ``probs=`` path clamps probabilities below float32's eps)."""
    from torch.distributions import Categorical, kl_divergence

    return kl_divergence(Categorical(logits=z_t), Categorical(logits=z_s))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 8.0])
@pytest.mark.parametrize("final", ["softmax", "log_softmax"])
def test_kl_of_tempered_distributions_is_hintons_kd_at_that_temperature(final, temperature):
    student, teacher = _logits(0), _logits(1)
    term = Term("logits", (Op(final, temperature),), "kl", 0.5)
    expected = 0.5 * temperature**2 * _categorical_kl(teacher / temperature, student / temperature).mean()
    torch.testing.assert_close(term.loss(student, teacher), expected)
    torch.testing.assert_close(term.loss(student, teacher), 0.5 * kd_loss(student, teacher, temperature))


def test_kl_after_softmax_takes_the_probabilities_directly_not_a_second_softmax():
    student, teacher = _logits(2).requires_grad_(), _logits(3)
    term = Term("logits", (Op("softmax", 1.0),), "kl", 1.0)
    p_s, p_t = torch.softmax(student, 1), torch.softmax(teacher, 1)
    direct = (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    q_s, q_t = torch.softmax(p_s, 1), torch.softmax(p_t, 1)  # the double softmax of grammar v1
    double = (q_t * (q_t.log() - q_s.log())).sum(1).mean()
    loss = term.loss(student, teacher)
    torch.testing.assert_close(loss, direct)
    assert not torch.allclose(loss, double)
    (grad,) = torch.autograd.grad(loss, student)
    (grad_double,) = torch.autograd.grad(double, student)
    assert grad.norm() > 20 * grad_double.norm()  # v1's gradient was ~50-100× too weak


def test_kl_without_a_final_softmax_normalises_at_t1_and_prints_that_softmax():
    student, teacher = _logits(4), _logits(5)
    plain = Term("logits", (), "kl", 2.0)
    expected = 2.0 * _categorical_kl(teacher, student).mean()
    torch.testing.assert_close(plain.loss(student, teacher), expected)
    assert plain.formula() == "2·kl(softmax[T=1](z_s), softmax[T=1](z_t))"
    normed = Term("logits", (Op("l2_norm"),), "kl", 1.0)
    unit_s, unit_t = F.normalize(student, dim=1), F.normalize(teacher, dim=1)
    expected = _categorical_kl(unit_t, unit_s).mean()
    torch.testing.assert_close(normed.loss(student, teacher), expected)
    assert normed.formula() == "1·kl(softmax[T=1](l2_norm(z_s)), softmax[T=1](l2_norm(z_t)))"
    explicit = Term("logits", (Op("l2_norm"), Op("softmax", 1.0)), "kl", 1.0)
    assert explicit.formula() == normed.formula()  # equal formulas, equal losses
    torch.testing.assert_close(explicit.loss(student, teacher), normed.loss(student, teacher))


def test_kl_of_a_feature_map_is_per_position_over_channels_and_a_mean_over_the_rest():
    student, teacher = _logits(6, (4, 6, 5)), _logits(7, (4, 6, 5))
    temperature = 2.0
    term = Term("f0", (Op("softmax", temperature),), "kl", 1.0)
    rows_s = (student / temperature).transpose(1, 2).reshape(-1, 6)  # one row per (sample, position)
    rows_t = (teacher / temperature).transpose(1, 2).reshape(-1, 6)
    expected = temperature**2 * _categorical_kl(rows_t, rows_s).mean()
    torch.testing.assert_close(term.loss(student, teacher), expected)


def test_kl_formula_shows_t_squared_and_the_term_matches_it():
    term = Term("logits", (Op("softmax", 4.0),), "kl", 0.5)
    assert term.formula() == "0.5·4²·kl(softmax[T=4](z_s), softmax[T=4](z_t))"
    t1 = Term("logits", (Op("softmax", 1.0),), "kl", 0.5)
    assert t1.formula() == "0.5·kl(softmax[T=1](z_s), softmax[T=1](z_t))"
    mse = Term("logits", (Op("softmax", 4.0),), "mse", 0.5)  # T² belongs to kl alone
    assert mse.formula() == "0.5·mse(softmax[T=4](z_s), softmax[T=4](z_t))"
    student, teacher = _logits(8), _logits(9)
    expected = 0.5 * F.mse_loss(torch.softmax(student / 4, 1), torch.softmax(teacher / 4, 1))
    torch.testing.assert_close(mse.loss(student, teacher), expected)


def test_kl_sends_gradients_to_the_student_only():
    student, teacher = _logits(10).requires_grad_(), _logits(11).requires_grad_()
    Term("logits", (Op("softmax", 4.0),), "kl", 1.0).loss(student, teacher).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert teacher.grad is None


def test_a_search_directory_of_another_grammar_version_is_refused(tmp_path):
    recipe = validate_recipe(tiny_recipe(), "tiny")
    options = SearchSettings()
    assert options.identity()["grammar_version"] == GRAMMAR_VERSION
    DistillerSearch(recipe, options, tmp_path / "same")._open()
    DistillerSearch(recipe, options, tmp_path / "same")._open()  # the same semantics continue
    old = tmp_path / "old"
    old.mkdir()
    identity = {"recipe": recipe.model_dump(mode="json"), "settings": options.identity()}
    del identity["settings"]["grammar_version"]  # what a search before the version wrote
    (old / "search.json").write_text(json.dumps(identity))
    with pytest.raises(RunDirectoryError, match="other settings"):
        DistillerSearch(recipe, options, old)._open()

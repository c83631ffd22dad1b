"""The distiller grammar: distances, transforms, trees, serialisation, the distiller method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.errors import DistillError
from distill.losses import LOSSES
from distill.losses.distiller import DISTANCES, TRANSFORMS, Distiller, Op, ShapeError, Term
from distill.methods import Batch, MethodContext, build_method
from distill.methods.distiller import DistillerSpec
from distill.models import build_model
from distill.models.cnn import CNN1dSpec
from distill.models.mlp import MLPSpec
from distill.search.evolution import SearchSpace, random_distiller

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
        "16·kl(log_softmax[T=4](z_s), log_softmax[T=4](z_t)) + "
        "2·mse(l2_norm(spatial_attention(F_s[f0])), l2_norm(spatial_attention(F_t[f0])))"
    )
    assert Distiller((term, feature)).key() == Distiller((feature, term)).key()


def test_hinton_kd_is_a_distiller():
    from distill.losses import kd_loss

    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    term = Term("logits", (Op("log_softmax", 4.0),), "kl", 16.0)
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
                {"transforms": ["log_softmax:4"], "distance": "kl", "weight": 16},
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
    from tests.conftest import tiny_recipe

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

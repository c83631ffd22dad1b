"""Composable loss terms: one registry, validated recipes, each term equal to its loss function,
live and from the teacher-output cache."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

from distill.config import validate_recipe
from distill.data import AugmentSpec, apply_plan, draw_plan, load_data
from distill.data.sources import SyntheticSpec
from distill.engine.cache import CacheKey, TeacherOutputCache
from distill.errors import RecipeError
from distill.losses import kd_loss
from distill.losses.logit import dist_loss, dkd_loss, multilevel_logit_loss, standardize_logits
from distill.losses.relational import pkt_loss, rkd_loss, sp_loss
from distill.methods import Batch, EpochStart, MethodContext, build_method
from distill.methods.kd import KDSpec
from distill.methods.terms import TERMS, LossTerm, LossTermSpec, TermContext, TermInputs, dkd_warmup
from distill.models import build_model
from distill.models.cnn import CNN1dSpec
from distill.models.mlp import MLPSpec
from tests.conftest import tiny_recipe

AUGMENT = AugmentSpec(mixup_alpha=1.0, shift=2, noise=0.1)

EVERY_TERM = [
    {"name": "ce", "weight": 0.5},
    {"name": "kd", "temperature": 2.0, "weight": 0.7},
    {"name": "dkd", "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 4, "weight": 1.0},
    {"name": "dist", "beta": 2.0, "gamma": 2.0, "temperature": 4.0},
    {"name": "mlkd", "temperatures": [2.0, 4.0]},
    {"name": "rkd", "student": "body.4", "teacher": "head.0"},
    {"name": "pkt", "student": "body.4", "teacher": "head.0", "weight": 3.0},
    {"name": "sp", "student": "body.4", "teacher": "head.0", "weight": 2.0},
]


@pytest.fixture(scope="module")
def data():
    return load_data(SyntheticSpec(num_samples=200, num_test=50, num_classes=6, shape=[1, 24]))


@pytest.fixture(scope="module")
def teacher(data):
    torch.manual_seed(0)
    return build_model(CNN1dSpec(channels=[8, 8]), data.input_shape, data.num_classes).eval()


def student_of(data):
    torch.manual_seed(1)
    return build_model(MLPSpec(hidden=[16, 12]), data.input_shape, data.num_classes)


def module_names(model) -> list[str]:
    return [name for name, _ in model.named_modules()]


def test_every_registered_term_is_listed_with_a_sentence():
    assert {"ce", "kd", "dkd", "dist", "mlkd", "hint", "attention", "rkd", "pkt", "sp"} <= set(TERMS.names())
    assert all(entry.description for entry in TERMS)


def test_a_recipe_names_terms_and_they_are_validated_before_training():
    recipe = tiny_recipe()
    recipe["students"][1]["method"] = {"name": "kd", "terms": [{"name": "ce"}, {"name": "dkd", "beta": 2.0}]}
    spec = validate_recipe(recipe).students[1].method
    assert isinstance(spec, KDSpec)
    assert [term.label() for term in spec.resolved_terms()] == ["ce", "dkd"]
    assert spec.resolved_terms()[1].beta == 2.0  # type: ignore[attr-defined]
    # the resolved recipe keeps every field of every term
    dumped = spec.model_dump()["terms"][1]
    assert dumped["alpha"] == 1.0 and dumped["warmup_epochs"] == 20

    for terms, message in [
        ([{"name": "dkdd"}], r"unknown loss term 'dkdd'.*dkd"),
        ([{"name": "dkd", "beta": -1}], r"students\[1\]\.method\.terms\[0\]\.beta"),
        ([{"name": "rkd", "student": "x"}], r"terms\[0\]\.teacher"),
        ([{"name": "kd"}, {"name": "kd"}], "kd appear"),
        ([], "at least one loss term"),
    ]:
        recipe["students"][1]["method"] = {"name": "kd", "terms": terms}
        with pytest.raises(RecipeError, match=message):
            validate_recipe(recipe)
    recipe["students"][1]["method"] = {"name": "kd", "temperature": 2.0, "terms": [{"name": "ce"}]}
    with pytest.raises(RecipeError, match="either as 'terms' or with temperature"):
        validate_recipe(recipe)


def test_classic_fields_mean_the_same_terms():
    classic = KDSpec(temperature=3.0, kd_weight=0.7, ce_weight=0.3)
    terms = KDSpec(terms=[{"name": "kd", "temperature": 3.0, "weight": 0.7}, {"name": "ce", "weight": 0.3}])
    assert [t.model_dump() for t in classic.resolved_terms()] == [
        t.model_dump() for t in terms.resolved_terms()
    ]


class MarginSpec(LossTermSpec):
    """A plugin's term, defined outside the package."""

    name: Literal["test-margin"] = "test-margin"
    margin: float = 1.0

    def needs_full_distribution(self) -> bool:
        return False


class Margin(LossTerm):
    spec: MarginSpec

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        gap = inputs.teacher_logits().max(1).values - inputs.student_logits.max(1).values
        return torch.relu(gap - self.spec.margin).mean()


def build_margin(spec: MarginSpec, context: TermContext) -> LossTerm:
    return Margin(spec)


def test_a_term_registered_later_is_usable_from_a_recipe_at_once(data, teacher):
    """A plugin registers a term after the package is imported; recipes accept it at once."""
    if "test-margin" not in TERMS:
        TERMS.register_factory("test-margin", "a test term")(build_margin)
    spec = KDSpec(terms=[{"name": "ce"}, {"name": "test-margin", "margin": 0.5}])
    assert spec.resolved_terms()[1].margin == 0.5  # type: ignore[attr-defined]
    method = build_method(
        spec, MethodContext(student_of(data), teacher, data.train.inputs[:4], data.num_classes)
    )
    batch = Batch(data.train.inputs[:16], data.train.targets[:16], torch.arange(16), data.num_classes)
    assert set(method.step(batch)) == {"ce", "test-margin"}


def _batch(data, plan, indices):
    inputs, mixing = apply_plan(
        plan, data.train.inputs[indices], indices, data.train.inputs, data.train.targets
    )
    return Batch(inputs, data.train.targets[indices], indices, data.num_classes, mixing, draw=0)


def _expected(term: dict, student, teacher, inputs, targets, epoch: int) -> torch.Tensor:
    """Each term from its loss function, on the live models (hooks for tapped layers)."""
    captured: dict[str, torch.Tensor] = {}
    handles = [
        student.body[4].register_forward_hook(lambda m, i, o: captured.__setitem__("s", o)),
        teacher.head[0].register_forward_hook(lambda m, i, o: captured.__setitem__("t", o)),
    ]
    with torch.no_grad():
        s, t = student(inputs), teacher(inputs)
    for handle in handles:
        handle.remove()
    weight = term.get("weight", 1.0)
    name = term["name"]
    if name == "kd":
        value = kd_loss(s, t, term["temperature"])
    elif name == "dkd":
        value = min((epoch + 1) / term["warmup_epochs"], 1.0) * dkd_loss(s, t, targets, 1.0, 8.0, 4.0)
    elif name == "dist":
        value = dist_loss(s, t, 2.0, 2.0, 4.0)
    elif name == "mlkd":
        value = sum(multilevel_logit_loss(s, t, [2.0, 4.0]))
    elif name == "rkd":
        value = rkd_loss(captured["s"], captured["t"])
    elif name == "pkt":
        value = pkt_loss(captured["s"], captured["t"])
    else:
        value = sp_loss(captured["s"], captured["t"])
    return weight * value


@pytest.mark.parametrize("cached", [False, True])
def test_every_term_is_its_loss_function_live_and_from_the_cache(tmp_path, data, teacher, cached):
    """Logit terms read a cache of the whole distribution as logits up to a per-sample
    constant: the values equal the live teacher's."""
    assert "body.4" in module_names(student_of(data)) and "head.0" in module_names(teacher)
    spec = KDSpec(terms=EVERY_TERM)
    student = student_of(data)
    cache = None
    if cached:
        key = CacheKey.for_training(
            teacher, data, AUGMENT, 0, 1, spec.cacheable_temperature(), None, "float32", ["head.0"]
        )
        cache = TeacherOutputCache(key, tmp_path, batch_size=64)
    assert spec.cacheable_temperature() == 2.0 and spec.cached_teacher_layers() == ["head.0"]
    method = build_method(
        spec, MethodContext(student, teacher, data.train.inputs[:4], data.num_classes, teacher_cache=cache)
    )
    plan = draw_plan(AUGMENT, len(data.train), data.input_shape, seed=100)
    method.on_epoch_start(EpochStart(1, 0, plan, data.train, torch.device("cpu")))
    batch = _batch(data, plan, torch.arange(30, 62))
    method.train()
    terms = method.step(batch)
    assert list(terms) == ["ce", "kd", "dkd", "dist", "mlkd", "rkd:body.4", "pkt:body.4", "sp:body.4"]
    for term in EVERY_TERM[1:]:
        label = term["name"] + (":body.4" if "student" in term else "")
        student.train()
        expected = _expected(term, student, teacher, batch.inputs, batch.targets, epoch=1)
        torch.testing.assert_close(terms[label], expected, rtol=2e-4, atol=2e-6)
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in student.parameters())


def test_standardized_terms_read_logits_and_ignore_their_scale(data, teacher):
    """Logit standardization (Sun et al. 2024): a student whose logits are a positive affine
    map of the teacher's has zero standardized KD but not plain KD."""
    spec = KDSpec(terms=[{"name": "kd", "temperature": 2.0, "standardize": True}])
    assert spec.terms_needing_full_distribution() == ["kd"]
    assert not KDSpec(terms=[{"name": "kd", "temperature": 2.0}]).terms_needing_full_distribution()

    class Affine(torch.nn.Module):
        def forward(self, inputs):
            return 3.0 * teacher(inputs) + 1.0

    method = build_method(spec, MethodContext(Affine(), teacher, data.train.inputs[:4], data.num_classes))
    batch = Batch(data.train.inputs[:16], data.train.targets[:16], torch.arange(16), data.num_classes)
    assert method.step(batch)["kd"].item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        logits = teacher(batch.inputs)
        plain = kd_loss(3.0 * logits + 1.0, logits, 2.0)
        same = kd_loss(standardize_logits(3.0 * logits + 1.0), standardize_logits(logits), 2.0)
    assert plain.item() > 1e-3 and same.item() == pytest.approx(0.0, abs=1e-6)


def test_a_top_k_cache_is_refused_for_terms_that_need_the_whole_distribution():
    recipe = tiny_recipe()
    student = recipe["students"][1]
    student["teacher_cache"] = {"top_k": 3}
    student["method"] = {"name": "kd", "terms": [{"name": "kd", "temperature": 2.0}, {"name": "ce"}]}
    validate_recipe(recipe)  # plain KD is served by a top-k cache
    student["method"]["terms"].append({"name": "dkd"})
    with pytest.raises(RecipeError, match=r"top_k.*dkd"):
        validate_recipe(recipe)


def test_dkd_warmup_follows_mdistiller():
    assert [dkd_warmup(epoch, 20) for epoch in (0, 9, 19, 50)] == [0.05, 0.5, 1.0, 1.0]
    assert dkd_warmup(0, 0) == 1.0


def test_feature_term_errors_name_the_recipe_field(data, teacher):
    spec = KDSpec(terms=[{"name": "ce"}, {"name": "attention", "student": "body.4", "teacher": "head.0"}])
    with pytest.raises(Exception, match=r"method\.terms\[1\]: attention transfer needs"):
        build_method(spec, MethodContext(student_of(data), teacher, data.train.inputs[:4], data.num_classes))


def test_the_kd_zero_distiller_is_a_term_of_the_same_registry(data, teacher):
    """``kd`` with a ``distiller`` term equals the ``distiller`` method: KD-Zero's
    ``kl`` after ``softmax:4`` is Hinton KD at T = 4 (plus CE)."""
    from distill.methods.distiller import DistillerSpec

    distiller = [{"knowledge": "logits", "transforms": ["softmax:4"], "distance": "kl"}]
    as_term = KDSpec(terms=[{"name": "ce"}, {"name": "distiller", "terms": distiller, "weight": 1.0}])
    assert as_term.cacheable_temperature() is None  # it transforms raw logits
    method = build_method(as_term, MethodContext(student_of(data), teacher, data.train.inputs[:4], 6))
    reference = build_method(
        DistillerSpec(terms=distiller), MethodContext(student_of(data), teacher, data.train.inputs[:4], 6)
    )
    batch = Batch(data.train.inputs[:16], data.train.targets[:16], torch.arange(16), data.num_classes)
    ours, theirs = method.step(batch), reference.step(batch)
    torch.testing.assert_close(ours["distiller"], theirs["d0:kl"])
    with torch.no_grad():
        hinton = kd_loss(student_of(data)(batch.inputs), teacher(batch.inputs), 4.0)
    torch.testing.assert_close(ours["distiller"], hinton, rtol=5e-4, atol=1e-5)  # KD-Zero clamps its log
    recipe = tiny_recipe()
    recipe["students"][1]["method"] = {"name": "kd", "terms": [{"name": "distiller", "terms": distiller}]}
    recipe["students"][1]["teacher_cache"] = {}
    with pytest.raises(RecipeError, match="cannot use a teacher-output cache"):
        validate_recipe(recipe)
    recipe["students"][1]["method"]["terms"][0]["terms"][0]["knowledge"] = "f0"
    with pytest.raises(RecipeError, match=r"terms\[0\]\.knowledge: 'f0' is not"):
        validate_recipe(recipe)


def test_a_resolved_recipe_with_terms_validates_again():
    """The run directory's recipe (every field written out) is read back unchanged."""
    recipe = tiny_recipe()
    recipe["students"][1]["method"] = {"name": "kd", "terms": [{"name": "ce"}, {"name": "dkd"}]}
    once = validate_recipe(recipe)
    again = validate_recipe(once.model_dump(mode="json"))
    assert again == once

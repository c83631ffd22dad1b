import logging

import numpy as np
import pytest
import torch

from distill.data import AugmentSpec, apply_plan, draw_plan, load_data
from distill.data.sources import SyntheticSpec
from distill.engine.cache import (
    CacheKey,
    TeacherOutputCache,
    cache_draws,
    spread_rest_uniformly,
    weights_fingerprint,
)
from distill.losses import kd_loss_from_log_probs, kd_loss_top_k
from distill.methods import Batch, EpochStart, MethodContext, build_method
from distill.methods.kd import KDSpec
from distill.models import build_model
from distill.models.cnn import CNN1dSpec
from distill.models.mlp import MLPSpec

AUGMENT = AugmentSpec(mixup_alpha=1.0, shift=2, noise=0.1)


@pytest.fixture(scope="module")
def data():
    return load_data(SyntheticSpec(num_samples=200, num_test=50, num_classes=6, shape=[1, 24]))


@pytest.fixture(scope="module")
def teacher(data):
    torch.manual_seed(0)
    return build_model(CNN1dSpec(channels=[8, 8]), data.input_shape, data.num_classes).eval()


def make_key(teacher, data, **changes):
    fields = dict(
        teacher=weights_fingerprint(teacher),
        data=data.fingerprint,
        augment=AUGMENT.model_dump_json(),
        seed=0,
        draws=2,
        temperature=2.0,
        top_k=None,
        precision="float32",
        num_samples=len(data.train),
        num_classes=data.num_classes,
    )
    fields.update(changes)
    return CacheKey(**fields)


def fill_all(cache, teacher, data):
    for draw in range(cache.key.draws):
        plan = draw_plan(AUGMENT, len(data.train), data.input_shape, seed=100 + draw)
        cache.fill(draw, teacher, data.train, plan, torch.device("cpu"), batch_size=64)


def test_cached_outputs_equal_the_live_teacher_on_the_same_augmented_inputs(tmp_path, data, teacher):
    cache = TeacherOutputCache(make_key(teacher, data), tmp_path)
    fill_all(cache, teacher, data)
    plan = draw_plan(AUGMENT, len(data.train), data.input_shape, seed=101)
    indices = torch.randperm(len(data.train))[:17]
    inputs, _ = apply_plan(plan, data.train.inputs[indices], indices, data.train.inputs, data.train.targets)
    with torch.no_grad():
        live = torch.log_softmax(teacher(inputs) / 2.0, dim=1)
    stored, classes = cache.outputs(1, indices, torch.device("cpu"))
    assert classes is None
    torch.testing.assert_close(stored, live, rtol=1e-5, atol=1e-5)


def test_reused_across_opens_and_separated_by_key(tmp_path, data, teacher):
    first = TeacherOutputCache(make_key(teacher, data), tmp_path)
    fill_all(first, teacher, data)
    again = TeacherOutputCache(make_key(teacher, data), tmp_path)
    assert again.path == first.path and all(again.is_filled(d) for d in range(2))
    for change in ({"temperature": 4.0}, {"seed": 1}, {"top_k": 3}, {"augment": "{}"}):
        other = TeacherOutputCache(make_key(teacher, data, **change), tmp_path)
        assert other.path != first.path and not other.is_filled(0)
    trained = build_model(CNN1dSpec(channels=[8, 8]), data.input_shape, data.num_classes)
    assert weights_fingerprint(trained) != weights_fingerprint(teacher)


def test_corrupted_draw_is_detected_and_recomputed(tmp_path, data, teacher, caplog):
    cache = TeacherOutputCache(make_key(teacher, data), tmp_path)
    fill_all(cache, teacher, data)
    values = np.load(cache.path / "values.npy", mmap_mode="r+")
    values[1, 5, 2] += 1.0
    values.flush()
    reopened = TeacherOutputCache(make_key(teacher, data), tmp_path)
    with caplog.at_level(logging.WARNING, logger="distill"):
        assert reopened.is_filled(0) and not reopened.is_filled(1)
    assert "draw 1 failed its checksum" in caplog.text


def test_truncated_file_is_rebuilt_with_a_message(tmp_path, data, teacher, caplog):
    cache = TeacherOutputCache(make_key(teacher, data), tmp_path)
    fill_all(cache, teacher, data)
    path = cache.path / "values.npy"
    path.write_bytes(path.read_bytes()[:200])
    with caplog.at_level(logging.WARNING, logger="distill"):
        rebuilt = TeacherOutputCache(make_key(teacher, data), tmp_path)
    assert "is damaged" in caplog.text
    assert not rebuilt.is_filled(0)


def test_top_k_cache_stores_the_top_classes_and_their_values(tmp_path, data, teacher):
    key = make_key(teacher, data, top_k=2, precision="float16")
    cache = TeacherOutputCache(key, tmp_path, rest="bin")  # outputs() returns the stored pairs
    fill_all(cache, teacher, data)
    full_cache = TeacherOutputCache(make_key(teacher, data), tmp_path)
    fill_all(full_cache, teacher, data)
    indices = torch.arange(10)
    top_values, top_classes = cache.outputs(0, indices, torch.device("cpu"))
    exact, _ = full_cache.outputs(0, indices, torch.device("cpu"))
    expected_values, expected_classes = exact.topk(2, dim=1)
    assert torch.equal(top_classes, expected_classes)
    torch.testing.assert_close(top_values, expected_values, atol=2e-3, rtol=0)  # float16 storage
    assert cache.bytes_per_sample() == 2 * 2 + 2 * 2  # float16 values + int16 classes
    assert full_cache.bytes_per_sample() == 6 * 4


@pytest.mark.parametrize(("top_k", "rest"), [(None, "uniform"), (3, "bin"), (3, "uniform")])
def test_kd_with_cache_gives_the_live_kd_terms(tmp_path, data, teacher, top_k, rest):
    torch.manual_seed(1)
    student = build_model(MLPSpec(hidden=[16]), data.input_shape, data.num_classes)
    key = make_key(teacher, data, draws=1, top_k=top_k)
    cache = TeacherOutputCache(key, tmp_path, batch_size=64, rest=rest)
    spec = KDSpec(temperature=2.0)
    example = data.train.inputs[:4]
    live = build_method(spec, MethodContext(student, teacher, example, data.num_classes))
    cached = build_method(
        spec, MethodContext(student, teacher, example, data.num_classes, teacher_cache=cache)
    )
    plan = draw_plan(AUGMENT, len(data.train), data.input_shape, seed=100)
    cached.on_epoch_start(EpochStart(0, 0, plan, data.train, torch.device("cpu")))
    assert cache.fills == 1
    indices = torch.arange(30, 62)
    inputs, mixing = apply_plan(
        plan, data.train.inputs[indices], indices, data.train.inputs, data.train.targets
    )
    batch = Batch(inputs, data.train.targets[indices], indices, data.num_classes, mixing, draw=0)
    live_terms, cached_terms = live.step(batch), cached.step(batch)
    if top_k is None:
        torch.testing.assert_close(cached_terms["kd"], live_terms["kd"], rtol=1e-4, atol=1e-6)
    else:
        with torch.no_grad():
            top_values, top_classes = torch.log_softmax(teacher(inputs) / 2.0, 1).topk(3, dim=1)
        if rest == "bin":  # the live teacher's top-3 with the other classes merged into one bin
            expected = 0.9 * kd_loss_top_k(student(inputs), top_values, top_classes, 2.0)
        else:  # the live teacher's top-3, the rest of its mass spread evenly (FKD)
            target = spread_rest_uniformly(top_values, top_classes, data.num_classes)
            expected = 0.9 * kd_loss_from_log_probs(student(inputs), target, 2.0)
        torch.testing.assert_close(cached_terms["kd"], expected, rtol=1e-4, atol=1e-6)
        if rest == "bin":
            assert cached_terms["kd"] <= live_terms["kd"] + 1e-6  # merging bins never raises the KL
    cached.on_epoch_start(EpochStart(1, 0, plan, data.train, torch.device("cpu")))
    assert cache.fills == 1  # the draw is reused, not recomputed


def test_uniform_rest_golden_value():
    log_probs = spread_rest_uniformly(torch.tensor([[float(np.log(0.7))]]), torch.tensor([[2]]), 4)
    torch.testing.assert_close(log_probs.exp(), torch.tensor([[0.1, 0.1, 0.7, 0.1]]))


def test_draw_count_helper():
    assert cache_draws(epochs=30, augment_enabled=False, fixed_draws=None) == 1
    assert cache_draws(epochs=30, augment_enabled=True, fixed_draws=None) == 30
    assert cache_draws(epochs=30, augment_enabled=True, fixed_draws=4) == 4


def feature_key(teacher, data, layers=("features.0", "features.1"), **changes):
    key = CacheKey.for_training(
        teacher, data, AUGMENT, 0, 4, 2.0, changes.pop("top_k", None), "float32", layers
    )
    return key


def test_tapped_teacher_features_are_stored_and_equal_the_live_ones(tmp_path, data, teacher):
    key = feature_key(teacher, data)
    assert key.features == (("features.0", (8, 12)), ("features.1", (8, 6)))
    cache = TeacherOutputCache(key, tmp_path, batch_size=64)
    assert cache.bytes_per_sample() == 6 * 4 + (8 * 12 + 8 * 6) * 4
    plan = draw_plan(AUGMENT, len(data.train), data.input_shape, seed=7)
    cache.fill(0, teacher, data.train, plan, torch.device("cpu"), batch_size=64)
    indices = torch.randperm(len(data.train))[:19]
    inputs, _ = apply_plan(plan, data.train.inputs[indices], indices, data.train.inputs, data.train.targets)
    recorded = {}
    hooks = [
        teacher.get_submodule(name).register_forward_hook(
            lambda _m, _i, output, name=name: recorded.__setitem__(name, output.clone())
        )
        for name in ("features.0", "features.1")
    ]
    with torch.no_grad():
        teacher(inputs)
    for hook in hooks:
        hook.remove()
    stored = cache.features(0, indices, torch.device("cpu"))
    assert set(stored) == {"features.0", "features.1"}
    for name, value in stored.items():
        torch.testing.assert_close(value, recorded[name], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        cache.draw_features(0, torch.device("cpu"))["features.1"][indices], stored["features.1"]
    )
    assert not teacher.get_submodule("features.0")._forward_hooks  # the fill's taps are removed


def test_feature_layers_are_part_of_the_key_and_a_logits_only_key_is_unchanged(data, teacher):
    logits_only = CacheKey.for_training(teacher, data, AUGMENT, 0, 4, 2.0, None, "float32")
    assert "features" not in logits_only.fields()
    one, two = feature_key(teacher, data, ("features.1",)), feature_key(teacher, data)
    assert len({logits_only.digest(), one.digest(), two.digest()}) == 3
    assert feature_key(teacher, data, ("features.1", "features.0")).digest() == two.digest()


def test_a_truncated_feature_file_is_rebuilt(tmp_path, data, teacher, caplog):
    cache = TeacherOutputCache(feature_key(teacher, data), tmp_path, batch_size=64)
    plan = draw_plan(AUGMENT, len(data.train), data.input_shape, seed=7)
    cache.fill(0, teacher, data.train, plan, torch.device("cpu"), batch_size=64)
    path = cache.path / "feature-1.npy"
    path.write_bytes(path.read_bytes()[:300])
    with caplog.at_level(logging.WARNING, logger="distill"):
        rebuilt = TeacherOutputCache(feature_key(teacher, data), tmp_path, batch_size=64)
    assert "is damaged" in caplog.text and not rebuilt.is_filled(0)


@pytest.mark.parametrize(
    ("loss", "resident"),
    [("hint", True), ("attention", True), ("hint", False)],
    ids=["hint", "attention", "hint-read-batch-by-batch"],
)
def test_feature_kd_with_cache_gives_the_live_terms_without_running_the_teacher(
    tmp_path, data, teacher, loss, resident, monkeypatch
):
    if not resident:  # a draw too large to hold in memory is read from the files per batch
        monkeypatch.setattr("distill.methods.base.RESIDENT_DRAW_BYTES", 0)
    torch.manual_seed(1)
    student = build_model(CNN1dSpec(channels=[4, 4]), data.input_shape, data.num_classes)
    spec = KDSpec(
        temperature=2.0, features=[{"student": "features.1", "teacher": "features.1", "loss": loss}]
    )
    cache = TeacherOutputCache(
        CacheKey.for_training(
            teacher, data, AUGMENT, 0, 1, 2.0, None, "float32", spec.cached_teacher_layers()
        ),
        tmp_path,
        batch_size=64,
    )
    example = data.train.inputs[:4]
    live = build_method(spec, MethodContext(student, teacher, example, data.num_classes))
    cached = build_method(
        spec, MethodContext(student, teacher, example, data.num_classes, teacher_cache=cache)
    )
    cached.load_state_dict(live.state_dict())  # the same hint regressor
    plan = draw_plan(AUGMENT, len(data.train), data.input_shape, seed=3)
    cached.on_epoch_start(EpochStart(0, 0, plan, data.train, torch.device("cpu")))
    indices = torch.arange(10, 42)
    inputs, mixing = apply_plan(
        plan, data.train.inputs[indices], indices, data.train.inputs, data.train.targets
    )
    batch = Batch(inputs, data.train.targets[indices], indices, data.num_classes, mixing, draw=0)
    live_terms = live.step(batch)
    calls = []
    hook = teacher.register_forward_hook(lambda *_: calls.append(1))
    try:
        cached_terms = cached.step(batch)
    finally:
        hook.remove()
    assert not calls  # the step read the teacher's logits and features from the cache
    assert (cached.teacher._draw_outputs is not None) == resident
    assert set(cached_terms) == set(live_terms) == {"kd", "ce", f"{loss}:features.1"}
    for name in live_terms:
        torch.testing.assert_close(cached_terms[name], live_terms[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("top_k", "rest", "per_sample"),
    [(None, "uniform", 6 * 4), (2, "uniform", 6 * 4), (2, "bin", 2 * (4 + 8))],
)
def test_draw_bytes_in_memory_are_what_a_whole_draw_reads_back(
    tmp_path, data, teacher, top_k, rest, per_sample
):
    cache = TeacherOutputCache(
        make_key(teacher, data, top_k=top_k, draws=1), tmp_path, batch_size=64, rest=rest
    )
    fill_all(cache, teacher, data)
    values, classes = cache.draw_outputs(0, torch.device("cpu"))
    read = values.nbytes + (0 if classes is None else classes.nbytes)
    assert cache.draw_bytes_in_memory() == read == len(data.train) * per_sample
    featured = TeacherOutputCache(feature_key(teacher, data), tmp_path / "features")
    features = featured.draw_features(0, torch.device("cpu"))
    assert featured.draw_bytes_in_memory() == len(data.train) * 6 * 4 + sum(
        f.nbytes for f in features.values()
    )

"""CTKD (Li et al., AAAI 2023): the GRL, the λ curriculum, the temperature, the min–max step."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
import torch.nn.functional as F

from distill.data.bundle import Split
from distill.errors import DistillError
from distill.losses import kd_loss
from distill.methods import Batch, EpochStart, MethodContext, build_method
from distill.methods.ctkd import (  # importing the module registers "ctkd"
    CTKDSpec,
    CurriculumTemperatureKD,
    GlobalTemperature,
    curriculum_lambda,
    learned_temperature_kd_loss,
    reverse_gradient,
)
from distill.models import build_model
from distill.models.mlp import MLPSpec
from distill.models.resnet import ResNetSpec


def epoch_start(epoch: int) -> EpochStart:
    split = Split(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long))
    return EpochStart(epoch, 0, None, split, torch.device("cpu"))


def mlp(seed: int, hidden=(16,)):
    torch.manual_seed(seed)
    return build_model(MLPSpec(hidden=list(hidden)), (6,), 5)


def context(student, teacher, inputs):
    return MethodContext(student, teacher, inputs[:4], 5, owner="students[0].method")


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward():
    x = torch.randn(3, 4, requires_grad=True)
    weights = torch.randn(3, 4)
    y = reverse_gradient(x, 0.3)
    torch.testing.assert_close(y, x)
    (y * weights).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * weights)
    x.grad = None
    (reverse_gradient(x, 0.0) * weights).sum().backward()
    assert torch.count_nonzero(x.grad) == 0


def official_cosine_decay(i: int, max_value: float, min_value: float, loops: int) -> float:
    """``CosineDecay.get_value`` of the official ``train_student.py`` (1-based epoch ``i``)."""
    i = min(max(i, 0), loops)
    return (math.cos(i * math.pi / loops) + 1.0) * 0.5 * (max_value - min_value) + min_value


def test_the_cosine_curriculum_rises_from_lambda_min_to_lambda_max():
    # the trainer's 0-based epoch e is the official epoch e + 1
    assert curriculum_lambda(0, 0.0, 1.0, 10) == pytest.approx((1 - math.cos(math.pi / 10)) / 2)
    assert curriculum_lambda(0, 0.0, 1.0, 10) == pytest.approx(0.024471741852423234)
    assert curriculum_lambda(4, 0.0, 1.0, 10) == pytest.approx(0.5)
    assert curriculum_lambda(9, 0.0, 1.0, 10) == pytest.approx(1.0)
    assert curriculum_lambda(100, 0.0, 1.0, 10) == pytest.approx(1.0)
    assert curriculum_lambda(4, 0.2, 0.8, 10) == pytest.approx(0.5)
    assert curriculum_lambda(3, 0.0, 1.0, 0) == 1.0
    # the official code hands the GRL the negated value (decay_max 0, decay_min −1)
    for epoch in range(15):
        assert curriculum_lambda(epoch, 0.0, 1.0, 10) == pytest.approx(
            -official_cosine_decay(epoch + 1, 0.0, -1.0, 10)
        )
    values = [curriculum_lambda(e, 0.0, 1.0, 10) for e in range(12)]
    assert values == sorted(values)


def test_the_temperature_maps_a_logit_into_the_range():
    module = GlobalTemperature(1.0, 21.0)
    assert module.value() == pytest.approx(1 + 20 / (1 + math.exp(-1)))  # 15.62, the official start
    assert module(1.0).item() == pytest.approx(15.6211716, rel=1e-6)
    with torch.no_grad():
        module.parameter.fill_(0.0)
    assert module.value() == pytest.approx(11.0)
    with torch.no_grad():
        module.parameter.fill_(-50.0)
    assert module.value() == pytest.approx(1.0)
    with torch.no_grad():
        module.parameter.fill_(50.0)
    assert module.value() == pytest.approx(21.0)


def test_learned_temperature_kd_equals_hinton_kd_and_differentiates_in_tau():
    torch.manual_seed(0)
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    tau = torch.tensor([3.0], requires_grad=True)
    value = learned_temperature_kd_loss(s, t, tau)
    torch.testing.assert_close(value, kd_loss(s, t, 3.0))
    # explicit: τ² · mean_n Σ_c p_t (log p_t − log p_s)
    p_t = F.softmax(t / 3.0, dim=1)
    explicit = 9.0 * (p_t * (F.log_softmax(t / 3.0, dim=1) - F.log_softmax(s / 3.0, dim=1))).sum(1).mean()
    torch.testing.assert_close(value, explicit)
    (grad,) = torch.autograd.grad(value, tau)

    def at(x: float) -> float:
        return float(
            learned_temperature_kd_loss(s.double(), t.double(), torch.tensor([x], dtype=torch.float64))
        )

    numeric = (at(3.0 + 1e-5) - at(3.0 - 1e-5)) / 2e-5
    assert grad.item() == pytest.approx(numeric, rel=1e-3)


def test_one_step_ascends_the_kd_loss_in_the_temperature_and_descends_it_in_the_student():
    student, teacher = mlp(0), mlp(1, hidden=(32,))
    torch.manual_seed(5)
    inputs = torch.randn(16, 6)
    batch = Batch(inputs, torch.arange(16) % 5, torch.arange(16), 5)
    # τ ≈ 1.95: at high temperatures τ²·KL flattens (the logit-matching limit), so its slope in θ
    # would drown in float32 rounding
    spec = CTKDSpec(ce_weight=0.0, kd_weight=1.0, initial_logit=-3.0)
    method = build_method(spec, context(student, teacher, inputs))
    assert isinstance(method, CurriculumTemperatureKD)
    method.on_epoch_start(epoch_start(20))  # past the curriculum: λ = 1
    assert method.lambda_ == 1.0

    def kd_at(theta: torch.Tensor, student_state) -> float:
        probe = build_method(spec, context(mlp(0), teacher, inputs))
        probe.student.load_state_dict(student_state)
        with torch.no_grad():
            probe.temperature.parameter.copy_(theta)
            return float(probe.step(batch)["kd"])

    theta0 = method.temperature.parameter.detach().clone()
    student0 = {k: v.clone() for k, v in student.state_dict().items()}
    before = kd_at(theta0, student0)
    # the plain gradient of the KD loss in θ (no reversal): the temperature should follow its sign
    theta = theta0.clone().requires_grad_(True)
    tau = 1.0 + 20.0 * torch.sigmoid(theta)
    with torch.no_grad():
        s, t = student(inputs), teacher(inputs)
    (ascent,) = torch.autograd.grad(learned_temperature_kd_loss(s, t, tau), theta)
    assert ascent.abs().item() > 0

    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    terms = method.step(batch)
    assert terms["kd"].item() == pytest.approx(before, rel=1e-6)
    optimizer.zero_grad()
    sum(terms.values()).backward()
    torch.testing.assert_close(method.temperature.parameter.grad, -ascent)  # reversed, λ = 1
    optimizer.step()

    theta1 = method.temperature.parameter.detach().clone()
    student1 = {k: v.clone() for k, v in student.state_dict().items()}
    assert torch.sign(theta1 - theta0).item() == torch.sign(ascent).item()
    assert kd_at(theta1, student0) > before  # the temperature's step raised the KD loss
    assert kd_at(theta0, student1) < before  # the student's step lowered it


def test_lambda_scales_the_temperature_gradient_per_epoch():
    student, teacher = mlp(0), mlp(1)
    inputs = torch.randn(8, 6)
    batch = Batch(inputs, torch.arange(8) % 5, torch.arange(8), 5)
    method = build_method(CTKDSpec(), context(student, teacher, inputs))
    grads = {}
    for epoch in (0, 4, 9):
        method.on_epoch_start(epoch_start(epoch))
        method.zero_grad()
        sum(method.step(batch).values()).backward()
        grads[epoch] = method.temperature.parameter.grad.item()
    assert grads[4] == pytest.approx(grads[9] * 0.5, rel=1e-5)
    assert grads[0] == pytest.approx(grads[9] * curriculum_lambda(0, 0.0, 1.0, 10), rel=1e-5)


@pytest.mark.parametrize("input_shape", [(3, 32, 32), (1, 28, 28)])
def test_a_few_steps_reduce_the_loss_and_the_state_round_trips(input_shape):
    torch.manual_seed(0)
    student = build_model(ResNetSpec(depth=8, width=1), input_shape, 5)
    teacher = build_model(ResNetSpec(depth=8, width=2), input_shape, 5)
    inputs = torch.randn(8, *input_shape)
    batch = Batch(inputs, torch.arange(8) % 5, torch.arange(8), 5)
    method = build_method(CTKDSpec(), context(student, teacher, inputs))
    method.on_epoch_start(epoch_start(0))
    method.train()
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        terms = method.step(batch)
        assert set(terms) == {"ce", "kd"}
        loss = sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    state = method.state_dict()
    assert "temperature.parameter" in state and not any(key.startswith("teacher") for key in state)
    other = build_method(
        CTKDSpec(), context(build_model(ResNetSpec(depth=8, width=1), input_shape, 5), teacher, inputs)
    )
    other.load_state_dict(state)
    assert other.temperature.value() == pytest.approx(method.temperature.value())
    assert method.finish(None) == {"ctkd_temperature": pytest.approx(method.temperature.value())}


def test_bad_specs_are_refused():
    with pytest.raises(pydantic.ValidationError, match=r"\[low, high\]"):
        CTKDSpec(temperature_range=[1.0, 5.0, 9.0])
    with pytest.raises(pydantic.ValidationError, match="0 < low < high"):
        CTKDSpec(temperature_range=[4.0, 2.0])
    with pytest.raises(pydantic.ValidationError, match="lambda_min"):
        CTKDSpec(lambda_min=0.9, lambda_max=0.1)
    with pytest.raises(pydantic.ValidationError):
        CTKDSpec(kd_weight=0.0)
    with pytest.raises(DistillError, match="needs a teacher"):
        build_method(CTKDSpec(), context(mlp(0), None, torch.randn(8, 6)))
    assert CTKDSpec(temperature_range=[2.0, 8.0]).temperature_range == [2.0, 8.0]


def test_ctkd_from_a_teacher_output_cache_equals_the_live_teacher(tmp_path):
    """CTKD reads only logits, at a temperature it learns: a cache of the whole distribution
    (stored at T = 1) gives them up to a per-sample constant, so the terms are the live ones."""
    from distill.data import AugmentSpec, apply_plan, draw_plan, load_data
    from distill.data.sources import SyntheticSpec
    from distill.engine.cache import CacheKey, TeacherOutputCache
    from distill.methods import Batch, EpochStart, MethodContext, build_method
    from distill.methods.ctkd import CTKDSpec
    from distill.models import build_model
    from distill.models.cnn import CNN1dSpec
    from distill.models.mlp import MLPSpec

    augment = AugmentSpec(shift=2, noise=0.1)
    data = load_data(SyntheticSpec(num_samples=120, num_test=20, num_classes=5, shape=[1, 16]))
    torch.manual_seed(0)
    teacher = build_model(CNN1dSpec(channels=[8]), data.input_shape, data.num_classes).eval()
    spec = CTKDSpec()
    assert spec.cacheable_temperature() == 1.0 and spec.terms_needing_full_distribution() == ["kd"]
    key = CacheKey.for_training(teacher, data, augment, 0, 1, 1.0, None, "float32")
    cache = TeacherOutputCache(key, tmp_path, batch_size=64)
    methods = []
    for store in (None, cache):
        torch.manual_seed(1)
        student = build_model(MLPSpec(hidden=[16]), data.input_shape, data.num_classes)
        context = MethodContext(
            student, teacher, data.train.inputs[:4], data.num_classes, teacher_cache=store
        )
        methods.append(build_method(spec, context))
    plan = draw_plan(augment, len(data.train), data.input_shape, seed=100)
    for method in methods:
        method.on_epoch_start(EpochStart(3, 0, plan, data.train, torch.device("cpu")))
    indices = torch.arange(10, 42)
    inputs, mixing = apply_plan(
        plan, data.train.inputs[indices], indices, data.train.inputs, data.train.targets
    )
    batch = Batch(inputs, data.train.targets[indices], indices, data.num_classes, mixing, draw=0)
    live, cached = (method.step(batch) for method in methods)
    torch.testing.assert_close(cached["kd"], live["kd"], rtol=1e-4, atol=1e-6)

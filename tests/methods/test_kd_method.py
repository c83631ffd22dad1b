import pytest
import torch

from distill.errors import DistillError
from distill.losses import attention_transfer_loss, kd_loss
from distill.methods import Batch, MethodContext, build_method
from distill.methods.kd import FeaturePairSpec, KDSpec
from distill.methods.scratch import ScratchSpec
from distill.models import build_model
from distill.models.mlp import MLPSpec
from distill.models.resnet import ResNetSpec


def context(student, teacher, inputs, classes=5):
    return MethodContext(student, teacher, inputs[:4], classes, owner="students[0].method")


def mlp(seed, hidden=(16,)):
    torch.manual_seed(seed)
    return build_model(MLPSpec(hidden=list(hidden)), (6,), 5)


def test_teacher_is_frozen_and_not_part_of_the_method():
    student, teacher = mlp(0), mlp(1)
    inputs = torch.randn(8, 6)
    method = build_method(KDSpec(), context(student, teacher, inputs))
    names = {name for name, _ in method.named_parameters()}
    assert names and all(name.startswith("student.") for name in names)
    assert all(key.startswith("student.") for key in method.state_dict())
    method.train()
    assert student.training and not teacher.training
    batch = Batch(inputs, torch.arange(8) % 5, torch.arange(8), 5)
    sum(method.step(batch).values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(not p.requires_grad for p in teacher.parameters())


def test_kd_terms_are_weighted_ce_and_hinton_kd():
    student, teacher = mlp(0), mlp(1)
    inputs = torch.randn(8, 6)
    targets = torch.arange(8) % 5
    spec = KDSpec(temperature=3.0, kd_weight=0.7, ce_weight=0.3)
    terms = build_method(spec, context(student, teacher, inputs)).step(
        Batch(inputs, targets, torch.arange(8), 5)
    )
    with torch.no_grad():
        expected_kd = 0.7 * kd_loss(student(inputs), teacher(inputs), 3.0)
        expected_ce = 0.3 * torch.nn.functional.cross_entropy(student(inputs), targets)
    torch.testing.assert_close(terms["kd"], expected_kd)
    torch.testing.assert_close(terms["ce"], expected_ce)


def test_student_that_equals_teacher_has_zero_kd_term():
    teacher = mlp(1)
    student = mlp(1)
    inputs = torch.randn(8, 6)
    terms = build_method(KDSpec(), context(student, teacher, inputs)).step(
        Batch(inputs, torch.arange(8) % 5, torch.arange(8), 5)
    )
    assert terms["kd"].item() == pytest.approx(0.0, abs=1e-6)


def test_feature_pairs_with_hint_regressor_and_attention_transfer():
    torch.manual_seed(0)
    student = build_model(ResNetSpec(depth=8, width=1), (3, 16, 16), 5)
    teacher = build_model(ResNetSpec(depth=14, width=2), (3, 16, 16), 5)
    inputs = torch.randn(6, 3, 16, 16)
    spec = KDSpec(
        features=[
            FeaturePairSpec(student="layer2", teacher="layer2", loss="hint", weight=1.0),
            FeaturePairSpec(student="layer3", teacher="layer3", loss="attention", weight=100.0),
        ]
    )
    method = build_method(spec, context(student, teacher, inputs))
    assert "terms.2.regressor.net.0.weight" in method.state_dict()  # the hint regressor is trained
    method.train()
    terms = method.step(Batch(inputs, torch.arange(6) % 5, torch.arange(6), 5))
    assert set(terms) == {"ce", "kd", "hint:layer2", "attention:layer3"}
    sum(terms.values()).backward()
    assert method.terms[2].regressor.net[0].weight.grad is not None
    # the attention term is exactly the loss function on the tapped features
    student.eval()
    teacher.eval()
    with torch.no_grad():
        captured = {}
        handles = [
            student.layer3.register_forward_hook(lambda m, i, o: captured.__setitem__("s", o)),
            teacher.layer3.register_forward_hook(lambda m, i, o: captured.__setitem__("t", o)),
        ]
        student(inputs)
        teacher(inputs)
        for handle in handles:
            handle.remove()
        method.eval()
        terms = method.step(Batch(inputs, torch.arange(6) % 5, torch.arange(6), 5))
    expected = 100.0 * attention_transfer_loss(captured["s"], captured["t"])
    torch.testing.assert_close(terms["attention:layer3"], expected)


def test_feature_pair_errors_name_the_field():
    student, teacher = mlp(0), mlp(1)
    inputs = torch.randn(8, 6)
    spec = KDSpec(features=[FeaturePairSpec(student="body", teacher="body", loss="attention")])
    with pytest.raises(DistillError, match=r"students\[0\].method.features\[0\]: attention transfer"):
        build_method(spec, context(student, teacher, inputs))
    spec = KDSpec(features=[FeaturePairSpec(student="bodyy", teacher="body")])
    with pytest.raises(DistillError, match="unknown layer 'bodyy'"):
        build_method(spec, context(student, teacher, inputs))


def test_kd_needs_a_teacher():
    with pytest.raises(DistillError, match="needs a teacher"):
        build_method(KDSpec(), context(mlp(0), None, torch.randn(8, 6)))


def test_scratch_uses_mixed_labels_under_mixup():
    from distill.data import AugmentSpec, apply_plan, draw_plan

    student = mlp(0)
    inputs = torch.randn(8, 6)
    targets = torch.arange(8) % 5
    plan = draw_plan(AugmentSpec(mixup_alpha=1.0), 8, (6,), 0)
    mixed, mixing = apply_plan(plan, inputs, torch.arange(8), inputs, targets)
    method = build_method(ScratchSpec(), context(student, None, inputs))
    loss = method.step(Batch(mixed, targets, torch.arange(8), 5, mixing))["ce"]
    with torch.no_grad():
        logits = student(mixed)
    log_probs = logits.log_softmax(1)
    weight = mixing.weight
    expected = -(
        weight * log_probs[torch.arange(8), targets]
        + (1 - weight) * log_probs[torch.arange(8), targets[plan.partner]]
    ).mean()
    torch.testing.assert_close(loss.detach(), expected)

"""ReviewKD (Chen et al., CVPR 2021): HCL, ABF, the review path, the warm-up, shapes, errors."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
import torch.nn.functional as F

import distill.methods.reviewkd  # registers "reviewkd"
from distill.data.bundle import Split
from distill.errors import DistillError
from distill.methods import Batch, EpochStart, MethodContext, build_method
from distill.methods.reviewkd import (
    AttentionBasedFusion,
    ReviewKD,
    ReviewKDSpec,
    hierarchical_context_loss,
    review_loss,
    warmup_factor,
)
from distill.models import build_model
from distill.models.resnet import ResNetSpec


def explicit_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """Adaptive average pooling by its definition: cell i spans [⌊i·H/s⌋, ⌈(i+1)·H/s⌉)."""
    n, c, h, w = x.shape
    out = torch.zeros(n, c, size, size, dtype=torch.float64)
    for i in range(size):
        r0, r1 = (i * h) // size, math.ceil((i + 1) * h / size)
        for j in range(size):
            c0, c1 = (j * w) // size, math.ceil((j + 1) * w / size)
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].double().mean(dim=(2, 3))
    return out


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()) ** 2).mean())


@pytest.mark.parametrize(
    ("height", "expected_levels"),
    [
        (8, [(4, 0.5), (2, 0.25), (1, 0.125)]),
        (6, [(4, 0.5), (2, 0.25), (1, 0.125)]),
        (4, [(2, 0.5), (1, 0.25)]),
        (2, [(1, 0.5)]),
        (1, []),
    ],
)
def test_hcl_matches_its_definition(height, expected_levels):
    torch.manual_seed(0)
    fs, ft = torch.randn(2, 3, height, height), torch.randn(2, 3, height, height)
    total = 1.0 + sum(weight for _, weight in expected_levels)
    expected = mse(fs, ft)
    for size, weight in expected_levels:
        expected += weight * mse(explicit_pool(fs, size), explicit_pool(ft, size))
    expected /= total
    assert hierarchical_context_loss(fs, ft).item() == pytest.approx(expected, rel=1e-5)


def test_hcl_is_zero_iff_the_features_match_and_sums_over_levels():
    torch.manual_seed(0)
    levels = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4), torch.randn(2, 8, 1, 1)]
    assert review_loss(levels, [x.clone() for x in levels]).item() == 0.0
    for index in range(len(levels)):
        moved = [x.clone() for x in levels]
        moved[index][1, 2, 0, 0] += 0.1
        assert review_loss(moved, levels).item() > 0.0
    others = [torch.randn_like(x) for x in levels]
    expected = sum(hierarchical_context_loss(s, t) for s, t in zip(levels, others, strict=True))
    torch.testing.assert_close(review_loss(levels, others), expected)
    with pytest.raises(ValueError, match="one shape"):
        hierarchical_context_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 2, 2))


def test_warmup_factor_is_min_of_epoch_over_warmup_and_one():
    assert [warmup_factor(e, 20) for e in (0, 5, 10, 20, 35)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_abf_fuses_with_two_sigmoid_maps_over_the_nearest_upsampled_residual():
    torch.manual_seed(0)
    abf = AttentionBasedFusion(3, 4, 5, fuse=True).eval()
    feature, residual = torch.randn(2, 3, 4, 4), torch.randn(2, 4, 2, 2)
    projected, fused = abf(feature, residual, torch.Size([4, 4]))
    with torch.no_grad():
        x = abf.reduce(feature)
        up = residual.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest ×2
        conv = abf.attention[0]
        logits = torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], torch.cat([x, up], 1))
        maps = torch.sigmoid(logits + conv.bias[None, :, None, None])
        expected = x * maps[:, :1] + up * maps[:, 1:]
    torch.testing.assert_close(fused, expected)
    torch.testing.assert_close(projected, abf.project(expected))
    assert projected.shape == (2, 5, 4, 4)
    # a teacher map of another size: the fused map is resized (nearest) before the projection
    projected, fused = abf(feature, residual, torch.Size([8, 8]))
    assert projected.shape == (2, 5, 8, 8) and fused.shape == (2, 4, 8, 8)
    # the deepest level has no fusion
    deepest = AttentionBasedFusion(3, 4, 5, fuse=False)
    assert deepest.attention is None
    assert deepest(feature, None, torch.Size([4, 4]))[0].shape == (2, 5, 4, 4)


def resnets(input_shape, seed=0):
    torch.manual_seed(seed)
    student = build_model(ResNetSpec(depth=8, width=1), input_shape, 5)
    teacher = build_model(ResNetSpec(depth=14, width=2), input_shape, 5)
    return student, teacher


def context(student, teacher, inputs, owner="students[0].method"):
    return MethodContext(student, teacher, inputs[:4], 5, owner=owner)


def epoch_start(epoch: int) -> EpochStart:
    split = Split(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long))
    return EpochStart(epoch, 0, None, split, torch.device("cpu"))


@pytest.mark.parametrize(
    ("input_shape", "sizes"), [((3, 32, 32), [32, 16, 8, 1]), ((1, 28, 28), [28, 14, 7, 1])]
)
def test_shapes_are_inferred_from_the_taps(input_shape, sizes):
    student, teacher = resnets(input_shape)
    inputs = torch.randn(6, *input_shape)
    method = build_method(ReviewKDSpec(), context(student, teacher, inputs))
    assert isinstance(method, ReviewKD)
    # student 16/32/64/64 channels → teacher (width 2) 32/64/128/128, mid = min(512, 64)
    assert [abf.reduce[0].in_channels for abf in method.abfs] == [16, 32, 64, 64]
    assert [abf.project[0].out_channels for abf in method.abfs] == [32, 64, 128, 128]
    assert {abf.reduce[0].out_channels for abf in method.abfs} == {64}
    assert [abf.attention is not None for abf in method.abfs] == [True, True, True, False]
    method.train()
    student(inputs)
    features = [method.student_taps.features[name] for name in method.student_layers]
    assert features[-1].shape == (6, 64)  # the pooled vector, read as a 1×1 map
    outputs = method.review(
        [distill.methods.reviewkd.as_map(f) for f in features], [torch.Size([s, s]) for s in sizes]
    )
    assert [tuple(o.shape) for o in outputs] == [
        (6, c, s, s) for c, s in zip([32, 64, 128, 128], sizes, strict=True)
    ]
    terms = method.step(Batch(inputs, torch.arange(6) % 5, torch.arange(6), 5))
    assert set(terms) == {"ce", "review"}
    wide = build_method(ReviewKDSpec(mid_channels=24), context(student, teacher, inputs))
    assert {abf.reduce[0].out_channels for abf in wide.abfs} == {24}


def test_the_deepest_student_level_reaches_every_shallower_review_output():
    student, teacher = resnets((3, 16, 16))
    inputs = torch.randn(4, 3, 16, 16)
    method = build_method(ReviewKDSpec(), context(student, teacher, inputs))
    method.train()
    torch.manual_seed(1)
    features = [
        torch.randn(4, 16, 16, 16),
        torch.randn(4, 32, 8, 8),
        torch.randn(4, 64, 4, 4),
        torch.randn(4, 64, 1, 1),
    ]
    for feature in features:
        feature.requires_grad_(True)
    outputs = method.review(features, [f.shape[-2:] for f in features])
    for index, output in enumerate(outputs):
        grads = torch.autograd.grad(output.square().sum(), features, allow_unused=True, retain_graph=True)
        deeper = grads[index:]
        assert all(g is not None and g.abs().sum() > 0 for g in deeper), index
        assert all(g is None for g in grads[:index]), index  # nothing flows from shallower levels

    # end to end: the shallowest level's HCL alone trains the student's deepest stage
    method.on_epoch_start(epoch_start(40))
    method.zero_grad()
    teacher_features = method.teacher(inputs).features
    student(inputs)
    maps = [distill.methods.reviewkd.as_map(method.student_taps.features[n]) for n in method.student_layers]
    targets = [distill.methods.reviewkd.as_map(teacher_features[n]) for n in method.teacher_layers]
    outputs = method.review(maps, [t.shape[-2:] for t in targets])
    hierarchical_context_loss(outputs[0], targets[0]).backward()
    assert student.layer3[0].conv2.weight.grad is not None
    assert student.layer3[0].conv2.weight.grad.abs().sum() > 0
    assert student.fc.weight.grad is None


def test_the_review_term_follows_the_warm_up_and_stays_in_the_graph():
    student, teacher = resnets((1, 12, 12))
    inputs = torch.randn(6, 1, 12, 12)
    batch = Batch(inputs, torch.arange(6) % 5, torch.arange(6), 5)
    method = build_method(ReviewKDSpec(review_weight=2.0, ce_weight=0.5), context(student, teacher, inputs))
    method.eval()  # BN in eval mode: the same terms at every call
    assert method.step(batch)["review"].item() == 0.0  # epoch 0 (before any on_epoch_start)
    first = method.step(batch)["review"]
    first.backward()
    assert method.abfs[0].project[0].weight.grad is not None  # in the graph at weight 0
    method.on_epoch_start(epoch_start(20))
    terms = method.step(batch)
    method.on_epoch_start(epoch_start(5))
    quarter = method.step(batch)["review"]
    torch.testing.assert_close(quarter, terms["review"] / 4)
    with torch.no_grad():
        student(inputs)
        teacher_features = method.teacher(inputs).features
        maps = [
            distill.methods.reviewkd.as_map(method.student_taps.features[n]) for n in method.student_layers
        ]
        targets = [distill.methods.reviewkd.as_map(teacher_features[n]) for n in method.teacher_layers]
        expected = 2.0 * review_loss(method.review(maps, [t.shape[-2:] for t in targets]), targets)
        expected_ce = 0.5 * F.cross_entropy(student(inputs), batch.targets)
    torch.testing.assert_close(terms["review"], expected)
    torch.testing.assert_close(terms["ce"], expected_ce)


def test_a_few_steps_reduce_the_loss_and_the_state_round_trips():
    student, teacher = resnets((1, 12, 12))
    torch.manual_seed(3)
    inputs = torch.randn(8, 1, 12, 12)
    batch = Batch(inputs, torch.arange(8) % 5, torch.arange(8), 5)
    method = build_method(ReviewKDSpec(), context(student, teacher, inputs))
    method.on_epoch_start(epoch_start(25))
    method.train()
    optimizer = torch.optim.Adam(method.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        terms = method.step(batch)
        loss = sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]

    keys = set(method.state_dict())
    assert any(key.startswith("abfs.3.") for key in keys) and any(key.startswith("student.") for key in keys)
    assert not any(key.startswith("teacher") for key in keys)
    other_student, _ = resnets((1, 12, 12), seed=9)
    other = build_method(ReviewKDSpec(), context(other_student, teacher, inputs))
    other.load_state_dict(method.state_dict())
    method.eval()
    other.eval()
    other.on_epoch_start(epoch_start(25))
    with torch.no_grad():
        a, b = method.step(batch), other.step(batch)
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_bad_layers_and_lists_are_refused_naming_the_field():
    student, teacher = resnets((3, 8, 8))
    inputs = torch.randn(4, 3, 8, 8)
    spec = ReviewKDSpec(student_layers=["layer1", "layer22"], teacher_layers=["layer1", "layer2"])
    with pytest.raises(
        DistillError, match=r"students\[0\]\.method\.student_layers\[1\]: unknown layer 'layer22'"
    ):
        build_method(spec, context(student, teacher, inputs))
    spec = ReviewKDSpec(student_layers=["layer1", "layer2"], teacher_layers=["layer1", "layr2"])
    with pytest.raises(DistillError, match=r"method\.teacher_layers\[1\]: unknown layer 'layr2'"):
        build_method(spec, context(student, teacher, inputs))
    with pytest.raises(pydantic.ValidationError, match="same length"):
        ReviewKDSpec(student_layers=["layer1", "layer2"], teacher_layers=["layer2"])
    with pytest.raises(pydantic.ValidationError):
        ReviewKDSpec(student_layers=[], teacher_layers=[])
    with pytest.raises(pydantic.ValidationError, match="every loss weight is 0"):
        ReviewKDSpec(ce_weight=0.0, review_weight=0.0)
    with pytest.raises(DistillError, match="needs a teacher"):
        build_method(ReviewKDSpec(), context(student, None, inputs))

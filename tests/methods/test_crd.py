"""Contrastive Representation Distillation (``crd``): golden NCE values from the equations, the
memory bank's update and normalizers, negative sampling, reproducibility and resume, and a short
end-to-end run through the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import distill.methods.crd  # noqa: F401  (registers "crd")
from distill.data.bundle import DataBundle, Split
from distill.errors import DistillError
from distill.losses import kd_loss
from distill.methods import Batch, MethodContext, build_method
from distill.methods.crd import (
    ContrastiveRepresentationDistillation,
    CRDSpec,
    contrast_scores,
    nce_loss,
    update_memory,
)
from distill.models import build_model
from distill.models.mlp import MLPSpec
from distill.models.resnet import ResNetSpec

CLASSES = 3


def mlp(seed: int, hidden: tuple[int, ...] = (16,), inputs: int = 6) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(MLPSpec(hidden=list(hidden)), (inputs,), CLASSES)


def bundle(n: int = 6, inputs: int = 6, seed: int = 0) -> DataBundle:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, inputs, generator=generator)
    y = torch.arange(n) % CLASSES
    return DataBundle("synthetic", Split(x, y), None, Split(x[:2], y[:2]), CLASSES)


def crd(
    spec: CRDSpec, data: DataBundle | None = None, seed: int = 0, **models
) -> ContrastiveRepresentationDistillation:
    data = bundle() if data is None else data
    student = models.get("student", mlp(0))
    teacher = models.get("teacher", mlp(1, hidden=(12,)))
    context = MethodContext(
        student, teacher, data.train.inputs[:4], CLASSES, owner="students[0].method", seed=seed, data=data
    )
    method = build_method(spec, context)
    assert isinstance(method, ContrastiveRepresentationDistillation)
    return method


def small_spec(**overrides) -> CRDSpec:
    options = {"feat_dim": 4, "negatives": 3, "student_layer": "body", "teacher_layer": "body"}
    return CRDSpec(**{**options, **overrides})


def whole_batch(data: DataBundle) -> Batch:
    return Batch(data.train.inputs, data.train.targets, torch.arange(len(data.train)), CLASSES)


# ---------------------------------------------------------------------- the equations, directly
def direct_nce(anchors, memory, contrast, tau, z, n_data) -> float:
    """−(1/B) Σ_b [log P0/(P0 + K/n) + Σ_k log (K/n)/(Pk + K/n)], P = exp(⟨m, v⟩/τ)/Z, by loops."""
    total = 0.0
    k = len(contrast[0]) - 1
    noise = k / n_data
    for b, row in enumerate(contrast):
        for position, j in enumerate(row):
            p = (
                math.exp(sum(float(m) * float(v) for m, v in zip(memory[j], anchors[b], strict=True)) / tau)
                / z
            )
            total += math.log(p / (p + noise)) if position == 0 else math.log(noise / (p + noise))
    return -total / len(contrast)


def test_nce_loss_is_the_official_contrast_loss_on_tiny_tensors():
    probs = torch.tensor([[0.9, 0.2, 0.05, 0.4], [0.3, 0.7, 0.1, 0.01]], dtype=torch.float64)
    n_data, noise = 6, 3 / 6
    expected = 0.0
    for row in probs.tolist():
        expected += math.log(row[0] / (row[0] + noise)) + sum(math.log(noise / (p + noise)) for p in row[1:])
    expected = -expected / 2
    assert nce_loss(probs, n_data).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("rows", [6, 40])  # 6 rows: product-then-gather; 40 > (K+1)·d: gather-then-bmm
def test_contrast_scores_are_exp_of_memory_inner_products_over_tau(rows):
    generator = torch.Generator().manual_seed(3)
    memory = F.normalize(torch.randn(rows, 2, generator=generator, dtype=torch.float64), dim=1)
    anchors = F.normalize(torch.randn(2, 2, generator=generator, dtype=torch.float64), dim=1)
    contrast = torch.tensor([[0, 3, 5, 1], [1, 2, 2, 4]])
    scores = contrast_scores(anchors, memory, contrast, 0.07)
    for b in range(2):
        for position, j in enumerate(contrast[b].tolist()):
            expected = math.exp(float(memory[j] @ anchors[b]) / 0.07)
            assert scores[b, position].item() == pytest.approx(expected, rel=1e-9)


def test_crd_loss_is_the_sum_of_both_anchored_nce_terms_with_fixed_memory_and_indices():
    """Golden value: student embeddings against the *teacher* bank plus teacher embeddings against
    the *student* bank (the official ContrastMemory's out_v1/out_v2), each over its own Z."""
    method = crd(small_spec(nce_temperature=0.5)).eval()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        method.memory_student.copy_(F.normalize(torch.randn(6, 4, generator=generator), dim=1))
        method.memory_teacher.copy_(F.normalize(torch.randn(6, 4, generator=generator), dim=1))
        method.normalizers.copy_(torch.tensor([2.5, 4.0]))
    f_s, f_t = torch.randn(2, 16, generator=generator), torch.randn(2, 12, generator=generator)
    indices = torch.tensor([4, 1])
    contrast = torch.tensor([[4, 0, 2, 5], [1, 3, 3, 0]])  # positives (the samples' own rows) first
    loss = method.crd_loss(f_s, f_t, indices, contrast)
    with torch.no_grad():
        v_s, v_t = method.embed_student(f_s), method.embed_teacher(f_t)
    expected = direct_nce(v_s.tolist(), method.memory_teacher.tolist(), contrast.tolist(), 0.5, 2.5, 6)
    expected += direct_nce(v_t.tolist(), method.memory_student.tolist(), contrast.tolist(), 0.5, 4.0, 6)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(v_s.norm(dim=1), torch.ones(2))  # Embed: linear then L2 normalize


def test_embedding_heads_are_linear_maps_then_l2_normalization():
    method = crd(small_spec())
    features = torch.randn(3, 16)
    linear = method.embed_student.linear
    expected = F.normalize(features @ linear.weight.t() + linear.bias, dim=1)
    torch.testing.assert_close(method.embed_student(features), expected)


# ---------------------------------------------------------------------- memory and normalizers
def test_memory_update_is_momentum_then_l2_normalization_of_the_batch_rows_only():
    memory = torch.arange(24, dtype=torch.float32).view(6, 4) / 10 - 1
    before = memory.clone()
    embeddings = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.6, 0.8, 0.0]])
    update_memory(memory, torch.tensor([4, 1]), embeddings, momentum=0.5)
    for row, embedding in zip((4, 1), embeddings, strict=True):
        mixed = 0.5 * before[row] + 0.5 * embedding
        torch.testing.assert_close(memory[row], mixed / mixed.norm())
    for row in (0, 2, 3, 5):
        torch.testing.assert_close(memory[row], before[row])


def test_a_training_step_scores_against_the_old_memory_and_then_updates_the_batch_rows():
    method = crd(small_spec(momentum=0.3)).train()
    f_s, f_t = torch.randn(2, 16), torch.randn(2, 12)
    indices, contrast = torch.tensor([2, 5]), torch.tensor([[2, 0, 1, 3], [5, 4, 0, 0]])
    old_student, old_teacher = method.memory_student.clone(), method.memory_teacher.clone()
    with torch.no_grad():
        method.eval()
        expected_loss = method.crd_loss(f_s, f_t, indices, contrast)  # eval: scored, nothing changes
        method.train()
        v_s, v_t = method.embed_student(f_s), method.embed_teacher(f_t)
    torch.testing.assert_close(method.memory_student, old_student)
    loss = method.crd_loss(f_s, f_t, indices, contrast)
    torch.testing.assert_close(loss, expected_loss)
    expected_student, expected_teacher = old_student.clone(), old_teacher.clone()
    update_memory(expected_student, indices, v_s, 0.3)
    update_memory(expected_teacher, indices, v_t, 0.3)
    torch.testing.assert_close(method.memory_student, expected_student)
    torch.testing.assert_close(method.memory_teacher, expected_teacher)


def test_memory_starts_uniform_in_plus_minus_one_over_sqrt_of_a_third_of_feat_dim():
    method = crd(small_spec(feat_dim=12), data=bundle(n=300))
    bound = 1 / math.sqrt(12 / 3)
    for memory in (method.memory_student, method.memory_teacher):
        assert memory.shape == (300, 12)
        assert memory.abs().max().item() <= bound
        assert memory.abs().max().item() > 0.95 * bound
        assert abs(memory.mean().item()) < 0.02
    assert not torch.equal(method.memory_student, method.memory_teacher)


def test_normalizers_are_estimated_from_the_first_training_batch_and_then_fixed():
    method = crd(small_spec(nce_temperature=0.2))
    assert method.normalizers.tolist() == [-1.0, -1.0]
    f_s, f_t = torch.randn(2, 16), torch.randn(2, 12)
    indices, contrast = torch.tensor([0, 3]), torch.tensor([[0, 1, 2, 4], [3, 5, 5, 1]])
    method.eval()
    method.crd_loss(f_s, f_t, indices, contrast)
    assert method.normalizers.tolist() == [-1.0, -1.0]  # eval mode fixes nothing
    method.train()
    with torch.no_grad():
        v_s, v_t = method.embed_student(f_s), method.embed_teacher(f_t)
        z_s = contrast_scores(v_s, method.memory_teacher, contrast, 0.2).mean() * 6
        z_t = contrast_scores(v_t, method.memory_student, contrast, 0.2).mean() * 6
    method.crd_loss(f_s, f_t, indices, contrast)
    torch.testing.assert_close(method.normalizers, torch.stack([z_s, z_t]))
    fixed = method.normalizers.clone()
    method.crd_loss(torch.randn(2, 16) * 5, torch.randn(2, 12), indices, contrast)
    torch.testing.assert_close(method.normalizers, fixed)


# ---------------------------------------------------------------------- what makes it CRD
def test_loss_is_lower_when_each_anchor_points_at_its_own_row_of_the_other_bank():
    generator = torch.Generator().manual_seed(0)
    memory = F.normalize(torch.randn(6, 4, generator=generator), dim=1)
    contrast = torch.tensor([[0, 2, 3, 4], [1, 2, 5, 4], [3, 0, 1, 5]])  # own row first
    own = memory[[0, 1, 3]]
    other = memory[[4, 5, 2]]  # each anchor aligned with a wrong sample's row
    z = contrast_scores(own, memory, contrast, 0.07).mean().item() * 6

    def loss(anchors: torch.Tensor) -> float:
        return nce_loss(contrast_scores(anchors, memory, contrast, 0.07) / z, 6).item()

    assert loss(own) < loss(F.normalize(own + 0.5 * other, dim=1)) < loss(other)


def test_drawn_positives_are_the_samples_own_rows_and_negatives_come_from_other_classes():
    data = bundle(n=60)
    method = crd(small_spec(negatives=500), data=data).train()
    indices = torch.tensor([0, 7, 14, 59])
    contrast = method.draw_contrast_indices(indices)
    assert contrast.shape == (4, 501)
    assert torch.equal(contrast[:, 0], indices)
    labels = data.train.targets
    assert (labels[contrast[:, 1:]] != labels[indices].unsqueeze(1)).all()
    # uniform over the 40 rows of the other classes
    counts = torch.bincount(contrast[0, 1:], minlength=60)
    assert (counts[labels == labels[0]] == 0).all()
    assert counts[labels != labels[0]].min() > 0


def test_uniform_sampling_draws_any_row_and_may_exceed_the_training_set():
    data = bundle(n=6)
    method = crd(small_spec(negatives=400, negative_sampling="uniform"), data=data).train()
    contrast = method.draw_contrast_indices(torch.tensor([0, 1]))
    assert torch.equal(contrast[:, 0], torch.tensor([0, 1]))
    assert set(contrast[:, 1:].unique().tolist()) == set(range(6))  # own class (and own row) included


# ---------------------------------------------------------------------- reproducibility and resume
def train_steps(method: ContrastiveRepresentationDistillation, data: DataBundle, steps: int) -> list[float]:
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    losses = []
    for _ in range(steps):
        terms = method.step(whole_batch(data))
        loss = sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(terms["crd"].item())
    return losses


def test_the_same_seed_draws_the_same_negatives_and_losses():
    data = bundle(n=30)
    first = crd(small_spec(negatives=8), data=data, seed=5, student=mlp(0), teacher=mlp(1, (12,))).train()
    second = crd(small_spec(negatives=8), data=data, seed=5, student=mlp(0), teacher=mlp(1, (12,))).train()
    other = crd(small_spec(negatives=8), data=data, seed=6, student=mlp(0), teacher=mlp(1, (12,))).train()
    assert train_steps(first, data, 3) == train_steps(second, data, 3)
    torch.testing.assert_close(first.memory_student, second.memory_student, rtol=0, atol=0)
    indices = torch.arange(5)
    assert torch.equal(first.draw_contrast_indices(indices), second.draw_contrast_indices(indices))
    assert not torch.equal(other.draw_contrast_indices(indices), second.draw_contrast_indices(indices))
    first.eval()
    assert torch.equal(first.draw_contrast_indices(indices), first.draw_contrast_indices(indices))


def test_state_dict_round_trip_resumes_memory_normalizers_heads_and_draws():
    data = bundle(n=30)
    spec = small_spec(negatives=8)
    method = crd(spec, data=data, seed=2, student=mlp(0), teacher=mlp(1, (12,))).train()
    train_steps(method, data, 2)
    state = {name: value.clone() for name, value in method.state_dict().items()}
    assert {"memory_student", "memory_teacher", "normalizers", "draws"} <= set(state)
    assert any(name.startswith("embed_student.") for name in state)
    assert not any(name.startswith(("labels", "rows_by_class", "class_")) for name in state)
    assert state["draws"].item() == 2 and (state["normalizers"] > 0).all()

    resumed = crd(spec, data=data, seed=2, student=mlp(5), teacher=mlp(1, (12,))).train()
    resumed.draw_contrast_indices(torch.arange(3))  # host-side draw count cached before loading
    resumed.load_state_dict(state)
    for name, value in resumed.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0)
    assert train_steps(resumed, data, 2) == train_steps(method, data, 2)


# ---------------------------------------------------------------------- the method as a whole
def test_terms_are_weighted_ce_kd_and_crd_and_the_teacher_is_frozen_outside_the_method():
    data = bundle(n=6)
    student, teacher = mlp(0), mlp(1, (12,))
    method = crd(small_spec(kd_weight=0.5, ce_weight=0.7), data=data, student=student, teacher=teacher)
    assert {name.split(".")[0] for name, _ in method.named_parameters()} == {
        "student",
        "embed_student",
        "embed_teacher",
    }
    method.train()
    terms = method.step(whole_batch(data))
    assert set(terms) == {"ce", "kd", "crd"}
    with torch.no_grad():
        logits = student(data.train.inputs)
        torch.testing.assert_close(
            terms["kd"], 0.5 * kd_loss(logits, teacher(data.train.inputs), 4.0), rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(terms["ce"], 0.7 * F.cross_entropy(logits, data.train.targets))
    sum(terms.values()).backward()
    assert all(parameter.grad is None for parameter in teacher.parameters())
    assert method.embed_teacher.linear.weight.grad is not None


def test_defaults_are_the_official_cifar_setting_and_not_cacheable():
    spec = CRDSpec()
    assert (spec.ce_weight, spec.kd_weight, spec.crd_weight, spec.temperature) == (1.0, 0.0, 0.8, 4.0)
    assert (spec.feat_dim, spec.negatives, spec.nce_temperature, spec.momentum) == (128, 16384, 0.07, 0.5)
    assert (spec.student_layer, spec.teacher_layer, spec.negative_sampling) == ("pool", "pool", "other_class")
    assert spec.uses_teacher and spec.cacheable_temperature() is None


def test_short_training_lowers_the_contrastive_loss():
    data = bundle(n=24, seed=1)
    spec = small_spec(negatives=16, feat_dim=8, ce_weight=0.0, crd_weight=1.0, nce_temperature=0.1)
    method = crd(spec, data=data, student=mlp(0, (32,)), teacher=mlp(1, (32,))).train()
    optimizer = torch.optim.Adam(method.parameters(), lr=0.01)
    losses = []
    for _ in range(60):
        terms = method.step(whole_batch(data))
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
        losses.append(terms["crd"].item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


@pytest.mark.parametrize("rows", [6, 40])  # both ways of scoring: product-then-gather, gather-then-bmm
def test_backward_runs_after_the_step_updated_the_memory_in_place(rows):
    data = bundle(n=rows)
    method = crd(small_spec(negatives=1), data=data).train()
    for _ in range(2):
        terms = method.step(whole_batch(data))
        sum(terms.values()).backward()
    assert method.embed_student.linear.weight.grad is not None


def test_resnets_are_tapped_at_their_pooled_features_by_default():
    data = DataBundle(
        "images",
        Split(torch.randn(8, 3, 8, 8), torch.arange(8) % CLASSES),
        None,
        Split(torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)),
        CLASSES,
    )
    torch.manual_seed(0)
    student = build_model(ResNetSpec(depth=8), (3, 8, 8), CLASSES)
    teacher = build_model(ResNetSpec(depth=8, width=2), (3, 8, 8), CLASSES)
    method = crd(CRDSpec(feat_dim=8, negatives=5), data=data, student=student, teacher=teacher).train()
    assert method.embed_student.linear.in_features * 2 == method.embed_teacher.linear.in_features
    terms = method.step(whole_batch(data))
    assert set(terms) == {"ce", "crd"} and torch.isfinite(terms["crd"])


@pytest.mark.parametrize("field", ["student_layer", "teacher_layer"])
def test_an_unknown_layer_is_an_error_naming_the_field(field):
    with pytest.raises(DistillError, match=rf"students\[0\]\.method\.{field}: unknown layer 'nope'"):
        crd(small_spec(**{field: "nope"}))


def test_missing_teacher_or_data_and_bad_settings_are_errors():
    data = bundle()
    with pytest.raises(DistillError, match="needs a teacher"):
        build_method(small_spec(), MethodContext(mlp(0), None, data.train.inputs[:2], CLASSES, data=data))
    with pytest.raises(DistillError, match="needs the training data"):
        build_method(small_spec(), MethodContext(mlp(0), mlp(1), data.train.inputs[:2], CLASSES))
    one_class = DataBundle(
        "x", Split(data.train.inputs, torch.zeros(6, dtype=torch.long)), None, data.test, 3
    )
    with pytest.raises(DistillError, match="at least two classes"):
        crd(small_spec(), data=one_class)
    crd(small_spec(negative_sampling="uniform"), data=one_class)  # uniform needs no classes
    for bad in ({"crd_weight": 0.0}, {"momentum": 1.0}, {"negatives": 0}, {"nce_temperature": 0.0}):
        with pytest.raises(ValidationError):
            CRDSpec(**bad)


def _two_rank_step(rank: int, store_path: str, results: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        data = bundle(n=12)
        method = crd(small_spec(negatives=4), data=data, student=mlp(0), teacher=mlp(1, (12,))).train()
        rows = torch.arange(6) + 6 * rank  # each rank its own half of the data
        batch = Batch(data.train.inputs[rows], data.train.targets[rows], rows, CLASSES)
        before = method.memory_student.clone()
        method.step(batch)
        changed = (method.memory_student != before).any(dim=1).nonzero().flatten().tolist()
        torch.save(
            {"changed": changed, "memory": method.memory_teacher, "z": method.normalizers},
            f"{results}.{rank}",
        )
    finally:
        dist.destroy_process_group()


def test_under_data_parallelism_every_rank_applies_every_ranks_memory_updates(tmp_path):
    """Ranks gather the batch's embeddings before updating, so their banks stay identical (the
    trainer's DDP broadcasts rank 0's buffers, which would otherwise drop other ranks' rows)."""
    import torch.multiprocessing as mp

    results = str(tmp_path / "rank")
    mp.spawn(_two_rank_step, args=(str(tmp_path / "store"), results), nprocs=2, join=True)
    first, second = (torch.load(f"{results}.{rank}", weights_only=True) for rank in range(2))
    assert first["changed"] == second["changed"] == list(range(12))
    torch.testing.assert_close(first["memory"], second["memory"], rtol=0, atol=0)
    torch.testing.assert_close(first["z"], second["z"], rtol=0, atol=0)

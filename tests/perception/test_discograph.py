"""DiscoGraph training terms: the KD loss against golden values, bandwidth, the training holder."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from distill.perception.discograph import (
    KD_KEYS,
    DiscoGraphTraining,
    bytes_per_frame,
    channel_kl,
    discograph_kd_loss,
    segmentation_loss,
)
from distill.perception.models import EarlyFusionTeacher, IntermediateFusionStudent, LateFusion
from distill.perception.warp import relative_transform


def manual_kd(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """Σ over pixels and channels of p_t (log p_t − log p_s), divided by the element count, with
    explicit softmaxes over the channel axis (-3) — written out independently of the module."""
    total = 0.0
    c = student.shape[-3]
    s_rows = student.movedim(-3, -1).reshape(-1, c).tolist()
    t_rows = teacher.movedim(-3, -1).reshape(-1, c).tolist()
    for s_row, t_row in zip(s_rows, t_rows, strict=True):
        s_norm = sum(math.exp(x) for x in s_row)
        t_norm = sum(math.exp(x) for x in t_row)
        for s_x, t_x in zip(s_row, t_row, strict=True):
            p, q = math.exp(t_x) / t_norm, math.exp(s_x) / s_norm
            total += p * math.log(p / q)
    return total / student.numel()


def test_kd_golden_two_channels() -> None:
    """One pixel, C = 2: teacher softmax (½, ½), student (¼, ¾). KL(t‖s) = ½ ln(4/3); the
    "mean" reduction divides by the 2 elements. The reverse direction would give a different value."""
    teacher = torch.zeros(1, 2, 1, 1)
    student = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)
    expected = 0.25 * math.log(4 / 3)
    assert channel_kl(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    reverse = (0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)) / 2
    assert channel_kl(teacher, student).item() == pytest.approx(reverse, rel=1e-6)
    assert abs(reverse - expected) > 1e-3


def test_kd_matches_manual_and_official_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    shapes = {"fused": (2, 3, 5, 2, 2), "dec1": (2, 3, 5, 2, 2), "dec2": (2, 3, 4, 3, 3)}
    student = {k: torch.randn(*s, generator=generator, dtype=torch.float64) * 2 for k, s in shapes.items()}
    teacher = {k: torch.randn(*s, generator=generator, dtype=torch.float64) * 2 for k, s in shapes.items()}
    keys = list(shapes)
    value = discograph_kd_loss(student, teacher, keys)
    assert value.item() == pytest.approx(sum(manual_kd(student[k], teacher[k]) for k in keys), rel=1e-9)
    # the official code: maps permuted to (pixels, C), KLDivLoss(size_average=True, reduce=True)
    official = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kl_div's notice that "mean" averages over all elements
        for k in keys:
            c = shapes[k][2]
            s_rows = student[k].flatten(0, 1).permute(0, 2, 3, 1).reshape(-1, c)
            t_rows = teacher[k].flatten(0, 1).permute(0, 2, 3, 1).reshape(-1, c)
            loss = torch.nn.KLDivLoss(reduction="mean")
            official += loss(F.log_softmax(s_rows, dim=1), F.softmax(t_rows, dim=1)).item()
    assert value.item() == pytest.approx(official, rel=1e-9)
    # the default keys are the fused map and every decoder map
    assert KD_KEYS == ("fused", "dec1", "dec2", "dec3")


def test_kd_is_zero_iff_maps_agree_up_to_a_per_pixel_shift() -> None:
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(2, 3, 6, 4, 4, generator=generator)
    shift = torch.randn(2, 3, 1, 4, 4, generator=generator) * 5  # one constant per pixel
    assert channel_kl(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-7)
    assert channel_kl(teacher + shift, teacher).item() == pytest.approx(0.0, abs=1e-6)
    per_channel = torch.randn(1, 1, 6, 1, 1, generator=generator)  # a change across channels
    assert channel_kl(teacher + per_channel, teacher).item() > 1e-3
    # a per-channel scale is not a shift either
    assert channel_kl(teacher * 2, teacher).item() > 1e-3


def test_kd_gradient_reaches_the_student_only() -> None:
    student = torch.randn(1, 2, 4, 2, 2, requires_grad=True)
    teacher = torch.randn(1, 2, 4, 2, 2, requires_grad=True)
    discograph_kd_loss({"fused": student}, {"fused": teacher}, ["fused"]).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_kd_rejects_bad_inputs() -> None:
    maps = {"fused": torch.zeros(1, 1, 2, 2, 2)}
    with pytest.raises(KeyError, match="dec1"):
        discograph_kd_loss(maps, maps, ["fused", "dec1"])
    with pytest.raises(ValueError, match="shapes differ"):
        discograph_kd_loss(maps, {"fused": torch.zeros(1, 1, 3, 2, 2)}, ["fused"])
    with pytest.raises(ValueError, match="at least one"):
        discograph_kd_loss(maps, maps, [])


def test_segmentation_loss_golden() -> None:
    logits = torch.tensor([0.0, 2.0, -1.0, 3.0]).view(1, 1, 1, 2, 2)
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 1, 1, 2, 2)
    sp = F.softplus  # BCE(x, 1) = softplus(−x), BCE(x, 0) = softplus(x)
    terms = [sp(torch.tensor(-0.0)), sp(torch.tensor(2.0)), sp(torch.tensor(-1.0)), sp(torch.tensor(-3.0))]
    assert segmentation_loss(logits, targets).item() == pytest.approx(
        sum(t.item() for t in terms) / 4, rel=1e-6
    )
    weighted = (3 * terms[0] + terms[1] + terms[2] + 3 * terms[3]).item() / 4
    assert segmentation_loss(logits, targets, pos_weight=3.0).item() == pytest.approx(weighted, rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        segmentation_loss(logits, targets[..., :1])


def test_bytes_per_frame_golden() -> None:
    # defaults: V = 32, C = 64 (width 16), float32
    early = bytes_per_frame("early")
    assert early == {"values": 2048, "bytes": 8192, "total_bytes": 8192, "sparse_bytes_per_cell": 4}
    assert bytes_per_frame("early", occupied_cells=40)["sparse_bytes"] == 160
    assert bytes_per_frame("discograph") == {"values": 4096, "bytes": 16384, "total_bytes": 16384}
    assert bytes_per_frame("mean", compress_channels=8)["bytes"] == 8 * 8 * 8 * 4
    assert bytes_per_frame("late") == {"values": 1024, "bytes": 4096, "total_bytes": 4224, "mask_bytes": 128}
    assert bytes_per_frame("late", late_merge="max")["total_bytes"] == 4096
    assert bytes_per_frame("none") == {"values": 0, "bytes": 0, "total_bytes": 0}
    assert bytes_per_frame("intermediate", side=24, dtype_bytes=2)["bytes"] == 64 * 6 * 6 * 2
    # read from the models
    student = IntermediateFusionStudent("discograph", width=8, compress_channels=4)
    assert bytes_per_frame(student, side=16)["bytes"] == 4 * 4 * 4 * 4
    assert bytes_per_frame(IntermediateFusionStudent("max", width=8), side=16)["bytes"] == 32 * 16 * 4
    assert bytes_per_frame(IntermediateFusionStudent("none", width=8), side=16)["bytes"] == 0
    assert bytes_per_frame(EarlyFusionTeacher(width=4), side=16)["bytes"] == 2 * 256 * 4
    assert bytes_per_frame(LateFusion(width=4, merge="max"), side=16)["total_bytes"] == 256 * 4
    with pytest.raises(ValueError, match="unknown"):
        bytes_per_frame("cat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple of 4"):
        bytes_per_frame("early", side=30)


def random_batch(n: int, a: int, v: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    observations = (torch.rand(n, a, 2, v, v, generator=generator) < 0.3).float()
    targets = (torch.rand(n, a, 1, v, v, generator=generator) < 0.2).float()
    poses = torch.rand(n, a, 3, generator=generator) * 2 - 1
    poses[..., :2] *= 6.0
    transforms = relative_transform(poses[:, :, None], poses[:, None], v, 1.5)
    fused = torch.maximum(observations, (torch.rand(n, a, 2, v, v, generator=generator) < 0.2).float())
    return {
        "observations": observations,
        "targets": targets,
        "transforms": transforms,
        "fused_observations": fused,
    }


@dataclass(frozen=True)
class Scene:
    observations: torch.Tensor
    occluded: torch.Tensor
    targets: torch.Tensor
    transforms: torch.Tensor
    fused_observations: torch.Tensor


def test_training_holder_freezes_the_teacher_and_weights_kd() -> None:
    torch.manual_seed(0)
    teacher = EarlyFusionTeacher(width=4)
    student = IntermediateFusionStudent("discograph", width=4)
    training = DiscoGraphTraining(student, teacher, kd_weight=10.0)
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert training.parameters() == list(student.parameters())
    batch = random_batch(2, 3, 16, seed=0)
    student.eval()
    losses = training.loss(batch)
    assert set(losses) == {"seg", "kd", "total"}
    with torch.no_grad():
        s_out = student(batch["observations"], batch["transforms"])
        t_out = teacher(batch["observations"], batch["transforms"], batch["fused_observations"])
    torch.testing.assert_close(losses["kd"], 10.0 * discograph_kd_loss(s_out.maps, t_out.maps))
    torch.testing.assert_close(losses["seg"], segmentation_loss(s_out.logits, batch["targets"]))
    torch.testing.assert_close(losses["total"], losses["seg"] + losses["kd"])
    # the teacher reads the rendered fused observations, not the agents' own
    with torch.no_grad():
        other = teacher(1 - batch["observations"], batch["transforms"], batch["fused_observations"])
    torch.testing.assert_close(other.logits, t_out.logits)
    # the same batch as a tuple, and as an object with extra fields in another order
    as_tuple = (batch["observations"], batch["targets"], batch["transforms"], batch["fused_observations"])
    torch.testing.assert_close(training.loss(as_tuple)["total"], losses["total"])
    scene = Scene(
        batch["observations"],
        batch["targets"] < 0,
        batch["targets"],
        batch["transforms"],
        batch["fused_observations"],
    )
    torch.testing.assert_close(training.loss(scene)["total"], losses["total"])
    with pytest.raises(ValueError, match="fused_observations"):  # a batch without them
        training.loss(as_tuple[:3])
    teacher.train()  # the holder puts it back in eval mode
    training.loss(batch)["total"].backward()
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


@pytest.mark.parametrize("kd_weight", [1e5, 1e2])
def test_a_few_adam_steps_reduce_seg_and_kd(kd_weight: float) -> None:
    torch.manual_seed(0)
    teacher = EarlyFusionTeacher(width=4)
    teacher_optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    batch = random_batch(4, 3, 16, seed=1)
    for _ in range(5):  # the teacher is trained first
        output = teacher(batch["observations"], batch["transforms"], batch["fused_observations"])
        loss = segmentation_loss(output.logits, batch["targets"])
        teacher_optimizer.zero_grad()
        loss.backward()
        teacher_optimizer.step()
    student = IntermediateFusionStudent("discograph", width=4)
    training = DiscoGraphTraining(student, teacher, kd_weight=kd_weight)
    optimizer = torch.optim.Adam(training.parameters(), lr=1e-2)
    first = {k: v.item() for k, v in training.loss(batch).items()}
    for _ in range(15):
        losses = training.loss(batch)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
    last = {k: v.item() for k, v in training.loss(batch).items()}
    assert last["total"] < first["total"]
    assert last["kd"] < first["kd"]
    assert last["seg"] < first["seg"]

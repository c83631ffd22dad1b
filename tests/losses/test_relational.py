"""RKD, PKT and SP: golden values worked out by hand or with loops over pairs and triplets written
from the papers' definitions, and the invariances that make them relational losses."""

import itertools
import math

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from distill.losses.relational import (
    pairwise_distances,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    similarity_matrix,
    sp_loss,
)

FAST = settings(max_examples=25, deadline=None)


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def _rotation(dim: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(
        torch.randn(dim, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    )
    return q * torch.sign(torch.diagonal(r))  # a proper random orthogonal matrix


def _similarity_transform(x: torch.Tensor, seed: int, scale: float, shift: float) -> torch.Tensor:
    return scale * x @ _rotation(x.shape[1], seed) + shift


# --------------------------------------------------------------------------------------------
# RKD


def _rkd_distance_reference(student: np.ndarray, teacher: np.ndarray) -> float:
    """Loops over ordered pairs: distances over their mean on i ≠ j, Huber, averaged over n²."""
    n = len(student)

    def normalized(x: np.ndarray) -> dict[tuple[int, int], float]:
        d = {(i, j): float(np.linalg.norm(x[i] - x[j])) for i in range(n) for j in range(n) if i != j}
        mu = sum(d.values()) / len(d)
        return {k: v / mu for k, v in d.items()}

    d_s, d_t = normalized(student), normalized(teacher)
    return sum(_huber(d_s[k] - d_t[k]) for k in d_s) / n**2


def _rkd_angle_reference(student: np.ndarray, teacher: np.ndarray) -> float:
    """Loops over distinct triplets: cos∠(x_j, x_i, x_k) at vertex i, Huber, summed, over n³."""
    n = len(student)

    def cosine(x: np.ndarray, i: int, j: int, k: int) -> float:
        a, b = x[j] - x[i], x[k] - x[i]
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    total = sum(
        _huber(cosine(student, i, j, k) - cosine(teacher, i, j, k))
        for i, j, k in itertools.permutations(range(n), 3)
    )
    return total / n**3


def test_rkd_distance_golden_value_by_hand():
    # teacher points 0, 1, 3 on a line: distances 1, 3, 2, mean 2 -> 0.5, 1.5, 1
    # student points 0, 1, 2: distances 1, 2, 1, mean 4/3 -> 0.75, 1.5, 0.75
    # differences 0.25, 0, −0.25, each in two ordered pairs: 4 · ½ · 0.25² over 3² entries
    teacher = torch.tensor([[0.0], [1.0], [3.0]])
    student = torch.tensor([[0.0], [1.0], [2.0]])
    assert rkd_distance_loss(student, teacher).item() == pytest.approx(4 * 0.5 * 0.25**2 / 9, rel=1e-5)


def test_rkd_angle_golden_value_by_hand():
    # teacher: a right isosceles triangle; cosines 0 at the right angle, 1/√2 at the other two
    # student: three collinear points 0, 1, 2; cosines 1 at the ends, −1 in the middle
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    student = torch.tensor([[0.0], [1.0], [2.0]])
    c = 1 / math.sqrt(2)
    per_vertex = _huber(1 - 0) + _huber(-1 - c) + _huber(1 - c)  # each vertex has 2 ordered (j, k)
    assert rkd_angle_loss(student, teacher).item() == pytest.approx(2 * per_vertex / 27, rel=1e-5)


def test_rkd_matches_loops_over_pairs_and_triplets():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(0, 1, (6, 4)), rng.normal(0, 2, (6, 7))
    d = _rkd_distance_reference(student, teacher)
    a = _rkd_angle_reference(student, teacher)
    s, t = torch.tensor(student), torch.tensor(teacher)
    assert rkd_distance_loss(s, t).item() == pytest.approx(d, rel=1e-9)
    assert rkd_angle_loss(s, t).item() == pytest.approx(a, rel=1e-9)
    assert rkd_loss(s, t).item() == pytest.approx(25 * d + 50 * a, rel=1e-9)
    assert rkd_loss(s, t, distance_weight=1.0, angle_weight=2.0).item() == pytest.approx(d + 2 * a, rel=1e-9)
    np.testing.assert_allclose(
        pairwise_distances(s).numpy(), np.linalg.norm(student[:, None] - student[None], axis=2), atol=1e-7
    )


@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.05, 20),
    shift=st.floats(-10, 10),
)
@FAST
def test_rkd_is_blind_to_rotating_translating_and_scaling_the_student(seed, scale, shift):
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(5, 6, dtype=torch.float64, generator=generator)
    student = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    moved = _similarity_transform(student, seed, scale, shift)
    for loss in (rkd_distance_loss, rkd_angle_loss):
        assert loss(moved, teacher).item() == pytest.approx(loss(student, teacher).item(), rel=1e-6, abs=1e-9)
    # a student that is the teacher up to a similarity transform has already learnt every relation
    copy = _similarity_transform(teacher, seed + 1, scale, shift)
    assert rkd_loss(copy, teacher).item() == pytest.approx(0.0, abs=1e-9)


def test_rkd_sees_a_non_uniform_stretch_and_gradients_behave():
    torch.manual_seed(1)
    teacher = torch.randn(6, 3, dtype=torch.float64)
    stretched = teacher * torch.tensor([1.0, 1.0, 4.0], dtype=torch.float64)
    assert rkd_distance_loss(stretched, teacher).item() > 1e-4
    assert rkd_angle_loss(stretched, teacher).item() > 1e-4
    same = teacher.clone().requires_grad_(True)
    teacher.requires_grad_(True)
    loss = rkd_loss(same, teacher)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert same.grad is not None and same.grad.abs().max() < 1e-9
    assert teacher.grad is None
    # two coincident student points: the clamp keeps the square root's gradient finite
    student = torch.randn(6, 3, dtype=torch.float64)
    student[1] = student[0]
    student.requires_grad_(True)
    rkd_loss(student, teacher).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_rkd_takes_feature_maps_and_rejects_bad_shapes():
    torch.manual_seed(2)
    maps_s, maps_t = torch.randn(4, 2, 3, 3), torch.randn(4, 5, 2, 2)
    assert rkd_loss(maps_s, maps_t).item() == pytest.approx(
        rkd_loss(maps_s.flatten(1), maps_t.flatten(1)).item()
    )
    with pytest.raises(
        ValueError, match=r"student \(4, 3\) and teacher \(5, 3\) must have the same batch size"
    ):
        rkd_distance_loss(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="batch of at least 2"):
        rkd_angle_loss(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(batch, \.\.\.\) features"):
        rkd_loss(torch.zeros(4), torch.zeros(4))


# --------------------------------------------------------------------------------------------
# PKT


def _pkt_reference(student: np.ndarray, teacher: np.ndarray, eps: float = 1e-7) -> float:
    n = len(student)

    def conditional(x: np.ndarray) -> np.ndarray:
        kernel = np.array(
            [
                [
                    0.5 * (1 + x[i] @ x[j] / ((np.linalg.norm(x[i]) + eps) * (np.linalg.norm(x[j]) + eps)))
                    for j in range(n)
                ]
                for i in range(n)
            ]
        )
        return np.array([[kernel[i, j] / kernel[i].sum() for j in range(n)] for i in range(n)])

    p_s, p_t = conditional(student), conditional(teacher)
    return (
        sum(p_t[i, j] * math.log((p_t[i, j] + eps) / (p_s[i, j] + eps)) for i in range(n) for j in range(n))
        / n**2
    )


def test_pkt_golden_value_by_hand():
    # teacher: orthogonal vectors, cosines [[1, 0], [0, 1]] -> kernel [[1, ½], [½, 1]] -> rows (2/3, 1/3)
    # student: parallel vectors, cosines all 1 -> kernel all 1 -> rows (½, ½)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    student = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    expected = 2 * ((2 / 3) * math.log((2 / 3) / 0.5) + (1 / 3) * math.log((1 / 3) / 0.5)) / 4
    assert pkt_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_pkt_matches_a_loop():
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(0, 1, (5, 3)), rng.normal(0, 1, (5, 8))
    assert pkt_loss(torch.tensor(student), torch.tensor(teacher)).item() == pytest.approx(
        _pkt_reference(student, teacher), rel=1e-9
    )


@given(
    seed=st.integers(0, 10_000),
    scales=st.lists(st.floats(0.05, 20), min_size=5, max_size=5),
)
@FAST
def test_pkt_only_sees_directions(seed, scales):
    """The cosine kernel ignores each vector's length and any rotation of the feature space."""
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(5, 6, dtype=torch.float64, generator=generator)
    student = torch.randn(5, 4, dtype=torch.float64, generator=generator)
    rescaled = student * torch.tensor(scales, dtype=torch.float64).view(5, 1) @ _rotation(4, seed)
    # exact but for the eps added to each norm
    assert pkt_loss(rescaled, teacher).item() == pytest.approx(pkt_loss(student, teacher).item(), rel=1e-4)
    assert pkt_loss(student, teacher).item() >= -1e-12
    copy = teacher * torch.tensor(scales, dtype=torch.float64).view(5, 1) @ _rotation(6, seed)
    assert pkt_loss(copy, teacher).item() == pytest.approx(0.0, abs=1e-9)


def test_pkt_gradients():
    torch.manual_seed(4)
    teacher = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    same = teacher.detach().clone().requires_grad_(True)
    pkt_loss(same, teacher).backward()
    assert same.grad is not None and same.grad.abs().max() < 1e-6  # zero but for the eps
    assert teacher.grad is None
    student = torch.randn(6, 3, requires_grad=True)
    pkt_loss(student, teacher.float()).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().max() > 0
    with pytest.raises(ValueError, match="pkt_loss: student"):
        pkt_loss(torch.zeros(3, 2), torch.zeros(2, 2))


# --------------------------------------------------------------------------------------------
# SP


def test_sp_golden_value_by_hand():
    # teacher: orthogonal rows, G = I (rows already unit); student: two equal rows, G = all ones,
    # rows normalised to 1/√2: ‖I − G_s‖² = 2 (1 − 1/√2)² + 2 · ½, divided by batch² = 4
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    expected = (2 * (1 - 1 / math.sqrt(2)) ** 2 + 2 * 0.5) / 4
    assert sp_loss(student, teacher).item() == pytest.approx(expected, rel=1e-12)


def test_sp_matches_a_loop_on_feature_maps():
    rng = np.random.default_rng(5)
    student, teacher = rng.normal(0, 1, (4, 3, 2, 2)), rng.normal(0, 1, (4, 5, 2, 2))

    def normalized_gram(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1)
        gram = np.array([[flat[i] @ flat[j] for j in range(len(x))] for i in range(len(x))])
        return np.array([row / math.sqrt(sum(v * v for v in row)) for row in gram])

    expected = ((normalized_gram(teacher) - normalized_gram(student)) ** 2).sum() / 16
    assert sp_loss(torch.tensor(student), torch.tensor(teacher)).item() == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(
        similarity_matrix(torch.tensor(student)).numpy(), normalized_gram(student), rtol=1e-9
    )


@given(seed=st.integers(0, 10_000), scale=st.floats(0.05, 20))
@FAST
def test_sp_is_blind_to_rotation_and_global_scale_but_not_per_sample_scale(seed, scale):
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(5, 6, dtype=torch.float64, generator=generator)
    student = torch.randn(5, 4, dtype=torch.float64, generator=generator)
    moved = scale * student @ _rotation(4, seed)
    assert sp_loss(moved, teacher).item() == pytest.approx(sp_loss(student, teacher).item(), rel=1e-6)
    assert sp_loss(scale * teacher @ _rotation(6, seed), teacher).item() == pytest.approx(0.0, abs=1e-12)
    # unlike PKT's cosine kernel, SP's Gram keeps the other samples' norms in each row
    uneven = teacher * torch.tensor([1.0, 3.0, 1.0, 1.0, 1.0], dtype=torch.float64).view(5, 1)
    assert sp_loss(uneven, teacher).item() > 1e-6


def test_sp_gradients_and_shapes():
    torch.manual_seed(6)
    teacher = torch.randn(5, 4, requires_grad=True)
    same = teacher.detach().clone().requires_grad_(True)
    loss = sp_loss(same, teacher)
    loss.backward()
    assert loss.ndim == 0 and loss.item() == pytest.approx(0.0, abs=1e-10)
    assert same.grad is not None and same.grad.abs().max() < 1e-6
    assert teacher.grad is None
    student = torch.randn(5, 7, requires_grad=True)
    sp_loss(student, teacher).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    with pytest.raises(ValueError, match=r"sp_loss: student \(3, 2\) and teacher \(4, 2\)"):
        sp_loss(torch.zeros(3, 2), torch.zeros(4, 2))

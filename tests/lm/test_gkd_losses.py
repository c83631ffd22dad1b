"""The divergences of distill.losses.gkd against direct computations on probabilities: TRL's
generalized-JSD convention (β = 0 forward KL, β = 1 reverse KL, the limits, symmetry at 0.5), the
top-k cache KL at k = vocabulary, and masking."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses.gkd import forward_kl, generalized_jsd, topk_kl, topk_logprobs


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per row, straight from the definition (float64)."""
    return (p * (p.log() - q.log())).sum(dim=-1)


def jsd_direct(p: torch.Tensor, q: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. (1) of arXiv 2306.13649 with P = teacher p, Q = student q, mixture βP + (1 − β)Q."""
    m = beta * p + (1 - beta) * q
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


@pytest.fixture
def logits() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(3, 5, 11, generator=generator, dtype=torch.float64) * 2
    teacher = torch.randn(3, 5, 11, generator=generator, dtype=torch.float64) * 2
    return student, teacher


def test_golden_two_outcomes():
    # teacher (0.5, 0.5), student (0.9, 0.1): closed forms by hand
    student = torch.tensor([[math.log(0.9), math.log(0.1)]])
    teacher = torch.tensor([[0.0, 0.0]])
    forward = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    reverse = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    m = (0.7, 0.3)  # 0.5 · teacher + 0.5 · student
    half = 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) + 0.5 * (
        0.9 * math.log(0.9 / m[0]) + 0.1 * math.log(0.1 / m[1])
    )
    assert float(generalized_jsd(student, teacher, beta=0.0)) == pytest.approx(forward, rel=1e-5)
    assert float(generalized_jsd(student, teacher, beta=1.0)) == pytest.approx(reverse, rel=1e-5)
    assert float(generalized_jsd(student, teacher, beta=0.5)) == pytest.approx(half, rel=1e-5)
    assert float(forward_kl(student, teacher)) == pytest.approx(forward, rel=1e-5)


@pytest.mark.parametrize("beta", [0.1, 0.3, 0.5, 0.9])
def test_generalized_jsd_matches_the_paper_equation(logits, beta):
    student, teacher = logits
    expected = jsd_direct(teacher.softmax(-1), student.softmax(-1), beta).mean()
    assert float(generalized_jsd(student, teacher, beta=beta)) == pytest.approx(float(expected), rel=1e-5)


def test_beta_zero_and_one_are_forward_and_reverse_kl(logits):
    student, teacher = logits
    p, q = teacher.softmax(-1), student.softmax(-1)
    assert float(generalized_jsd(student, teacher, beta=0.0)) == pytest.approx(
        float(kl(p, q).mean()), rel=1e-5
    )
    assert float(generalized_jsd(student, teacher, beta=1.0)) == pytest.approx(
        float(kl(q, p).mean()), rel=1e-5
    )
    assert float(forward_kl(student, teacher)) == pytest.approx(float(kl(p, q).mean()), rel=1e-5)


def test_limits_of_beta_scale_to_the_two_kls(logits):
    student, teacher = logits
    p, q = teacher.softmax(-1), student.softmax(-1)
    forward, reverse = float(kl(p, q).mean()), float(kl(q, p).mean())
    gaps = []
    for small in (1e-2, 1e-4, 1e-6):  # D_JSD(β)/β → forward KL, D_JSD(β)/(1 − β) → reverse KL
        near_zero = float(generalized_jsd(student, teacher, beta=small)) / small
        near_one = float(generalized_jsd(student, teacher, beta=1 - small)) / small
        gaps.append((abs(near_zero - forward), abs(near_one - reverse)))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[-1][0] < 1e-3 * forward and gaps[-1][1] < 1e-3 * reverse


def test_half_is_symmetric(logits):
    student, teacher = logits
    assert float(generalized_jsd(student, teacher, beta=0.5)) == pytest.approx(
        float(generalized_jsd(teacher, student, beta=0.5)), rel=1e-6
    )
    # and β ↔ 1 − β with the roles swapped
    assert float(generalized_jsd(student, teacher, beta=0.2)) == pytest.approx(
        float(generalized_jsd(teacher, student, beta=0.8)), rel=1e-6
    )


def test_identical_distributions_give_zero(logits):
    student, _ = logits
    for beta in (0.0, 0.4, 1.0):
        assert float(generalized_jsd(student, student.clone(), beta=beta)) == pytest.approx(0.0, abs=1e-9)


def test_mask_skips_padding_and_averages_over_valid_tokens(logits):
    student, teacher = logits
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[:, :2] = True
    mask[0, 4] = True
    garbage_student, garbage_teacher = student.clone(), teacher.clone()
    garbage_student[~mask] = 100.0 * torch.randn_like(garbage_student[~mask])
    garbage_teacher[~mask] = -50.0
    direct = jsd_direct(teacher.softmax(-1), student.softmax(-1), 0.3)[mask].mean()
    for loss in (
        lambda s, t: generalized_jsd(s, t, mask, beta=0.3),
        lambda s, t: forward_kl(s, t, mask),
    ):
        assert float(loss(student, teacher)) == pytest.approx(float(loss(garbage_student, garbage_teacher)))
    assert float(generalized_jsd(student, teacher, mask, beta=0.3)) == pytest.approx(float(direct), rel=1e-5)
    empty = torch.zeros(3, 5, dtype=torch.bool)
    assert float(generalized_jsd(student, teacher, empty)) == 0.0  # no valid token: 0, not NaN


@pytest.mark.parametrize("policy", ["other", "renormalize"])
def test_topk_cache_with_the_whole_vocabulary_is_the_full_kl(logits, policy):
    student, teacher = logits
    values, indices = topk_logprobs(teacher, k=teacher.shape[-1])
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    assert float(topk_kl(student, values, indices, mask, policy)) == pytest.approx(
        float(forward_kl(student, teacher, mask)), rel=1e-6
    )


def test_topk_policies_for_a_partial_cache(logits):
    student, teacher = logits
    p, q = teacher.softmax(-1), student.softmax(-1)
    values, indices = topk_logprobs(teacher, k=3)
    other = topk_kl(student, values, indices, missing_mass="other")
    # "other": the KL of the coarsened (k + 1)-outcome distributions, by hand
    top_p, top_q = p.gather(-1, indices), q.gather(-1, indices)
    coarse_p = torch.cat([top_p, 1 - top_p.sum(-1, keepdim=True)], dim=-1)
    coarse_q = torch.cat([top_q, 1 - top_q.sum(-1, keepdim=True)], dim=-1)
    assert float(other) == pytest.approx(float(kl(coarse_p, coarse_q).mean()), rel=1e-5)
    assert float(other) <= float(kl(p, q).mean())  # coarsening never adds divergence
    # "renormalize": the top k renormalized against the student's full-vocabulary log-probabilities
    renormalized = top_p / top_p.sum(-1, keepdim=True)
    expected = (renormalized * (renormalized.log() - top_q.log())).sum(-1).mean()
    got = topk_kl(student, values, indices, missing_mass="renormalize")
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_topk_kl_has_gradients_for_the_student_only(logits):
    student, teacher = logits
    student = student.clone().requires_grad_(True)
    values, indices = topk_logprobs(teacher, k=4)
    topk_kl(student, values, indices).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_bad_arguments_are_value_errors(logits):
    student, teacher = logits
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(student, teacher, beta=1.5)
    with pytest.raises(ValueError, match="k must be"):
        topk_logprobs(teacher, k=0)
    values, indices = topk_logprobs(teacher, k=2)
    with pytest.raises(ValueError, match="missing_mass"):
        topk_kl(student, values, indices, missing_mass="drop")  # type: ignore[arg-type]

"""The four objectives' training steps: the teacher never gets gradients, λ = 0 GKD is supervised
GKD and λ = 1 fully on-policy, a top-k cache over the whole vocabulary is the full teacher, and
the scores (perplexity, teacher NLL of samples) are what they claim."""

from __future__ import annotations

import math

import pytest
import torch

from distill.lmkd.recipes import GKDSpec, GPTSpec, LMTrainSpec, SeqKDSpec, TokenKDSpec
from distill.lmkd.training import (
    Objective,
    build_gpt,
    build_topk_cache,
    student_training_set,
    train_lm,
)
from distill.losses.gkd import generalized_jsd
from distill.text.lm_data import BOS_ID, EOS_ID, PAD_ID, Sequences, shift
from distill.text.lm_distill import perplexity, teacher_logits, teacher_nll_of_samples

VOCAB, LENGTH = 30, 10


def toy_sequences(count: int = 24, seed: int = 0) -> Sequences:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.full((count, LENGTH), PAD_ID)
    for row in range(count):
        size = int(torch.randint(2, LENGTH - 2, (1,), generator=generator))
        tokens[row, 0] = BOS_ID
        tokens[row, 1 : size + 1] = torch.randint(4, VOCAB, (size,), generator=generator)
        tokens[row, size + 1] = EOS_ID
    return Sequences(tokens, prompt_tokens=2)


def models(seed: int = 0):
    teacher = build_gpt(GPTSpec(layers=1, width=16, heads=2), VOCAB, LENGTH, seed + 10)
    student = build_gpt(GPTSpec(layers=1, width=8, heads=2), VOCAB, LENGTH, seed)
    return teacher, student


pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


@pytest.mark.parametrize("method", ["token-kd", "gkd"])
def test_the_teacher_gets_no_gradients_and_stays_in_eval_mode(method):
    teacher, student = models()
    teacher.train()
    data = toy_sequences()
    objective = Objective(method, teacher, gkd=GKDSpec(lmbda=1.0))
    loss, count = objective.loss(student, torch.arange(8), data.tokens[:8], data.prompt_tokens, LENGTH)
    loss.backward()
    assert count > 0 and not teacher.training
    assert all(parameter.grad is None for parameter in teacher.parameters())
    assert any(parameter.grad is not None for parameter in student.parameters())


def test_lambda_zero_is_supervised_gkd_and_lambda_one_always_on_policy():
    teacher, student = models()
    data = toy_sequences()
    batch = data.tokens[:8]
    supervised = Objective("gkd", teacher, gkd=GKDSpec(lmbda=0.0, beta=0.3))
    losses = [supervised.loss(student, torch.arange(8), batch, 2, LENGTH)[0] for _ in range(5)]
    inputs, _, mask = shift(batch)
    direct = generalized_jsd(student(inputs), teacher_logits(teacher, inputs), mask, beta=0.3)
    assert all(float(loss.detach()) == pytest.approx(float(direct.detach()), rel=1e-6) for loss in losses)
    assert supervised.on_policy_batches == 0
    on_policy = Objective("gkd", teacher, gkd=GKDSpec(lmbda=1.0, beta=0.3))
    for _ in range(3):
        on_policy.loss(student, torch.arange(8), batch, 2, LENGTH)
    assert on_policy.on_policy_batches == 3
    half = Objective("gkd", teacher, gkd=GKDSpec(lmbda=0.5), seed=0)
    for _ in range(200):
        half.loss(student, torch.arange(2), batch[:2], 2, LENGTH)
    assert 70 < half.on_policy_batches < 130


def test_topk_cache_of_the_whole_vocabulary_gives_the_full_token_kd_loss():
    teacher, student = models()
    data = toy_sequences()
    rows = torch.tensor([3, 1, 7, 0])
    cache = build_topk_cache(teacher, data, k=VOCAB)
    assert cache.values.shape == (len(data), LENGTH - 1, VOCAB)
    full = Objective("token-kd", teacher).loss(student, rows, data.tokens[rows], 2, LENGTH)[0]
    for policy in ("other", "renormalize"):
        spec = TokenKDSpec(top_k=VOCAB, missing_mass=policy)  # type: ignore[arg-type]
        cached = Objective("token-kd", teacher, token_kd=spec, cache=cache)
        assert float(cached.loss(student, rows, data.tokens[rows], 2, LENGTH)[0]) == pytest.approx(
            float(full), rel=1e-4
        )


def test_token_kd_ratio_mixes_in_cross_entropy():
    teacher, student = models()
    data = toy_sequences()
    rows = torch.arange(6)
    ce = Objective("ce").loss(student, rows, data.tokens[rows], 2, LENGTH)[0]
    kd = Objective("token-kd", teacher).loss(student, rows, data.tokens[rows], 2, LENGTH)[0]
    mixed = Objective("token-kd", teacher, token_kd=TokenKDSpec(kd_ratio=0.25))
    expected = 0.75 * float(ce) + 0.25 * float(kd)
    assert float(mixed.loss(student, rows, data.tokens[rows], 2, LENGTH)[0]) == pytest.approx(
        expected, rel=1e-5
    )


def test_a_uniform_model_has_the_vocabulary_as_perplexity():
    _, student = models()
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.zero_()
    assert perplexity(student, toy_sequences()) == pytest.approx(VOCAB, rel=1e-5)


def test_teacher_nll_of_samples_is_seeded_and_a_model_scoring_itself_is_its_entropy_rate():
    teacher, student = models()
    data = toy_sequences()
    first = teacher_nll_of_samples(student, teacher, data, seed=5)
    assert first == teacher_nll_of_samples(student, teacher, data, seed=5)
    assert first != teacher_nll_of_samples(student, teacher, data, seed=6)
    nll, count = first
    assert count > 0 and 0 < nll < 10 * math.log(VOCAB)


def test_training_reduces_the_loss_and_seq_kd_trains_on_teacher_completions():
    teacher, _ = models()
    data = toy_sequences(48)
    spec = LMTrainSpec(epochs=3, batch_size=16, lr=1e-2)
    trained = train_lm(teacher, data, spec, Objective("ce"), seed=0, held_out=toy_sequences(8, seed=1))
    assert trained.history[-1]["loss"] < trained.history[0]["loss"] and trained.tokens > 0
    assert "perplexity" in trained.history[0]
    corpus = student_training_set("seq-kd", teacher, data, SeqKDSpec(greedy=True), seed=0)
    assert torch.equal(corpus.prompts(), data.prompts()) and not torch.equal(corpus.tokens, data.tokens)
    assert student_training_set("ce", teacher, data, SeqKDSpec(), seed=0) is data
    again = student_training_set("seq-kd", teacher, data, SeqKDSpec(greedy=True), seed=9)
    assert torch.equal(corpus.tokens, again.tokens)  # greedy: the seed does not matter


def test_runs_are_reproducible_under_a_seed():
    data = toy_sequences(32)
    spec = LMTrainSpec(epochs=1, batch_size=8)

    def run() -> list[torch.Tensor]:
        teacher, student = models()
        train_lm(student, data, spec, Objective("gkd", teacher, gkd=GKDSpec(lmbda=0.5), seed=3), seed=3)
        return [parameter.detach().clone() for parameter in student.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(run(), run(), strict=True))

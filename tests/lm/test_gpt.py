"""The GPT: causal masking, the key–value cache against recomputation, generation determinism and
stopping at EOS."""

from __future__ import annotations

import pytest
import torch

from distill.text.gpt import GPT, GPTConfig, count_parameters

EOS, PAD = 2, 0


def tiny(seed: int = 0, context: int = 16) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=23, context=context, layers=2, width=16, heads=2)).eval()


def test_changing_a_future_token_leaves_earlier_logits_alone():
    model = tiny()
    tokens = torch.randint(4, 23, (2, 10), generator=torch.Generator().manual_seed(1))
    changed = tokens.clone()
    changed[:, 6] = (changed[:, 6] + 5) % 23
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert torch.equal(before[:, :6], after[:, :6])
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_output_head_is_tied_to_the_token_embedding():
    model = tiny()
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    names = [name for name, _ in model.named_parameters()]
    assert "token.weight" in names and not any("head" in name for name in names)


def recompute_greedy(model: GPT, prompts: torch.Tensor, steps: int) -> torch.Tensor:
    tokens = prompts
    with torch.no_grad():
        for _ in range(steps):
            tokens = torch.cat([tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens


def test_kv_cache_greedy_equals_recomputing_the_whole_prefix():
    model = tiny()
    prompts = torch.tensor([[1, 5, 9], [1, 7, 7]])
    cached = model.generate(prompts, 8, eos_id=-1, pad_id=-2, greedy=True)  # no stop token
    assert torch.equal(cached, recompute_greedy(model, prompts, 8))


def test_sampling_is_deterministic_under_a_seeded_generator():
    model = tiny()
    prompts = torch.ones(4, 1, dtype=torch.long)

    def sample(seed: int, **options: object) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return model.generate(prompts, 12, eos_id=EOS, pad_id=PAD, generator=generator, **options)  # type: ignore[arg-type]

    assert torch.equal(sample(3), sample(3))
    assert not torch.equal(sample(3), sample(4))
    assert torch.equal(sample(3, top_k=1), model.generate(prompts, 12, eos_id=EOS, pad_id=PAD, greedy=True))


def test_rows_stop_at_eos_and_are_padded_after_it():
    model = tiny()
    with torch.no_grad():  # make EOS overwhelmingly likely after the first generated token
        model.token.weight[EOS] *= 0
        model.token.weight[EOS] += 5 * model.token.weight[7]
    prompts = torch.tensor([[1, 7], [1, EOS]])
    out = model.generate(prompts, 6, eos_id=EOS, pad_id=PAD, greedy=True)
    for row in out[:, 2:]:
        seen_eos = False
        for token in row.tolist():
            if seen_eos:
                assert token == PAD
            seen_eos = seen_eos or token == EOS
    assert (out[1, 2:] == PAD).all()  # its prompt already ended


def test_generation_respects_the_context():
    model = tiny(context=6)
    out = model.generate(torch.ones(1, 2, dtype=torch.long), 50, eos_id=-1, pad_id=-2, greedy=True)
    assert out.shape == (1, 6)
    with pytest.raises(ValueError, match="positions"):
        model(torch.ones(1, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple"):
        GPTConfig(vocab_size=10, context=4, width=10, heads=3)

"""Tokenizer training is deterministic; sequences are BOS … EOS then padding, and the loss mask
skips the padding."""

from __future__ import annotations

import pytest
import torch

from distill.text.lm_data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    Sequences,
    decode,
    encode,
    shift,
    tokenizer_from_json,
    tokenizer_json,
    train_tokenizer,
    trim,
)

TEXTS = [
    "a small domesticated carnivorous mammal",
    "a large carnivorous mammal with a mane",
    "move fast by using one's feet",
    "the act of running a race",
    "having a pleasant taste",
    "a domesticated animal kept for companionship",
] * 5


def test_tokenizer_training_is_deterministic():
    first, second = train_tokenizer(TEXTS, 120), train_tokenizer(list(TEXTS), 120)
    assert tokenizer_json(first) == tokenizer_json(second)
    assert first.get_vocab_size() <= 120
    assert [first.token_to_id(t) for t in ("<pad>", "<bos>", "<eos>", "<unk>")] == [0, 1, 2, 3]


def test_tokenizer_round_trips_and_bad_json_is_refused():
    tokenizer = train_tokenizer(TEXTS, 120)
    again = tokenizer_from_json(tokenizer_json(tokenizer))
    assert again.encode(TEXTS[0]).ids == tokenizer.encode(TEXTS[0]).ids
    with pytest.raises(ValueError, match="not a tokenizer"):
        tokenizer_from_json("{not json")


def test_sequences_are_bos_tokens_eos_and_padding():
    tokenizer = train_tokenizer(TEXTS, 120)
    rows = encode(tokenizer, ["a small mammal", TEXTS[0] * 4], length=8)
    assert rows.shape == (2, 8) and rows.dtype == torch.long
    assert (rows[:, 0] == BOS_ID).all()
    short = rows[0].tolist()
    end = short.index(EOS_ID)
    assert all(token == PAD_ID for token in short[end + 1 :])
    assert rows[1, -1] == EOS_ID  # truncated, its EOS kept
    assert decode(tokenizer, rows[:1]) == ["a small mammal"]
    inputs, targets, mask = shift(rows)
    assert torch.equal(mask, targets != PAD_ID) and inputs.shape == targets.shape == (2, 7)
    assert int(mask[0].sum()) == end  # every real token and the EOS, no padding


def test_batches_cover_every_row_once_in_a_seeded_order():
    tokens = torch.zeros(10, 6, dtype=torch.long)
    tokens[:, 0] = BOS_ID
    tokens[:, 1] = torch.arange(10) + 4
    tokens[:, 2] = EOS_ID
    sequences = Sequences(tokens, prompt_tokens=2)

    def rows_of(seed: int) -> list[int]:
        return torch.cat(
            [rows for rows, _ in sequences.batches(3, torch.Generator().manual_seed(seed))]
        ).tolist()

    assert sorted(rows_of(0)) == list(range(10)) and rows_of(0) == rows_of(0) != rows_of(1)
    _, batch = next(sequences.batches(4, torch.Generator().manual_seed(0)))
    assert batch.shape == (4, 3)  # trimmed to the longest row
    assert torch.equal(trim(tokens), tokens[:, :3])
    assert torch.equal(sequences.prompts(), tokens[:, :2])

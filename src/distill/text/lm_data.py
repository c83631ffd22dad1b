"""Language-model data: a byte-pair-encoding tokenizer trained on the training texts, and the
texts as fixed-length token sequences ``[BOS] t_1 … t_n [EOS] [PAD] …``.

The tokenizer (Hugging Face ``tokenizers``: BPE, Metaspace pre-tokenizer so decoding restores the
spaces, NFKC normalization) is trained single-threaded on the texts in the order given, so the
same texts give the same vocabulary, byte for byte (:func:`tokenizer_json`). Its first ids are the
special tokens of :data:`SPECIALS`. A text longer than ``length - 2`` tokens is truncated (its
``[EOS]`` kept); the language-model loss predicts ``tokens[:, 1:]`` from ``tokens[:, :-1]`` and
skips padding (:func:`shift`).

Pure computation: no files, no printing (the application stores :func:`tokenizer_json`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import Tensor

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
#: Special tokens, in id order: pad 0, bos 1, eos 2, unk 3.
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """A BPE tokenizer of at most ``vocab_size`` tokens (specials included) trained on ``texts``."""
    if vocab_size <= len(SPECIALS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIALS)} special tokens, got {vocab_size}")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread: the same merges every time
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False, min_frequency=2
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    for token, expected in zip(SPECIALS, range(len(SPECIALS)), strict=True):
        assert tokenizer.token_to_id(token) == expected
    return tokenizer


def tokenizer_json(tokenizer: Tokenizer) -> str:
    """The tokenizer as its JSON text (what the application saves)."""
    return str(tokenizer.to_str())


def tokenizer_from_json(text: str) -> Tokenizer:
    """A tokenizer back from :func:`tokenizer_json`; a ``ValueError`` if it is not one of ours."""
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as error:  # the library raises a plain Exception on bad JSON
        raise ValueError(f"not a tokenizer ({error})") from None
    if [tokenizer.token_to_id(token) for token in SPECIALS] != list(range(len(SPECIALS))):
        raise ValueError(f"the special tokens {SPECIALS} are not ids 0–3")
    return tokenizer


def encode(tokenizer: Tokenizer, texts: Sequence[str], length: int) -> Tensor:
    """``texts`` as an ``(N, length)`` int64 tensor: BOS, tokens (truncated), EOS, padding."""
    if length < 3:
        raise ValueError(f"length must be at least 3 (BOS, a token, EOS), got {length}")
    rows = torch.full((len(texts), length), PAD_ID, dtype=torch.long)
    for row, encoding in enumerate(tokenizer.encode_batch(list(texts), add_special_tokens=False)):
        ids = [BOS_ID, *encoding.ids[: length - 2], EOS_ID]
        rows[row, : len(ids)] = torch.tensor(ids)
    return rows


def decode(tokenizer: Tokenizer, tokens: Tensor) -> list[str]:
    """Token rows back to text, specials dropped."""
    return [str(text) for text in tokenizer.decode_batch(tokens.tolist(), skip_special_tokens=True)]


def shift(tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs ``tokens[:, :-1]``, targets ``tokens[:, 1:]`` and the mask of targets that are not
    padding (the loss positions)."""
    targets = tokens[:, 1:]
    return tokens[:, :-1], targets, targets != PAD_ID


def trim(tokens: Tensor) -> Tensor:
    """Drop the columns that are padding in every row (a batch of short texts runs shorter)."""
    used = int((tokens != PAD_ID).any(dim=0).nonzero().max()) + 1 if tokens.numel() else 0
    return tokens[:, : max(used, 2)]


@dataclass(frozen=True)
class Sequences:
    """Token rows ``(N, length)``; ``prompt_tokens`` leading tokens (BOS included) form each row's
    prompt when a model completes it."""

    tokens: Tensor
    prompt_tokens: int = 1

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def prompts(self, rows: Tensor | slice | None = None) -> Tensor:
        tokens = self.tokens if rows is None else self.tokens[rows]
        return tokens[:, : self.prompt_tokens]

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """(row indices, trimmed token rows) per batch, in a fresh order drawn from ``generator``."""
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), batch_size):
            rows = order[start : start + batch_size]
            yield rows, trim(self.tokens[rows])

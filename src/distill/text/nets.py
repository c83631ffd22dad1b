"""Text classifiers over int64 token ids ``[N, L]`` (pad id 0, mask ``ids != 0``).

Every model has the same tappable layout for distillation: ``pool`` (or, for the MiniLM
teacher, ``embed``) outputs the sentence feature ``[N, width]`` and ``head`` maps it to logits.
A FitNet ``hint`` term between the student's ``pool`` and the teacher's ``embed`` is then
embedding distillation: MSE between a learned linear projection of the student's feature and
the teacher's sentence embedding (:mod:`distill.losses.hint`).

- :class:`TextTransformer`: a small pre-LayerNorm transformer encoder (token + learned position
  embeddings, ``layers`` blocks, masked mean pooling), the student of choice.
- :class:`TextCNN`: Kim (2014)'s CNN for sentence classification — parallel 1-D convolutions of
  several widths over the word embeddings, ReLU, max over time (padding excluded), dropout.
- :class:`MiniLMClassifier`: the pretrained MiniLM sentence embedding (:mod:`distill.text.minilm`)
  plus a linear head. ``freeze_encoder`` trains the head alone (the encoder stays in eval mode,
  and the embedding of every distinct input row is memoized, so each text runs through the
  encoder once per process however many epochs the head trains); otherwise the whole model is
  fine-tuned.

Padding never changes a model's output: the mask excludes padded positions from attention, from
pooling and from the CNN's max, and positions are counted from the start of the text.

:func:`token_vocabulary` says whether a model takes token ids (and how many ids its embedding
table holds), which is how ``distill export`` knows to feed it int64 ids; :func:`unmemoized` is a
frozen MiniLM teacher's computation without its memo (for timing and tracing).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.text.minilm import SentenceEmbedding, mean_pool
from distill.text.tokenize import PAD_ID


def _token_ids(inputs: torch.Tensor) -> torch.Tensor:
    if inputs.ndim != 2:
        raise ValueError(f"text models take token ids shaped (batch, length), got {tuple(inputs.shape)}")
    return inputs.long()


class MaskedMeanPool(nn.Module):
    """``forward(states [N, L, H], mask [N, L]) → [N, H]``: the mean over unmasked positions."""

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mean_pool(states, mask)


class TextTransformer(nn.Module):
    """Token + position embeddings → ``layers`` pre-LN transformer blocks → masked mean
    (``pool``) → LayerNorm → linear ``head``. Modules: ``tokens``, ``positions``,
    ``blocks.<i>``, ``pool``, ``norm``, ``head``."""

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        num_classes: int,
        width: int = 128,
        layers: int = 2,
        heads: int = 4,
        ffn: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width, padding_idx=PAD_ID)
        self.positions = nn.Embedding(max_length, width)
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.tokens.weight[PAD_ID].zero_()
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width, heads, ffn, dropout, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.pool = MaskedMeanPool()
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        ids = _token_ids(inputs)[:, : self.positions.num_embeddings]  # longer texts are cut
        mask = ids != PAD_ID
        positions = torch.arange(ids.shape[1], device=ids.device)
        hidden = self.dropout(self.tokens(ids) + self.positions(positions)[None])
        for block in self.blocks:
            # the slow path always (no nested tensors): the same numbers in train and eval mode
            hidden = block(hidden, src_key_padding_mask=~mask)
        return self.head(self.norm(self.pool(hidden, mask)))


class TextCNN(nn.Module):
    """Kim (2014): word embeddings → Conv1d of each width in ``kernel_sizes`` (``channels``
    each, ReLU) → max over the text's positions → concatenation (``pool``) → dropout → linear
    ``head``. Modules: ``tokens``, ``convs.<i>``, ``pool``, ``head``."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        width: int = 128,
        channels: int = 128,
        kernel_sizes: Sequence[int] = (3, 4, 5),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width, padding_idx=PAD_ID)
        self.convs = nn.ModuleList(
            nn.Conv1d(width, channels, size, padding=size // 2) for size in kernel_sizes
        )
        self.pool = nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels * len(kernel_sizes), num_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        ids = _token_ids(inputs)
        mask = ids != PAD_ID
        embedded = self.tokens(ids).transpose(1, 2)  # (N, width, L)
        length = ids.shape[1]
        features = []
        for conv in self.convs:
            response = F.relu(conv(embedded))[..., :length]  # even widths give one extra position
            response = response.masked_fill(~mask[:, None, :], float("-inf"))
            features.append(response.amax(dim=2).clamp_min(0.0))  # an empty text gives zeros
        return self.head(self.dropout(self.pool(torch.cat(features, dim=1))))


class MemoizedEmbedding(nn.Module):
    """A frozen :class:`SentenceEmbedding` that remembers the embedding of every distinct row of
    ids it has computed (at most ``capacity`` rows). Always in eval mode (no dropout), never
    trained; loading a state dict forgets the memo. Its output never requires gradients."""

    def __init__(self, embedding: SentenceEmbedding, capacity: int = 500_000) -> None:
        super().__init__()
        self.inner = embedding
        self.capacity = capacity
        self._memo: dict[bytes, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0
        for parameter in self.inner.parameters():
            parameter.requires_grad_(False)
        self.inner.eval()
        self.register_load_state_dict_post_hook(lambda module, _keys: module.forget())

    def forget(self) -> None:
        self._memo.clear()

    def train(self, mode: bool = True) -> MemoizedEmbedding:
        super().train(mode)
        self.inner.eval()
        return self

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = ids.long().cpu().numpy()
        keys = [row.tobytes() for row in rows]
        todo = [index for index, key in enumerate(keys) if key not in self._memo]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        computed: dict[int, torch.Tensor] = {}
        if todo:
            with torch.no_grad():
                fresh = self.inner(ids[todo]).detach()
            for index, value in zip(todo, fresh, strict=True):
                computed[index] = value.clone()
                if len(self._memo) < self.capacity:
                    self._memo[keys[index]] = computed[index]
        values = [computed[index] if index in computed else self._memo[key] for index, key in enumerate(keys)]
        return torch.stack(values).to(ids.device)


class MiniLMClassifier(nn.Module):
    """The MiniLM sentence embedding (``embed``) + dropout + a linear ``head``.

    ``freeze_encoder``: only the head trains (``embed`` is a :class:`MemoizedEmbedding`);
    otherwise the encoder is fine-tuned with the head."""

    def __init__(
        self,
        embedding: SentenceEmbedding,
        num_classes: int,
        freeze_encoder: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed: nn.Module = MemoizedEmbedding(embedding) if freeze_encoder else embedding
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embedding.width, num_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(_token_ids(inputs))))


def token_vocabulary(model: nn.Module) -> int | None:
    """The number of token ids ``model`` embeds when it is a text model of this module (or a
    frozen MiniLM teacher without its memo, :func:`unmemoized`), else ``None``. Another model
    that takes int64 token ids (pad id 0) can say so with an int attribute ``token_vocabulary``."""
    if isinstance(model, (TextTransformer, TextCNN)):
        return int(model.tokens.num_embeddings)
    if isinstance(model, MiniLMClassifier):
        embed = model.embed.inner if isinstance(model.embed, MemoizedEmbedding) else model.embed
        return token_vocabulary(embed)
    if isinstance(model, SentenceEmbedding):
        return int(model.bert.config.vocab_size)
    if isinstance(model, nn.Sequential) and len(model) and isinstance(model[0], SentenceEmbedding):
        return token_vocabulary(model[0])
    declared = getattr(model, "token_vocabulary", None)
    return declared if isinstance(declared, int) and not isinstance(declared, bool) else None


def unmemoized(model: nn.Module) -> nn.Module:
    """``model`` itself, or for a frozen MiniLM teacher (whose memo would answer repeated
    inputs, and cannot be traced) the same computation without the memo: encoder → dropout →
    head, sharing the weights."""
    if isinstance(model, MiniLMClassifier) and isinstance(model.embed, MemoizedEmbedding):
        return nn.Sequential(model.embed.inner, model.dropout, model.head)
    return model

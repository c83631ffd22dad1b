"""A small SimVG-style grounding model: one joint multimodal encoder, two heads.

SimVG (Dai et al., NeurIPS 2024, arXiv 2409.17531; official code ``Dmmm1997/SimVG``,
``simvg/models/heads/tgqs_kd_detr_head/tgqs_kd_detr_head.py``) *decouples* multimodal fusion
from the head: a BEiT-3 encoder fuses the image patches, the words and an object token in one
transformer, and light heads read the result. Here, at toy scale:

* **Encoder**: a ``patch × patch`` convolution turns the image into patch tokens with fixed 2-D
  sine-cosine position embeddings (as DETR's ``PositionEmbeddingSine``), so where a patch lies is
  known from the first step; words are embedded (learned positions); one learned *object token*
  is prepended. A pre-norm transformer encoder (``encoder_layers``) runs over ``[object, patches,
  words]`` with the padding words masked out — the fusion is entirely inside this encoder.
* **Decoder branch (DB)**, the in-model teacher: ``queries`` learned queries run through a
  transformer decoder (``decoder_layers``) that cross-attends to the encoder's patch and word
  tokens; after every layer a shared LayerNorm, a class head (2 logits: class 0 = object, class
  1 = no object, as SimVG with ``num_classes=1``) and a 3-layer box MLP with a sigmoid (normalized
  ``cxcywh``) — DETR's auxiliary outputs, used by its loss. At inference DB's box is the query of
  highest foreground score ``softmax(logits)[..., 0]``.
* **Token branch (TB)**, the fast head: an MLP of ``token_mlp_layers`` layers on the encoded
  object token (official ``num_token_mlp_layers=1``), then its own class head and 3-layer box MLP
  (official ``share_predicthead=False``). TB skips the decoder entirely: that is its speed.

Pure computation: no files, no printing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from distill.schema import Section


class GroundingModelSpec(Section):
    """The model's sizes: token width ``dim`` (divisible by ``heads``), encoder and decoder depth,
    the decoder's number of ``queries``, the image ``patch`` side, the feed-forward width and the
    token branch's MLP depth."""

    dim: int = Field(default=64, ge=4, le=1024)
    heads: int = Field(default=4, ge=1, le=64)
    encoder_layers: int = Field(default=2, ge=1, le=24)
    decoder_layers: int = Field(default=2, ge=1, le=24)
    queries: int = Field(default=1, ge=1, le=100)
    patch: int = Field(default=8, ge=1, le=64)
    feedforward: int = Field(default=128, ge=1, le=8192)
    token_mlp_layers: int = Field(default=1, ge=0, le=8)

    @model_validator(mode="after")
    def _check(self) -> GroundingModelSpec:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        return self


@dataclass
class GroundingOutput:
    """Both branches' predictions for a batch of ``B`` examples (``N`` decoder queries).

    ``tb_boxes`` ``(B, 4)`` and ``tb_logits`` ``(B, 2)``: the token branch. ``db_layers``: per
    decoder layer, ``(boxes (B, N, 4), logits (B, N, 2))``; the last is DB's output.
    """

    tb_boxes: Tensor
    tb_logits: Tensor
    db_layers: list[tuple[Tensor, Tensor]]

    @property
    def db_boxes(self) -> Tensor:
        return self.db_layers[-1][0]

    @property
    def db_logits(self) -> Tensor:
        return self.db_layers[-1][1]

    @property
    def db_scores(self) -> Tensor:
        """``(B, N)`` foreground probability ``softmax(logits)[..., 0]`` of the last layer."""
        return self.db_logits.softmax(-1)[..., 0]

    def db_prediction(self) -> Tensor:
        """``(B, 4)``: each example's box of highest foreground score."""
        return best_query_boxes(self.db_boxes, self.db_scores)


def best_query_boxes(boxes: Tensor, scores: Tensor) -> Tensor:
    """``(B, 4)``: the box of the query with the highest score per example."""
    index = scores.argmax(dim=1)
    return boxes[torch.arange(boxes.shape[0], device=boxes.device), index]


def sincos_positions(side: int, dim: int) -> Tensor:
    """``(side², dim)`` fixed 2-D sine-cosine position embeddings of a ``side × side`` grid
    (half the channels encode the row, half the column; ``dim`` divisible by 4 uses them all)."""
    quarter = max(dim // 4, 1)
    frequencies = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    coordinates = torch.arange(side, dtype=torch.float32) / max(side - 1, 1) * 2 * torch.pi
    angles = coordinates[:, None] * frequencies[None, :] * side / 2  # (side, quarter)
    axis = torch.cat([angles.sin(), angles.cos()], dim=1)  # (side, 2·quarter)
    rows = axis[:, None, :].expand(side, side, -1)
    columns = axis[None, :, :].expand(side, side, -1)
    table = torch.cat([rows, columns], dim=-1).reshape(side * side, -1)
    padded = torch.zeros(side * side, dim)
    padded[:, : min(dim, table.shape[1])] = table[:, :dim]
    return padded


class MLP(nn.Sequential):
    """``layers`` linear layers with ReLU between them (DETR's ``MLP``)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int) -> None:
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        modules: list[nn.Module] = []
        for index, (a, b) in enumerate(itertools.pairwise(dims)):
            modules.append(nn.Linear(a, b))
            if index < layers - 1:
                modules.append(nn.ReLU())
        super().__init__(*modules)


class GroundingModel(nn.Module):
    """The encoder, the decoder branch and the token branch (module docstring)."""

    def __init__(self, spec: GroundingModelSpec, image_size: int, vocabulary: int, max_words: int) -> None:
        super().__init__()
        if image_size % spec.patch:
            raise ValueError(f"image_size ({image_size}) must be a multiple of model.patch ({spec.patch})")
        d = spec.dim
        self.spec = spec
        self.patch_embed = nn.Conv2d(3, d, kernel_size=spec.patch, stride=spec.patch)
        self.register_buffer(
            "patch_position", sincos_positions(image_size // spec.patch, d).unsqueeze(0), persistent=False
        )
        self.word_embed = nn.Embedding(vocabulary, d)
        self.word_position = nn.Parameter(torch.randn(1, max_words, d) * 0.02)
        self.object_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d, spec.heads, spec.feedforward, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, spec.encoder_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False
        )
        # decoder branch
        self.query_embed = nn.Parameter(torch.randn(1, spec.queries, d) * 0.02)
        self.decoder_layers = nn.ModuleList(
            nn.TransformerDecoderLayer(d, spec.heads, spec.feedforward, dropout=0.0, batch_first=True)
            for _ in range(spec.decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(d)
        self.db_class = nn.Linear(d, 2)
        self.db_box = MLP(d, d, 4, 3)
        # token branch
        self.token_mlp = MLP(d, d, d, spec.token_mlp_layers) if spec.token_mlp_layers else nn.Identity()
        self.tb_class = nn.Linear(d, 2)
        self.tb_box = MLP(d, d, 4, 3)

    def encode(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The joint encoder: ``(object token (B, d), memory (B, P + L, d), memory padding mask)``."""
        patches = self.patch_embed(images).flatten(2).transpose(1, 2) + self.patch_position
        words = self.word_embed(tokens) + self.word_position[:, : tokens.shape[1]]
        batch = images.shape[0]
        sequence = torch.cat([self.object_token.expand(batch, -1, -1), patches, words], dim=1)
        padding = torch.cat(
            [torch.zeros(batch, 1 + patches.shape[1], dtype=torch.bool, device=tokens.device), tokens == 0],
            dim=1,
        )
        encoded = self.encoder(sequence, src_key_padding_mask=padding)
        return encoded[:, 0], encoded[:, 1:], padding[:, 1:]

    def token_branch(self, object_token: Tensor) -> tuple[Tensor, Tensor]:
        """TB: ``(boxes (B, 4) sigmoid cxcywh, logits (B, 2))``."""
        hidden = self.token_mlp(object_token)
        return self.tb_box(hidden).sigmoid(), self.tb_class(hidden)

    def decoder_branch(self, memory: Tensor, padding: Tensor) -> list[tuple[Tensor, Tensor]]:
        """DB: per decoder layer ``(boxes (B, N, 4), logits (B, N, 2))``."""
        queries = self.query_embed.expand(memory.shape[0], -1, -1)
        outputs = []
        for layer in self.decoder_layers:
            queries = layer(queries, memory, memory_key_padding_mask=padding)
            hidden = self.decoder_norm(queries)
            outputs.append((self.db_box(hidden).sigmoid(), self.db_class(hidden)))
        return outputs

    def forward(self, images: Tensor, tokens: Tensor) -> GroundingOutput:
        object_token, memory, padding = self.encode(images, tokens)
        tb_boxes, tb_logits = self.token_branch(object_token)
        return GroundingOutput(tb_boxes, tb_logits, self.decoder_branch(memory, padding))

    def predict_token(self, images: Tensor, tokens: Tensor) -> Tensor:
        """TB's boxes ``(B, 4)``: the encoder and the MLP, no decoder (fast inference)."""
        object_token, _, _ = self.encode(images, tokens)
        return self.token_branch(object_token)[0]

    def predict_decoder(self, images: Tensor, tokens: Tensor) -> Tensor:
        """DB's boxes ``(B, 4)``: the encoder, the decoder, the best-scoring query."""
        _, memory, padding = self.encode(images, tokens)
        boxes, logits = self.decoder_branch(memory, padding)[-1]
        return best_query_boxes(boxes, logits.softmax(-1)[..., 0])

    def decoder_modules(self) -> list[nn.Module]:
        """The modules only DB uses (frozen in DWBD's second stage)."""
        return [self.decoder_layers, self.decoder_norm, self.db_class, self.db_box]

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """DB's own parameters: the queries, the decoder layers and DB's heads."""
        yield self.query_embed
        for module in self.decoder_modules():
            yield from module.parameters()

    def token_parameters(self) -> Iterator[nn.Parameter]:
        """TB's own parameters: the object-token MLP and TB's heads."""
        for module in (self.token_mlp, self.tb_class, self.tb_box):
            yield from module.parameters()

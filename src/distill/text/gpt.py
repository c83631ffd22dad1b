"""A small decoder-only GPT (Radford et al. 2019's layout): token and learned position
embeddings, pre-LayerNorm blocks of causal multi-head self-attention (through
:func:`torch.nn.functional.scaled_dot_product_attention`) and a 4× GELU MLP, a final LayerNorm and
an output head tied to the token embedding.

:meth:`GPT.generate` continues a batch of equal-length prompts greedily or by sampling (temperature,
optional top-k) with a key–value cache: the prompt is run once (causal attention), then each new
token attends to the cached keys and values of every earlier position, so a step costs one token's
forward pass. A row stops at its end-of-sequence token and is padded from there on. Sampling draws
from an explicit :class:`torch.Generator`, so a seeded generator gives the same sequences.

Pure computation: no files, no printing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KVCache = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT: vocabulary, the longest sequence (positions), depth, width, heads."""

    vocab_size: int
    context: int
    layers: int = 2
    width: int = 64
    heads: int = 2

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.context, self.layers, self.width, self.heads) < 1:
            raise ValueError(f"every GPT size must be positive, got {self}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, past: KVCache | None = None) -> tuple[Tensor, KVCache]:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        # Without a cache the block sees whole sequences: causal mask. With one, the new
        # positions come after every cached one; a single new token may attend to all of them.
        if past is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif length == 1:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            total = k.shape[2]
            mask = torch.ones(length, total, dtype=torch.bool, device=x.device).tril(total - length)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(batch, length, width)
        return self.proj(y), (k, v)


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor, past: KVCache | None = None) -> tuple[Tensor, KVCache]:
        attended, cache = self.attn(self.ln1(x), past)
        x = x + attended
        return x + self.mlp(self.ln2(x)), cache


class GPT(nn.Module):
    """A decoder-only language model; ``forward(tokens)`` gives next-token logits ``(B, T, V)``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.token = nn.Embedding(config.vocab_size, config.width)
        self.position = nn.Embedding(config.context, config.width)
        self.blocks = nn.ModuleList(Block(config.width, config.heads) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.width)
        self.apply(self._init)
        for name, parameter in self.named_parameters():  # GPT-2: residual projections scaled
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(parameter, std=0.02 / (2 * config.layers) ** 0.5)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def _run(
        self, tokens: Tensor, past: list[KVCache] | None = None, start: int = 0
    ) -> tuple[Tensor, list[KVCache]]:
        length = tokens.shape[1]
        if start + length > self.config.context:
            raise ValueError(f"{start + length} positions; this GPT holds {self.config.context}")
        positions = torch.arange(start, start + length, device=tokens.device)
        x = self.token(tokens) + self.position(positions)
        caches = []
        for index, block in enumerate(self.blocks):
            x, cache = block(x, None if past is None else past[index])
            caches.append(cache)
        logits = self.ln_f(x) @ self.token.weight.T  # tied output head
        return logits, caches

    def forward(self, tokens: Tensor) -> Tensor:
        return self._run(tokens)[0]

    @torch.no_grad()
    def generate(
        self,
        prompts: Tensor,
        max_new_tokens: int,
        *,
        eos_id: int,
        pad_id: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        greedy: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``prompts`` ``(B, P)`` continued by up to ``max_new_tokens`` tokens: ``(B, P + N)``.

        Greedy takes the arg-max; otherwise samples from ``softmax(logits / temperature)``,
        restricted to the ``top_k`` largest logits when given. A row whose prompt already holds
        ``eos_id`` or ``pad_id`` is finished: its new tokens are ``pad_id``, as are those after its
        first generated ``eos_id``. Uses a key–value cache; the model's mode is left as it was.
        """
        if not greedy and temperature <= 0:
            raise ValueError(f"sampling temperature must be positive, got {temperature}")
        max_new_tokens = min(max_new_tokens, self.config.context - prompts.shape[1])
        done = ((prompts == eos_id) | (prompts == pad_id)).any(dim=1)
        logits, caches = self._run(prompts)
        pieces = [prompts]
        for step in range(max_new_tokens):
            last = logits[:, -1, :].float()
            if greedy:
                token = last.argmax(dim=-1)
            else:
                last = last / temperature
                if top_k is not None and top_k < last.shape[-1]:
                    threshold = last.topk(top_k, dim=-1).values[:, -1:]
                    last = last.masked_fill(last < threshold, float("-inf"))
                token = torch.multinomial(last.softmax(dim=-1), 1, generator=generator).squeeze(1)
            token = torch.where(done, torch.full_like(token, pad_id), token)
            pieces.append(token[:, None])
            done = done | (token == eos_id)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            logits, caches = self._run(token[:, None], caches, start=prompts.shape[1] + step)
        return torch.cat(pieces, dim=1)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (the tied head counted once)."""
    return sum(parameter.numel() for parameter in model.parameters())

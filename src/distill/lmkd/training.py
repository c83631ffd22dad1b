"""The four student objectives as training steps, and the loop that runs them (teacher included).

Here because each step combines a model (:mod:`distill.text`) with a divergence
(:mod:`distill.losses.gkd`): two sibling core packages that may not import each other. No files,
no printing: :mod:`distill.lmkd.session` stores what :func:`train_lm` returns.

* ``ce`` — next-token cross-entropy on the training glosses (also how the teacher trains).
* ``token-kd`` — supervised token-level KD (torchtune's KD recipe): ``(1 − r) · CE + r ·
  KL(p_T ‖ p_S)`` per token on the training glosses; the teacher's distribution computed every
  step, or read from a top-k cache built once (:func:`build_topk_cache`).
* ``seq-kd`` — sequence-level KD (Kim & Rush 2016): CE on the teacher's completions of the
  training prompts (:func:`distill.text.lm_distill.distilled_sequences`, generated once).
* ``gkd`` — GKD (Agarwal et al. 2024) as TRL's GKDTrainer: per batch, with probability λ the
  batch is replaced by the student's own sampled completions of its prompts (on-policy); the
  loss is the generalized JSD(β) between teacher and student on every non-padding token. λ = 0 is
  supervised GKD (the training glosses only).

Every loss averages over non-padding target tokens, in float32. Randomness is seeded per run: the
model's initialization (``torch.manual_seed``, on the CPU before the model moves), the batch
order (a CPU generator: the same batches on every device), the on-policy coin and the student's
samples (a generator on the model's device) each from their own generator.

Device and precision: a model trains where its parameters are; the batches (stored on the CPU)
and the top-k cache's rows move there per step. ``precision="bfloat16"`` runs every training
forward pass — the student's, the teacher's targets, the student's on-policy sampling — under
``torch.autocast(device_type, torch.bfloat16)`` (:func:`mixed_precision`); the weights, the
gradients and the optimizer state stay float32, and the logits are cast to float32 before any
log-softmax, so the losses are float32 too. Evaluation (held-out perplexity) runs in float32.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.lmkd.recipes import GKDSpec, GPTSpec, LMTrainSpec, Precision, SeqKDSpec, TokenKDSpec
from distill.losses.gkd import forward_kl, generalized_jsd, masked_mean, topk_kl, topk_logprobs
from distill.text.gpt import GPT, GPTConfig
from distill.text.lm_data import Sequences, shift, trim
from distill.text.lm_distill import (
    complete,
    distilled_sequences,
    model_device,
    perplexity,
    seeded_generator,
    teacher_logits,
)

EpochHook = Callable[[dict[str, float]], None]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def mixed_precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    """The context a training forward pass runs in: ``torch.autocast(device.type,
    torch.bfloat16)`` for ``"bfloat16"`` (CPU autocast supports it too), nothing for
    ``"float32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def build_gpt(spec: GPTSpec, vocab_size: int, context: int, seed: int) -> GPT:
    """A freshly initialized GPT of ``spec``, seeded."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size, context, spec.layers, spec.width, spec.heads))


@dataclass(frozen=True)
class TopKCache:
    """The teacher's ``k`` largest log-probabilities and their ids per target position of every
    training sequence: ``values`` and ``indices`` ``(N, length - 1, k)``."""

    values: Tensor
    indices: Tensor


@torch.no_grad()
def build_topk_cache(teacher: GPT, sequences: Sequences, k: int, batch_size: int = 256) -> TopKCache:
    """The top-k cache of ``teacher`` over ``sequences`` (eval mode, no gradients; computed on
    the teacher's device, kept on the CPU)."""
    values, indices = [], []
    for start in range(0, len(sequences), batch_size):
        inputs, _, _ = shift(sequences.tokens[start : start + batch_size])
        top_values, top_indices = topk_logprobs(teacher_logits(teacher, inputs), k)
        values.append(top_values.cpu())
        indices.append(top_indices.cpu())
    return TopKCache(torch.cat(values), torch.cat(indices))


def cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Next-token CE per non-padding target, averaged."""
    per_token = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    return masked_mean(per_token, mask)


@dataclass
class Objective:
    """One method's settings; :meth:`loss` is its training step's loss on one batch."""

    method: str
    teacher: GPT | None = None
    token_kd: TokenKDSpec = field(default_factory=TokenKDSpec)
    gkd: GKDSpec = field(default_factory=GKDSpec)
    cache: TopKCache | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self._coin = random.Random(self.seed)
        self._sampler: torch.Generator | None = None  # made on the student's device when first needed
        self.on_policy_batches = 0

    def _student_sampler(self, student: GPT) -> torch.Generator:
        if self._sampler is None:
            self._sampler = seeded_generator(student, self.seed + 1)
        return self._sampler

    def loss(
        self, student: GPT, rows: Tensor, tokens: Tensor, prompt_tokens: int, length: int
    ) -> tuple[Tensor, int]:
        """The loss of ``student`` on the batch (``rows`` of the training set, their ``tokens``,
        trimmed, on the student's device) and the number of target tokens it trained on;
        ``length``: the longest sequence a completion may reach. Logits are cast to float32
        before every loss."""
        if self.method in ("ce", "seq-kd"):
            inputs, targets, mask = shift(tokens)
            return cross_entropy(student(inputs).float(), targets, mask), int(mask.sum())
        if self.teacher is None:
            raise ValueError(f"{self.method} needs a teacher")
        if self.method == "token-kd":
            inputs, targets, mask = shift(tokens)
            logits = student(inputs).float()
            if self.cache is not None:
                width = inputs.shape[1]
                values = self.cache.values[rows, :width].to(logits.device)
                indices = self.cache.indices[rows, :width].to(logits.device)
                kd = topk_kl(logits, values, indices, mask, self.token_kd.missing_mass)
            else:
                kd = forward_kl(logits, teacher_logits(self.teacher, inputs), mask)
            ratio = self.token_kd.kd_ratio
            loss = kd if ratio == 1.0 else (1 - ratio) * cross_entropy(logits, targets, mask) + ratio * kd
            return loss, int(mask.sum())
        if self.method == "gkd":
            if self._coin.random() < self.gkd.lmbda:  # on-policy: the student's own completions
                self.on_policy_batches += 1
                tokens = trim(
                    complete(
                        student,
                        tokens[:, :prompt_tokens],
                        length,
                        temperature=self.gkd.temperature,
                        generator=self._student_sampler(student),
                    )
                )
            inputs, _, mask = shift(tokens)
            logits = student(inputs).float()
            loss = generalized_jsd(logits, teacher_logits(self.teacher, inputs), mask, self.gkd.beta)
            return loss, int(mask.sum())
        raise ValueError(f"unknown lm method {self.method!r}")


@dataclass
class TrainedLM:
    model: GPT
    history: list[dict[str, float]]
    seconds: float
    tokens: int
    on_policy_batches: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def _schedule(step: int, total: int, warmup: float) -> float:
    warm = max(1, round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def train_lm(
    model: GPT,
    train: Sequences,
    spec: LMTrainSpec,
    objective: Objective,
    seed: int,
    *,
    held_out: Sequences | None = None,
    on_epoch: EpochHook | None = None,
    precision: Precision = "float32",
) -> TrainedLM:
    """Train ``model`` on ``train`` with ``objective`` on the model's device; returns it with
    per-epoch records (mean loss, held-out perplexity when ``held_out`` is given, seconds) and the
    tokens trained on. ``seconds`` counts training only (sampling included, evaluation not).
    ``precision``: ``bfloat16`` runs each step's forward passes under bf16 autocast
    (:func:`mixed_precision`); weights, gradients and losses stay float32."""
    device = model_device(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    steps_per_epoch = math.ceil(len(train) / spec.batch_size)
    total = spec.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _schedule(step, total, spec.warmup))
    order = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    seconds, tokens = 0.0, 0
    for epoch in range(1, spec.epochs + 1):
        model.train()
        started = time.perf_counter()
        losses = []
        for rows, batch in train.batches(spec.batch_size, order):
            with mixed_precision(device, precision):
                loss, count = objective.loss(
                    model, rows, batch.to(device), train.prompt_tokens, train.tokens.shape[1]
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            tokens += count
        seconds += time.perf_counter() - started
        record = {"epoch": float(epoch), "loss": sum(losses) / len(losses), "seconds": seconds}
        if held_out is not None:
            record["perplexity"] = perplexity(model, held_out)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    model.eval()
    return TrainedLM(model, history, seconds, tokens, objective.on_policy_batches)


def student_training_set(
    method: str, teacher: GPT, train: Sequences, seq_kd: SeqKDSpec, seed: int
) -> Sequences:
    """What a student of ``method`` trains on: the teacher's completions for ``seq-kd``, the
    training glosses otherwise."""
    if method != "seq-kd":
        return train
    return distilled_sequences(
        teacher, train, greedy=seq_kd.greedy, temperature=seq_kd.temperature, seed=seed
    )

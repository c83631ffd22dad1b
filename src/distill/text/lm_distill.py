"""The model side of language-model distillation: what the objectives need from the models
besides a divergence, and the two scores.

* :func:`teacher_logits` — the teacher's next-token logits in eval mode under ``no_grad`` (it
  never receives gradients; TRL's GKDTrainer does the same).
* :func:`complete` — a model's completions of the prompts of some sequences (the first
  ``prompt_tokens`` tokens, BOS included): the teacher's for sequence-level KD (Kim & Rush 2016,
  greedy by default), the student's own for GKD's on-policy batches (sampled at a temperature).
* :func:`perplexity` — exp of the mean next-token NLL over the non-padding targets of held-out
  sequences.
* :func:`teacher_nll_of_samples` — GKD's axis: the student samples completions of held-out prompts
  (temperature 1 by default) and the teacher scores them: mean NLL per generated token (EOS
  included, padding not), under the teacher. Lower means the student's own text looks likelier
  to the teacher.

Every function runs on the device of the model it is given: it moves its token batches there,
and seeds its own sampling generators there (``torch.multinomial`` needs a generator on the
device of its probabilities). Stored token rows (:class:`~distill.text.lm_data.Sequences`) stay
on the CPU; :func:`distilled_sequences` returns CPU rows. Mixed precision is the caller's: under
``torch.autocast`` the forward passes run in the autocast dtype, while the logits that the
scores and losses see are float32 (:func:`teacher_logits`, :func:`token_nll`).

The divergences live in :mod:`distill.losses.gkd` (a sibling core package, which this one may
not import); the application (:mod:`distill.lmkd.training`) combines both into training steps.
Pure computation: no files, no printing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.text.gpt import GPT
from distill.text.lm_data import EOS_ID, PAD_ID, Sequences, shift, trim


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (the CPU for a model without any)."""
    parameter = next(model.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


def seeded_generator(model: torch.nn.Module, seed: int) -> torch.Generator:
    """A :class:`torch.Generator` on ``model``'s device seeded with ``seed``: what
    :func:`complete` samples with (on the CPU, the same draws as ``torch.Generator()``)."""
    return torch.Generator(device=model_device(model)).manual_seed(seed)


@torch.no_grad()
def teacher_logits(teacher: GPT, inputs: Tensor) -> Tensor:
    """The teacher's float32 logits for ``inputs`` (moved to its device); the teacher is put in
    eval mode, no graph is kept."""
    teacher.eval()
    return teacher(inputs.to(model_device(teacher))).float()


def complete(
    model: GPT,
    prompts: Tensor,
    length: int,
    *,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``prompts`` completed by ``model`` to at most ``length`` tokens, padded to ``length``, on
    ``model``'s device; a sampling ``generator`` must be on that device too
    (:func:`seeded_generator`)."""
    prompts = prompts.to(model_device(model))
    was_training = model.training
    model.eval()
    try:
        out = model.generate(
            prompts,
            length - prompts.shape[1],
            eos_id=EOS_ID,
            pad_id=PAD_ID,
            temperature=temperature,
            top_k=top_k,
            greedy=greedy,
            generator=generator,
        )
    finally:
        model.train(was_training)
    if out.shape[1] < length:
        out = F.pad(out, (0, length - out.shape[1]), value=PAD_ID)
    return out


def completion_mask(tokens: Tensor, prompt_tokens: int) -> Tensor:
    """Over the shifted targets ``tokens[:, 1:]``: true where a generated (non-padding) token is."""
    mask = shift(tokens)[2]
    generated = torch.arange(1, tokens.shape[1], device=tokens.device) >= prompt_tokens
    return mask & generated[None, :]


def token_nll(model: GPT, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Per-target NLL ``(B, T-1)`` of ``tokens`` under ``model`` (float32) and the non-padding
    mask, both on ``model``'s device."""
    inputs, targets, mask = shift(tokens.to(model_device(model)))
    logits = model(inputs).float()
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return nll, mask


@torch.no_grad()
def perplexity(model: GPT, sequences: Sequences, batch_size: int = 256) -> float:
    """exp(mean NLL per non-padding target token) of ``model`` on ``sequences``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(sequences), batch_size):
        nll, mask = token_nll(model, trim(sequences.tokens[start : start + batch_size]))
        total += float(nll[mask].sum())
        count += int(mask.sum())
    model.train(was_training)
    return math.exp(total / max(count, 1))


@torch.no_grad()
def teacher_nll_of_samples(
    student: GPT,
    teacher: GPT,
    sequences: Sequences,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[float, int]:
    """The teacher's mean NLL per token of the student's sampled completions of the prompts of
    ``sequences``, and the number of tokens scored. Seeded: the same models on the same device
    give the same value."""
    generator = seeded_generator(student, seed)
    length = sequences.tokens.shape[1]
    total, count = 0.0, 0
    for start in range(0, len(sequences), batch_size):
        prompts = sequences.prompts(slice(start, start + batch_size))
        samples = trim(complete(student, prompts, length, temperature=temperature, generator=generator))
        teacher.eval()
        nll, _ = token_nll(teacher, samples)
        mask = completion_mask(samples, sequences.prompt_tokens).to(nll.device)
        total += float(nll[mask].sum())
        count += int(mask.sum())
    return total / max(count, 1), count


@torch.no_grad()
def distilled_sequences(
    teacher: GPT,
    sequences: Sequences,
    *,
    greedy: bool = True,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
) -> Sequences:
    """Sequence-level KD's training set (Kim & Rush 2016): the teacher's completion of every
    prompt of ``sequences`` (greedy by default; else sampled at ``temperature``, seeded), as CPU
    rows."""
    generator = seeded_generator(teacher, seed)
    length = sequences.tokens.shape[1]
    rows = [
        complete(
            teacher,
            sequences.prompts(slice(start, start + batch_size)),
            length,
            greedy=greedy,
            temperature=temperature,
            generator=generator,
        ).cpu()
        for start in range(0, len(sequences), batch_size)
    ]
    return Sequences(torch.cat(rows), sequences.prompt_tokens)

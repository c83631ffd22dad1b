"""Language-model distillation recipes: built-in ones under ``recipes/lm/``, or a YAML file;
``--set`` applies."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from distill.config import (
    load_section_recipe,
)
from distill.schema import FilePath, Section, Seed

BUILTIN_LM_RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "lm"

#: The student objectives, in board order (the teacher is trained first, by next-token CE).
METHODS = ("ce", "token-kd", "seq-kd", "gkd")
#: ``bfloat16``: training forward passes under bf16 autocast (float32 weights, float32 losses).
Precision = Literal["float32", "bfloat16"]


class LMData(Section):
    """The corpus: WordNet glosses from the folder ``path`` (``data.noun``, ``data.verb``,
    ``data.adj``, ``data.adv``; default ``$DISTILL_WORDNET``, else ``/usr/share/wordnet``).

    ``examples: false`` keeps each gloss's definition only (the text before its first quoted
    example). A seeded shuffle (``split_seed``, the same for every run seed, so every seed is
    scored on the same held-out glosses) keeps ``max_texts`` glosses and holds ``held_out`` of them
    out. The BPE tokenizer (``vocab_size``) is trained on the training glosses only. Sequences are
    ``length`` tokens (BOS, tokens, EOS, padding); a completion starts after the first
    ``prompt_tokens`` tokens of a gloss (BOS included).
    """

    path: FilePath | None = None
    examples: bool = False
    max_texts: int = Field(default=4000, ge=2, le=1_000_000)
    held_out: int = Field(default=400, ge=1, le=1_000_000)
    split_seed: Seed = 0
    vocab_size: int = Field(default=2048, ge=64, le=65_536)
    length: int = Field(default=32, ge=4, le=1024)
    prompt_tokens: int = Field(default=3, ge=1, le=1024)


class GPTSpec(Section):
    """A GPT's shape: ``layers`` pre-LN blocks of ``width`` channels and ``heads`` heads."""

    layers: int = Field(default=2, ge=1, le=64)
    width: int = Field(default=64, ge=4, le=4096)
    heads: int = Field(default=2, ge=1, le=64)


class LMTrainSpec(Section):
    """AdamW at ``lr`` (linear warm-up over the first ``warmup`` fraction of steps, then cosine
    to 0), ``epochs`` passes over the training sequences in batches of ``batch_size``, gradient
    norm clipped at 1."""

    epochs: int = Field(default=4, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    lr: float = Field(default=3e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup: float = Field(default=0.05, ge=0.0, lt=1.0)


class TokenKDSpec(Section):
    """Supervised token-level KD (torchtune's KD recipe): ``(1 − kd_ratio) · CE + kd_ratio ·
    KL(teacher ‖ student)`` on the training sequences (torchtune's default ratio is 0.5; 1 is pure
    KD, GKD's supervised baseline). ``top_k``: read the teacher from a top-k cache of its
    log-probabilities, built once (null: the full teacher distribution, computed every step), with
    ``missing_mass`` ``other`` (one extra bucket) or ``renormalize``."""

    kd_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1, le=65_536)
    missing_mass: Literal["other", "renormalize"] = "other"


class SeqKDSpec(Section):
    """Sequence-level KD (Kim & Rush 2016): next-token CE on the teacher's completions of the
    training prompts, generated once — ``greedy`` (their beam-of-1 approximation of the mode) or
    sampled at ``temperature``."""

    greedy: bool = True
    temperature: float = Field(default=1.0, gt=0.0, le=100.0)


class GKDSpec(Section):
    """GKD (Agarwal et al. 2024) as TRL's GKDTrainer: with probability ``lmbda`` a batch is
    replaced by the student's own completions of its prompts (sampled at ``temperature``), and the
    loss is the generalized JSD with ``beta`` (0: forward KL, 1: reverse KL) on every token."""

    lmbda: float = Field(default=0.5, ge=0.0, le=1.0)
    beta: float = Field(default=0.5, ge=0.0, le=1.0)
    temperature: float = Field(default=1.0, gt=0.0, le=100.0)


class LMEvalSpec(Section):
    """Scores: held-out perplexity; the teacher's NLL per token of the student's completions of
    the held-out prompts, sampled at ``temperature`` with the seed ``seed``."""

    temperature: float = Field(default=1.0, gt=0.0, le=100.0)
    seed: Seed = 1234


class LMRecipe(Section):
    """A language-model distillation comparison: the corpus, the teacher and student GPTs, their
    budgets, each objective's settings and the methods to compare, and where and in what
    precision to train.

    ``device``: as the main recipe's — ``auto`` (CUDA when available, else the CPU), ``cpu`` or
    ``cuda`` (refused when no CUDA device is available). ``precision``: ``float32``, or
    ``bfloat16`` — every training forward pass (students, the teacher's targets, the top-k cache,
    the teacher's sequence-KD completions and the students' on-policy samples) runs under
    ``torch.autocast(device, torch.bfloat16)`` with float32 weights, gradients and optimizer
    state, and the losses are computed in float32; works on the CPU too. Evaluation (perplexity,
    the teacher's NLL of samples, the stored samples) stays float32.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    description: str = ""
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = "float32"
    data: LMData = Field(default_factory=LMData)
    teacher: GPTSpec = Field(default_factory=lambda: GPTSpec(layers=4, width=128, heads=4))
    student: GPTSpec = Field(default_factory=GPTSpec)
    teacher_train: LMTrainSpec = Field(default_factory=lambda: LMTrainSpec(epochs=8))
    train: LMTrainSpec = Field(default_factory=LMTrainSpec)
    token_kd: TokenKDSpec = Field(default_factory=TokenKDSpec)
    seq_kd: SeqKDSpec = Field(default_factory=SeqKDSpec)
    gkd: GKDSpec = Field(default_factory=GKDSpec)
    eval: LMEvalSpec = Field(default_factory=LMEvalSpec)
    methods: list[str] = Field(default_factory=lambda: list(METHODS), min_length=1)
    #: ``scratch``: every student starts from the same fresh initialization (the run's seed);
    #: ``ce``: every distilled student starts from the trained ``ce`` student and trains
    #: ``train.epochs`` more with its objective — the GKD paper's protocol (all methods start
    #: from the supervised fine-tuned student).
    student_init: Literal["scratch", "ce"] = "scratch"

    @model_validator(mode="after")
    def _consistent(self) -> LMRecipe:
        for name in self.methods:
            if name not in METHODS:
                from distill.errors import unknown_name_message

                raise ValueError(f"methods: {unknown_name_message('lm method', name, METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: a method is listed twice: {', '.join(self.methods)}")
        if self.student_init == "ce" and "ce" not in self.methods:
            raise ValueError(
                "student_init: 'ce' starts the students from the ce student; add ce to methods "
                "or set student_init=scratch"
            )
        for role, spec in (("teacher", self.teacher), ("student", self.student)):
            if spec.width % spec.heads:
                raise ValueError(
                    f"{role}.width ({spec.width}) must be a multiple of {role}.heads ({spec.heads})"
                )
        if self.data.held_out >= self.data.max_texts:
            raise ValueError(
                f"data.held_out ({self.data.held_out}) must be smaller than data.max_texts "
                f"({self.data.max_texts})"
            )
        if self.data.prompt_tokens >= self.data.length - 1:
            raise ValueError(
                f"data.prompt_tokens ({self.data.prompt_tokens}) must leave room to complete: "
                f"below data.length - 1 ({self.data.length - 1})"
            )
        if self.token_kd.top_k is not None and self.token_kd.top_k > self.data.vocab_size:
            raise ValueError(
                f"token_kd.top_k ({self.token_kd.top_k}) exceeds data.vocab_size ({self.data.vocab_size})"
            )
        return self


def load_lm_recipe(reference: str | None, overrides: list[str] | None = None) -> tuple[LMRecipe, Path]:
    """Read, override and validate a language-model recipe; returns it and its file."""
    return load_section_recipe(reference, overrides, BUILTIN_LM_RECIPES, "lm recipe", LMRecipe)

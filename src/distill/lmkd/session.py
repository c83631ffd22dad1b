"""One seed of a language-model distillation comparison as a run directory, resumable model by
model.

``DIR/seed-<seed>/`` holds ``recipe.json`` (the resolved recipe and seed), ``tokenizer.json`` (the
BPE tokenizer trained on the training glosses), ``metrics.jsonl`` (per model and epoch),
``teacher.safetensors`` and ``<method>.safetensors`` (each trained model), ``samples.json`` (a few
completions per model) and ``results.json`` (per model: held-out perplexity, the teacher's NLL of
its samples, parameters, seconds, tokens/s, and the device and precision it trained in). The
models train on the recipe's ``device`` (:func:`lm_device`) in its ``precision``; the weights are
stored from the CPU. The teacher is trained once and reused by every
student; with ``student_init: ce`` the ``ce`` student (trained first) is every distilled
student's start. A model whose weights and result are there is not trained again, so an
interrupted seed continues with the next model; a directory made by another recipe or seed is
refused instead of mixed. Where a seed runs is not part of its identity: an interrupted seed may
continue on another device (each model's result says where it trained).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from tokenizers import Tokenizer

from distill.assemble import select_device
from distill.errors import DataError, RecipeError, RunDirectoryError
from distill.files import atomic_write_bytes, atomic_write_json
from distill.lmkd.recipes import LMRecipe
from distill.lmkd.training import (
    Objective,
    TrainedLM,
    build_gpt,
    build_topk_cache,
    mixed_precision,
    student_training_set,
    train_lm,
)
from distill.report.study import claim_seed_directory, load_stored_weights, read_stored_object
from distill.text.gpt import GPT, count_parameters
from distill.text.lm_data import (
    Sequences,
    decode,
    encode,
    tokenizer_from_json,
    tokenizer_json,
    train_tokenizer,
)
from distill.text.lm_distill import complete, perplexity, seeded_generator, teacher_nll_of_samples

EpochLine = Callable[[str, dict[str, float]], None]
#: Where the glosses come from: ``source(path)`` → every gloss (tests inject a tiny corpus).
GlossSource = Callable[[Path | None], Sequence[str]]
TEACHER = "teacher"


def wordnet_glosses(path: Path | None) -> Sequence[str]:
    """Every WordNet gloss in the folder ``path`` (see :func:`distill.text.wordnet.load_glosses`)."""
    from distill.text.wordnet import load_glosses

    return load_glosses(path).texts


def definition(gloss: str) -> str:
    """A gloss without its quoted example sentences (the text before the first ``; "``)."""
    return gloss.split('; "')[0].strip().rstrip(";").strip()


@dataclass(frozen=True)
class Corpus:
    tokenizer: Tokenizer
    train: Sequences
    held_out: Sequences


def corpus_texts(recipe: LMRecipe, source: GlossSource = wordnet_glosses) -> tuple[list[str], list[str]]:
    """The (training, held-out) glosses of ``recipe``: the same for every seed."""
    data = recipe.data
    glosses = [gloss if data.examples else definition(gloss) for gloss in source(data.path)]
    glosses = [gloss for gloss in glosses if gloss]
    if len(glosses) <= data.held_out:
        raise DataError(
            f"the corpus holds {len(glosses)} non-empty glosses; data.held_out ({data.held_out}) "
            "needs more: lower it or point data.path at a larger WordNet"
        )
    order = list(range(len(glosses)))
    random.Random(data.split_seed).shuffle(order)
    chosen = [glosses[i] for i in order[: data.max_texts]]
    train, held_out = chosen[data.held_out :], chosen[: data.held_out]
    return train, held_out


def prepare_corpus(recipe: LMRecipe, directory: Path, texts: tuple[list[str], list[str]]) -> Corpus:
    """The tokenizer (read back from ``directory`` if it was trained there already, else trained
    on the training ``texts`` and stored) and the encoded training and held-out sequences."""
    train, held_out = texts
    stored = directory / "tokenizer.json"
    if stored.exists():
        try:
            tokenizer = tokenizer_from_json(stored.read_text())
        except (OSError, ValueError) as error:
            raise RunDirectoryError(
                f"{stored}: unreadable tokenizer ({error}); remove it to retrain"
            ) from None
    else:
        tokenizer = train_tokenizer(train, recipe.data.vocab_size)
        atomic_write_bytes(stored, tokenizer_json(tokenizer).encode())
    length, prompt = recipe.data.length, recipe.data.prompt_tokens
    return Corpus(
        tokenizer,
        Sequences(encode(tokenizer, train, length), prompt),
        Sequences(encode(tokenizer, held_out, length), prompt),
    )


def lm_device(recipe: LMRecipe) -> torch.device:
    """The device ``recipe`` trains on (``device``: ``auto``, ``cpu`` or ``cuda``); a
    :class:`~distill.errors.RecipeError` when CUDA is asked for and absent, or when ``bfloat16``
    is asked for on a GPU without bf16 support."""
    device = select_device(recipe.device)
    if device.type == "cuda" and recipe.precision == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise RecipeError(
            f"precision: 'bfloat16' needs a GPU with bf16 support; {torch.cuda.get_device_name(device)} "
            "has none: set precision=float32 or device=cpu"
        )
    return device


def device_label(device: torch.device) -> str:
    """``cpu``, or ``cuda`` with the GPU's name: what results and boards record."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def _recipe_payload(recipe: LMRecipe, seed: int) -> dict[str, Any]:
    """The seed directory's identity: the resolved recipe and seed, without the device (where a
    seed runs does not change what it is), and without ``precision`` when it is the default
    float32, so directories made before that field existed still resume."""
    payload = {**recipe.model_dump(mode="json", exclude={"device"}), "seed": seed}
    if payload["precision"] == "float32":
        del payload["precision"]
    return payload


def _model(recipe: LMRecipe, name: str, vocab_size: int, seed: int) -> GPT:
    spec = recipe.teacher if name == TEACHER else recipe.student
    return build_gpt(spec, vocab_size, recipe.data.length, seed)


def run_seed(
    recipe: LMRecipe,
    seed: int,
    directory: Path,
    on_epoch: EpochLine | None = None,
    source: GlossSource = wordnet_glosses,
) -> dict[str, Any]:
    """Train (or reuse) the teacher and every method of ``recipe`` for ``seed`` in ``directory``
    on the recipe's device and precision; returns the per-model results (teacher first)."""
    device = lm_device(recipe)  # a device or data problem stops the run before it writes anything
    texts = corpus_texts(recipe, source)
    claim_seed_directory(directory, _recipe_payload(recipe, seed), "language-model", refuse_foreign=True)
    corpus = prepare_corpus(recipe, directory, texts)
    vocab_size = corpus.tokenizer.get_vocab_size()
    results = read_stored_object(directory / "results.json", "lm results")
    samples_path = directory / "samples.json"
    samples = read_stored_object(samples_path, "lm samples")
    order = [TEACHER, *sorted(recipe.methods, key=lambda name: name != "ce")]  # ce first: a start
    teacher: GPT | None = None
    for name in order:
        weights = directory / f"{name}.safetensors"
        if name in results and weights.exists():
            if name == TEACHER:
                teacher = load_stored_weights(_model(recipe, TEACHER, vocab_size, seed), weights).to(device)
            continue
        hook = None if on_epoch is None else (lambda record, name=name: on_epoch(name, record))
        preparation = 0.0  # building the top-k cache or the teacher's corpus counts as training time
        if name == TEACHER:
            model = _model(recipe, TEACHER, vocab_size, seed).to(device)
            trained = train_lm(
                model, corpus.train, recipe.teacher_train, Objective("ce", seed=seed), seed,
                held_out=corpus.held_out, on_epoch=hook, precision=recipe.precision,
            )  # fmt: skip
        else:
            assert teacher is not None
            started = time.perf_counter()
            cache = None
            with mixed_precision(device, recipe.precision):  # the teacher's passes train the student
                if name == "token-kd" and recipe.token_kd.top_k is not None:
                    cache = build_topk_cache(teacher, corpus.train, recipe.token_kd.top_k)
                train_set = student_training_set(name, teacher, corpus.train, recipe.seq_kd, seed)
            objective = Objective(name, teacher, recipe.token_kd, recipe.gkd, cache, seed)
            preparation = time.perf_counter() - started
            model = _model(recipe, name, vocab_size, seed)
            if recipe.student_init == "ce" and name != "ce":
                load_stored_weights(model, directory / "ce.safetensors").train()
            trained = train_lm(
                model.to(device), train_set, recipe.train, objective, seed,
                held_out=corpus.held_out, on_epoch=hook, precision=recipe.precision,
            )  # fmt: skip
        seconds = preparation + trained.seconds
        with (directory / "metrics.jsonl").open("a") as handle:
            for record in trained.history:
                handle.write(json.dumps({"model": name, **record}) + "\n")
        state = {key: value.detach().cpu() for key, value in trained.model.state_dict().items()}
        atomic_write_bytes(weights, save(state))
        scorer = trained.model if teacher is None else teacher
        results[name] = {
            **_score(recipe, seed, trained, scorer, corpus, seconds),
            "device": device_label(device),
            "precision": recipe.precision,
        }
        samples[name] = _samples(recipe, seed, trained.model, corpus)
        atomic_write_json(samples_path, samples)
        atomic_write_json(directory / "results.json", results)
        if name == TEACHER:
            teacher = trained.model.eval()
    return {name: results[name] for name in order if name in results}


def _score(
    recipe: LMRecipe, seed: int, trained: TrainedLM, teacher: GPT, corpus: Corpus, seconds: float
) -> dict[str, Any]:
    nll, scored = teacher_nll_of_samples(
        trained.model,
        teacher,
        corpus.held_out,
        temperature=recipe.eval.temperature,
        seed=recipe.eval.seed + seed,
    )
    return {
        "perplexity": perplexity(trained.model, corpus.held_out),
        "teacher_nll": nll,
        "scored_tokens": scored,
        "params": count_parameters(trained.model),
        "seconds": round(seconds, 2),
        "train_seconds": round(trained.seconds, 2),
        "tokens": trained.tokens,
        "tokens_per_second": trained.tokens / max(seconds, 1e-9),
        "on_policy_batches": trained.on_policy_batches,
    }


def _samples(recipe: LMRecipe, seed: int, model: GPT, corpus: Corpus, count: int = 5) -> list[str]:
    generator = seeded_generator(model, recipe.eval.seed + seed)
    prompts = corpus.held_out.prompts(slice(0, count))
    tokens = complete(
        model, prompts, recipe.data.length, temperature=recipe.eval.temperature, generator=generator
    )
    return decode(corpus.tokenizer, tokens)


def load_model(recipe: LMRecipe, directory: Path, name: str) -> GPT:
    """A trained model of a finished seed, on the CPU."""
    stored = directory / "tokenizer.json"
    tokenizer = tokenizer_from_json(stored.read_text())
    model = _model(recipe, name, tokenizer.get_vocab_size(), 0)
    return load_stored_weights(model, directory / f"{name}.safetensors")

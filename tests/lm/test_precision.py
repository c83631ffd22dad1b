"""Device and precision of language-model distillation: bf16 autocast on the CPU trains (finite
float32 losses that fall, float32 weights, forward passes really in bf16), every objective's
bf16 loss stays close to its float32 loss, sampling under autocast gives valid tokens, and the
run records where and how it trained. The recipe refuses a bad precision or device, and a
missing GPU, with a clear error."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from distill.errors import RecipeError, RunDirectoryError
from distill.lmkd.board import board_markdown, board_rows
from distill.lmkd.recipes import GKDSpec, LMRecipe, LMTrainSpec, TokenKDSpec, load_lm_recipe
from distill.lmkd.session import lm_device, run_seed
from distill.lmkd.training import Objective, build_topk_cache, mixed_precision, train_lm
from distill.text.lm_data import PAD_ID
from distill.text.lm_distill import complete, seeded_generator
from tests.lm.test_lm_distill import LENGTH, VOCAB, models, toy_sequences

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
CPU = torch.device("cpu")


def test_mixed_precision_is_bf16_autocast_or_nothing():
    with mixed_precision(CPU, "float32"):
        assert not torch.is_autocast_enabled("cpu")
    with mixed_precision(CPU, "bfloat16"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, got 'float16'"):
        mixed_precision(CPU, "float16")


def test_bf16_training_on_cpu_has_finite_falling_losses_float32_weights_and_bf16_forwards():
    _, student = models()
    seen: list[torch.dtype] = []
    student.blocks[0].mlp[0].register_forward_hook(lambda _module, _inputs, out: seen.append(out.dtype))
    spec = LMTrainSpec(epochs=8, batch_size=8, lr=3e-2, warmup=0.0)
    trained = train_lm(student, toy_sequences(48), spec, Objective("ce"), seed=0, precision="bfloat16")
    losses = [record["loss"] for record in trained.history]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0] - 0.3, losses  # learns the token frequencies: ln 30 ≈ 3.4 at start
    assert all(later <= earlier + 0.05 for earlier, later in itertools.pairwise(losses)), losses
    assert set(seen) == {torch.bfloat16}  # every training forward ran in bf16 …
    assert all(parameter.dtype == torch.float32 for parameter in student.parameters())  # … on fp32 weights
    _, fp32_student = models()
    reference = train_lm(fp32_student, toy_sequences(48), spec, Objective("ce"), seed=0)
    assert abs(reference.history[0]["loss"] - losses[0]) < 0.05  # the same run, within bf16 rounding


@pytest.mark.parametrize(
    ("method", "settings"),
    [
        ("ce", {}),
        ("token-kd", {}),
        ("token-kd", {"cache": 8}),
        ("token-kd", {"token_kd": TokenKDSpec(kd_ratio=0.5)}),
        ("gkd", {"gkd": GKDSpec(lmbda=0.0, beta=0.5)}),
        ("gkd", {"gkd": GKDSpec(lmbda=0.0, beta=1.0)}),
    ],
)
def test_every_objective_under_bf16_is_a_float32_loss_close_to_the_float32_one(method, settings):
    teacher, student = models()
    data = toy_sequences()
    if "cache" in settings:
        settings = {"cache": build_topk_cache(teacher, data, settings["cache"])}
    rows = torch.arange(8)
    batch = data.tokens[rows]
    exact, _ = Objective(method, teacher, **settings).loss(student, rows, batch, 2, LENGTH)
    with mixed_precision(CPU, "bfloat16"):
        mixed, count = Objective(method, teacher, **settings).loss(student, rows, batch, 2, LENGTH)
    assert mixed.dtype == torch.float32 and math.isfinite(float(mixed)) and count > 0
    assert float(mixed) == pytest.approx(float(exact), rel=0.03, abs=2e-3)
    mixed.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())


def test_on_policy_gkd_and_sampling_under_bf16_give_valid_tokens():
    teacher, student = models()
    data = toy_sequences()
    objective = Objective("gkd", teacher, gkd=GKDSpec(lmbda=1.0))
    with mixed_precision(CPU, "bfloat16"):
        loss, _ = objective.loss(student, torch.arange(8), data.tokens[:8], 2, LENGTH)
        tokens = complete(student, data.prompts(slice(0, 8)), LENGTH, generator=seeded_generator(student, 3))
    assert objective.on_policy_batches == 1 and math.isfinite(float(loss))
    assert tokens.shape == (8, LENGTH) and tokens.dtype == torch.int64
    assert int(tokens.min()) >= PAD_ID and int(tokens.max()) < VOCAB
    assert torch.equal(tokens[:, :2], data.prompts(slice(0, 8)))
    on_device = seeded_generator(student, 5)
    assert on_device.device == CPU  # the model's device: on the CPU, the same draws as before
    assert torch.equal(
        torch.rand(4, generator=on_device), torch.rand(4, generator=torch.Generator().manual_seed(5))
    )


def test_recipe_precision_and_device_are_validated_by_name():
    recipe = LMRecipe(name="x")
    assert (recipe.device, recipe.precision) == ("auto", "float32")
    with pytest.raises(RecipeError, match=r"precision.*'float32' or 'bfloat16'"):
        load_lm_recipe(None, ["precision=float16"])
    with pytest.raises(RecipeError, match=r"device.*'auto', 'cpu' or 'cuda'"):
        load_lm_recipe(None, ["device=tpu"])
    assert lm_device(LMRecipe(name="x", device="cpu", precision="bfloat16")) == CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_recipe_error():
    with pytest.raises(RecipeError, match="device: 'cuda' was requested but no CUDA device is available"):
        lm_device(LMRecipe(name="x", device="cuda"))


GLOSSES = [f"a {word} of the {other} kind" for word in ("dog", "cat", "tree", "leaf") for other in "abcdef"]


def tiny_recipe(**fields) -> LMRecipe:
    return LMRecipe.model_validate(
        {
            "name": "tiny",
            "data": {"max_texts": 24, "held_out": 4, "vocab_size": 64, "length": 10, "prompt_tokens": 2},
            "teacher": {"layers": 1, "width": 16, "heads": 2},
            "student": {"layers": 1, "width": 8, "heads": 2},
            "teacher_train": {"epochs": 1, "batch_size": 8},
            "train": {"epochs": 1, "batch_size": 8},
            "methods": ["ce", "gkd"],
            **fields,
        }
    )


def test_a_bf16_seed_records_its_device_and_precision(tmp_path: Path):
    recipe = tiny_recipe(device="cpu", precision="bfloat16")
    results = run_seed(recipe, 0, tmp_path / "seed-0", source=lambda _path: GLOSSES)
    for result in results.values():
        assert (result["device"], result["precision"]) == ("cpu", "bfloat16")
        assert math.isfinite(result["perplexity"]) and math.isfinite(result["teacher_nll"])
    stored = json.loads((tmp_path / "seed-0" / "recipe.json").read_text())
    assert stored["precision"] == "bfloat16" and "device" not in stored
    rows = board_rows({0: results})
    assert {(row["device"], row["precision"]) for row in rows} == {("cpu", "bfloat16")}
    assert "Trained on cpu in bfloat16 (bfloat16: autocast" in board_markdown("tiny", [0], rows)
    with pytest.raises(
        RunDirectoryError, match="different recipe"
    ):  # precision is part of the seed's identity
        run_seed(tiny_recipe(device="cpu"), 0, tmp_path / "seed-0", source=lambda _path: GLOSSES)


def test_float32_seeds_keep_their_old_identity_and_resume_on_any_device(tmp_path: Path):
    directory = tmp_path / "seed-0"
    first = run_seed(tiny_recipe(device="cpu"), 0, directory, source=lambda _path: GLOSSES)
    stored = json.loads((directory / "recipe.json").read_text())
    assert "precision" not in stored and "device" not in stored  # as directories made before them
    weights = (directory / "gkd.safetensors").read_bytes()
    again = run_seed(tiny_recipe(device="auto"), 0, directory, source=lambda _path: GLOSSES)
    assert again == first and (directory / "gkd.safetensors").read_bytes() == weights
    old = {
        name: {k: v for k, v in row.items() if k not in ("device", "precision")}
        for name, row in first.items()
    }
    assert {(row["device"], row["precision"]) for row in board_rows({0: old})} == {("cpu", "float32")}

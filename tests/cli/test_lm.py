"""`distill lm` end to end at a toy budget on a tiny generated WordNet-format corpus (no
/usr/share/wordnet needed): the teacher and the four students over two seeds, the board and its
plot; a re-run reuses everything, an interrupted seed resumes with the missing model only, another
recipe is refused, bad input is a clear error with exit status 2."""

from __future__ import annotations

import json
import random

import pytest
import torch

from distill.cli import main

WORDS = [
    *("a", "the", "small", "large", "animal", "plant", "with", "without", "of", "or", "and"),
    *("used", "for", "having", "kept", "domestic", "wild", "fast", "slow", "move", "run", "act"),
    *("process", "state", "quality", "water", "food", "tree", "leaf", "color", "red", "person"),
]


def write_corpus(folder, glosses_per_part: int = 30) -> None:
    """WordNet ``data.<pos>`` files of generated glosses, in the database's line format."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for number, (part, letter) in enumerate([("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")]):
        lines = ["  1 This software and database is being provided to you, the LICENSEE, by  "]
        for index in range(glosses_per_part):
            gloss = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
            offset = 1000 + 100 * index
            lexfile = (3, 29, 0, 2)[number]
            lines.append(
                f'{offset:08d} {lexfile:02d} {letter} 01 word{index} 0 000 | {gloss}; "an example"  '
            )
        (folder / f"data.{part}").write_text("\n".join(lines) + "\n")


def toy(corpus) -> list[str]:
    return [
        "--set", f"data.path={corpus}", "--set", "data.max_texts=100", "--set", "data.held_out=12",
        "--set", "data.vocab_size=80", "--set", "data.length=12", "--set", "data.prompt_tokens=2",
        "--set", "teacher={layers: 1, width: 16, heads: 2}",
        "--set", "student={layers: 1, width: 8, heads: 2}", "--set", "teacher_train.epochs=1",
        "--set", "train.batch_size=16", "--set", "teacher_train.batch_size=16",
    ]  # fmt: skip


@pytest.mark.slow
def test_lm_board_over_two_seeds_reuse_and_resume(tmp_path, capsys):
    corpus, out = tmp_path / "wordnet", tmp_path / "board"
    write_corpus(corpus)
    argv = ["lm", "--epochs", "1", "--seeds", "2", "--output-dir", str(out), *toy(corpus)]
    assert main(argv) == 0
    board = json.loads((out / "board.json").read_text())
    assert [row["method"] for row in board["rows"]] == ["teacher", "ce", "token-kd", "seq-kd", "gkd"]
    for row in board["rows"]:
        assert row["perplexity"] > 1 and row["teacher_nll"] > 0 and row["tokens_per_second"] > 0
        assert len(row["per_seed_perplexity"]) == 2
    assert (out / "perplexity-vs-teacher-nll.png").read_bytes()[:4] == b"\x89PNG"
    seed = out / "seed-0"
    for name in ("tokenizer.json", "teacher.safetensors", "gkd.safetensors", "samples.json", "metrics.jsonl"):
        assert (seed / name).is_file()
    assert "| gkd |" in capsys.readouterr().out

    teacher = (seed / "teacher.safetensors").read_bytes()
    student = (seed / "ce.safetensors").read_bytes()
    assert main(argv) == 0  # everything reused
    assert (seed / "ce.safetensors").read_bytes() == student

    results = json.loads((seed / "results.json").read_text())  # as if interrupted during gkd
    del results["gkd"]
    (seed / "results.json").write_text(json.dumps(results))
    (seed / "gkd.safetensors").unlink()
    lines = len((seed / "metrics.jsonl").read_text().splitlines())
    assert main(argv) == 0
    assert (seed / "teacher.safetensors").read_bytes() == teacher  # the teacher is not trained again
    assert (seed / "ce.safetensors").read_bytes() == student
    assert (seed / "gkd.safetensors").is_file()
    new = [json.loads(line)["model"] for line in (seed / "metrics.jsonl").read_text().splitlines()[lines:]]
    assert new == ["gkd"]

    assert main([*argv, "--set", "gkd.beta=0.9"]) == 2  # another recipe in the same folder
    assert "holds a language-model run of a different recipe" in capsys.readouterr().err
    (seed / "results.json").write_text("{truncated")
    assert main(argv) == 2
    assert "corrupt lm results" in capsys.readouterr().err


@pytest.mark.slow
def test_lm_top_k_cache_and_single_method(tmp_path):
    corpus, out = tmp_path / "wordnet", tmp_path / "topk"
    write_corpus(corpus)
    extra = ["--set", "token_kd.top_k=8", "--set", "token_kd.missing_mass=renormalize", "--quiet"]
    extra += ["--set", "student_init=scratch"]
    argv = ["lm", "--methods", "token-kd", "--epochs", "1", "--output-dir", str(out), *toy(corpus), *extra]
    assert main(argv) == 0
    rows = json.loads((out / "board.json").read_text())["rows"]
    assert [row["method"] for row in rows] == ["teacher", "token-kd"]


def test_lm_bad_inputs_are_clear_errors(tmp_path, capsys):
    out = str(tmp_path / "x")
    corpus = tmp_path / "wordnet"
    write_corpus(corpus, glosses_per_part=3)
    cases = [
        (["--methods", "ce,telepathy"], "unknown lm method 'telepathy'"),
        (["--set", "student.width=10", "--set", "student.heads=4"], "multiple of student.heads"),
        (["--set", "data.prompt_tokens=40", "--set", "data.length=20"], "data.prompt_tokens"),
        (["--set", "token_kd.top_k=5000"], "exceeds data.vocab_size"),
        (["--set", "gkd.beta=1.5"], "gkd.beta"),
        (["--set", "gkd.lmbda=-0.1"], "gkd.lmbda"),
        (
            ["--set", "precision=float16"],
            "precision=float16: must be one of 'float32' or 'bfloat16', got 'float16'",
        ),
        (["--set", "device=tpu"], "device=tpu: must be one of 'auto', 'cpu' or 'cuda', got 'tpu'"),
        (["--seeds", "0"], "--seeds must be a positive integer"),
        (["--methods", "gkd"], "set student_init=scratch"),
        (["nope"], "quickstart"),
        (["--set", f"data.path={tmp_path / 'missing'}"], "does not exist"),
        (["--set", f"data.path={corpus}", "--set", "data.held_out=20"], "data.held_out"),
    ]
    for extra, message in cases:
        assert main(["lm", "--output-dir", out, *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_lm_on_cuda_without_a_gpu_exits_2_before_writing(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["lm", "--output-dir", str(out), "--set", "device=cuda"]) == 2
    assert "device: 'cuda' was requested but no CUDA device is available" in capsys.readouterr().err
    assert not out.exists()


def test_lm_in_bfloat16_on_the_cpu_records_it(tmp_path, capsys):
    corpus, out = tmp_path / "wordnet", tmp_path / "bf16"
    write_corpus(corpus)
    extra = ["--set", "precision=bfloat16", "--set", "device=cpu", "--set", "student_init=scratch"]
    argv = ["lm", "--methods", "gkd", "--epochs", "1", "--output-dir", str(out), *toy(corpus), *extra]
    assert main(argv) == 0
    assert "cpu, bfloat16 →" in capsys.readouterr().out
    rows = json.loads((out / "board.json").read_text())["rows"]
    assert [(row["method"], row["device"], row["precision"]) for row in rows] == [
        ("teacher", "cpu", "bfloat16"),
        ("gkd", "cpu", "bfloat16"),
    ]
    assert all(row["perplexity"] > 1 and row["teacher_nll"] > 0 for row in rows)
    assert "Trained on cpu in bfloat16" in (out / "board.md").read_text()


def test_lm_refuses_a_foreign_folder(tmp_path, capsys):
    corpus, out = tmp_path / "wordnet", tmp_path / "busy"
    write_corpus(corpus)
    (out / "seed-0").mkdir(parents=True)
    (out / "seed-0" / "notes.txt").write_text("mine")
    assert main(["lm", "--output-dir", str(out), *toy(corpus)]) == 2
    assert "holds no recipe.json" in capsys.readouterr().err


def test_lm_interrupted_hint_says_how_to_continue():
    from distill.cli import interrupted_hint

    hint = interrupted_hint("lm", ["lm", "--seeds", "3"])
    assert "`distill lm --seeds 3`" in hint and "finished models are reused" in hint

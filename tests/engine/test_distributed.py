"""Data-parallel training: sharding, the process-group helpers, and real 2-process torchrun runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from distill.cli import main
from distill.data import load_data
from distill.data.bundle import Split
from distill.data.loader import shard_permutation, train_batches
from distill.data.sources import SyntheticSpec
from distill.engine import Trainer, TrainSpec, distributed
from distill.engine.trainer import steps_per_epoch
from distill.errors import RunDirectoryError
from distill.methods.scratch import Scratch
from distill.models import build_model
from distill.models.mlp import MLPSpec
from distill.report.rundir import RunDirectory
from tests.conftest import tiny_recipe

# ---------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_every_sample_exactly_once_when_the_data_divides(world):
    order = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    shards = [shard_permutation(order, rank, world) for rank in range(world)]
    assert len({len(shard) for shard in shards}) == 1
    assert sorted(torch.cat(shards).tolist()) == list(range(24))
    assert torch.equal(shards[0], order[::world])


def test_uneven_shards_are_padded_by_wrapping_to_equal_length():
    order = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    shards = [shard_permutation(order, rank, 4) for rank in range(4)]
    assert [len(shard) for shard in shards] == [3, 3, 3, 3]
    seen = torch.cat(shards).tolist()
    assert set(seen) == set(range(10))
    assert sorted(seen) == sorted(order.tolist() + order[:2].tolist())  # the first two repeat
    tiny = [shard_permutation(order[:2], rank, 5) for rank in range(5)]  # fewer samples than ranks
    assert [len(shard) for shard in tiny] == [1] * 5
    with pytest.raises(ValueError, match="outside a world"):
        shard_permutation(order, 4, 4)


@pytest.mark.parametrize(("samples", "batch", "world"), [(10, 2, 3), (600, 64, 2), (7, 8, 2), (64, 64, 1)])
def test_every_rank_takes_the_same_number_of_steps(samples, batch, world):
    split = Split(torch.randn(samples, 3), torch.arange(samples) % 2)
    counts = []
    for rank in range(world):
        generator = torch.Generator().manual_seed(5)  # the same permutation on every rank
        counts.append(
            sum(1 for _ in train_batches(split, batch, generator, torch.device("cpu"), rank, world))
        )
    assert counts == [steps_per_epoch(samples, batch, world)] * world


def test_one_process_walks_the_whole_seeded_permutation_in_order():
    split = Split(torch.randn(50, 3), torch.arange(50) % 5)
    batches = train_batches(split, 16, torch.Generator().manual_seed(9), torch.device("cpu"))
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(9)).split(16)
    for (inputs, _, indices), chunk in zip(batches, expected, strict=True):
        assert torch.equal(indices, chunk) and torch.equal(inputs, split.inputs[chunk])


# ---------------------------------------------------------------------------- helpers


def test_detect_launch_reads_torchrun_environment():
    assert distributed.detect_launch({}) is None
    assert distributed.detect_launch({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}) is None
    launch = distributed.detect_launch({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert launch == distributed.Launch(world_size=4, rank=3, local_rank=1)


def test_helpers_are_identities_in_a_single_process():
    assert not distributed.is_initialized()
    assert (distributed.world_size(), distributed.rank(), distributed.is_main_process()) == (1, 0, True)
    values = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_mean(values) is values
    assert distributed.all_reduce_max(1.5, torch.device("cpu")) == 1.5
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    distributed.barrier()
    assert distributed.on_main_process(lambda: 7) == 7
    assert distributed.main_process_first(lambda: 8) == 8
    with distributed.process_group(torch.device("cpu")) as device:
        assert device == torch.device("cpu") and not distributed.is_initialized()


def test_other_ranks_never_write_the_run_directory(tmp_path, monkeypatch):
    run = RunDirectory(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    assert not distributed.is_main_process()
    run.append_metrics({"model": "m", "epoch": 1})
    run.keep_metrics_until("m", 0)
    run.write_result("m", {})
    run.write_summary({})
    assert list(tmp_path.iterdir()) == []


@contextmanager
def one_process_group() -> Iterator[None]:
    """A real gloo process group of one process, so the data-parallel code paths run in-process."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def _fit(model_dir: Path | None = None) -> tuple[Trainer, list[dict]]:
    data = load_data(SyntheticSpec(num_samples=200, num_test=60, num_classes=3, shape=[6], noise=0.5))
    torch.manual_seed(0)
    model = build_model(MLPSpec(hidden=[16], dropout=0.1), data.input_shape, data.num_classes)
    spec = TrainSpec(epochs=3, batch_size=32, augment={"mixup_alpha": 0.5, "noise": 0.05})
    trainer = Trainer(
        Scratch(model), data, spec, seed=0, device=torch.device("cpu"), model_name="m", model_dir=model_dir
    )
    return trainer, trainer.fit().history


def test_the_ddp_wrapped_trainer_of_one_process_matches_the_plain_one(tmp_path):
    plain, expected = _fit()
    assert plain.training_module is plain.method
    with one_process_group():
        wrapped, history = _fit(tmp_path / "ddp")
        assert isinstance(wrapped.training_module, torch.nn.parallel.DistributedDataParallel)
        assert distributed.all_reduce_mean(torch.tensor([3.0])).item() == 3.0
        del wrapped  # release the DDP wrapper before its process group goes
    assert (tmp_path / "ddp" / "resume.pt").is_file()
    assert without_seconds(history) == without_seconds(expected)


def test_run_directory_checks_under_a_process_group(tmp_path):
    (tmp_path / "recipe.yaml").write_text("name: other\n")
    with one_process_group():
        with pytest.raises(RunDirectoryError, match="already holds a"):
            RunDirectory(tmp_path).open({"name": "tiny"}, resume=False)
        assert distributed.on_main_process(lambda: {"ok": 1}) == {"ok": 1}
        assert distributed.main_process_first(lambda: 2) == 2


# ---------------------------------------------------------------------------- torchrun end to end

# Runs `distill` like `python -m distill`, but also keeps every rank's epoch records in
# $RECORDS-<rank>.jsonl and, when $STOP_AT is "model:epoch", interrupts every rank right
# after that epoch (as Ctrl-C would) — a test-only hook that lives outside the package.
LAUNCHER = textwrap.dedent(
    """
    import json, os, sys
    from distill.cli import main
    from distill.report import rundir

    original = rundir.RunDirectory.append_metrics

    def append_metrics(self, record):
        original(self, record)
        with open(f"{os.environ['RECORDS']}-{os.environ['RANK']}.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\\n")
        if f"{record['model']}:{record['epoch']}" == os.environ.get("STOP_AT"):
            raise KeyboardInterrupt

    rundir.RunDirectory.append_metrics = append_metrics
    raise SystemExit(main(sys.argv[1:]))
    """
)
MODELS = ("teacher", "scratch", "kd", "kd-cached")


def torchrun(
    *args: object, env: dict[str, str] | None = None, processes: int = 2
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, env=environment, timeout=240, check=False
    )


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory):
    """A finished 2-process run of a tiny recipe whose last student reads a teacher cache."""
    import yaml

    folder = tmp_path_factory.mktemp("ddp")
    recipe = tiny_recipe()
    cached = {"precision": "float32", "directory": str(folder / "teacher-cache")}
    recipe["students"].append(dict(recipe["students"][1], name="kd-cached", teacher_cache=cached))
    recipe_path = folder / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    completed = torchrun("-m", "distill", "run", recipe_path, "--output-dir", folder / "run", "--quiet")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return recipe_path, folder / "run", folder, completed


@pytest.mark.slow
def test_torchrun_writes_one_complete_run_directory(ddp_reference):
    _, run, folder, completed = ddp_reference
    assert completed.stdout.count("run directory:") == 1  # rank 1 prints nothing
    for name in ("recipe.yaml", "metrics.jsonl", "summary.json", "curves.png"):
        assert (run / name).is_file(), name
    assert [(r["model"], r["epoch"]) for r in records(run / "metrics.jsonl")] == [
        (model, epoch) for model in MODELS for epoch in (1, 2, 3)
    ]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert [row["name"] for row in summary["results"]] == list(MODELS)
    for model in MODELS:
        assert (run / model / "last.safetensors").is_file() and (run / model / "result.json").is_file()
        assert not (run / model / "resume.pt").exists()
    (cache,) = (folder / "teacher-cache").iterdir()  # filled once, by rank 0, for every epoch's draw
    assert sorted(json.loads((cache / "meta.json").read_text())["checksums"]) == ["0", "1", "2"]


@pytest.mark.slow
def test_interrupted_then_resumed_torchrun_run_matches_the_uninterrupted_one(ddp_reference, tmp_path, capsys):
    recipe, reference, _, _ = ddp_reference
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    run = tmp_path / "run"
    env = {"RECORDS": str(tmp_path / "records"), "STOP_AT": "kd:2"}
    interrupted = torchrun(launcher, "run", recipe, "--output-dir", run, "--quiet", env=env)
    assert interrupted.returncode != 0 and not (run / "summary.json").exists()
    assert (run / "kd" / "resume.pt").is_file() and (run / "scratch" / "result.json").is_file()

    # the shards and the schedule depend on the number of processes: one process must refuse
    assert main(["run", str(recipe), "--output-dir", str(run), "--resume", "--quiet"]) == 2
    assert "written by a run on 2 process(es)" in capsys.readouterr().err

    env["STOP_AT"] = ""
    resumed = torchrun(launcher, "run", recipe, "--output-dir", run, "--resume", "--quiet", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert without_seconds(records(run / "metrics.jsonl")) == without_seconds(
        records(reference / "metrics.jsonl")
    )
    rows = lambda path: [(r["name"], r["test_accuracy"], r["val_accuracy"]) for r in path["results"]]  # noqa: E731
    summaries = [json.loads((path / "summary.json").read_text()) for path in (run, reference)]
    assert rows(summaries[0]) == rows(summaries[1])
    # both ranks computed identical records, epoch by epoch (seconds included)
    rank0, rank1 = records(tmp_path / "records-0.jsonl"), records(tmp_path / "records-1.jsonl")
    assert rank0 == rank1 and len(rank0) == 3 + 3 + 2 + 1 + 3  # interrupted in kd epoch 2, resumed


@pytest.mark.slow
def test_torchrun_refuses_to_overwrite_a_finished_run_on_every_rank(ddp_reference):
    recipe, run, _, _ = ddp_reference
    before = (run / "summary.json").read_bytes()
    refused = torchrun("-m", "distill", "run", recipe, "--output-dir", run, "--quiet")
    assert refused.returncode != 0
    # rank 0's decision reaches both ranks (both exit 2); only rank 0 prints it
    assert refused.stderr.count("already holds a finished run") == 1
    assert (run / "summary.json").read_bytes() == before


@pytest.mark.slow
def test_mirror_sync_of_degree_one_every_step_is_gradient_averaging(tmp_path):
    """Local SGD that averages the weights after every plain-SGD step (``sync.rule: mirror``,
    degree 1, period 1) takes the same steps as DDP's gradient averaging, in 2 real processes;
    a degree above 1 aggregates differently."""
    import yaml
    from safetensors.torch import load_file

    base = tiny_recipe(teacher=None, students=[{"name": "scratch", "model": {"name": "mlp", "hidden": [32]}}])
    base["train"] = {
        "epochs": 2,
        "batch_size": 64,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0},
    }
    weights = {}
    for label, sync in [
        ("ddp", {"rule": "gradients"}),
        ("mirror", {"rule": "mirror", "degree": 1.0, "period": 1}),
        ("power", {"rule": "mirror", "degree": 3.0, "period": 2}),
    ]:
        recipe = dict(base, train=dict(base["train"], sync=sync))
        path = tmp_path / f"{label}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        completed = torchrun("-m", "distill", "run", path, "--output-dir", tmp_path / label, "--quiet")
        assert completed.returncode == 0, completed.stderr[-3000:]
        weights[label] = load_file(str(tmp_path / label / "scratch" / "last.safetensors"))
    for key, value in weights["ddp"].items():
        assert torch.allclose(weights["mirror"][key], value, atol=1e-5), key
    assert any(
        not torch.allclose(weights["power"][key], value, atol=1e-3) for key, value in weights["ddp"].items()
    )


@pytest.mark.slow
def test_bml_sync_trains_like_the_all_reduce_in_four_processes(tmp_path):
    """``sync.rule: bml`` on BCube(2,1) (4 real processes) gives the metrics and weights of
    PyTorch's all-reduce; a world size that is no BCube is refused with the sizes that fit."""
    import yaml
    from safetensors.torch import load_file

    base = tiny_recipe(teacher=None, students=[{"name": "scratch", "model": {"name": "mlp", "hidden": [32]}}])
    base["train"] = {"epochs": 2, "batch_size": 32}
    weights, metrics = {}, {}
    for label, sync in [("allreduce", {"rule": "gradients"}), ("bml", {"rule": "bml", "ports": 2})]:
        path = tmp_path / f"{label}.yaml"
        path.write_text(yaml.safe_dump(dict(base, train=dict(base["train"], sync=sync))))
        completed = torchrun(
            "-m", "distill", "run", path, "--output-dir", tmp_path / label, "--quiet", processes=4
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        weights[label] = load_file(str(tmp_path / label / "scratch" / "last.safetensors"))
        metrics[label] = [
            {key: value for key, value in record.items() if "second" not in key and key != "time"}
            for record in records(tmp_path / label / "metrics.jsonl")
        ]
    for key, value in weights["allreduce"].items():
        torch.testing.assert_close(weights["bml"][key], value, rtol=1e-5, atol=1e-6)
    assert len(metrics["bml"]) == len(metrics["allreduce"]) > 0
    for ours, theirs in zip(metrics["bml"], metrics["allreduce"], strict=True):
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            if isinstance(value, float):
                assert ours[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
            else:
                assert ours[key] == value, key

    path = tmp_path / "bml.yaml"
    refused = torchrun("-m", "distill", "run", path, "--output-dir", tmp_path / "two", "--quiet")
    assert refused.returncode != 0  # torchrun exits 1 when its ranks exit 2
    assert "exitcode  : 2" in refused.stderr
    assert "train.sync: BML on BCube(2, k) needs 2^(k+1) processes with k ≥ 1 (4, 8, 16, 32, …)" in (
        refused.stderr
    )
    assert "this run has 2" in refused.stderr

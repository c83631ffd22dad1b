"""Two real processes sharing one teacher-output cache: the directory lock serialises creating and
filling it, and a draw one process stored is not computed again by the other."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import torch

from distill.data import AugmentSpec, draw_plan, load_data
from distill.data.sources import SyntheticSpec
from distill.engine.cache import CacheKey, TeacherOutputCache, weights_fingerprint
from distill.models import build_model
from distill.models.cnn import CNN1dSpec

AUGMENT = AugmentSpec(shift=2, noise=0.1)


def _setup():
    data = load_data(SyntheticSpec(num_samples=300, num_test=20, num_classes=5, shape=[1, 24]))
    torch.manual_seed(0)
    teacher = build_model(CNN1dSpec(channels=[8, 8]), data.input_shape, data.num_classes).eval()
    key = CacheKey(
        teacher=weights_fingerprint(teacher),
        data=data.fingerprint,
        augment=AUGMENT.model_dump_json(),
        seed=0,
        draws=3,
        temperature=2.0,
        top_k=None,
        precision="float32",
        num_samples=len(data.train),
        num_classes=data.num_classes,
    )
    return data, teacher, key


def _fill(root: str, draws: list[int], queue) -> None:
    torch.set_num_threads(1)
    data, teacher, key = _setup()
    cache = TeacherOutputCache(key, Path(root))
    for draw in draws:
        plan = draw_plan(AUGMENT, len(data.train), data.input_shape, seed=100 + draw)
        cache.fill(draw, teacher, data.train, plan, torch.device("cpu"), batch_size=32)
    queue.put(cache.fills)


def _run(root: Path, jobs: list[list[int]]) -> list[int]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_fill, args=(str(root), draws, queue)) for draws in jobs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    return sorted(queue.get(timeout=5) for _ in processes)


def test_processes_filling_one_cache_at_once_compute_each_draw_once(tmp_path):
    # both processes want every draw, in opposite orders: under the lock each draw is computed by
    # exactly one of them, and the other finds it stored
    fills = _run(tmp_path, [[0, 1, 2], [2, 1, 0]])
    assert sum(fills) == 3
    data, teacher, key = _setup()
    shared = TeacherOutputCache(key, tmp_path)
    assert all(shared.is_filled(draw) for draw in range(3))
    alone = TeacherOutputCache(key, tmp_path / "alone")
    for draw in range(3):
        plan = draw_plan(AUGMENT, len(data.train), data.input_shape, seed=100 + draw)
        alone.fill(draw, teacher, data.train, plan, torch.device("cpu"), batch_size=32)
        np.testing.assert_allclose(
            shared.draw_outputs(draw, torch.device("cpu"))[0].numpy(),
            alone.draw_outputs(draw, torch.device("cpu"))[0].numpy(),
            rtol=1e-6,
        )


def test_a_draw_stored_by_another_process_since_opening_is_not_computed_again(tmp_path):
    data, teacher, key = _setup()
    mine = TeacherOutputCache(key, tmp_path)  # opened before the other process fills
    assert _run(tmp_path, [[0, 1]]) == [2]
    plan = draw_plan(AUGMENT, len(data.train), data.input_shape, seed=100)
    mine.fill(0, teacher, data.train, plan, torch.device("cpu"), batch_size=32)
    assert mine.fills == 0 and mine.is_filled(1) and not mine.is_filled(2)

"""How much accuracy a top-k teacher-output cache costs against full logits, and its bytes."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from distill.assemble import method_for
from distill.data import AugmentSpec, load_data
from distill.data.sources import SyntheticSpec
from distill.engine.cache import CacheKey, TeacherOutputCache
from distill.engine.optim import OptimizerSpec
from distill.engine.trainer import Trainer, TrainSpec
from distill.methods.kd import KDSpec
from distill.methods.scratch import Scratch
from distill.models import build_model
from distill.models.mlp import MLPSpec

DEVICE = torch.device("cpu")
NUM_CLASSES = 100
TOP_K = 10


def compare_top_k(scale: str, temperature: float = 4.0) -> dict[str, Any]:
    """Train one student per seed with a full-logit cache and with a top-10 cache (100 classes).

    ``scale``: ``full`` (3 seeds, 30 epochs), ``quick`` (1 seed, 12 epochs) or ``tiny`` (tests).
    """
    tiny = scale == "tiny"
    data = load_data(
        SyntheticSpec(
            num_samples=600 if tiny else 6000,
            num_test=200 if tiny else 2000,
            num_classes=NUM_CLASSES,
            shape=[64],
            clusters_per_class=3,
            noise=1.0,
        )
    )
    epochs = {"tiny": 1, "quick": 12, "full": 30}[scale]
    seeds = [0, 1, 2] if scale == "full" else [0]
    train = TrainSpec(epochs=epochs, batch_size=128, optimizer=OptimizerSpec(lr=2e-3))
    torch.manual_seed(0)
    teacher = build_model(MLPSpec(hidden=[512, 512]), data.input_shape, NUM_CLASSES)
    teacher_fit = Trainer(Scratch(teacher), data, train, seed=0, device=DEVICE, model_name="teacher").fit()
    spec = KDSpec(temperature=temperature, kd_weight=0.9, ce_weight=0.1)
    variants = (
        ("full", None, "float32", "uniform"),
        (f"top{TOP_K}", TOP_K, "float16", "uniform"),
        (f"top{TOP_K}-bin", TOP_K, "float16", "bin"),
    )
    accuracies: dict[str, list[float]] = {label: [] for label, *_ in variants}
    bytes_per_sample: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="distill-topk-") as root:
        for seed in seeds:
            for label, top_k, precision, rest in variants:
                key = CacheKey.for_training(
                    teacher, data, AugmentSpec(), seed, epochs, spec.temperature, top_k, precision
                )
                cache = TeacherOutputCache(key, Path(root), rest=rest)
                if rest == "uniform":  # the bin variant stores the same bytes as top-k
                    bytes_per_sample[label] = cache.bytes_per_sample()
                torch.manual_seed(seed + 1)
                student = build_model(MLPSpec(hidden=[64]), data.input_shape, NUM_CLASSES)
                method = method_for(spec, student, teacher, data, cache)
                fit = Trainer(method, data, train, seed=seed, device=DEVICE, model_name=label).fit()
                accuracies[label].append(fit.reported["test_accuracy"])
    full, top, binned = accuracies["full"], accuracies[f"top{TOP_K}"], accuracies[f"top{TOP_K}-bin"]
    return {
        "task": f"synthetic 64-d, {NUM_CLASSES} classes, mlp 512-512 teacher → mlp 64 student",
        "epochs": epochs,
        "temperature": temperature,
        "seeds": seeds,
        "teacher_test_accuracy": teacher_fit.reported["test_accuracy"],
        "full_test_accuracy": full,
        f"top{TOP_K}_test_accuracy": top,
        "full_mean": statistics.fmean(full),
        f"top{TOP_K}_mean": statistics.fmean(top),
        "difference_points": 100 * (statistics.fmean(top) - statistics.fmean(full)),
        f"top{TOP_K}-bin_test_accuracy": binned,
        f"top{TOP_K}-bin_mean": statistics.fmean(binned),
        "bin_difference_points": 100 * (statistics.fmean(binned) - statistics.fmean(full)),
        "bytes_per_sample": bytes_per_sample,
        "bytes_ratio": bytes_per_sample[f"top{TOP_K}"] / bytes_per_sample["full"],
    }

"""The workloads ``distill bench`` times: data, teacher and student shapes per task."""

from __future__ import annotations

from dataclasses import dataclass

from distill.data import DataBundle, load_data
from distill.data.augment import AugmentSpec
from distill.data.sources import MNIST1DSpec, SyntheticSpec
from distill.models import ModelSpec
from distill.models.cnn import CNN1dSpec
from distill.models.mlp import MLPSpec
from distill.models.resnet import ResNetSpec


@dataclass(frozen=True)
class BenchTask:
    """One timing workload: a training split, a teacher, a student, a batch size."""

    name: str
    data: DataBundle
    teacher: ModelSpec
    student: ModelSpec
    batch_size: int
    augment: AugmentSpec
    #: (student layer, teacher layer) of a FitNet hint the bench also times, if any
    hint: tuple[str, str] | None = None


#: Number of image samples per epoch at each bench scale.
IMAGE_SAMPLES = {"tiny": 32, "quick": 64, "full": 1024}


def bench_tasks(scale: str) -> list[BenchTask]:
    """MNIST-1D with an MLP and a CNN student, and 32×32×3 images with resnet32x4 → resnet8x4.

    ``scale`` is ``full``, ``quick`` or ``tiny`` (for tests: numbers meaningless).
    """
    mnist1d = load_data(MNIST1DSpec(num_samples=600 if scale == "tiny" else 5000))
    signal_augment = AugmentSpec(mixup_alpha=1.0, shift=3, noise=0.05, draws=1)
    images = load_data(
        SyntheticSpec(
            num_samples=IMAGE_SAMPLES[scale],
            num_test=64,
            num_classes=100,
            shape=[3, 32, 32],
            val_fraction=0.0,
        )
    )
    teacher_1d = CNN1dSpec(channels=[64, 64, 64])
    return [
        BenchTask("mnist1d-mlp", mnist1d, teacher_1d, MLPSpec(hidden=[256, 256]), 128, signal_augment),
        BenchTask(
            "mnist1d-cnn",
            mnist1d,
            teacher_1d,
            CNN1dSpec(channels=[16, 16]),
            128,
            signal_augment,
            hint=("features.1", "features.1"),
        ),
        BenchTask(
            "images-resnet32x4-resnet8x4",
            images,
            # tiny (tests only) keeps the task but shrinks the networks
            ResNetSpec(depth=14 if scale == "tiny" else 32, width=1 if scale == "tiny" else 4),
            ResNetSpec(depth=8, width=1 if scale == "tiny" else 4),
            64,
            AugmentSpec(flip=True, crop_padding=4, draws=1),
            hint=("layer3", "layer3"),
        ),
    ]

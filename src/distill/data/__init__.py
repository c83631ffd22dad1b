"""Data: built-in and user data sources, splits, batch iteration and augmentation."""

from distill.data.augment import AugmentPlan, AugmentSpec, Mixing, apply_plan, draw_plan
from distill.data.bundle import DataBundle, Split
from distill.data.loader import epoch_seed, eval_batches, train_batches
from distill.data.sources import DATASETS, DataSpec, load_data

__all__ = [
    "DATASETS",
    "AugmentPlan",
    "AugmentSpec",
    "DataBundle",
    "DataSpec",
    "Mixing",
    "Split",
    "apply_plan",
    "draw_plan",
    "epoch_seed",
    "eval_batches",
    "load_data",
    "train_batches",
]

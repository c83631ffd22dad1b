"""Data: built-in and user data sources, splits, batch iteration and augmentation."""

from distill.data.augment import AugmentSpec, Mixing, augment_batch
from distill.data.bundle import DataBundle, Split
from distill.data.loader import epoch_seed, eval_batches, train_batches
from distill.data.sources import DATASETS, DataSpec, load_data

__all__ = [
    "DATASETS",
    "AugmentSpec",
    "DataBundle",
    "DataSpec",
    "Mixing",
    "Split",
    "augment_batch",
    "epoch_seed",
    "eval_batches",
    "load_data",
    "train_batches",
]

"""The engine: the training loop, evaluation, optimizers and checkpoints."""

from distill.engine.checkpoint import load_weights, read_metadata, save_checkpoint
from distill.engine.metrics import evaluate, expected_calibration_error
from distill.engine.trainer import FitResult, Trainer, TrainSpec

__all__ = [
    "FitResult",
    "TrainSpec",
    "Trainer",
    "evaluate",
    "expected_calibration_error",
    "load_weights",
    "read_metadata",
    "save_checkpoint",
]

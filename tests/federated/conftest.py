"""A federation small enough to run a few rounds in a test (each process builds its data once)."""

from __future__ import annotations

from typing import Any

import pytest

from distill.federated.spec import FedRecipe

TINY: dict[str, Any] = {
    "name": "fed-test",
    "seed": 0,
    "data": {"name": "mnist1d", "num_samples": 1200, "val_fraction": 0.15},
    "algorithm": "takfl",
    "rounds": 2,
    "public_samples": 200,
    "dirichlet_beta": 1.0,
    "prototypes": [
        {
            "name": "small",
            "model": {"name": "mlp", "hidden": [16]},
            "clients": 2,
            "fraction": 1.0,
            "data_share": 0.4,
        },
        {
            "name": "large",
            "model": {"name": "cnn1d", "channels": [16, 16]},
            "clients": 1,
            "fraction": 1.0,
            "data_share": 0.6,
        },
    ],
    "local": {"epochs": 1},
    "distill": {"epochs": 1, "lr": 0.001},
    "merge": {"lambdas": "heuristic", "candidates": 2},
    "timeout_s": 120,
}


def tiny_recipe(**changes: Any) -> FedRecipe:
    return FedRecipe.model_validate({**TINY, **changes})


@pytest.fixture
def recipe() -> FedRecipe:
    return tiny_recipe()

"""One student with a learned-loss method on a small MNIST-1D, built as the runner builds it."""

from __future__ import annotations

from typing import Any

import torch

from distill.config import validate_recipe
from distill.data import load_data
from distill.data.bundle import DataBundle
from distill.methods import MethodContext, build_method
from distill.methods.base import Method
from distill.methods.registry import Budget
from distill.models import build_model


def learned_loss_method(
    method: dict[str, Any], *, samples: int, hidden: int, epochs: int, budget: Budget
) -> tuple[Method, DataBundle]:
    recipe = validate_recipe(
        {
            "name": "learned-loss",
            "seed": 1,
            "data": {"name": "mnist1d", "num_samples": samples, "val_fraction": 0.2},
            "train": {"epochs": epochs, "batch_size": 32},
            "students": [{"name": "s", "model": {"name": "mlp", "hidden": [hidden]}, "method": method}],
        }
    )
    data = load_data(recipe.data)
    spec = recipe.students[0]

    def new_model(model_spec, owner, seed):
        torch.manual_seed(seed)
        return build_model(model_spec, data.input_shape, data.num_classes)

    context = MethodContext(
        student=new_model(spec.model, "student", 1),
        teacher=None,
        example_inputs=data.train.inputs[:8],
        num_classes=data.num_classes,
        build_model=new_model,
        student_spec=spec.model,
        seed=1,
        data=data,
        budget=budget,
    )
    return build_method(spec.method, context), data

"""Read intermediate features by module name through forward hooks, without editing the model.

Hooks are registered on the module *instances* of one model (never on their classes), so two
models of the same class can be tapped independently.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from distill.errors import DistillError, unknown_name_message


def module_names(model: nn.Module) -> list[str]:
    """Names of all submodules of ``model`` that a tap can name (the root excluded)."""
    return [name for name, _ in model.named_modules() if name]


class FeatureTaps:
    """Record the outputs of named submodules on every forward pass.

    Example::

        taps = FeatureTaps(model, ["layer2", "layer3"])
        logits = model(inputs)
        taps.features["layer2"]  # (batch, C, H, W) output of model.layer2
        taps.remove()
    """

    def __init__(self, model: nn.Module, names: Iterable[str], owner: str = "model") -> None:
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        available = module_names(model)
        for name in names:
            if name not in available:
                raise DistillError(f"{owner}: " + unknown_name_message("layer", name, available))
            module = model.get_submodule(name)
            self._handles.append(module.register_forward_hook(self._recorder(name)))

    def _recorder(self, name: str):
        def record(_module: nn.Module, _inputs, output) -> None:
            if isinstance(output, (tuple, list)):
                output = output[0]
            self.features[name] = output

        return record

    def remove(self) -> None:
        """Detach every hook; the model is left exactly as it was."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.features.clear()


def forward_completion_order(model: nn.Module, example_inputs: torch.Tensor) -> list[str]:
    """Names of ``model``'s submodules in the order their forward calls finish (one entry per
    call) on ``example_inputs``, in eval mode and without gradient."""
    order: list[str] = []
    handles = [
        module.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name))
        for name, module in model.named_modules()
        if name
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return order


def first_convolution(model: nn.Module, example_inputs: torch.Tensor) -> str | None:
    """The name of the first convolution ``model``'s forward pass calls on ``example_inputs``
    (its stem), or ``None`` when it calls none. Convolutions are leaves, so the first to finish
    is the first called."""
    convolutions = {
        name for name, module in model.named_modules() if isinstance(module, (nn.Conv1d, nn.Conv2d))
    }
    return next(
        (name for name in forward_completion_order(model, example_inputs) if name in convolutions), None
    )

"""Turn any backbone into a multi-branch network: shared low layers, m copies of the rest, a gate.

This is the architecture of ONE (Lan, Zhu & Gong, "Knowledge Distillation by On-the-Fly Native
Ensemble", NeurIPS 2018, Sec. 3): the layers up to a split point are shared, every branch owns
a copy of the layers after it, and a gate computed from the shared features weights the
branches' logits into the ensemble.

The backbone's own ``forward`` is never edited or re-implemented. The split point is a module
name; the *trunk* is every module whose forward has finished by the time the split module's has
(found by tracing one forward pass). Branch 0 is a complete backbone; branches 1..m−1 are
backbones built separately (so their heads start from different initializations) whose trunk
modules are replaced by branch 0's module objects — so every branch is itself a complete,
backbone-shaped network (its ``state_dict`` loads into the plain backbone: that is the deployable
student), and the trunk's parameters exist once.

In :meth:`MultiBranch.branch_logits` the trunk runs once: branch 0 runs normally while hooks
record the outputs of its top-level trunk modules, then branches 1..m−1 run with those modules
temporarily replaced by stand-ins that return the recorded outputs (gradients flow back through
them into the shared trunk).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from distill.errors import unknown_name_message
from distill.models.fields import validate_model_spec
from distill.models.registry import MODELS, ModelSpec
from distill.models.taps import forward_completion_order


def trunk_modules(model: nn.Module, split: str, example_inputs: torch.Tensor) -> list[str]:
    """The outermost modules of ``model`` that run up to and including module ``split``.

    Raises ``ValueError`` naming the problem when ``split`` is unknown, is never called, is
    called more than once, when a trunk module is also called after the split, or when nothing
    with parameters is left after it to branch.
    """
    names = [name for name, _ in model.named_modules() if name]
    if split not in names:
        raise ValueError(unknown_name_message("split layer", split, names))
    order = forward_completion_order(model, example_inputs)
    if split not in order:
        raise ValueError(f"split layer '{split}' is never called in the model's forward pass")
    if order.count(split) > 1:
        raise ValueError(f"split layer '{split}' is called more than once per forward pass")
    cut = order.index(split)
    before, after = set(order[: cut + 1]), set(order[cut + 1 :])
    # a stateless module used on both sides (e.g. one ReLU instance) simply stays in every branch
    reused = before & after
    stateful = sorted(name for name in reused if _has_state(model.get_submodule(name)))
    if stateful:
        raise ValueError(
            f"module(s) {stateful} run both before and after split layer '{split}'; they cannot be shared"
        )
    trunk = before - reused
    outermost = [name for name in names if name in trunk and _parent(name) not in trunk]
    head_parameters = sum(
        parameter.numel()
        for name, parameter in model.named_parameters()
        if not any(name.startswith(f"{shared}.") for shared in outermost)
    )
    if head_parameters == 0:
        raise ValueError(f"nothing with parameters runs after split layer '{split}'; choose an earlier one")
    return outermost


def model_stages(model: nn.Module, example_inputs: torch.Tensor, minimum: int = 3) -> list[str]:
    """The model's stages in forward order: its top-level children that hold parameters; while
    there are fewer than ``minimum``, the first one that has parametrized children is replaced
    by them (an MLP's ``body`` becomes its layers, a CNN's ``features`` its blocks)."""
    order = forward_completion_order(model, example_inputs)

    def parametrized_children(name: str) -> list[str]:
        module = model.get_submodule(name) if name else model
        children = [f"{name}.{child}" if name else child for child, _ in module.named_children()]
        called = [child for child in children if child in order and _has_state(model.get_submodule(child))]
        return sorted(called, key=order.index)

    stages = parametrized_children("")
    while len(stages) < minimum:
        expandable = next((stage for stage in stages if parametrized_children(stage)), None)
        if expandable is None:
            break
        position = stages.index(expandable)
        stages[position : position + 1] = parametrized_children(expandable)
    return stages


def default_split(model: nn.Module, example_inputs: torch.Tensor) -> str:
    """A split point for a model named without one: the branches get the model's last stage
    and its classifier (:func:`model_stages`), as ONE branches a CIFAR ResNet's last stage
    (split after ``layer2``); an MLP splits after its first hidden layer's activation. The
    split is the module that finishes last before the second-to-last stage starts.
    """
    stages = model_stages(model, example_inputs)
    if len(stages) < 2:
        raise ValueError("the model has fewer than 2 stages with parameters; name a split layer")
    order = forward_completion_order(model, example_inputs)
    branched = stages[-2]
    first_call = min(
        index for index, name in enumerate(order) if name == branched or name.startswith(f"{branched}.")
    )
    for candidate in reversed(order[:first_call]):
        try:
            trunk_modules(model, candidate, example_inputs)
        except ValueError:
            continue
        return candidate
    raise ValueError(f"no module runs before stage '{branched}' to split after; name a split layer")


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _replace(model: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at ``path`` in ``model``; returns what was there."""
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    previous = parent._modules[child]
    parent._modules[child] = module
    assert previous is not None
    return previous


class _Replay(nn.Module):
    """Stands in for a shared module in branches 1..m−1: returns branch 0's recorded outputs."""

    def __init__(self, outputs: list[Any]) -> None:
        super().__init__()
        self.outputs = outputs
        self.calls = 0

    def forward(self, *_args: Any, **_kwargs: Any) -> Any:
        output = self.outputs[self.calls]
        self.calls += 1
        return output


class BranchGate(nn.Module):
    """ONE's gate (official code): global average pool of the shared features → Linear(C, m) →
    BatchNorm1d(m) → ReLU → softmax over the m branches, per sample."""

    def __init__(self, channels: int, branches: int) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, branches)
        self.norm = nn.BatchNorm1d(branches)

    def forward(self, shared_features: torch.Tensor) -> torch.Tensor:
        pooled = shared_features.flatten(2).mean(dim=2) if shared_features.dim() > 2 else shared_features
        return F.softmax(F.relu(self.norm(self.linear(pooled.flatten(1)))), dim=1)


class MultiBranch(nn.Module):
    """``m`` branches sharing a trunk, and the gated ensemble of their logits.

    ``forward(x)`` returns the ensemble logits ``Σ_i g_i(x) · z_i(x)``; ``branches[i]`` is branch
    ``i`` as a plain backbone (evaluate or export it alone).

    Args:
        branches: m ≥ 2 freshly built backbones of the same architecture; the first one's trunk
            is kept and shared into the others.
        split: name of the last shared module.
        example_inputs: a small batch, to trace the forward pass and size the gate.
    """

    def __init__(self, branches: Sequence[nn.Module], split: str, example_inputs: torch.Tensor) -> None:
        super().__init__()
        if len(branches) < 2:
            raise ValueError(f"a multi-branch network needs at least 2 branches, got {len(branches)}")
        first = branches[0]
        self.split = split
        self.shared = trunk_modules(first, split, example_inputs)
        for branch in branches[1:]:
            for path in self.shared:
                _replace(branch, path, first.get_submodule(path))
        self.branches = nn.ModuleList(branches)
        self._recording = False
        self._recorded: dict[str, list[Any]] = {}
        self._split_output: torch.Tensor | None = None
        for path in self.shared:
            first.get_submodule(path).register_forward_hook(self._recorder(path))
        first.get_submodule(split).register_forward_hook(self._split_recorder)
        with torch.no_grad():
            was_training = first.training
            first.eval()
            self._recording = True
            first(example_inputs[:2])
            self._recording = False
            first.train(was_training)
        assert self._split_output is not None
        self.gate: BranchGate = BranchGate(self._split_output.shape[1], len(branches))
        self._split_output = None
        self._recorded = {}

    def _recorder(self, path: str):
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if self._recording:
                self._recorded.setdefault(path, []).append(output)

        return record

    def _split_recorder(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        if self._recording:
            self._split_output = output[0] if isinstance(output, (tuple, list)) else output

    @contextmanager
    def _replaying(self, branch: nn.Module) -> Iterator[None]:
        originals = {path: _replace(branch, path, _Replay(self._recorded[path])) for path in self.shared}
        try:
            yield
        finally:
            for path, module in originals.items():
                _replace(branch, path, module)

    def branch_logits(self, inputs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every branch's logits and the shared features at the split (the trunk runs once)."""
        self._recorded, self._split_output = {}, None
        self._recording = True
        try:
            logits = [self.branches[0](inputs)]
        finally:
            self._recording = False
        shared = self._split_output
        assert shared is not None
        for branch in self.branches[1:]:
            with self._replaying(branch):
                logits.append(branch(inputs))
        self._recorded, self._split_output = {}, None
        return logits, shared

    @staticmethod
    def ensemble(logits: Sequence[torch.Tensor], gates: torch.Tensor) -> torch.Tensor:
        """``Σ_i g_i · z_i`` with per-sample gate weights ``gates`` of shape (batch, m)."""
        return torch.einsum("bm,mbc->bc", gates, torch.stack(list(logits)))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits, shared = self.branch_logits(inputs)
        return self.ensemble(logits, self.gate(shared))


def build_branches(build: Any, branches: int, split: str, example_inputs: torch.Tensor) -> MultiBranch:
    """A :class:`MultiBranch` over ``branches`` backbones made by ``build(i)``."""
    return MultiBranch([build(index) for index in range(branches)], split, example_inputs)


class MultiBranchSpec(ModelSpec):
    """``multibranch``: ONE's gated multi-branch network over a ``backbone`` split after layer
    ``split`` (how a ONE ensemble checkpoint is rebuilt for ``distill eval``)."""

    name: Literal["multibranch"] = "multibranch"
    backbone: Any
    branches: int = Field(default=3, ge=2, le=64)
    split: str

    @field_validator("backbone")
    @classmethod
    def _backbone_model(cls, backbone: Any) -> ModelSpec:
        return validate_model_spec(backbone)


@MODELS.register_factory(
    "multibranch", "ONE's multi-branch network over a backbone (backbone, branches, split)"
)
def build_multibranch(spec: MultiBranchSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    from distill.models import build_model

    example = torch.zeros(2, *input_shape)
    return build_branches(
        lambda _index: build_model(spec.backbone, input_shape, num_classes),
        spec.branches,
        spec.split,
        example,
    )

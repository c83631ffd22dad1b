import pytest
import torch

from distill.engine.optim import OptimizerSpec, build_optimizer
from distill.methods.base import total_loss


def _step(spec: OptimizerSpec, steps: int = 5) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    optimizer = build_optimizer(spec, model.parameters())
    inputs, targets = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return optimizer, [parameter.detach().clone() for parameter in model.parameters()]


@pytest.mark.parametrize(
    "spec",
    [OptimizerSpec(), OptimizerSpec(name="sgd", lr=0.1, nesterov=True, weight_decay=1e-3)],
    ids=["adamw", "sgd-nesterov"],
)
def test_fused_kernels_take_the_same_steps_as_the_per_parameter_loop(spec):
    fused, fused_weights = _step(spec)
    looped, looped_weights = _step(spec.model_copy(update={"fused": False}))
    assert fused.defaults["fused"] is True
    assert not looped.defaults.get("fused")
    for one, other in zip(fused_weights, looped_weights, strict=True):
        torch.testing.assert_close(one, other, rtol=1e-5, atol=1e-6)


def test_parameters_without_a_fused_kernel_fall_back_to_the_loop():
    on_meta = [torch.nn.Parameter(torch.empty(3, 2, device="meta"))]
    assert not build_optimizer(OptimizerSpec(), on_meta).defaults.get("fused")


def test_total_loss_adds_the_terms_and_their_gradients():
    weight = torch.tensor([1.0, 2.0], requires_grad=True)
    single = {"ce": weight.sum()}
    assert total_loss(single) is single["ce"]  # one term: no extra kernel
    terms = {"kd": (weight**2).sum(), "ce": 3 * weight[0], "hint": weight[1]}
    total_loss(terms).backward()
    torch.testing.assert_close(weight.grad, torch.tensor([5.0, 5.0]))

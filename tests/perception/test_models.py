"""Collaborative BEV models: shapes, the DiscoGraph edge weights, who sees whom."""

from __future__ import annotations

import pytest
import torch

from distill.perception.models import (
    DECODER_KEYS,
    FUSED_KEY,
    BEVNet,
    EarlyFusionTeacher,
    IntermediateFusionStudent,
    LateFusion,
    PerceptionModel,
    PixelWeightedFusionSoftmax,
)
from distill.perception.warp import relative_transform

WIDTH = 4  # tiny nets: C = 16 at the collaboration layer


def scene(n: int, a: int, v: int, seed: int = 0, spread: float = 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random binary observations ``(N, A, 2, V, V)`` and the transforms of random nearby poses
    (raster cells of 1.5 units, agents within ``spread`` units: the views overlap)."""
    generator = torch.Generator().manual_seed(seed)
    observations = (torch.rand(n, a, 2, v, v, generator=generator) < 0.3).float()
    poses = torch.rand(n, a, 3, generator=generator) * 2 - 1
    poses[..., :2] *= spread
    transforms = relative_transform(poses[:, :, None], poses[:, None], v, 1.5)
    return observations, transforms


def identity_transforms(n: int, a: int) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(n, a, a, 2, 3).clone()


def all_models(width: int = WIDTH) -> dict[str, PerceptionModel]:
    return {
        "early": EarlyFusionTeacher(width=width, teacher_input="warped"),
        "discograph": IntermediateFusionStudent("discograph", width=width),
        "discograph_compressed": IntermediateFusionStudent("discograph", width=width, compress_channels=3),
        "mean": IntermediateFusionStudent("mean", width=width),
        "max": IntermediateFusionStudent("max", width=width),
        "none": IntermediateFusionStudent("none", width=width),
        "late": LateFusion(width=width),
        "late_max": LateFusion(width=width, merge="max"),
    }


@pytest.mark.parametrize(("side", "agents"), [(32, 3), (24, 2), (16, 3)])
def test_output_shapes(side: int, agents: int) -> None:
    observations, transforms = scene(2, agents, side)
    c = 4 * WIDTH
    expected = {
        FUSED_KEY: (2, agents, c, side // 4, side // 4),
        "dec1": (2, agents, c, side // 4, side // 4),
        "dec2": (2, agents, c // 2, side // 2, side // 2),
        "dec3": (2, agents, c // 4, side, side),
    }
    for name, model in all_models().items():
        out = model(observations, transforms)
        assert out.logits.shape == (2, agents, 1, side, side), name
        assert {key: tuple(value.shape) for key, value in out.maps.items()} == expected, name
        assert torch.isfinite(out.logits).all(), name
        if name.startswith("discograph"):
            assert out.edge_weights is not None
            assert out.edge_weights.shape == (2, agents, agents, 1, side // 4, side // 4)
        else:
            assert out.edge_weights is None, name


def test_bevnet_split_matches_forward() -> None:
    net = BEVNet(width=WIDTH).eval()
    x = torch.rand(3, 2, 16, 16)
    *skips, collab = net.encode(x)
    assert [tuple(t.shape) for t in (*skips, collab)] == [(3, 4, 16, 16), (3, 8, 8, 8), (3, 16, 4, 4)]
    logits, decoded = net.decode(collab, skips)
    assert [tuple(t.shape) for t in decoded] == [(3, 16, 4, 4), (3, 8, 8, 8), (3, 4, 16, 16)]
    torch.testing.assert_close(logits, net(x))
    assert list(net.run(x)[1]) == [FUSED_KEY, *DECODER_KEYS]
    with pytest.raises(ValueError, match="divisible by 4"):
        net.encode(torch.rand(1, 2, 18, 18))


def test_edge_weights_are_a_softmax_over_agents() -> None:
    torch.manual_seed(0)
    observations, transforms = scene(2, 3, 16, seed=1)
    model = IntermediateFusionStudent("discograph", width=WIDTH, edge_score_relu=False)
    assert model.edge is not None
    with torch.no_grad():  # a freshly initialized edge net scores almost flat: sharpen it
        model.edge.score[-1].weight.mul_(50.0)
    for train in (True, False):
        model.train(train)
        weights = model(observations, transforms).edge_weights
        assert weights is not None
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(dim=2), torch.ones(2, 3, 1, 4, 4))
        # not a constant: the edge net weighs agents differently at different pixels
        assert weights.std() > 1e-3


def test_identical_views_give_mean_like_symmetric_weights() -> None:
    """Identical observations, identity transforms: every pair ``[h_i, h_k]`` is the same, so
    every weight is ``1/A`` and DiscoGraph fuses exactly like the mean."""
    torch.manual_seed(0)
    one, _ = scene(2, 1, 16, seed=2)
    observations = one.expand(2, 3, 2, 16, 16).contiguous()
    transforms = identity_transforms(2, 3)
    disco = IntermediateFusionStudent("discograph", width=WIDTH, edge_score_relu=False).eval()
    mean = IntermediateFusionStudent("mean", width=WIDTH).eval()
    mean.net.load_state_dict(disco.net.state_dict())
    out = disco(observations, transforms)
    assert out.edge_weights is not None
    torch.testing.assert_close(out.edge_weights, torch.full_like(out.edge_weights, 1 / 3))
    torch.testing.assert_close(out.logits, mean(observations, transforms).logits)
    # and the ego's own map is then its fused map
    own = disco.net.encode(observations.flatten(0, 1))[-1].unflatten(0, (2, 3))
    torch.testing.assert_close(out.maps[FUSED_KEY], own)


def ego_gradient(
    model: PerceptionModel, observations: torch.Tensor, transforms: torch.Tensor
) -> torch.Tensor:
    """``d(Σ ego-0 logits)/d(observations)`` in eval mode: ``(N, A, 2, V, V)``."""
    model.eval()
    observations = observations.clone().requires_grad_(True)
    model(observations, transforms).logits[:, 0].sum().backward()
    assert observations.grad is not None
    return observations.grad


@pytest.mark.parametrize("name", ["early", "discograph", "discograph_compressed", "mean", "max", "late"])
def test_collaborating_egos_depend_on_neighbours(name: str) -> None:
    torch.manual_seed(0)
    observations, transforms = scene(1, 3, 16, seed=3)
    grad = ego_gradient(all_models()[name], observations, transforms)
    assert grad[:, 0].abs().sum() > 0
    assert grad[:, 1:].abs().sum() > 0, f"{name}: the ego ignores its neighbours"


def test_no_fusion_ego_ignores_neighbours() -> None:
    torch.manual_seed(0)
    observations, transforms = scene(1, 3, 16, seed=4)
    model = all_models()["none"]
    grad = ego_gradient(model, observations, transforms)
    assert grad[:, 0].abs().sum() > 0
    assert torch.equal(grad[:, 1:], torch.zeros_like(grad[:, 1:]))
    changed = observations.clone()
    changed[:, 1:] = 1 - changed[:, 1:]
    with torch.no_grad():
        torch.testing.assert_close(
            model(changed, transforms).logits[:, 0], model(observations, transforms).logits[:, 0]
        )


def test_early_fusion_input_is_the_max_over_agents() -> None:
    observations, _ = scene(2, 3, 16, seed=5)
    fused = EarlyFusionTeacher.fuse_observations(observations, identity_transforms(2, 3))
    torch.testing.assert_close(fused, observations.amax(dim=1, keepdim=True).expand_as(observations))


def test_the_rendered_teacher_reads_only_the_fused_observations() -> None:
    """The default teacher runs its net on ``fused_observations`` as given: the agents' own
    observations and the transforms only shape-check; without fused observations it refuses."""
    torch.manual_seed(0)
    observations, transforms = scene(2, 3, 16, seed=7)
    fused, _ = scene(2, 3, 16, seed=8)
    teacher = EarlyFusionTeacher(width=WIDTH).eval()
    with torch.no_grad():
        out = teacher(observations, transforms, fused)
        other = teacher(1 - observations, identity_transforms(2, 3), fused)
        direct, _ = teacher.net.run(fused.flatten(0, 1))
    torch.testing.assert_close(out.logits, other.logits)
    torch.testing.assert_close(out.logits, direct.unflatten(0, (2, 3)))
    with pytest.raises(ValueError, match="fused_observations"):
        teacher(observations, transforms)
    with pytest.raises(ValueError, match="fused_observations must have"):
        teacher(observations, transforms, fused[:, :2])
    with pytest.raises(ValueError, match="teacher_input"):
        EarlyFusionTeacher(teacher_input="exact")  # type: ignore[arg-type]


def test_late_fusion_merge() -> None:
    """Identity transforms: with the ego blind and a neighbour seeing everything, the ego takes
    the neighbour's probabilities; ``max`` takes the largest probability."""
    torch.manual_seed(0)
    observations, _ = scene(1, 2, 16, seed=6)
    observations[:, 0, 1] = 0.0
    observations[:, 1, 1] = 1.0
    transforms = identity_transforms(1, 2)
    late = LateFusion(width=WIDTH).eval()
    with torch.no_grad():
        own = torch.sigmoid(late.net(observations.flatten(0, 1))).unflatten(0, (1, 2))
        merged = torch.sigmoid(late(observations, transforms).logits)
        torch.testing.assert_close(merged[:, 0], own[:, 1], atol=1e-3, rtol=0)
        torch.testing.assert_close(merged[:, 1], own[:, 1], atol=1e-3, rtol=0)
        late.merge = "max"
        merged = torch.sigmoid(late(observations, transforms).logits)
        expected = own.amax(dim=1, keepdim=True).expand_as(own).clamp(1e-4, 1 - 1e-4)
        torch.testing.assert_close(merged, expected)


def test_edge_network_layout() -> None:
    """The official edge net: 1×1 convs 2C → 128 → 32 → 8 → 1 with BN + ReLU between."""
    edge = PixelWeightedFusionSoftmax(16)
    convs = [m for m in edge.score if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (32, 128, (1, 1)),
        (128, 32, (1, 1)),
        (32, 8, (1, 1)),
        (8, 1, (1, 1)),
    ]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in edge.score) == 3
    small = IntermediateFusionStudent("discograph", width=WIDTH, edge_widths=(8, 4))
    assert small.edge is not None
    assert [m.out_channels for m in small.edge.score if isinstance(m, torch.nn.Conv2d)] == [8, 4, 1]


def test_invalid_configurations() -> None:
    with pytest.raises(ValueError, match="fusion must be one of"):
        IntermediateFusionStudent("sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="communicates"):
        IntermediateFusionStudent("none", compress_channels=4)
    with pytest.raises(ValueError, match="compress_channels"):
        IntermediateFusionStudent("mean", width=WIDTH, compress_channels=17)
    with pytest.raises(ValueError, match="merge"):
        LateFusion(merge="mean")  # type: ignore[arg-type]
    model = IntermediateFusionStudent("mean", width=WIDTH)
    observations, transforms = scene(1, 3, 16)
    with pytest.raises(ValueError, match="transforms"):
        model(observations, transforms[:, :2])
    with pytest.raises(ValueError, match="channels"):
        model(observations[:, :, :1], transforms)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.zeros(1, 3, 2, 18, 18), transforms)

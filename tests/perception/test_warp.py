"""Warps between agents' frames: exact identity, consistency with the generator, composition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.perception.warp import relative_transform, warp_to_ego
from distill.perception.world import Scenes, WorldSpec, generate_scenes

FINE = WorldSpec(view_cells=64, view_scale=0.75, dropout=0.0, false_positives=0.0)


def normalized(world: torch.Tensor, pose: torch.Tensor, extent: float) -> torch.Tensor:
    """World points ``(…, 2)`` in the normalized raster coordinates ``(x_n, y_n)`` of ``pose``."""
    dx, dy = world[..., 0] - pose[..., 0], world[..., 1] - pose[..., 1]
    u = torch.cos(pose[..., 2]) * dx + torch.sin(pose[..., 2]) * dy
    v = -torch.sin(pose[..., 2]) * dx + torch.cos(pose[..., 2]) * dy
    return torch.stack([-v, -u], dim=-1) / (extent / 2)


def apply(theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return (theta[..., :2] @ points[..., None])[..., 0] + theta[..., 2]


def bodies(scenes: Scenes, spec: WorldSpec, radius: float) -> torch.Tensor:
    """``(N, A, A, V, V)``: cells of ``i``'s raster within ``radius`` of agent ``i`` or ``j``."""
    v, s = spec.view_cells, spec.view_scale
    offsets = (v / 2 - torch.arange(v) - 0.5) * s
    u, w = offsets[:, None], offsets[None, :]
    pose = scenes.poses.double()
    d = pose[:, None, :, :2] - pose[:, :, None, :2]  # [n, i, j] = p_j − p_i
    heading = pose[:, :, None, 2]
    u_j = (torch.cos(heading) * d[..., 0] + torch.sin(heading) * d[..., 1])[..., None, None]
    v_j = (-torch.sin(heading) * d[..., 0] + torch.cos(heading) * d[..., 1])[..., None, None]
    return ((u - u_j) ** 2 + (w - v_j) ** 2 <= radius**2) | (u**2 + w**2 <= radius**2)


def test_relative_transform_maps_world_points_between_frames():
    """``theta[i, j]`` takes a world point's coordinates in ``i``'s raster to its coordinates in ``j``'s."""
    generator = torch.Generator().manual_seed(0)
    pose_i = torch.rand(50, 3, generator=generator, dtype=torch.float64) * torch.tensor([90, 90, 7])
    pose_j = torch.rand(50, 3, generator=generator, dtype=torch.float64) * torch.tensor([90, 90, 7])
    points = torch.rand(50, 2, generator=generator, dtype=torch.float64) * 90
    theta = relative_transform(pose_i, pose_j, view_cells=32, view_scale=1.5)
    assert theta.shape == (50, 2, 3)
    torch.testing.assert_close(apply(theta, normalized(points, pose_i, 48)), normalized(points, pose_j, 48))
    identity = relative_transform(pose_i, pose_i, 32, 1.5)
    torch.testing.assert_close(identity, torch.eye(3, dtype=torch.float64)[:2].expand(50, 2, 3))


def test_relative_transform_golden_quarter_turn():
    """``j`` at ``i``'s position turned 90° left: what lies ahead of ``i`` lies to ``j``'s right."""
    pose_i = torch.tensor([10.0, 10.0, 0.0])
    pose_j = torch.tensor([10.0, 10.0, math.pi / 2])
    theta = relative_transform(pose_i, pose_j, 32, 1.5)
    ahead_of_i = torch.tensor([0.0, -1.0])  # top edge, middle column
    torch.testing.assert_close(apply(theta, ahead_of_i), torch.tensor([1.0, 0.0]))  # right edge of j
    # j 12 units ahead of i, same heading: i's centre is 12 units behind j (y_n = 12 / 24)
    theta = relative_transform(pose_i, torch.tensor([22.0, 10.0, 0.0]), 32, 1.5)
    torch.testing.assert_close(theta, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.5]]))


def test_identity_warp_is_exact():
    maps = torch.rand(2, 3, 4, 32, 32)
    theta = torch.eye(3)[:2].expand(2, 3, 3, 2, 3)
    warped = warp_to_ego(maps, theta)
    assert warped.shape == (2, 3, 3, 4, 32, 32)
    for i in range(3):
        for j in range(3):
            torch.testing.assert_close(warped[:, i, j], maps[:, j])


def test_warped_targets_match_the_receivers_own_targets():
    """Agent ``j``'s targets warped into ``i``'s frame agree with ``i``'s: exactly on cells away
    from object boundaries, and with a high IoU overall (boundaries differ by resampling)."""
    scenes = generate_scenes(FINE, 60, seed=3)
    warped = warp_to_ego(scenes.targets, scenes.transforms, mode="nearest")[:, :, :, 0] > 0.5
    covered = warp_to_ego(torch.ones_like(scenes.targets), scenes.transforms)[:, :, :, 0] > 0.999
    own = scenes.targets[:, :, 0]
    mine = (own > 0.5)[:, :, None].expand_as(warped)
    # j's own body is a target for i but not for j (and vice versa): leave both bodies out
    others = ~torch.eye(FINE.agents, dtype=torch.bool)[None, :, :, None, None]
    compared = covered & others & ~bodies(scenes, FINE, radius=4.0)
    assert compared.sum() > 100_000
    iou = (warped & mine & compared).sum() / ((warped | mine) & compared).sum()
    assert iou > 0.75
    # interior cells (their 3 × 3 neighbourhood agrees, not on the raster's edge) match exactly
    interior = F.max_pool2d(own, 3, 1, 1) == -F.max_pool2d(-own, 3, 1, 1)
    interior[..., [0, -1], :] = False
    interior[..., :, [0, -1]] = False
    inner = compared & interior[:, :, None]
    assert (inner & mine).sum() > 1000
    assert torch.equal(warped[inner], mine[inner])


def test_default_resolution_is_consistent_up_to_resampling():
    spec = WorldSpec(dropout=0.0, false_positives=0.0)
    scenes = generate_scenes(spec, 60, seed=4)
    warped = warp_to_ego(scenes.targets, scenes.transforms, mode="nearest")[:, :, :, 0] > 0.5
    covered = warp_to_ego(torch.ones_like(scenes.targets), scenes.transforms)[:, :, :, 0] > 0.999
    mine = (scenes.targets[:, :, 0] > 0.5)[:, :, None].expand_as(warped)
    others = ~torch.eye(spec.agents, dtype=torch.bool)[None, :, :, None, None]
    compared = covered & others & ~bodies(scenes, spec, radius=4.0)
    iou = (warped & mine & compared).sum() / ((warped | mine) & compared).sum()
    assert iou > 0.6  # vehicles are 2–5 cells long here; most disagreement is on their outlines


def test_composition_i_to_j_to_k_equals_i_to_k():
    generator = torch.Generator().manual_seed(1)
    poses = torch.rand(10, 3, 3, generator=generator) * torch.tensor([90, 90, 7])

    def to3(theta: torch.Tensor) -> torch.Tensor:
        return torch.cat([theta, torch.tensor([0.0, 0.0, 1.0]).expand(*theta.shape[:-2], 1, 3)], dim=-2)

    t = to3(relative_transform(poses[:, :, None], poses[:, None, :], 32, 1.5))  # (10, 3, 3, 3, 3)
    # theta maps i's coordinates to j's; i → j then j → k is theta[j, k] @ theta[i, j]
    torch.testing.assert_close(t[:, 1, 2] @ t[:, 0, 1], t[:, 0, 2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t[:, 1, 0] @ t[:, 0, 1], torch.eye(3).expand(10, 3, 3), atol=1e-5, rtol=1e-5)
    # and on maps, where every frame involved covers the cell
    smooth = F.interpolate(torch.rand(1, 1, 8, 8, generator=generator), size=(64, 64), mode="bilinear")[0]
    near = torch.tensor([[40.0, 40.0, 0.3], [42.0, 41.0, 0.5], [41.0, 38.0, 0.1]])
    theta = relative_transform(near[:, None], near[None, :], 64, 0.75)

    def warp(image: torch.Tensor, receiver: int, sender: int) -> torch.Tensor:
        return warp_to_ego(image[None, None], theta[receiver, sender][None, None, None])[0, 0, 0]

    via, direct = warp(warp(smooth, 1, 2), 0, 1), warp(smooth, 0, 2)
    covered = warp(warp(torch.ones_like(smooth), 1, 2), 0, 1) > 0.999
    assert covered.float().mean() > 0.5
    torch.testing.assert_close(via[covered], direct[covered], atol=0.02, rtol=0)


def test_gradient_flows_to_maps_and_transforms():
    scenes = generate_scenes(WorldSpec(), 2, seed=0)
    maps = torch.rand(2, 3, 4, 8, 8, requires_grad=True)
    theta = scenes.transforms.clone().requires_grad_(True)
    warp_to_ego(maps, theta).square().sum().backward()
    assert maps.grad is not None and maps.grad.abs().sum() > 0
    assert theta.grad is not None and theta.grad.abs().sum() > 0


def test_same_theta_works_at_a_lower_resolution():
    """Feature maps at V/4 cover the same extent, so the raster's theta warps them too: warping
    then downsampling ≈ downsampling then warping."""
    spec = WorldSpec(dropout=0.0, false_positives=0.0)
    scenes = generate_scenes(spec, 20, seed=6)
    n, a, v = len(scenes), spec.agents, spec.view_cells
    full = scenes.observations[:, :, 1:2]  # visibility: large smooth regions
    small = F.avg_pool2d(full.reshape(n * a, 1, v, v), 4).reshape(n, a, 1, v // 4, v // 4)
    warped_small = warp_to_ego(small, scenes.transforms)
    downsampled = F.avg_pool2d(warp_to_ego(full, scenes.transforms).reshape(-1, 1, v, v), 4)
    assert warped_small.shape == (n, a, a, 1, v // 4, v // 4)
    error = (warped_small.reshape(-1, 1, v // 4, v // 4) - downsampled).abs().mean()
    assert error < 0.1
    assert downsampled.mean() > 0.3


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="N, A, C, H, W"):
        warp_to_ego(torch.zeros(3, 2, 8, 8), torch.zeros(3, 2, 2, 2, 3))
    with pytest.raises(ValueError, match="transforms"):
        warp_to_ego(torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 2, 2, 2, 3))
    with pytest.raises(ValueError, match="heading"):
        relative_transform(torch.zeros(2), torch.zeros(2), 32, 1.5)

"""The synthetic multi-agent BEV world: format, determinism, geometry and occlusion statistics."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from distill.errors import DataError
from distill.perception.warp import warp_to_ego
from distill.perception.world import Scenes, WorldSpec, generate_scenes

CLEAN = WorldSpec(dropout=0.0, false_positives=0.0)


@pytest.fixture(scope="module")
def scenes() -> Scenes:
    return generate_scenes(WorldSpec(), 200, seed=0)


@pytest.fixture(scope="module")
def clean() -> Scenes:
    return generate_scenes(CLEAN, 40, seed=1)


def agent_frame(poses: torch.Tensor, i: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Agent ``j``'s centre in agent ``i``'s frame, ``(u forward, v left)``, per scene."""
    pose = poses.double()
    dx, dy = pose[:, j, 0] - pose[:, i, 0], pose[:, j, 1] - pose[:, i, 1]
    cos, sin = torch.cos(pose[:, i, 2]), torch.sin(pose[:, i, 2])
    return cos * dx + sin * dy, -sin * dx + cos * dy


def test_shapes_and_dtypes_follow_the_contract(scenes: Scenes):
    n, a, v = 200, 3, 32
    assert len(scenes) == n
    assert scenes.observations.shape == (n, a, 2, v, v) and scenes.observations.dtype == torch.float32
    assert scenes.targets.shape == (n, a, 1, v, v) and scenes.targets.dtype == torch.float32
    assert scenes.occluded.shape == (n, a, 1, v, v) and scenes.occluded.dtype == torch.bool
    assert scenes.transforms.shape == (n, a, a, 2, 3) and scenes.transforms.dtype == torch.float32
    assert scenes.poses.shape == (n, a, 3) and scenes.poses.dtype == torch.float32
    for binary in (scenes.observations, scenes.targets):
        assert set(binary.unique().tolist()) <= {0.0, 1.0}
    # occluded is exactly where the agent's own visibility is 0
    assert torch.equal(scenes.occluded[:, :, 0], scenes.observations[:, :, 1] == 0)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for i in range(a):
        torch.testing.assert_close(scenes.transforms[:, i, i], identity.expand(n, 2, 3))


def test_same_seed_same_scenes_and_a_longer_set_extends_a_shorter_one(scenes: Scenes):
    again = generate_scenes(WorldSpec(), 300, seed=0)  # crosses a block boundary (256)
    for name in ("observations", "targets", "occluded", "transforms", "poses"):
        assert torch.equal(getattr(again.batch(torch.arange(200)), name), getattr(scenes, name))
    other = generate_scenes(WorldSpec(), 5, seed=1)
    assert not torch.equal(other.poses, scenes.poses[:5])


def test_batch_and_to_select_rows(scenes: Scenes):
    index = torch.tensor([3, 0, 7])
    part = scenes.batch(index).to("cpu")
    assert len(part) == 3
    assert torch.equal(part.targets, scenes.targets[index])
    assert torch.equal(part.transforms[1], scenes.transforms[0])
    assert len(scenes.batch(torch.arange(200) < 10)) == 10


def test_agents_are_placed_near_the_centre(scenes: Scenes):
    centre = WorldSpec().world_cells / 2
    offsets = scenes.poses[..., :2] - centre
    assert offsets.norm(dim=-1).max() <= WorldSpec().agent_spread + 1e-4


def test_raster_convention_forward_is_up_and_left_is_left(clean: Scenes):
    """Another agent's centre lands on a target cell at row ``V/2 − u/s``, column ``V/2 − v/s``;
    the ego's own centre cell is seen and never a target."""
    v, s = CLEAN.view_cells, CLEAN.view_scale
    checked = 0
    for i in range(CLEAN.agents):
        for j in range(CLEAN.agents):
            if i == j:
                continue
            u, w = agent_frame(clean.poses, i, j)
            row, col = torch.floor(v / 2 - u / s).long(), torch.floor(v / 2 - w / s).long()
            inside = (row >= 0) & (row < v) & (col >= 0) & (col < v)
            scene = torch.nonzero(inside).flatten()
            assert clean.targets[scene, i, 0, row[scene], col[scene]].eq(1).all()
            checked += len(scene)
    assert checked > 50
    centre = slice(v // 2 - 1, v // 2 + 1)
    assert clean.targets[:, :, 0, centre, centre].eq(0).all()
    assert clean.observations[:, :, 1, centre, centre].eq(1).all()


def test_sensor_sees_surfaces_not_through_them(clean: Scenes):
    occupied, visible = clean.observations[:, :, 0], clean.observations[:, :, 1]
    assert bool((occupied <= visible).all())  # hits are seen
    targets = clean.targets[:, :, 0]
    # a hit vehicle is seen on its near side and hidden behind: some of its cells are occluded
    hit_vehicles = (occupied * targets).sum()
    assert hit_vehicles > 0
    assert (targets * (1 - visible)).sum() > 0.1 * targets.sum()
    # far corners are within range by default (half the diagonal), so free views see them
    assert visible.mean() > 0.5


def test_noise_drops_hits_and_adds_false_positives():
    noisy_spec = WorldSpec(dropout=0.5, false_positives=0.05)
    clean, noisy = generate_scenes(CLEAN, 20, seed=5), generate_scenes(noisy_spec, 20, seed=5)
    assert torch.equal(clean.targets, noisy.targets) and torch.equal(clean.occluded, noisy.occluded)
    hits, noisy_hits = clean.observations[:, :, 0] > 0, noisy.observations[:, :, 0] > 0
    kept = (hits & noisy_hits).sum() / hits.sum()
    assert 0.4 < kept < 0.6
    free = (clean.observations[:, :, 1] > 0) & ~hits
    added = (free & noisy_hits).sum() / free.sum()
    assert 0.03 < added < 0.07


def test_walls_occlude_but_are_not_targets():
    no_vehicles = WorldSpec(agents=1, vehicles=0, walls=12, dropout=0.0, false_positives=0.0)
    scenes = generate_scenes(no_vehicles, 20, seed=2)
    assert scenes.targets.sum() == 0
    assert scenes.observations[:, :, 0].sum() > 0  # walls are hit
    assert scenes.occluded.float().mean() > 0.05  # and hide what lies behind them


def test_sensor_range_limits_visibility():
    short = WorldSpec(agents=1, vehicles=0, walls=0, sensor_range=6.0, dropout=0.0, false_positives=0.0)
    visible = generate_scenes(short, 2, seed=0).observations[:, 0, 1]
    offsets = (short.view_cells / 2 - torch.arange(short.view_cells) - 0.5) * short.view_scale
    distance = torch.hypot(offsets[:, None], offsets[None, :])
    assert torch.equal(visible[0] > 0, distance <= 6.0)
    assert WorldSpec().range == pytest.approx(32 * 1.5 / math.sqrt(2))


def test_collaboration_can_recover_occluded_targets(scenes: Scenes):
    """Averaged over 200 scenes, each ego misses a good share of its target cells, and another
    agent sees a good share of those."""
    targets = scenes.targets[:, :, 0] > 0.5
    occluded = scenes.occluded[:, :, 0]
    warped = warp_to_ego(scenes.observations[:, :, 1:2], scenes.transforms)[:, :, :, 0]  # (N, A, A, V, V)
    others = ~torch.eye(WorldSpec().agents, dtype=torch.bool)[None, :, :, None, None]
    seen_by_another = ((warped > 0.5) & others).any(dim=2)
    for ego in range(WorldSpec().agents):
        hidden = targets[:, ego] & occluded[:, ego]
        assert hidden.sum() / targets[:, ego].sum() > 0.3
        assert (hidden & seen_by_another[:, ego]).sum() / hidden.sum() > 0.3


def test_spec_validation():
    assert WorldSpec(vehicle_length=[3, 5]).vehicle_length == (3.0, 5.0)  # a recipe's list
    with pytest.raises(ValidationError, match="min <= max"):
        WorldSpec(vehicle_width=(3.0, 2.0))
    with pytest.raises(ValidationError):
        WorldSpec(view_cells="32")
    with pytest.raises(ValidationError, match="unknown key"):
        WorldSpec(agent=2)
    with pytest.raises(ValidationError):
        WorldSpec(dropout=1.5)


def test_agents_that_cannot_fit_are_an_error():
    with pytest.raises(DataError, match="agent_spread"):
        generate_scenes(WorldSpec(agents=4, agent_spread=0.0), 1, seed=0)
    with pytest.raises(ValueError):
        generate_scenes(WorldSpec(), 0, seed=0)


def _dilate(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Square dilation (side ``2·radius + 1``) of a ``(…, V, V)`` bool mask."""
    shape = mask.shape
    flat = mask.reshape(-1, 1, *shape[-2:]).float()
    grown = torch.nn.functional.max_pool2d(flat, 2 * radius + 1, stride=1, padding=radius)
    return (grown > 0).reshape(shape)


def test_the_fused_observation_holds_the_egos_own_and_nothing_when_alone():
    alone = generate_scenes(WorldSpec(agents=1), 10, seed=3)
    assert torch.equal(alone.fused_observations, alone.observations)
    scenes = generate_scenes(WorldSpec(), 30, seed=3)
    assert scenes.fused_observations.shape == scenes.observations.shape
    assert scenes.fused_observations.dtype == torch.float32
    assert (scenes.fused_observations >= scenes.observations).all()  # the ego's own part is in it
    assert (scenes.fused_observations > scenes.observations).any()  # and the others add to it
    dropped = generate_scenes(WorldSpec(dropout=1.0, false_positives=0.0), 10, seed=3)
    assert dropped.fused_observations[:, :, 0].sum() == 0  # every return dropped, none shared


def test_the_fused_observation_is_every_agents_sensing_placed_in_the_ego_frame(clean: Scenes):
    """Each agent's raster moved into the ego frame cell by cell (nearest cell) agrees with the
    rendered fused observation up to where a point can lie in its rotated cell: never more than
    two cells off, and almost always within one. (Compared away from the raster's edge, where a
    cell moved by its centre may hold points that fall just outside.)"""
    fused = clean.fused_observations > 0.5
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    for channel in (0, 1):
        own = clean.observations[:, :, channel : channel + 1]
        moved = warp_to_ego(own, clean.transforms, mode="nearest")[:, :, :, 0] > 0.5  # (N, A, A, V, V)
        union = moved.any(dim=2)
        rendered = fused[:, :, channel]
        for one, other in ((rendered, union), (union, rendered)):
            assert (one & ~_dilate(other, 2))[inner].sum() == 0, channel
            assert (one & ~_dilate(other))[inner].sum() <= 1e-3 * one[inner].sum(), channel


def test_the_fused_observation_reveals_what_the_ego_cannot_see(scenes: Scenes):
    targets = scenes.targets[:, :, 0] > 0.5
    hidden = targets & scenes.occluded[:, :, 0]
    revealed = hidden & (scenes.fused_observations[:, :, 1] > 0)
    assert revealed.sum() / hidden.sum() > 0.3
    # on cells the ego sees itself, the fused visibility is its own
    assert (scenes.fused_observations[:, :, 1][~scenes.occluded[:, :, 0]] == 1).all()

"""A synthetic multi-agent bird's-eye-view (BEV) world for collaborative perception.

DiscoGraph (Li et al., "Learning Distilled Collaboration Graph for Multi-Agent Perception",
NeurIPS 2021, arXiv 2111.00643) studies vehicles that share BEV features so that each can
segment or detect objects it cannot see itself. This module builds a small stand-in for its
V2X-Sim scenes: a flat square world of ``world_cells × world_cells`` units holding

* ``agents`` vehicles that carry a sensor (the agents), placed within ``agent_spread`` of the
  world's centre so that their views overlap;
* ``vehicles`` further vehicles anywhere in the world;
* ``walls`` thin rectangles (width ``wall_width``) that occlude but are not objects of interest.

Every vehicle is a rectangle (length along its heading) with a uniformly random heading; vehicles
keep a small gap from each other and from walls (rejection sampling). Objects are continuous
shapes: nothing is quantized to world cells, so rasters in different frames agree up to their own
cell size.

Each agent casts ``rays`` rays, evenly spaced in angle starting along its heading, out to
``sensor_range``. A ray stops at the first wall or vehicle it meets (the agent's own body does not
block it); the agent sees the cells the ray crossed and the cell it stopped in. Its observation is
an egocentric ``view_cells × view_cells`` raster (``view_scale`` world units a cell):

* channel 0, *occupancy*: the cells holding a ray's end point (vehicles and walls alike, as a
  lidar sees surfaces), each dropped with probability ``dropout``, plus false positives in free
  visible cells with probability ``false_positives``;
* channel 1, *visibility*: 1 on cells whose centre some ray reached (the cell centre lies no farther
  than the ray nearest its bearing went), and on cells holding a ray's end point.

The *fused observation* of an ego is what the early-fusion teacher reads: every agent's sensing
merged in the ego's frame, rendered from the geometry rather than resampled from rasters (the
official teacher fuses the agents' point clouds before it voxelizes). Each agent shares its
returns that fall inside its own raster and survived its dropout, plus its false positives (moved
by their cell centres); these points are rasterized in the ego's frame and the occupancy channel
is their union over the agents. The visibility channel is 1 on the ego's cells whose centre some
agent saw (inside that agent's raster, within its ray's reach) or that hold one of its returns.
The ego's own part is its observation, bit for bit.

Its target is every vehicle in the agent's frame — the other agents included, the agent's own body
excluded — whether seen or not: a cell is a target when its centre lies inside a vehicle. Walls are
never targets. ``occluded`` marks the cells the agent did not see (visibility 0), target or not: the
region where only collaboration can help; ``targets & occluded`` are the occluded target cells.

Coordinate conventions (see :mod:`distill.perception.warp` for the derivation of ``theta``):

* World ``(x, y)``; heading ``θ`` from ``+x`` towards ``+y``. Objects lie inside
  ``[0, world_cells]²``; outside it the world is empty open ground that rays cross.
* Agent frame: ``u`` forward along the heading, ``v`` to the left. Raster row 0 is the front edge,
  column 0 the left edge; cell ``(r, c)`` is centred at ``u = (V/2 − r − ½)·s``,
  ``v = (V/2 − c − ½)·s`` for ``V = view_cells``, ``s = view_scale``. The agent sits at the centre
  of the raster, facing up.
* ``transforms[n, i, j]`` is the ``affine_grid`` matrix (normalized coordinates,
  ``align_corners=False``) that resamples agent ``j``'s raster into agent ``i``'s frame.

Generation is seeded and deterministic. Scene ``k`` of ``generate_scenes(spec, count, seed)``
depends only on ``(spec, seed, k)``: its random draws come from the ``k``-th child of
``numpy.random.SeedSequence(seed)``, so a longer set extends a shorter one. The geometry is
computed for blocks of scenes at once with NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from pydantic import Field, Strict, model_validator

from distill.errors import DataError
from distill.perception.warp import relative_transform
from distill.schema import NonNegativeInt, Section

#: A ``[min, max]`` range of lengths in world units (a list in a recipe).
LengthRange = Annotated[tuple[float, float], Strict(False)]

#: Gap kept between any two objects (world units).
CLEARANCE = 0.5
#: Candidate placements drawn per object; an object whose candidates all collide is left out
#: (an agent that cannot be placed is an error).
CANDIDATES = 32
#: Scenes whose geometry is computed together (bounds the temporary arrays to a few hundred MB).
BLOCK = 256
#: Ray end points are moved this far into the surface they hit so they land in its cell.
_SURFACE_NUDGE = 1e-3


class WorldSpec(Section):
    """The world that :func:`generate_scenes` draws scenes from (lengths in world units).

    ``world_cells``: the world is a square of this many units a side; walls and vehicles lie inside.
    ``view_cells``: each agent's raster is ``view_cells × view_cells``, centred on the agent and
    facing its heading.
    ``view_scale``: world units per raster cell (a raster covers ``view_cells · view_scale`` units).
    ``agents``: sensing vehicles per scene; they are also targets in each other's rasters.
    ``vehicles``: further (non-sensing) vehicles per scene.
    ``vehicle_length``, ``vehicle_width``: ``[min, max]`` of each vehicle's size (uniform).
    ``walls``: occluding wall segments per scene; ``wall_length`` ``[min, max]`` and ``wall_width``
    their size.
    ``agent_spread``: agents' centres lie within this distance of the world's centre.
    ``sensor_range``: how far rays reach; unset, to the raster's corners (half its diagonal).
    ``rays``: rays per agent, evenly spaced over the full circle.
    ``dropout``: probability that an occupied cell the sensor hit is missing from the observation.
    ``false_positives``: probability that a free visible cell is marked occupied.
    """

    world_cells: Annotated[int, Field(ge=8, le=100_000)] = 96
    view_cells: Annotated[int, Field(ge=2, le=4096)] = 32
    view_scale: float = Field(default=1.5, gt=0.0)
    agents: Annotated[int, Field(le=64)] = Field(default=3, ge=1)
    vehicles: Annotated[NonNegativeInt, Field(le=10_000)] = 12
    vehicle_length: LengthRange = (4.0, 7.0)
    vehicle_width: LengthRange = (2.0, 3.0)
    walls: Annotated[NonNegativeInt, Field(le=10_000)] = 6
    wall_length: LengthRange = (8.0, 20.0)
    wall_width: float = Field(default=1.0, gt=0.0)
    agent_spread: float = Field(default=20.0, ge=0.0)
    sensor_range: float | None = Field(default=None, gt=0.0)
    rays: Annotated[int, Field(ge=8, le=100_000)] = 360
    dropout: float = Field(default=0.05, ge=0.0, le=1.0)
    false_positives: float = Field(default=0.002, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_ranges(self) -> WorldSpec:
        for name in ("vehicle_length", "vehicle_width", "wall_length"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be [min, max] with 0 < min <= max, got [{low}, {high}]")
        return self

    @property
    def range(self) -> float:
        """The sensor range in world units (``sensor_range``, or half the raster's diagonal)."""
        if self.sensor_range is not None:
            return self.sensor_range
        return self.view_cells * self.view_scale / math.sqrt(2)


@dataclass(frozen=True)
class Scenes:
    """A set of scenes as tensors (``N`` scenes, ``A`` agents, ``V = view_cells``).

    ``observations``: ``(N, A, 2, V, V)`` float32 — channel 0 the occupied cells the agent's sensor
    hit (vehicles or walls, with dropout and false positives), channel 1 its visibility (1 where
    its rays reached).
    ``fused_observations``: ``(N, A, 2, V, V)`` float32 — the early-fusion input: for each ego,
    every agent's observation rendered exactly in the ego's frame and merged (see the module
    docstring); the ego's own observation is part of it.
    ``targets``: ``(N, A, 1, V, V)`` float32 in {0, 1} — every vehicle but the agent itself, seen
    or not, in the agent's frame.
    ``occluded``: ``(N, A, 1, V, V)`` bool — the cells the agent did not see (visibility 0).
    ``transforms``: ``(N, A, A, 2, 3)`` float32 — ``transforms[n, i, j]`` resamples agent ``j``'s
    raster into agent ``i``'s frame (``affine_grid``, ``align_corners=False``); identity on the
    diagonal.
    ``poses``: ``(N, A, 3)`` float32 — each agent's ``(x, y, heading)`` in world coordinates.
    """

    observations: torch.Tensor
    fused_observations: torch.Tensor
    targets: torch.Tensor
    occluded: torch.Tensor
    transforms: torch.Tensor
    poses: torch.Tensor

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    def batch(self, index: torch.Tensor) -> Scenes:
        """The scenes at ``index`` (integer indices or a boolean mask over scenes)."""
        return Scenes(
            observations=self.observations[index],
            fused_observations=self.fused_observations[index],
            targets=self.targets[index],
            occluded=self.occluded[index],
            transforms=self.transforms[index],
            poses=self.poses[index],
        )

    def batches(self, size: int) -> Iterator[Scenes]:
        """The scenes in order, ``size`` at a time (the last batch may be smaller)."""
        for start in range(0, len(self), size):
            yield self.batch(torch.arange(start, min(start + size, len(self))))

    def to(self, device: torch.device | str) -> Scenes:
        """The same scenes on ``device``."""
        return Scenes(
            observations=self.observations.to(device),
            fused_observations=self.fused_observations.to(device),
            targets=self.targets.to(device),
            occluded=self.occluded.to(device),
            transforms=self.transforms.to(device),
            poses=self.poses.to(device),
        )


def generate_scenes(spec: WorldSpec, count: int, seed: int) -> Scenes:
    """Draw ``count`` scenes of ``spec`` from ``seed`` (see the module docstring for the model).

    Raises :class:`~distill.errors.DataError` when the agents cannot be placed without overlapping
    (``agent_spread`` too small for ``agents`` vehicles).
    """
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    children = np.random.SeedSequence(seed).spawn(count)
    parts = [
        _generate_block(spec, children[start : start + BLOCK], first=start)
        for start in range(0, count, BLOCK)
    ]
    observations, fused, targets, visible, poses = (
        np.concatenate(arrays) for arrays in zip(*parts, strict=True)
    )
    poses_64 = torch.from_numpy(poses)
    transforms = relative_transform(
        poses_64[:, :, None, :], poses_64[:, None, :, :], spec.view_cells, spec.view_scale
    )
    return Scenes(
        observations=torch.from_numpy(observations),
        fused_observations=torch.from_numpy(fused),
        targets=torch.from_numpy(targets),
        occluded=torch.from_numpy(~visible),
        transforms=transforms.float(),
        poses=poses_64.float(),
    )


# --- one block of scenes --------------------------------------------------------------------------


def _generate_block(
    spec: WorldSpec, seeds: list[np.random.SeedSequence], first: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Observations, fused observations, targets, visibility and poses (float64) of one block."""
    n, a, v = len(seeds), spec.agents, spec.view_cells
    objects = spec.agents + spec.vehicles + spec.walls
    candidates = np.empty((n, objects, CANDIDATES, 5))
    noise = np.empty((n, a, 2, v, v))
    for k, child in enumerate(seeds):
        rng = np.random.default_rng(child)
        candidates[k] = rng.random((objects, CANDIDATES, 5))
        noise[k] = rng.random((a, 2, v, v))
    boxes, active = _place(spec, candidates, first)
    poses = np.stack([boxes[:, :a, 0], boxes[:, :a, 1], boxes[:, :a, 4]], axis=-1)
    hits = _cast_rays(spec, boxes, active)
    kept = noise[:, :, 0] >= spec.dropout  # per cell of the sensing agent's own raster
    frames = _pair_frames(poses)
    returned, returned_kept, seen = _observe_pairs(spec, frames, hits, kept)  # (n, ego, agent, V, V)
    seen |= returned
    own = np.arange(a)
    visible = seen[:, own, own]
    false_positive = visible & (noise[:, :, 1] < spec.false_positives)
    occupied_pairs = returned_kept | _move_cells(spec, frames, false_positive)
    occupied = occupied_pairs[:, own, own]
    targets = _rasterize_vehicles(spec, boxes, active)
    observations = np.stack([occupied, visible], axis=2).astype(np.float32)
    fused = np.stack([occupied_pairs.any(axis=2), seen.any(axis=2)], axis=2).astype(np.float32)
    return observations, fused, targets[:, :, None].astype(np.float32), visible[:, :, None], poses


def _place(spec: WorldSpec, draws: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(n, objects, 5)`` as ``(cx, cy, half_length, half_width, heading)`` and which exist.

    Objects are placed in order (agents, walls, vehicles); each takes the first of its candidate
    draws (uniform numbers in ``draws``) that keeps ``CLEARANCE`` from the objects placed before.
    """
    n, objects = draws.shape[:2]
    a, vehicles = spec.agents, spec.vehicles
    world = float(spec.world_cells)
    boxes = np.zeros((n, objects, 5))
    active = np.zeros((n, objects), dtype=bool)
    order = [*range(a), *range(a + vehicles, objects), *range(a, a + vehicles)]
    placed: list[int] = []
    for slot in order:
        u = draws[:, slot]  # (n, CANDIDATES, 5)
        if slot < a + vehicles:
            length = spec.vehicle_length[0] + (spec.vehicle_length[1] - spec.vehicle_length[0]) * u[..., 2]
            width = spec.vehicle_width[0] + (spec.vehicle_width[1] - spec.vehicle_width[0]) * u[..., 3]
        else:
            length = spec.wall_length[0] + (spec.wall_length[1] - spec.wall_length[0]) * u[..., 2]
            width = np.full_like(length, spec.wall_width)
        heading = 2 * np.pi * u[..., 4]
        if slot < a:
            radius = spec.agent_spread * np.sqrt(u[..., 0])
            bearing = 2 * np.pi * u[..., 1]
            cx = world / 2 + radius * np.cos(bearing)
            cy = world / 2 + radius * np.sin(bearing)
        else:  # the whole rectangle inside the world
            reach_x = (np.abs(np.cos(heading)) * length + np.abs(np.sin(heading)) * width) / 2
            reach_y = (np.abs(np.sin(heading)) * length + np.abs(np.cos(heading)) * width) / 2
            cx = reach_x + np.clip(world - 2 * reach_x, 0.0, None) * u[..., 0]
            cy = reach_y + np.clip(world - 2 * reach_y, 0.0, None) * u[..., 1]
        candidate = np.stack([cx, cy, length / 2, width / 2, heading], axis=-1)  # (n, C, 5)
        if placed:
            clash = _overlaps(candidate[:, :, None], boxes[:, None, placed], CLEARANCE)
            free = ~np.any(clash & active[:, None, placed], axis=-1)  # (n, C)
        else:
            free = np.ones(candidate.shape[:2], dtype=bool)
        fits = free.any(axis=1)
        if slot < a and not fits.all():
            scene = first + int(np.flatnonzero(~fits)[0])
            raise DataError(
                f"could not place {a} agents without overlap within agent_spread={spec.agent_spread} "
                f"(scene {scene}); raise agent_spread or lower agents or the vehicle size"
            )
        choice = free.argmax(axis=1)
        boxes[:, slot] = candidate[np.arange(n), choice]
        active[:, slot] = fits
        placed.append(slot)
    return boxes, active


def _overlaps(first: np.ndarray, second: np.ndarray, gap: float) -> np.ndarray:
    """Whether rectangles ``first`` and ``second`` (broadcasting ``(…, 5)`` boxes) come closer
    than ``gap`` (separating-axis test on the rectangles grown by ``gap / 2``)."""
    axes = []
    for box in (first, second):
        cos, sin = np.cos(box[..., 4]), np.sin(box[..., 4])
        axes += [(cos, sin), (-sin, cos)]
    centre_x = second[..., 0] - first[..., 0]
    centre_y = second[..., 1] - first[..., 1]
    separated = np.zeros(np.broadcast_shapes(first.shape[:-1], second.shape[:-1]), dtype=bool)
    for ax, ay in axes:
        spread = 0.0
        for index, box in enumerate((first, second)):
            (bx, by), (cx, cy) = axes[2 * index], axes[2 * index + 1]
            spread = spread + (box[..., 2] + gap / 2) * np.abs(bx * ax + by * ay)
            spread = spread + (box[..., 3] + gap / 2) * np.abs(cx * ax + cy * ay)
        separated |= np.abs(centre_x * ax + centre_y * ay) > spread
    return ~separated


def _cast_rays(spec: WorldSpec, boxes: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Distance ``(n, agents, rays)`` each ray travels before it hits an object, capped at the range.

    Ray ``k`` leaves agent ``i`` at angle ``2πk / rays`` from its heading. Slab test against every
    object in the object's own frame (in float32: distances are tens of units); the agent's own
    body never blocks its rays, and no other object contains the agent's centre.
    """
    objects = boxes.shape[1]
    a = spec.agents
    angles = 2 * np.pi * np.arange(spec.rays) / spec.rays
    world_angle = boxes[:, :a, 4, None] + angles  # (n, a, R)
    f32 = np.float32
    dir_x = np.cos(world_angle).astype(f32)[..., None]  # (n, a, R, 1)
    dir_y = np.sin(world_angle).astype(f32)[..., None]
    cos_o = np.cos(boxes[:, None, None, :, 4])  # (n, 1, 1, O)
    sin_o = np.sin(boxes[:, None, None, :, 4])
    rel_x = (boxes[:, :a, None, 0] - boxes[:, None, :, 0])[:, :, None]  # (n, a, 1, O)
    rel_y = (boxes[:, :a, None, 1] - boxes[:, None, :, 1])[:, :, None]
    origin_x = (rel_x * cos_o + rel_y * sin_o).astype(f32)  # the agent's centre in the object's frame
    origin_y = (-rel_x * sin_o + rel_y * cos_o).astype(f32)
    # An object that must not block (absent, or the agent itself) gets negative half sizes: its
    # slab intervals come out empty.
    blocking = active[:, None, :] & (np.arange(objects) != np.arange(a)[:, None])  # (n, a, O)
    half_l = np.where(blocking, boxes[:, None, :, 2], -1.0)[:, :, None].astype(f32)
    half_w = np.where(blocking, boxes[:, None, :, 3], -1.0)[:, :, None].astype(f32)
    tiny = f32(1e-20)  # keeps 1 / direction finite along an axis
    enter = leave = None
    for direction, origin, half in (
        (dir_x * cos_o.astype(f32) + dir_y * sin_o.astype(f32), origin_x, half_l),
        (dir_y * cos_o.astype(f32) - dir_x * sin_o.astype(f32), origin_y, half_w),
    ):
        inverse = 1 / (direction + tiny)
        middle = -origin * inverse
        spread = half * np.abs(inverse)
        low, high = middle - spread, middle + spread
        enter = low if enter is None else np.maximum(enter, low)
        leave = high if leave is None else np.minimum(leave, high)
    assert enter is not None and leave is not None
    blocked = (enter >= 0) & (enter <= leave)
    distance = np.where(blocked, enter, np.inf).min(axis=-1)
    return np.minimum(distance.astype(np.float64), spec.range)


def _cell_centres(spec: WorldSpec) -> tuple[np.ndarray, np.ndarray]:
    """Agent-frame ``(u, v)`` of every raster cell centre, each ``(V, V)``."""
    v, s = spec.view_cells, spec.view_scale
    offsets = (v / 2 - np.arange(v) - 0.5) * s
    return np.broadcast_to(offsets[:, None], (v, v)), np.broadcast_to(offsets[None, :], (v, v))


#: Rigid maps between agents' frames as ``(du, dw, cos, sin)`` arrays (see :func:`_pair_frames`).
Frames = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _pair_frames(poses: np.ndarray) -> Frames:
    """The rigid maps from each agent ``j``'s frame to each ego ``i``'s, as ``(n, i, j)`` arrays:
    a point ``(u, w)`` of ``j``'s frame lies at ``(du + cos·u − sin·w, dw + sin·u + cos·w)`` in
    ``i``'s. Returns ``(du, dw, cos, sin)``; on the diagonal exactly ``(0, 0, 1, 0)``."""
    dx = poses[:, None, :, 0] - poses[:, :, None, 0]  # (n, i, j): agent j's centre minus ego i's
    dy = poses[:, None, :, 1] - poses[:, :, None, 1]
    heading_i = poses[:, :, None, 2]
    cos_i, sin_i = np.cos(heading_i), np.sin(heading_i)
    delta = poses[:, None, :, 2] - heading_i
    return cos_i * dx + sin_i * dy, -sin_i * dx + cos_i * dy, np.cos(delta), np.sin(delta)


def _move_points(
    frame: tuple[np.ndarray, ...], u: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(u, w)`` mapped by the rigid ``frame`` (arrays broadcasting with the points)."""
    du, dw, cos, sin = frame
    return du + cos * u - sin * w, dw + sin * u + cos * w


def _rasterize_in_egos(
    spec: WorldSpec, frames: Frames, scene: np.ndarray, agent: np.ndarray, u: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """Points ``(u, w)`` of agent ``agent`` in scene ``scene`` (one entry per point), marked in
    every ego's raster: ``(n, ego, agent, V, V)`` bool; points outside an ego's raster are left out."""
    n, a = frames[0].shape[:2]
    v = spec.view_cells
    raster = np.zeros((n, a, a, v, v), dtype=bool)
    for ego in range(a):
        pair = (scene, ego, agent)
        row, col, inside = _cells_of(spec, *_move_points(tuple(part[pair] for part in frames), u, w))
        raster[scene[inside], ego, agent[inside], row[inside], col[inside]] = True
    return raster


def _cells_of(spec: WorldSpec, u: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raster ``(row, col)`` of agent-frame points and whether they fall inside the raster."""
    v, s = spec.view_cells, spec.view_scale
    row = np.floor(v / 2 - u / s).astype(np.int64)
    col = np.floor(v / 2 - w / s).astype(np.int64)
    return row, col, (row >= 0) & (row < v) & (col >= 0) & (col < v)


def _observe_pairs(
    spec: WorldSpec, frames: Frames, hits: np.ndarray, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What each agent ``j`` senses, rasterized in each ego ``i``'s frame: ``(n, i, j, V, V)`` bool.

    * ``returned``: cells holding one of ``j``'s ray end points (returns) that lie inside ``j``'s
      own raster — what ``j`` has to share;
    * ``returned_kept``: the same for the returns whose cell in ``j``'s raster survived its
      dropout (``kept``, ``(n, j, V, V)``): ``j``'s noisy point cloud, re-rasterized exactly;
    * ``seen``: cells of ``i``'s raster whose centre lies inside ``j``'s raster and no farther from
      ``j`` than the ray nearest its bearing went.

    On the diagonal (``i = j``) these are the agent's own rasters, bit for bit: the pair frames
    are exactly the identity there.
    """
    n, a, rays = hits.shape
    v, s = spec.view_cells, spec.view_scale
    angles = 2 * np.pi * np.arange(rays) / rays
    reach = hits + _SURFACE_NUDGE
    own_u, own_w = reach * np.cos(angles), reach * np.sin(angles)  # (n, j, R) in j's frame
    own_row, own_col, own_inside = _cells_of(spec, own_u, own_w)
    returns = (hits < spec.range) & own_inside
    scene, agent, ray = np.nonzero(returns)
    survived = kept[scene, agent, own_row[scene, agent, ray], own_col[scene, agent, ray]]
    points_u, points_w = own_u[scene, agent, ray], own_w[scene, agent, ray]
    returned = _rasterize_in_egos(spec, frames, scene, agent, points_u, points_w)
    returned_kept = _rasterize_in_egos(
        spec, frames, scene[survived], agent[survived], points_u[survived], points_w[survived]
    )

    # Ego i's cell centres in agent j's frame: the inverse map, i.e. the (j, i) entry.
    cell_u, cell_w = (grid.reshape(-1) for grid in _cell_centres(spec))
    back = tuple(part.transpose(0, 2, 1)[..., None] for part in frames)
    u, w = _move_points(back, cell_u, cell_w)  # (n, i, j, V·V)
    half = v * s / 2
    within = (np.abs(u) < half) & (np.abs(w) < half)
    nearest_ray = np.rint(np.arctan2(w, u) * rays / (2 * np.pi)).astype(np.int64) % rays
    reached = np.take_along_axis(np.broadcast_to(hits[:, None], (n, a, a, rays)), nearest_ray, axis=-1)
    seen = (within & (np.hypot(u, w) <= reached)).reshape(n, a, a, v, v)
    return returned, returned_kept, seen


def _move_cells(spec: WorldSpec, frames: Frames, cells: np.ndarray) -> np.ndarray:
    """Each agent's marked raster cells ``(n, j, V, V)`` moved into every ego's raster by their
    centres: ``(n, i, j, V, V)`` (the identity on the diagonal)."""
    cell_u, cell_w = _cell_centres(spec)
    scene, agent, r, c = np.nonzero(cells)
    return _rasterize_in_egos(spec, frames, scene, agent, cell_u[r, c], cell_w[r, c])


def _rasterize_vehicles(spec: WorldSpec, boxes: np.ndarray, active: np.ndarray) -> np.ndarray:
    """``(n, agents, V, V)`` bool: cell centres inside a vehicle other than the agent itself."""
    n = boxes.shape[0]
    a, count = spec.agents, spec.agents + spec.vehicles
    v = spec.view_cells
    vehicles = boxes[:, :count]
    u, w = (grid.reshape(-1) for grid in _cell_centres(spec))
    # Skip vehicles that cannot reach the raster: beyond half its diagonal plus their own.
    view_radius = v * spec.view_scale / math.sqrt(2)
    agent = boxes[:, :a, None]  # (n, a, 1, 5)
    other = vehicles[:, None]  # (n, 1, count, 5)
    rel_x = agent[..., 0] - other[..., 0]
    rel_y = agent[..., 1] - other[..., 1]
    near = np.hypot(rel_x, rel_y) <= view_radius + np.hypot(other[..., 2], other[..., 3])
    near &= active[:, None, :count] & (np.arange(count) != np.arange(a)[:, None])
    targets = np.zeros((n, a, v * v), dtype=bool)
    scene, agent_index, vehicle = np.nonzero(near)
    if scene.size:
        heading = boxes[scene, agent_index, 4]
        box = vehicles[scene, vehicle]
        cos_o, sin_o = np.cos(box[:, 4]), np.sin(box[:, 4])
        dx, dy = rel_x[scene, agent_index, vehicle], rel_y[scene, agent_index, vehicle]
        f32 = np.float32
        origin_x = (dx * cos_o + dy * sin_o).astype(f32)[:, None]  # the agent in the vehicle's frame
        origin_y = (-dx * sin_o + dy * cos_o).astype(f32)[:, None]
        delta = heading - box[:, 4]
        cos_d, sin_d = np.cos(delta).astype(f32)[:, None], np.sin(delta).astype(f32)[:, None]
        u, w = u.astype(f32), w.astype(f32)
        local_x = np.abs(origin_x + cos_d * u - sin_d * w)
        local_y = np.abs(origin_y + sin_d * u + cos_d * w)
        inside = (local_x <= box[:, 2, None].astype(f32)) & (local_y <= box[:, 3, None].astype(f32))
        group = scene * a + agent_index  # sorted: np.nonzero walks in order
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        targets.reshape(n * a, v * v)[group[starts]] = np.logical_or.reduceat(inside, starts, axis=0)
    return targets.reshape(n, a, v, v)

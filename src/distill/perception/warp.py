"""Warps between agents' bird's-eye-view frames, as in DiscoGraph's feature fusion.

DiscoGraph (Li et al., "Learning Distilled Collaboration Graph for Multi-Agent Perception",
NeurIPS 2021, arXiv 2111.00643) has every agent send its BEV feature map to its neighbours, who
warp it into their own frame with the relative pose before fusing. Here the warp is one affine
``grid_sample`` per (receiver, sender) pair.

Coordinate conventions (shared with :mod:`distill.perception.world`):

* **World**: continuous ``(x, y)``; a heading ``θ`` is measured from the world ``+x`` axis towards
  ``+y`` (counter-clockwise when ``+y`` is drawn up).
* **Agent frame**: origin at the agent's centre, ``u`` forward along its heading, ``v`` to its left
  (``v`` is ``u`` turned by ``+90°``). A point ``(u, v)`` of agent ``(x, y, θ)`` is the world point
  ``(x + u cos θ − v sin θ, y + u sin θ + v cos θ)``.
* **Raster**: ``V × V`` cells of ``s`` world units, centred on the agent and drawn with the agent
  facing up: row 0 is the front edge, column 0 the left edge. Cell ``(r, c)`` has its centre at
  ``u = (V/2 − r − ½)·s``, ``v = (V/2 − c − ½)·s``. Shown with ``imshow`` (row 0 on top) the picture
  is not mirrored: forward is up, left is left.
* **Normalized coordinates** (``torch.nn.functional.affine_grid`` / ``grid_sample`` with
  ``align_corners=False``): ``x_n`` runs along columns and ``y_n`` along rows, both from −1 at the
  outer edge of the first cell to +1 at the outer edge of the last. With the half extent
  ``h = V·s/2``, ``x_n = −v/h`` and ``y_n = −u/h``. Because a feature map of any resolution covers
  the same extent, one ``theta`` serves the raw raster and every downsampled feature map.

``theta[i, j]`` maps agent ``i``'s normalized coordinates to agent ``j``'s: sampling ``j``'s map on
``affine_grid(theta[i, j], …)`` expresses it in ``i``'s frame. With ``Δ = θ_i − θ_j`` and
``(t_u, t_v) = R(−θ_j)(p_i − p_j)`` (``i``'s position in ``j``'s frame)::

    theta[i, j] = [[ cos Δ, sin Δ, −t_v / h],
                   [−sin Δ, cos Δ, −t_u / h]]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def relative_transform(
    pose_i: torch.Tensor, pose_j: torch.Tensor, view_cells: int, view_scale: float
) -> torch.Tensor:
    """The ``affine_grid`` matrix that resamples agent ``j``'s raster into agent ``i``'s frame.

    ``pose_i`` and ``pose_j`` are ``(…, 3)`` world poses ``(x, y, heading)`` that broadcast
    against each other; the result is ``(…, 2, 3)`` in their dtype. ``view_cells`` and
    ``view_scale`` give the raster's extent (``view_cells · view_scale`` world units a side), the
    same for both agents. ``pose_i == pose_j`` gives the identity.
    """
    if pose_i.shape[-1] != 3 or pose_j.shape[-1] != 3:
        raise ValueError(
            f"poses must end in (x, y, heading), got {tuple(pose_i.shape)}, {tuple(pose_j.shape)}"
        )
    half = view_cells * view_scale / 2
    pose_i, pose_j = torch.broadcast_tensors(pose_i, pose_j)
    delta = pose_i[..., 2] - pose_j[..., 2]
    cos_d, sin_d = torch.cos(delta), torch.sin(delta)
    cos_j, sin_j = torch.cos(pose_j[..., 2]), torch.sin(pose_j[..., 2])
    dx = pose_i[..., 0] - pose_j[..., 0]
    dy = pose_i[..., 1] - pose_j[..., 1]
    t_u = cos_j * dx + sin_j * dy
    t_v = -sin_j * dx + cos_j * dy
    row_x = torch.stack([cos_d, sin_d, -t_v / half], dim=-1)
    row_y = torch.stack([-sin_d, cos_d, -t_u / half], dim=-1)
    return torch.stack([row_x, row_y], dim=-2)


def warp_to_ego(maps: torch.Tensor, transforms: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Every agent's map expressed in every agent's frame.

    ``maps`` is ``(N, A, C, H, W)`` (raw rasters or feature maps at any resolution covering the
    raster's extent), ``transforms`` is ``(N, A, A, 2, 3)`` from
    :func:`relative_transform`. Returns ``(N, A, A, C, H, W)`` where ``out[n, i, j]`` is agent
    ``j``'s map in agent ``i``'s frame, zero where ``i``'s frame lies outside ``j``'s map.
    Differentiable in ``maps`` (and ``transforms``) with the default ``mode="bilinear"``;
    ``mode="nearest"`` copies cells without interpolation.
    """
    if maps.dim() != 5:
        raise ValueError(f"maps must be (N, A, C, H, W), got {tuple(maps.shape)}")
    n, a, c, h, w = maps.shape
    if transforms.shape != (n, a, a, 2, 3):
        raise ValueError(
            f"transforms must be {(n, a, a, 2, 3)} for maps {tuple(maps.shape)}, "
            f"got {tuple(transforms.shape)}"
        )
    senders = maps[:, None].expand(n, a, a, c, h, w).reshape(n * a * a, c, h, w)
    theta = transforms.to(maps.dtype).reshape(n * a * a, 2, 3)
    grid = F.affine_grid(theta, [n * a * a, c, h, w], align_corners=False)
    warped = F.grid_sample(senders, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return warped.reshape(n, a, a, c, h, w)

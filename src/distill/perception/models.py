"""Collaborative bird's-eye-view (BEV) segmentation models: early, intermediate and late fusion.

DiscoGraph — Li et al., "Learning Distilled Collaboration Graph for Multi-Agent Perception"
(NeurIPS 2021, arXiv 2111.00643); official code ``coperception/coperception``
(``models/det/DiscoNet.py``, ``models/det/TeacherNet.py``, the segmentation variant
``models/seg/DiscoNet.py`` / ``FusionBase.py`` / ``SegModelBase.py`` / ``UNet.py``). Here every
agent owns an egocentric ``V × V`` raster with 2 channels (occupied cells its sensor hits,
visibility) and predicts the vehicles in its frame, seen or occluded, as per-pixel logits.

The backbone :class:`BEVNet` is a small U-Net (the official segmentation backbone is a U-Net
too). Its stages, with ``w = width``::

    encoder   x1 (w,  V)  →  x2 (2w, V/2)  →  x3 (4w, V/4)   ← the collaboration layer
    decoder   dec1 (4w, V/4)  →  dec2 (2w, V/2, skip x2)  →  dec3 (w, V, skip x1)  →  1×1 head

The official code fuses at layer 3 of 5 (a 32×32×256 map from a 256×256 input: 1/8 resolution;
the segmentation U-Net fuses its ``down3`` map, 512×32×32, also 1/8); at ``V = 32`` we fuse at
``V/4`` so the fused map still covers several cells per feature.

* :class:`EarlyFusionTeacher` — the official "upper bound" teacher: each ego sees every agent's
  raw observation merged in its frame (the official teacher reads the merged multi-view point
  cloud; here the world's exact rendering of every agent's returns in the ego frame, or — to
  measure what resampling costs — the elementwise max of the agents' rasters warped into it),
  then a :class:`BEVNet`.
* :class:`IntermediateFusionStudent` — every agent encodes its own observation; at the
  collaboration layer each ego fuses the neighbours' maps warped into its frame: ``"discograph"``
  (:class:`PixelWeightedFusionSoftmax`, the learned per-pixel collaboration graph), ``"mean"``,
  ``"max"`` (the official lower-bound fusions) or ``"none"`` (no communication); then decodes.
* :class:`LateFusion` — each agent runs the ego-only net and the output probabilities are
  warped into the ego frame and merged.

Every model maps ``(observations (N, A, 2, V, V), transforms (N, A, A, 2, 3))`` (and, for the
teacher, ``fused_observations (N, A, 2, V, V)``) to a
:class:`PerceptionOutput` whose ``maps`` carry the feature maps the DiscoGraph KD term reads
(``"fused"``, ``"dec1"``, ``"dec2"``, ``"dec3"``; each ``(N, A, C, H, W)``). ``transforms[n, i, j]``
is the ``F.affine_grid`` theta (normalized coordinates, ``align_corners=False``) that resamples
agent ``j``'s map into agent ``i``'s frame; it is resolution-free, so it warps feature maps too.

Batch normalization in training mode couples the samples of a batch (all agents of all scenes
share the batch statistics), as in the official code; statements below about what an ego's
output depends on hold in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.perception.warp import warp_to_ego

#: How an ego merges its neighbours' collaboration-layer maps.
FusionKind = Literal["discograph", "mean", "max", "none"]

#: How :class:`LateFusion` merges the agents' warped output probabilities.
LateMerge = Literal["visibility_mean", "max"]

#: The decoder maps every model exposes, coarsest first (official segmentation analogues:
#: ``x5``, ``x6``, ``x7`` — the bottleneck after fusion and the next two decoder stages).
DECODER_KEYS: tuple[str, ...] = ("dec1", "dec2", "dec3")

#: The collaboration-layer map after fusion (the official ``feat_fuse_mat`` / ``fused_layer``;
#: for the teacher its own, unfused collaboration-layer map — official ``x_3_teacher``/``x4``).
FUSED_KEY = "fused"

#: The official edge network's hidden widths: ``2C → 128 → 32 → 8 → 1``.
OFFICIAL_EDGE_WIDTHS: tuple[int, ...] = (128, 32, 8)

#: Observation channels: occupied cells hit by the sensor, visibility.
OBSERVATION_CHANNELS = 2


@dataclass(frozen=True)
class PerceptionOutput:
    """What every collaborative model returns.

    ``logits``: ``(N, A, 1, V, V)`` per-pixel vehicle logits in each agent's frame.
    ``maps``: feature maps for the KD term, each ``(N, A, C, H, W)`` (keys :data:`FUSED_KEY` and
    :data:`DECODER_KEYS`). ``edge_weights``: for DiscoGraph, the collaboration-graph weights
    ``(N, A, A, 1, H, W)`` — ``[n, i, k]`` is how much ego ``i`` trusts agent ``k`` at each
    collaboration-layer pixel (a softmax over ``k``, ego included); ``None`` otherwise.
    """

    logits: Tensor
    maps: dict[str, Tensor]
    edge_weights: Tensor | None = None


def _check_scene(observations: Tensor, transforms: Tensor, in_channels: int) -> tuple[int, int, int]:
    """Validate the scene tensors; returns ``(N, A, V)``."""
    if observations.ndim != 5:
        raise ValueError(f"observations must be (N, A, C, V, V), got {tuple(observations.shape)}")
    n, a, c, h, w = observations.shape
    if c != in_channels:
        raise ValueError(f"observations have {c} channels, the model expects {in_channels}")
    if h != w or h % 4:
        raise ValueError(f"the raster must be square with a side divisible by 4, got {h}×{w}")
    if tuple(transforms.shape) != (n, a, a, 2, 3):
        raise ValueError(
            f"transforms must be (N, A, A, 2, 3) = {(n, a, a, 2, 3)}, got {tuple(transforms.shape)}"
        )
    return n, a, h


def _warp_with_exact_ego(maps: Tensor, transforms: Tensor) -> Tensor:
    """``warp_to_ego`` with the diagonal replaced by the unwarped maps: ``(N, A, A, C, H, W)``.

    The diagonal theta is the identity, so resampling would only add rounding; the ego's own map
    is used as it is (as the official code, which puts ``tg_agent`` itself first in the list).
    """
    warped = warp_to_ego(maps, transforms)
    a = maps.shape[1]
    eye = torch.eye(a, dtype=torch.bool, device=maps.device).view(1, a, a, 1, 1, 1)
    return torch.where(eye, maps.unsqueeze(2), warped)


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two ``3×3`` conv → BN → ReLU blocks (the official U-Net ``DoubleConv``)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class BEVNet(nn.Module):
    """A small U-Net for ``(B, C_in, V, V)`` rasters → ``(B, 1, V, V)`` logits (``V % 4 == 0``).

    Split at the collaboration layer so that fusion can happen between :meth:`encode` and
    :meth:`decode`; :meth:`forward` is the ego-only path.
    """

    def __init__(
        self, in_channels: int = OBSERVATION_CHANNELS, width: int = 16, out_channels: int = 1
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        self.in_channels = in_channels
        self.width = width
        self.inc = _double_conv(in_channels, width)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), _double_conv(width, 2 * width))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), _double_conv(2 * width, 4 * width))
        self.bottleneck = _double_conv(4 * width, 4 * width)
        self.up1 = _double_conv(4 * width + 2 * width, 2 * width)
        self.up2 = _double_conv(2 * width + width, width)
        self.head = nn.Conv2d(width, out_channels, kernel_size=1)

    @property
    def collab_channels(self) -> int:
        """Channels ``C`` of the collaboration-layer map (``4 · width``)."""
        return 4 * self.width

    def encode(self, x: Tensor) -> list[Tensor]:
        """``[x1 (w, V), x2 (2w, V/2), collab (4w, V/4)]``: the skips, then the collaboration map."""
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"BEVNet needs a raster side divisible by 4, got {tuple(x.shape[-2:])}")
        x1 = self.inc(x)
        x2 = self.down1(x1)
        return [x1, x2, self.down2(x2)]

    def decode(self, collab_map: Tensor, skips: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """``(logits, [dec1 (4w, V/4), dec2 (2w, V/2), dec3 (w, V)])`` from the (fused) map."""
        x1, x2 = skips
        d1 = self.bottleneck(collab_map)
        up = F.interpolate(d1, size=x2.shape[-2:], mode="bilinear", align_corners=False)
        d2 = self.up1(torch.cat([x2, up], dim=1))
        up = F.interpolate(d2, size=x1.shape[-2:], mode="bilinear", align_corners=False)
        d3 = self.up2(torch.cat([x1, up], dim=1))
        return self.head(d3), [d1, d2, d3]

    def forward(self, x: Tensor) -> Tensor:
        *skips, collab = self.encode(x)
        return self.decode(collab, skips)[0]

    def run(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Ego-only pass: ``(logits, maps)`` with ``maps`` keyed like :class:`PerceptionOutput`."""
        *skips, collab = self.encode(x)
        logits, decoded = self.decode(collab, skips)
        return logits, {FUSED_KEY: collab, **dict(zip(DECODER_KEYS, decoded, strict=True))}


def _per_agent(maps: dict[str, Tensor], n: int, a: int) -> dict[str, Tensor]:
    """``(N·A, ...)`` → ``(N, A, ...)`` for every map."""
    return {key: value.unflatten(0, (n, a)) for key, value in maps.items()}


class PerceptionModel(nn.Module):
    """Base of the collaborative models: ``forward(observations, transforms, fused_observations)
    -> PerceptionOutput``. ``fused_observations`` (``(N, A, C, V, V)``, the world's exact
    early-fusion input) is read by the early-fusion teacher only; the others ignore it."""

    net: BEVNet

    def forward(
        self, observations: Tensor, transforms: Tensor, fused_observations: Tensor | None = None
    ) -> PerceptionOutput:
        raise NotImplementedError


#: Where the early-fusion teacher's input comes from: the world's exact rendering of every agent's
#: returns in the ego frame, or the agents' rasters warped into it.
TeacherInput = Literal["rendered", "warped"]


class EarlyFusionTeacher(PerceptionModel):
    """The early-fusion teacher (official ``TeacherNet`` / the segmentation teacher ``UNet``).

    For each ego, one :class:`BEVNet` reads every agent's raw observation merged in the ego frame —
    the official teacher reads the voxelized union of all agents' point clouds. ``teacher_input``:

    * ``"rendered"`` (default): the ``fused_observations`` the world generator renders from the
      geometry (every agent's returns rasterized in the ego frame), the faithful analogue;
    * ``"warped"``: each agent's raster bilinearly warped into the ego frame and merged by the
      elementwise max over agents (ego included) of both channels. At 32 × 32 the warp blurs the
      sparse occupancy (IoU ≈ 0.8 with the rendered one), so this is a weaker teacher; kept to
      measure what resampling costs.

    Officially the teacher is trained first and then frozen (``eval()``, every parameter
    ``requires_grad = False``) while the student trains against it.
    """

    def __init__(
        self,
        in_channels: int = OBSERVATION_CHANNELS,
        width: int = 16,
        teacher_input: TeacherInput = "rendered",
    ) -> None:
        super().__init__()
        if teacher_input not in get_args(TeacherInput):
            raise ValueError(f"teacher_input must be one of {get_args(TeacherInput)}, got {teacher_input!r}")
        self.net = BEVNet(in_channels, width)
        self.teacher_input = teacher_input

    @staticmethod
    def fuse_observations(observations: Tensor, transforms: Tensor) -> Tensor:
        """The ``"warped"`` input ``(N, A, C, V, V)``: max over agents of the warped observations."""
        return _warp_with_exact_ego(observations, transforms).amax(dim=2)

    def forward(
        self, observations: Tensor, transforms: Tensor, fused_observations: Tensor | None = None
    ) -> PerceptionOutput:
        n, a, _ = _check_scene(observations, transforms, self.net.in_channels)
        if self.teacher_input == "warped":
            fused = self.fuse_observations(observations, transforms)
        elif fused_observations is None:
            raise ValueError(
                "the early-fusion teacher reads fused_observations (the world's rendered early-fusion "
                "input); pass them, or build it with teacher_input='warped'"
            )
        elif fused_observations.shape != observations.shape:
            raise ValueError(
                f"fused_observations must have the observations' shape {tuple(observations.shape)}, "
                f"got {tuple(fused_observations.shape)}"
            )
        else:
            fused = fused_observations
        logits, maps = self.net.run(fused.flatten(0, 1))
        return PerceptionOutput(logits.unflatten(0, (n, a)), _per_agent(maps, n, a))


class PixelWeightedFusionSoftmax(nn.Module):
    """DiscoGraph's edge network and fusion (official ``PixelWeightedFusionSoftmax``).

    For ego ``i`` and each agent ``k`` (ego first, ``k = i`` included), ``1×1`` convs on the
    channel concatenation ``[h_i, ĥ_k]`` of the ego map and ``k``'s map warped into the ego frame,
    ``2C → 128 → 32 → 8 → 1``, with BN + ReLU after the hidden convs and — as officially — a ReLU
    on the final score too (no BN there). The weights are the softmax over ``k`` of the scores
    per pixel (officially ``exp(s_k) / Σ_k exp(s_k)``; the same, computed stably), and the fused
    map is ``Σ_k w_k ⊙ ĥ_k`` (one weight per pixel, shared by the channels).

    ``widths`` are the hidden widths (official ``(128, 32, 8)``, affordable here: the edge net
    runs on ``V/4``-sized maps); ``score_relu=False`` drops the final ReLU (a deviation: with it,
    an all-negative pre-activation gives uniform weights and no gradient to the edge net).
    """

    def __init__(
        self, channels: int, widths: Sequence[int] = OFFICIAL_EDGE_WIDTHS, score_relu: bool = True
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 2 * channels
        for width in widths:
            layers += [
                nn.Conv2d(previous, width, kernel_size=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            previous = width
        layers.append(nn.Conv2d(previous, 1, kernel_size=1))
        self.score = nn.Sequential(*layers)
        self.score_relu = score_relu

    def forward(self, ego: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor]:
        """``ego (B, C, H, W)``, ``candidates (B, K, C, H, W)`` (the ego's own map among them) →
        ``(fused (B, C, H, W), weights (B, K, 1, H, W))``."""
        b, k = candidates.shape[:2]
        pairs = torch.cat([ego.unsqueeze(1).expand_as(candidates), candidates], dim=2)
        scores = self.score(pairs.flatten(0, 1))
        if self.score_relu:
            scores = F.relu(scores)
        weights = torch.softmax(scores.unflatten(0, (b, k)), dim=1)
        return (weights * candidates).sum(dim=1), weights


class IntermediateFusionStudent(PerceptionModel):
    """The intermediate-fusion student: per-agent encoders, fusion at the collaboration layer.

    ``fusion``: ``"discograph"`` (:class:`PixelWeightedFusionSoftmax`, official ``DiscoNet``),
    ``"mean"`` / ``"max"`` (elementwise over the warped maps, ego included — official
    ``MeanFusion`` / ``MaxFusion``; the warped maps are zero outside a neighbour's view, as
    officially) or ``"none"`` (each agent decodes its own map: no communication).

    ``compress_channels = c`` adds the official channel compression: a ``1×1`` conv ``C → c``
    (+ BN + ReLU) before sending and ``c → C`` (+ BN + ReLU) on receipt, applied — as officially —
    to every agent's map, the ego's own included, before warping. A message is then ``c``
    channels of ``(V/4)²`` values (see :func:`distill.perception.discograph.bytes_per_frame`).
    """

    def __init__(
        self,
        fusion: FusionKind = "discograph",
        in_channels: int = OBSERVATION_CHANNELS,
        width: int = 16,
        compress_channels: int | None = None,
        edge_widths: Sequence[int] = OFFICIAL_EDGE_WIDTHS,
        edge_score_relu: bool = True,
    ) -> None:
        super().__init__()
        if fusion not in get_args(FusionKind):
            raise ValueError(f"fusion must be one of {get_args(FusionKind)}, got {fusion!r}")
        self.fusion = fusion
        self.net = BEVNet(in_channels, width)
        channels = self.net.collab_channels
        self.compress_channels = compress_channels
        self.compressor: nn.Module | None = None
        self.decompressor: nn.Module | None = None
        if compress_channels is not None:
            if fusion == "none":
                raise ValueError("compress_channels needs a fusion that communicates (not 'none')")
            if not 1 <= compress_channels <= channels:
                raise ValueError(f"compress_channels must be in [1, {channels}], got {compress_channels}")
            self.compressor = nn.Sequential(
                nn.Conv2d(channels, compress_channels, 1), nn.BatchNorm2d(compress_channels), nn.ReLU()
            )
            self.decompressor = nn.Sequential(
                nn.Conv2d(compress_channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU()
            )
        self.edge: PixelWeightedFusionSoftmax | None = (
            PixelWeightedFusionSoftmax(channels, edge_widths, edge_score_relu)
            if fusion == "discograph"
            else None
        )

    def forward(
        self, observations: Tensor, transforms: Tensor, fused_observations: Tensor | None = None
    ) -> PerceptionOutput:
        n, a, _ = _check_scene(observations, transforms, self.net.in_channels)
        *skips, collab = self.net.encode(observations.flatten(0, 1))
        if self.compressor is not None and self.decompressor is not None:
            collab = self.decompressor(self.compressor(collab))
        own = collab.unflatten(0, (n, a))
        edge_weights: Tensor | None = None
        if self.fusion == "none":
            fused = own
        else:
            candidates = _warp_with_exact_ego(own, transforms)  # (N, A, A, C, H, W): [n, i, k]
            if self.fusion == "mean":
                fused = candidates.mean(dim=2)
            elif self.fusion == "max":
                fused = candidates.amax(dim=2)
            else:
                assert self.edge is not None
                flat, weights = self.edge(own.flatten(0, 1), candidates.flatten(0, 1))
                fused, edge_weights = flat.unflatten(0, (n, a)), weights.unflatten(0, (n, a))
        logits, decoded = self.net.decode(fused.flatten(0, 1), skips)
        maps = {FUSED_KEY: fused, **_per_agent(dict(zip(DECODER_KEYS, decoded, strict=True)), n, a)}
        return PerceptionOutput(logits.unflatten(0, (n, a)), maps, edge_weights)


class LateFusion(PerceptionModel):
    """Late fusion: each agent runs the ego-only :class:`BEVNet`; outputs are merged per ego.

    The agents' probabilities ``p_k = σ(logit_k)`` are warped into the ego frame and merged:

    * ``"visibility_mean"`` (default): ``Σ_k v_k p_k / Σ_k v_k`` with ``v_k`` agent ``k``'s warped
      visibility channel — each cell is the mean over the agents that see it; the ego also gets a
      floor weight ``eps`` so the cells nobody sees keep the ego's own prediction. (The sender
      must then ship its visibility mask too: one bit a cell.)
    * ``"max"``: ``max_k p_k`` (warped maps are zero outside a sender's view).

    The merged probability is returned as a logit (clamped to ``[eps, 1 − eps]``). ``maps`` are
    each agent's own, unfused ego-only maps (nothing is fused at the feature level).
    """

    def __init__(
        self,
        in_channels: int = OBSERVATION_CHANNELS,
        width: int = 16,
        merge: LateMerge = "visibility_mean",
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        if merge not in get_args(LateMerge):
            raise ValueError(f"merge must be one of {get_args(LateMerge)}, got {merge!r}")
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps}")
        if merge == "visibility_mean" and in_channels < 2:
            raise ValueError("the 'visibility_mean' merge reads the visibility channel (index 1)")
        self.net = BEVNet(in_channels, width)
        self.merge = merge
        self.eps = eps

    def forward(
        self, observations: Tensor, transforms: Tensor, fused_observations: Tensor | None = None
    ) -> PerceptionOutput:
        n, a, _ = _check_scene(observations, transforms, self.net.in_channels)
        logits, maps = self.net.run(observations.flatten(0, 1))
        probabilities = _warp_with_exact_ego(torch.sigmoid(logits).unflatten(0, (n, a)), transforms)
        if self.merge == "max":
            merged = probabilities.amax(dim=2)
        else:
            visibility = _warp_with_exact_ego(observations[:, :, 1:2], transforms).clamp(0.0, 1.0)
            floor = self.eps * torch.eye(a, dtype=visibility.dtype, device=visibility.device)
            weights = visibility + floor.view(1, a, a, 1, 1, 1)
            merged = (weights * probabilities).sum(dim=2) / weights.sum(dim=2)
        return PerceptionOutput(torch.logit(merged, eps=self.eps), _per_agent(maps, n, a))


__all__ = [
    "DECODER_KEYS",
    "FUSED_KEY",
    "OBSERVATION_CHANNELS",
    "OFFICIAL_EDGE_WIDTHS",
    "BEVNet",
    "EarlyFusionTeacher",
    "FusionKind",
    "IntermediateFusionStudent",
    "LateFusion",
    "LateMerge",
    "PerceptionModel",
    "PerceptionOutput",
    "PixelWeightedFusionSoftmax",
    "TeacherInput",
]

"""DiscoGraph training terms: the teacher-student KD loss, the task loss and the bandwidth count.

Li et al., "Learning Distilled Collaboration Graph for Multi-Agent Perception" (NeurIPS 2021,
arXiv 2111.00643); official code ``coperception/coperception``: ``utils/CoDetModule.py::get_kd_loss``
(detection) and ``utils/SegModule.py::get_kd_loss`` (segmentation). The recipe:

1. Train the early-fusion teacher (:class:`~distill.perception.models.EarlyFusionTeacher`) on the
   task alone. Then freeze it: ``eval()`` and ``requires_grad = False`` on every parameter
   (official ``FaFModule`` / ``SegModule`` constructors and ``teacher.eval()`` in the train scripts).
2. Train the student (:class:`~distill.perception.models.IntermediateFusionStudent`) on
   ``task loss + kd_weight · KD`` where KD (:func:`discograph_kd_loss`) is, for each of the
   student's fused collaboration-layer map and its decoder maps against the teacher's maps at the
   same places, the KL divergence between the teacher's and the student's softmax *over channels*
   at each pixel, reduced as ``nn.KLDivLoss(size_average=True, reduce=True)`` — i.e.
   ``reduction="mean"``: averaged over *all* elements (pixels × channels), not per pixel — and
   summed over the maps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol, cast, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.perception.models import (
    DECODER_KEYS,
    FUSED_KEY,
    OBSERVATION_CHANNELS,
    EarlyFusionTeacher,
    IntermediateFusionStudent,
    LateFusion,
    LateMerge,
    PerceptionModel,
)

#: The maps the KD term reads by default: the fused collaboration-layer map and every decoder map.
#: (Official detection: ``x_7, x_6, x_5`` + fused; segmentation: ``x5, x6, x7`` + fused — the
#: decoder maps above the two finest; we have three decoder maps and use all of them.)
KD_KEYS: tuple[str, ...] = (FUSED_KEY, *DECODER_KEYS)

#: The official KD weight for detection (``tools/det/train_codet.py --kd_weight 100000``). The
#: official segmentation script defaults to 100 (``tools/seg/train_seg.py``).
OFFICIAL_KD_WEIGHT = 1e5

#: What :func:`bytes_per_frame` counts: early fusion, the intermediate fusions, late fusion, none.
CommunicationKind = Literal["early", "intermediate", "discograph", "mean", "max", "late", "none"]

#: Bytes per occupied cell in the sparse early-fusion message: two int16 grid coordinates.
SPARSE_BYTES_PER_CELL = 4


def channel_kl(student_map: Tensor, teacher_map: Tensor) -> Tensor:
    """Per-pixel KL(teacher ‖ student) over channels, averaged over all elements (``(…, C, H, W)``).

    Exactly the official ``KLDivLoss(size_average=True, reduce=True)(log_softmax(student),
    softmax(teacher))`` on the maps reshaped to ``(pixels, C)``: ``Σ p_t (log p_t − log p_s)``
    divided by ``pixels · C``. Computed from log-softmaxes (``p_t log p_t`` → 0 as ``p_t`` → 0),
    which avoids PyTorch's deprecation warning on ``kl_div(reduction="mean")``.
    """
    if student_map.shape != teacher_map.shape:
        raise ValueError(
            f"map shapes differ: student {tuple(student_map.shape)}, teacher {tuple(teacher_map.shape)}"
        )
    if student_map.ndim < 3:
        raise ValueError(f"maps must be (..., C, H, W), got {tuple(student_map.shape)}")
    student_log = F.log_softmax(student_map, dim=-3)
    teacher_log = F.log_softmax(teacher_map.detach(), dim=-3)
    return (teacher_log.exp() * (teacher_log - student_log)).mean()


def discograph_kd_loss(
    student_maps: Mapping[str, Tensor], teacher_maps: Mapping[str, Tensor], keys: Sequence[str] = KD_KEYS
) -> Tensor:
    """The official DiscoGraph KD term (unweighted): ``Σ_key channel_kl(student[key], teacher[key])``.

    Direction: KL(teacher ‖ student) — the teacher's channel softmax is the target, the student's
    log-softmax the input of ``KLDivLoss``. Reduction: mean over every element, so the term is
    ``1/C`` of the per-pixel KL averaged over pixels; the official weight 1e5 makes up for that.
    The teacher maps are detached (officially the teacher is frozen). Zero iff, at every pixel,
    the two maps differ by a constant over channels.
    """
    if not keys:
        raise ValueError("discograph_kd_loss needs at least one map key")
    missing = [key for key in keys if key not in student_maps or key not in teacher_maps]
    if missing:
        raise KeyError(f"maps missing for the KD term: {missing}")
    total = channel_kl(student_maps[keys[0]], teacher_maps[keys[0]])
    for key in keys[1:]:
        total = total + channel_kl(student_maps[key], teacher_maps[key])
    return total


def segmentation_loss(logits: Tensor, targets: Tensor, pos_weight: float | None = None) -> Tensor:
    """The task loss: binary cross-entropy with logits, averaged over every pixel.

    The paper's task is 3-D detection (official loss: focal classification + box regression);
    the official segmentation variant uses a multi-class cross-entropy. We segment one class
    (vehicle / not), so BCE; ``pos_weight`` up-weights the (rare) vehicle pixels.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    weight = (
        None if pos_weight is None else torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    )
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=weight)


def bytes_per_frame(
    model: PerceptionModel | CommunicationKind,
    side: int = 32,
    channels: int = 64,
    compress_channels: int | None = None,
    dtype_bytes: int = 4,
    *,
    in_channels: int = OBSERVATION_CHANNELS,
    occupied_cells: int | None = None,
    late_merge: LateMerge = "visibility_mean",
) -> dict[str, int]:
    """What one agent broadcasts per frame (once, to all its neighbours), by fusion kind.

    ``model`` is a model (its kind, ``channels``, ``compress_channels``, ``in_channels`` and merge
    are read from it) or a kind name. ``side`` is the raster side ``V``. Returns:

    * ``"values"`` — dense values sent; ``"bytes"`` = ``values · dtype_bytes``;
      ``"total_bytes"`` — ``"bytes"`` plus any side information the model needs.
    * early fusion: the raw raster, ``in_channels · V²`` values (float32 by default). Also the
      sparse alternative, a list of the occupied (ch0) cells as two int16 coordinates each:
      ``"sparse_bytes_per_cell"`` (4) and, given ``occupied_cells``, ``"sparse_bytes"``. (The
      visibility channel is then recomputed by the receiver by ray casting from the sender's
      pose, as a point cloud implies free space along its rays.)
    * intermediate (``"discograph"``, ``"mean"``, ``"max"``): the collaboration-layer map,
      ``c · (V/4)²`` values with ``c = compress_channels or channels``.
    * late: the output probability map, ``V²`` values; the ``"visibility_mean"`` merge also needs
      the sender's visibility mask, ``"mask_bytes"`` = ``⌈V²/8⌉`` (one bit a cell).
    * ``"none"``: nothing.
    """
    kind: str
    if isinstance(model, IntermediateFusionStudent):
        kind, channels, compress_channels = model.fusion, model.net.collab_channels, model.compress_channels
        in_channels = model.net.in_channels
    elif isinstance(model, EarlyFusionTeacher):
        kind, in_channels = "early", model.net.in_channels
    elif isinstance(model, LateFusion):
        kind, late_merge = "late", model.merge
    elif isinstance(model, str):
        if model not in get_args(CommunicationKind):
            raise ValueError(f"unknown communication kind {model!r}; one of {get_args(CommunicationKind)}")
        kind = model
    else:
        raise TypeError(
            f"bytes_per_frame takes a perception model or a kind name, got {type(model).__name__}"
        )
    if side < 4 or side % 4:
        raise ValueError(f"side must be a positive multiple of 4, got {side}")
    if dtype_bytes < 1:
        raise ValueError(f"dtype_bytes must be positive, got {dtype_bytes}")

    extra: dict[str, int] = {}
    if kind == "none":
        values = 0
    elif kind == "early":
        values = in_channels * side * side
        extra["sparse_bytes_per_cell"] = SPARSE_BYTES_PER_CELL
        if occupied_cells is not None:
            extra["sparse_bytes"] = SPARSE_BYTES_PER_CELL * occupied_cells
    elif kind == "late":
        values = side * side
        extra["mask_bytes"] = math.ceil(side * side / 8) if late_merge == "visibility_mean" else 0
    else:
        sent = channels if compress_channels is None else compress_channels
        values = sent * (side // 4) ** 2
    payload = values * dtype_bytes
    return {"values": values, "bytes": payload, "total_bytes": payload + extra.get("mask_bytes", 0), **extra}


class SceneTensors(Protocol):
    """A scene batch given as an object with the three tensors as attributes."""

    @property
    def observations(self) -> Tensor: ...

    @property
    def targets(self) -> Tensor: ...

    @property
    def transforms(self) -> Tensor: ...


#: A scene batch: a mapping with keys ``observations``, ``targets``, ``transforms`` (and optionally
#: ``fused_observations``), an object with those attributes, or the sequence ``(observations,
#: targets, transforms[, fused_observations])``.
SceneBatch = Mapping[str, Tensor] | SceneTensors | Sequence[Tensor]


def scene_tensors(batch: SceneBatch) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``(observations, targets, transforms, fused_observations)`` from any :data:`SceneBatch`;
    ``fused_observations`` (the teacher's rendered early-fusion input) is ``None`` when the batch
    has none."""
    if isinstance(batch, Mapping):
        fused = batch.get("fused_observations")
        return batch["observations"], batch["targets"], batch["transforms"], fused
    if all(hasattr(batch, name) for name in ("observations", "targets", "transforms")):
        # attributes before positions: a named tuple may hold more fields, in another order
        scene = cast(SceneTensors, batch)
        fused = getattr(scene, "fused_observations", None)
        return scene.observations, scene.targets, scene.transforms, fused
    if isinstance(batch, Sequence) and len(batch) >= 3:
        return batch[0], batch[1], batch[2], batch[3] if len(batch) >= 4 else None
    raise TypeError(
        "a scene batch is a mapping, an object with observations/targets/transforms, or a 3-sequence"
    )


class DiscoGraphTraining:
    """The student's DiscoGraph objective against a trained, frozen early-fusion teacher.

    Not a :class:`distill.methods.Method` (the classification trainer does not fit a multi-agent
    scene task): a holder of the student, the teacher and the weights, with :meth:`loss`.
    The teacher must have been trained first (the application's job); here it is put in eval
    mode with ``requires_grad`` off, and run under ``torch.no_grad``.

    ``kd_weight`` defaults to the official detection value 1e5. With the "mean" reduction the KD
    term is ``1/C`` of the per-pixel KL (``C`` = 64, 64, 32, 16 for our four maps at width 16),
    so 1e5 weighs the per-pixel KL ~1.6e3–6e3 times; the official segmentation script uses 100.
    Measured at width 16, ``V = 32`` (fresh student against a briefly trained teacher): the
    unweighted term is ≈ 0.02–0.05, most of it from ``dec3`` (``C = 16``, full resolution — a
    map the official code never distills); at 1e5 it outweighs the BCE (≈ 0.7) by three orders of
    magnitude, yet under Adam the BCE still falls about as fast as with 1e2. Pass 1e2 when the
    task loss should lead, and ``kd_keys=("fused", "dec1", "dec2")`` to skip the finest map.
    """

    def __init__(
        self,
        student: PerceptionModel,
        teacher: PerceptionModel,
        kd_weight: float = OFFICIAL_KD_WEIGHT,
        kd_keys: Sequence[str] = KD_KEYS,
        pos_weight: float | None = None,
    ) -> None:
        if kd_weight < 0:
            raise ValueError(f"kd_weight must be non-negative, got {kd_weight}")
        self.student = student
        self.teacher = teacher
        self.kd_weight = float(kd_weight)
        self.kd_keys = tuple(kd_keys)
        self.pos_weight = pos_weight
        teacher.eval()
        teacher.requires_grad_(False)

    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters: the student's."""
        return list(self.student.parameters())

    def loss(self, batch: SceneBatch) -> dict[str, Tensor]:
        """``{"seg", "kd", "total"}`` for one scene batch; ``"kd"`` already carries ``kd_weight``."""
        observations, targets, transforms, fused = scene_tensors(batch)
        self.teacher.eval()
        with torch.no_grad():
            teacher_out = self.teacher(observations, transforms, fused)
        student_out = self.student(observations, transforms)
        seg = segmentation_loss(student_out.logits, targets, self.pos_weight)
        kd = self.kd_weight * discograph_kd_loss(student_out.maps, teacher_out.maps, self.kd_keys)
        return {"seg": seg, "kd": kd, "total": seg + kd}


__all__ = [
    "KD_KEYS",
    "OFFICIAL_KD_WEIGHT",
    "SPARSE_BYTES_PER_CELL",
    "CommunicationKind",
    "DiscoGraphTraining",
    "SceneBatch",
    "SceneTensors",
    "bytes_per_frame",
    "channel_kl",
    "discograph_kd_loss",
    "scene_tensors",
    "segmentation_loss",
]

"""Contrastive Representation Distillation (Tian, Krishnan & Isola, ICLR 2020, arXiv 1910.10699).

The student learns a representation from which a critic can tell the teacher's representation
of the *same* input (the congruent pair) from the teacher's representations of other inputs
(incongruent pairs), which maximizes a lower bound on the mutual information between the two
(Sec. 3.1). Loss, as the authors' code (``HobbitLong/RepDistiller``, ``train_student.py``)
combines it::

    L = ce_weight · CE(y, s(x̃)) + kd_weight · T² · KL(σ(t(x̃)/T) ‖ σ(s(x̃)/T)) + crd_weight · L_crd

with the official CIFAR-100 command ``-r 1 -a 0 -b 0.8`` as defaults (CE 1, KD 0, CRD 0.8).

``L_crd`` follows the code's NCE form (``crd/criterion.py`` ``ContrastLoss``, "Eq. (18)" in its
docstring; ``crd/memory.py`` ``ContrastMemory``) rather than the critic's idealized form in the
paper, which the code approximates:

* embeddings: ``v_s = g_S(s) = normalize(W_S s + b_S)`` and ``v_t = g_T(t)`` likewise, where
  ``s``, ``t`` are the tapped (flattened) penultimate features — the critic's ``g^S``, ``g^T``;
* two memory banks of one ``feat_dim`` row per training sample: ``M_s`` (of student embeddings)
  and ``M_t`` (of teacher embeddings), initialized uniform in ``[-a, a]``, ``a = 1/sqrt(d/3)``;
* for sample ``i`` with ``K`` negative rows ``j_1..j_K`` (positive ``j_0 = i``, "exact" mode)::

      P_s(k) = exp(⟨M_t[j_k], v_s⟩/τ) / Z_s      (student anchor, teacher memory)
      P_t(k) = exp(⟨M_s[j_k], v_t⟩/τ) / Z_t      (teacher anchor, student memory)

  the unnormalized critic ``exp(g^T(t)ᵀ g^S(s)/τ)`` of Sec. 3.1 with one side read from memory;
  ``Z`` is fixed at the first batch's estimate ``mean(exp(·/τ)) · n_data`` (the code's);
* NCE with noise ``P_n = 1/n_data`` (the ``h(T,S) = e^{…}/(e^{…} + N/M)`` of Sec. 3.1 with
  ``N = K`` and ``M = n_data``)::

      ℓ(P) = −(1/B) Σ_i [ log P(0)/(P(0) + K·P_n) + Σ_{k≥1} log K·P_n/(P(k) + K·P_n) ]
      L_crd = ℓ(P_s) + ℓ(P_t)

* after the step the batch's rows are updated, ``M[i] ← normalize(m·M[i] + (1−m)·v)``.

Negatives are drawn as the official data loaders draw them (``dataset/cifar100.py``
``CIFAR100InstanceSample``): from the training rows of *other classes* than the anchor's
(``negative_sampling: other_class``); ``uniform`` is ``ContrastMemory``'s own fallback (the
alias sampler over equal weights: any row, the anchor's included). Draws are i.i.d. with
replacement, so ``negatives`` may exceed the training set (the official loader also samples
with replacement then); they come from a generator seeded by (seed, step, rank), so a run
(and a resumed run) draws the same negatives.

This method uses the live teacher only (no teacher-output cache): it reads the teacher's tapped
features of each step's augmented batch; caching them (``cached_teacher_layers``) is possible
but not done.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distill.errors import DistillError, unknown_name_message
from distill.losses import weighted
from distill.methods.base import Batch, EpochStart, FrozenTeacher, Method, MethodSpec
from distill.methods.registry import METHODS, MethodContext
from distill.methods.scratch import classification_loss
from distill.models.taps import FeatureTaps, module_names

#: the official ``ContrastLoss``'s guard in its denominators
NCE_EPS = 1e-7

NegativeSampling = Literal["other_class", "uniform"]


class CRDSpec(MethodSpec):
    """``crd``: cross-entropy (+ optional Hinton KD) + contrastive representation distillation.

    Defaults are the official CIFAR-100 setting (``train_student.py``: ``-r 1 -a 0 -b 0.8``,
    ``--feat_dim 128 --nce_k 16384 --nce_t 0.07 --nce_m 0.5 --kd_T 4``). ``student_layer`` and
    ``teacher_layer`` name the modules whose outputs are the penultimate features (the
    resnets' ``pool``; an MLP's ``body``, its last hidden activation); outputs are flattened.
    """

    name: Literal["crd"] = "crd"
    ce_weight: float = Field(default=1.0, ge=0.0)
    kd_weight: float = Field(default=0.0, ge=0.0)
    #: > 0: the method is CE (+ KD) without it, and its embedding heads would get no gradient
    crd_weight: float = Field(default=0.8, gt=0.0)
    #: the KD term's temperature (used only when ``kd_weight`` > 0)
    temperature: float = Field(default=4.0, gt=0.0)
    feat_dim: int = Field(default=128, ge=1)
    #: negatives K per anchor; drawn with replacement, so K may exceed the training set
    negatives: int = Field(default=16384, ge=1)
    nce_temperature: float = Field(default=0.07, gt=0.0)
    #: memory momentum m: a row becomes normalize(m · row + (1 − m) · embedding)
    momentum: float = Field(default=0.5, ge=0.0, lt=1.0)
    negative_sampling: NegativeSampling = "other_class"
    student_layer: str = "pool"
    teacher_layer: str = "pool"

    uses_teacher: ClassVar[bool] = True

    def cacheable_temperature(self) -> float | None:
        """``None``: CRD needs the live teacher's features of every augmented batch."""
        return None


class Embed(nn.Module):
    """``g(x) = normalize(W flatten(x) + b)``: the critic's embedding ``g^S`` / ``g^T`` (Sec. 3.1),
    the official ``Embed`` (a linear map then L2 normalization)."""

    def __init__(self, in_features: int, feat_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, feat_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(features.flatten(1)), dim=1)


def contrast_scores(
    anchors: torch.Tensor, memory: torch.Tensor, contrast_indices: torch.Tensor, nce_temperature: float
) -> torch.Tensor:
    """``exp(⟨memory[j], anchor_b⟩ / τ)`` for every ``j`` of ``contrast_indices[b]``: ``(B, K+1)``.

    The unnormalized critic of Sec. 3.1 with one side read from a memory bank (gradients reach
    the anchors only). Computed as one ``(B, n)`` product and a gather when the bank has fewer
    rows than ``(K+1)·d`` (CIFAR: 50k rows against 16385 × 128), else by gathering the rows
    first as the official ``ContrastMemory`` does; both give the same scores.
    """
    memory = memory.detach()
    batch, columns = contrast_indices.shape
    rows, dim = memory.shape
    if rows <= columns * dim:
        # a copy: backward needs the bank as it was, and the step updates it in place
        logits = (anchors @ memory.clone().t()).gather(1, contrast_indices)
    else:
        gathered = memory.index_select(0, contrast_indices.reshape(-1)).view(batch, columns, dim)
        logits = torch.bmm(gathered, anchors.unsqueeze(2)).squeeze(2)
    return torch.exp(logits / nce_temperature)


def nce_loss(probs: torch.Tensor, n_data: int) -> torch.Tensor:
    """The official ``ContrastLoss``: NCE with uniform noise ``P_n = 1/n_data`` over ``K`` noise
    samples, on ``probs = exp(score/τ)/Z`` shaped ``(B, K+1)`` with the positive in column 0::

        −(1/B) Σ_b [ log P_b0/(P_b0 + K·P_n) + Σ_{k≥1} log K·P_n/(P_bk + K·P_n) ]

    i.e. ``−E[log h]`` on the congruent pair and ``−K·E[log(1 − h)]`` on incongruent ones with
    the critic ``h = P/(P + N/M)`` of Sec. 3.1 (``N = K``, ``M = n_data``).
    """
    negatives = probs.shape[1] - 1
    noise = negatives / float(n_data)
    positive = probs[:, 0]
    log_positive = torch.log(positive / (positive + (noise + NCE_EPS)))
    log_negative = torch.log(noise / (probs[:, 1:] + (noise + NCE_EPS)))
    return -(log_positive.sum() + log_negative.sum()) / probs.shape[0]


@torch.no_grad()
def update_memory(
    memory: torch.Tensor, indices: torch.Tensor, embeddings: torch.Tensor, momentum: float
) -> None:
    """The official momentum update of the batch's rows (others untouched), in place::

    memory[i] ← normalize(momentum · memory[i] + (1 − momentum) · embedding_i)
    """
    rows = (
        memory.index_select(0, indices)
        .mul_(momentum)
        .add_(embeddings.detach().to(memory.dtype), alpha=1 - momentum)
    )
    memory.index_copy_(0, indices, F.normalize(rows, dim=1))


def _world() -> tuple[int, int]:
    """(rank, world size) of the process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` of every rank, concatenated in rank order (``tensor`` itself in one process).
    Ranks take equal batches (the trainer pads every rank's shard to the same length)."""
    _, world = _world()
    if world == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def _draw_seed(seed: int, draw: int, rank: int) -> int:
    """A distinct seed for the negatives of step ``draw`` on ``rank``."""
    return (seed * 1_000_003 + draw * 7_919 + rank * 104_729 + 15_485_863) % (2**63 - 1)


class ContrastiveRepresentationDistillation(Method):
    """Student trained with CE (+ KD) + CRD against a frozen teacher's penultimate features.

    Submodules: ``student`` and the embedding heads ``embed_student``/``embed_teacher`` (all
    optimized). Buffers (checkpointed, so a resumed run continues exactly): the memory banks
    ``memory_student``/``memory_teacher`` ``(n_data, feat_dim)``, the two NCE normalizers
    ``normalizers = [Z_s, Z_t]`` (−1 until the first training batch fixes them) and ``draws``,
    the count of negative draws made (it seeds the next one). The class layout of the training
    set for ``other_class`` sampling is kept as non-persistent buffers (rebuilt from the data).
    Memory, normalizers and the draw count change only in training mode.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        labels: torch.Tensor,
        num_classes: int,
        example_inputs: torch.Tensor,
        *,
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        crd_weight: float = 0.8,
        temperature: float = 4.0,
        feat_dim: int = 128,
        negatives: int = 16384,
        nce_temperature: float = 0.07,
        momentum: float = 0.5,
        negative_sampling: NegativeSampling = "other_class",
        student_layer: str = "pool",
        teacher_layer: str = "pool",
        seed: int = 0,
        owner: str = "method",
    ) -> None:
        super().__init__(student)
        self.ce_weight, self.kd_weight, self.crd_weight = ce_weight, kd_weight, crd_weight
        self.temperature = temperature
        self.negatives = negatives
        self.nce_temperature = nce_temperature
        self.momentum = momentum
        self.negative_sampling = negative_sampling
        self.student_layer, self.teacher_layer = student_layer, teacher_layer
        self.seed = seed
        for field, model, layer in (
            ("student_layer", student, student_layer),
            ("teacher_layer", teacher, teacher_layer),
        ):
            if layer not in module_names(model):
                raise DistillError(
                    f"{owner}.{field}: " + unknown_name_message("layer", layer, module_names(model))
                )
        labels = labels.detach().to(torch.long).cpu()
        self.n_data = int(labels.shape[0])
        if self.n_data < 2:
            raise DistillError(f"{owner}: crd needs at least 2 training samples, got {self.n_data}")
        self.live_teacher = FrozenTeacher(teacher, [teacher_layer])
        self.student_taps = FeatureTaps(student, [student_layer], owner=f"{owner}.student_layer")
        student_dim, teacher_dim = self._feature_sizes(example_inputs)
        self.embed_student = Embed(student_dim, feat_dim)
        self.embed_teacher = Embed(teacher_dim, feat_dim)

        bound = 1.0 / math.sqrt(feat_dim / 3)
        init = torch.Generator().manual_seed(_draw_seed(seed, -1, 0))
        for name in ("memory_student", "memory_teacher"):
            self.register_buffer(
                name, torch.rand(self.n_data, feat_dim, generator=init) * (2 * bound) - bound
            )
        self.register_buffer("normalizers", torch.full((2,), -1.0))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        self._set_class_layout(labels, num_classes, owner)
        # host copies of `draws` and of "are the normalizers set", so that a step needs no sync
        self._draws: int | None = None
        self._normalizers_set: bool | None = None
        self._generator: torch.Generator | None = None
        self.register_load_state_dict_post_hook(lambda module, _keys: module._forget_host_state())

    memory_student: torch.Tensor
    memory_teacher: torch.Tensor
    normalizers: torch.Tensor
    draws: torch.Tensor
    labels: torch.Tensor
    rows_by_class: torch.Tensor
    class_start: torch.Tensor
    class_count: torch.Tensor

    def _feature_sizes(self, example_inputs: torch.Tensor) -> tuple[int, int]:
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            self.student(example_inputs)
        student_feature = self.student_taps.features[self.student_layer]
        self.student.train(was_training)
        teacher_feature = self.live_teacher(example_inputs).features[self.teacher_layer]
        return student_feature.flatten(1).shape[1], teacher_feature.flatten(1).shape[1]

    def _set_class_layout(self, labels: torch.Tensor, num_classes: int, owner: str) -> None:
        """Rows sorted by class, with each class's first position and count: a negative of an
        anchor of class c is a uniform position among the rows outside c's block."""
        if self.negative_sampling == "other_class":
            if labels.min() < 0 or labels.max() >= num_classes:
                raise DistillError(
                    f"{owner}: negative_sampling other_class needs class ids in [0, {num_classes})"
                )
            if labels.unique().numel() < 2:
                raise DistillError(
                    f"{owner}: negative_sampling other_class needs at least two classes in the training "
                    "split; use negative_sampling: uniform"
                )
        counts = torch.bincount(labels.clamp(min=0), minlength=num_classes)
        self.register_buffer("labels", labels, persistent=False)
        self.register_buffer("rows_by_class", torch.argsort(labels, stable=True), persistent=False)
        self.register_buffer("class_start", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("class_count", counts, persistent=False)

    def _forget_host_state(self) -> None:
        self._draws = None
        self._normalizers_set = None

    def on_epoch_start(self, epoch: EpochStart) -> None:
        self.live_teacher.prepare(epoch)

    # ------------------------------------------------------------------ negatives
    def draw_contrast_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B, K+1)`` memory rows to contrast each anchor with: the anchor's own row first
        ("exact" mode), then ``K`` negatives drawn i.i.d. (other classes' rows, or any row).

        Each call uses a generator seeded by (seed, number of earlier draws, rank); in training
        mode it advances the count (a checkpointed buffer), in eval mode it repeats the draw.
        """
        device = self.memory_student.device
        indices = indices.to(device)
        if self._draws is None:
            self._draws = int(self.draws.item())
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
        rank, _ = _world()
        generator = self._generator.manual_seed(_draw_seed(self.seed, self._draws, rank))
        shape = (indices.shape[0], self.negatives)
        if self.negative_sampling == "uniform":
            negatives = torch.randint(0, self.n_data, shape, generator=generator, device=device)
        else:
            anchor_class = self.labels[indices]
            count = self.class_count[anchor_class].unsqueeze(1)
            start = self.class_start[anchor_class].unsqueeze(1)
            raw = torch.randint(0, 2**62, shape, generator=generator, device=device)
            position = raw % (self.n_data - count)  # uniform over the rows outside the class block
            position = position + count * (position >= start)
            negatives = self.rows_by_class[position]
        if self.training:
            self._draws += 1
            self.draws.add_(1)
        return torch.cat([indices.unsqueeze(1), negatives], dim=1)

    # ------------------------------------------------------------------ loss
    def _fixed_normalizers(self, student_scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
        """``[Z_s, Z_t]``: estimated from the first training batch as ``mean(exp(·/τ)) · n_data``
        (averaged over ranks) and then fixed, as in the official ``ContrastMemory``."""
        if self._normalizers_set is None:
            self._normalizers_set = bool((self.normalizers > 0).all().item())
        if self._normalizers_set:
            return self.normalizers
        with torch.no_grad():
            estimate = torch.stack([student_scores.mean(), teacher_scores.mean()]).float() * self.n_data
            if _world()[1] > 1:
                dist.all_reduce(estimate)
                estimate /= _world()[1]
        if self.training:
            self.normalizers.copy_(estimate)
            self._normalizers_set = True
        return estimate

    def crd_loss(
        self,
        student_features: torch.Tensor,
        teacher_features: torch.Tensor,
        indices: torch.Tensor,
        contrast_indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``L_crd = ℓ(P_s) + ℓ(P_t)`` for a batch of features and its dataset rows ``indices``
        (:func:`nce_loss` on :func:`contrast_scores`); in training mode then updates the
        batch's memory rows. ``contrast_indices`` (``(B, K+1)``, positives first) replaces the
        drawn ones, like the official ``contrast_idx``."""
        student_embedding = self.embed_student(student_features).float()
        teacher_embedding = self.embed_teacher(teacher_features).float()
        indices = indices.to(self.memory_student.device)
        if contrast_indices is None:
            contrast_indices = self.draw_contrast_indices(indices)
        contrast_indices = contrast_indices.to(self.memory_student.device)
        # student anchor against the teacher bank, teacher anchor against the student bank
        student_scores = contrast_scores(
            student_embedding, self.memory_teacher, contrast_indices, self.nce_temperature
        )
        teacher_scores = contrast_scores(
            teacher_embedding, self.memory_student, contrast_indices, self.nce_temperature
        )
        normalizers = self._fixed_normalizers(student_scores, teacher_scores)
        loss = nce_loss(student_scores / normalizers[0], self.n_data) + nce_loss(
            teacher_scores / normalizers[1], self.n_data
        )
        if self.training:
            rows = _gather(indices)
            update_memory(self.memory_student, rows, _gather(student_embedding.detach()), self.momentum)
            update_memory(self.memory_teacher, rows, _gather(teacher_embedding.detach()), self.momentum)
        return loss

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        teacher = self.live_teacher(batch.inputs, batch)
        student_logits = self.student(batch.inputs)
        terms: dict[str, torch.Tensor] = {}
        if self.ce_weight:
            terms["ce"] = weighted(self.ce_weight, classification_loss(student_logits, batch))
        if self.kd_weight:
            terms["kd"] = teacher.kd_loss(student_logits, self.temperature, self.kd_weight)
        student_feature = self.student_taps.features[self.student_layer]
        teacher_feature = teacher.features[self.teacher_layer]
        terms["crd"] = weighted(
            self.crd_weight, self.crd_loss(student_feature, teacher_feature, batch.indices)
        )
        return terms

    def extra_repr(self) -> str:
        return (
            f"n_data={self.n_data}, negatives={self.negatives}, nce_temperature={self.nce_temperature}, "
            f"momentum={self.momentum}, negative_sampling={self.negative_sampling}"
        )


@METHODS.register_factory("crd", "contrastive representation distillation: NCE on memory banks of embeddings")
def build_crd(spec: CRDSpec, context: MethodContext) -> Method:
    teacher = context.require_teacher("crd")
    if context.data is None:
        raise DistillError(
            f"{context.owner}: method 'crd' needs the training data "
            "(its memory banks hold one row per training sample)"
        )
    options: dict[str, Any] = spec.model_dump(exclude={"name"})
    return ContrastiveRepresentationDistillation(
        context.student,
        teacher,
        context.data.train.targets,
        context.num_classes,
        context.example_inputs,
        seed=context.seed,
        owner=context.owner,
        **options,
    )

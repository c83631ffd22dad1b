"""The method contract: participants plus one training step that returns named loss terms."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from distill.data.augment import AugmentPlan, Mixing
from distill.data.bundle import Split
from distill.losses import kd_loss, kd_loss_from_log_probs, kd_loss_from_probs, kd_loss_top_k, weighted
from distill.models.taps import FeatureTaps
from distill.schema import Section


class MethodSpec(Section):
    """Base of every method spec; ``name`` selects the registry entry.

    ``uses_teacher``: whether the method needs the recipe's teacher; ``uses_unlabeled``:
    whether its student trains on the labeled set followed by the unlabeled pool
    (:func:`distill.data.pools.with_unlabeled_pool`; unlabeled rows carry the label −1).
    """

    name: str

    uses_teacher: ClassVar[bool] = False
    #: trains on the labeled set plus the unlabeled pool (needs ``data.pools``)
    uses_unlabeled: ClassVar[bool] = False
    #: learns from hard labels only, so the recipe must not use mixup (checked at validation)
    needs_hard_labels: ClassVar[bool] = False

    def depends_on(self) -> list[str]:
        """Names of students of the same recipe this method needs trained before it (e.g.
        weighted distillation's first stage)."""
        return []

    def cacheable_temperature(self) -> float | None:
        """The temperature at which teacher outputs may be cached for this method, or ``None``
        if the method cannot use a teacher-output cache."""
        return None

    def cached_teacher_layers(self) -> list[str]:
        """Teacher modules whose outputs a teacher-output cache must store for this method."""
        return []

    def terms_needing_full_distribution(self) -> list[str]:
        """The method's loss terms that need the teacher's whole class distribution, which a
        top-k teacher-output cache cannot give."""
        return []


@dataclass(frozen=True)
class Batch:
    """One (augmented) training batch as every method sees it.

    ``inputs`` are what the models see after augmentation; ``targets`` the original class ids;
    ``mixing`` the mixup draw if any (targets are then mixed distributions, see
    :meth:`soft_targets`); ``indices`` the dataset rows of the batch; ``draw`` which
    augmentation draw produced it (see :class:`~distill.data.augment.AugmentPlan`).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    num_classes: int
    mixing: Mixing | None = None
    draw: int = 0

    def soft_targets(self) -> torch.Tensor | None:
        """Mixed label distributions under mixup, else ``None`` (use the hard ``targets``)."""
        if self.mixing is None:
            return None
        return self.mixing.mix_targets(self.targets, self.num_classes)


def total_loss(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of a step's loss terms, added pairwise: no kernel for a single term, one per
    further term (stacking them first would cost a stack and a reduction, and their backward)."""
    values = iter(terms.values())
    total = next(values)
    for value in values:
        total = total + value
    return total


class Method(nn.Module):
    """A training method. Subclasses own their participants and implement :meth:`step`.

    The registered submodules (``self.student`` and any auxiliary modules such as hint
    regressors) are what the optimizer steps and what a resume checkpoint stores. A frozen
    teacher is held by a :class:`FrozenTeacher`, which is not a submodule, so it is never
    optimized, never put in train mode, and never wrapped for distributed training.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named, already weighted loss terms for one batch; their sum is minimized."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Calling the method runs :meth:`step` (so a DDP wrapper sees every training forward)."""
        return self.step(batch)

    def train_step(self, batch: Batch, update: Update) -> dict[str, torch.Tensor]:
        """One optimization step on ``batch``; returns the loss terms it minimized.

        The default minimizes the sum of :meth:`step`'s terms with the one optimizer. Methods
        that update several models in turn (e.g. Deep Mutual Learning's peers) override this
        and call ``update.minimize(loss, group)`` once per group of :meth:`optimizer_groups`.
        """
        terms = update.forward(batch)
        update.minimize(total_loss(terms))
        return terms

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimizer: each group gets its own optimizer and schedule
        (same settings). The default is one group, ``""``, holding every trainable parameter."""
        return {"": [parameter for parameter in self.parameters() if parameter.requires_grad]}

    def on_epoch_start(self, epoch: EpochStart) -> None:
        """Called by the trainer before each epoch (e.g. to fill a teacher-output cache)."""

    def prepare(self, artifacts: MethodArtifacts) -> None:
        """Called once before training (also when a run resumes): a method with a phase of its
        own before the student trains (e.g. meta-training a loss teacher) runs it here, or
        reloads what an earlier run of it handed to ``artifacts``."""

    def finish(self, artifacts: MethodArtifacts) -> dict[str, Any] | None:
        """Called once after training (on the main process); may hand tables and modules to
        ``artifacts`` (the application draws their plots) and returns extra fields for the
        primary model's ``result.json`` (or ``None``)."""
        return None

    def evaluated_models(self) -> dict[str, nn.Module]:
        """The models evaluated, checkpointed and reported every epoch, by name.

        The name ``""`` stands for the method's one model, reported under the student's own
        name; any other name ``x`` is reported as ``<student>/x`` (e.g. ``dml/peer1``). The
        first entry is the primary model (the deployable student).
        """
        return {"": self.student}

    def model_specs(self) -> dict[str, dict[str, Any]]:
        """Model specs (as JSON) of evaluated models whose architecture is not the student's,
        by the names of :meth:`evaluated_models`; stored in their checkpoints' metadata."""
        return {}

    def primary_model(self) -> nn.Module:
        """The first of :meth:`evaluated_models`: the model a deployment would ship."""
        return next(iter(self.evaluated_models().values()))


class Update(Protocol):
    """What the trainer hands :meth:`Method.train_step`: the forward (through the data-parallel
    wrapper when there is one) and a minimizer per optimizer group."""

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]: ...

    def minimize(self, loss: torch.Tensor, group: str = "") -> None: ...


class ModuleReader(Protocol):
    """Reads the saved modules (weights + JSON metadata) a recipe points at by path, e.g.
    ``loss_teacher: PATH``; the application supplies it, so that no method opens one."""

    def module_file_metadata(self, path: Path) -> dict[str, Any] | None:
        """The metadata saved with the module at ``path`` (``{}`` if none), or ``None`` when
        there is no module file at ``path``."""
        ...

    def load_module_file(self, path: Path, module: nn.Module) -> dict[str, Any]:
        """Load the weights saved at ``path`` into ``module`` (a mismatch is a
        :class:`~distill.errors.CheckpointError`); returns their metadata."""
        ...


class MethodArtifacts(Protocol):
    """Where a method keeps what it makes besides the student (a meta-trained loss teacher,
    tables of how its loss changed); the application owns the files. Modules and tables are
    named (``loss_teacher``, ``meta_history``); a later run of the same student finds them."""

    def has_module(self, name: str) -> bool:
        """Whether a module is saved under ``name``."""
        ...

    def module_metadata(self, name: str) -> dict[str, Any] | None:
        """The metadata of the module saved under ``name`` (``{}`` if none was saved with
        it), or ``None`` when no module is saved under ``name``."""
        ...

    def load_module(self, name: str, module: nn.Module) -> dict[str, Any]:
        """Load the weights saved under ``name`` into ``module``; returns their metadata."""
        ...

    def save_module(self, name: str, module: nn.Module, metadata: dict[str, Any]) -> None:
        """Save ``module``'s weights under ``name`` with ``metadata`` (JSON values)."""
        ...

    def module_location(self, name: str) -> str:
        """Where the module under ``name`` is (or will be) saved, as a result reports it."""
        ...

    def read_table(self, name: str) -> Any | None:
        """The JSON table saved under ``name``, or ``None`` if there is none."""
        ...

    def write_table(self, name: str, rows: Any) -> None:
        """Save ``rows`` (JSON values) as the table ``name``, replacing any before."""
        ...


@dataclass(frozen=True)
class EpochStart:
    """What the trainer tells a method before an epoch: which draw, under which plan."""

    epoch: int
    draw: int
    plan: AugmentPlan | None
    train: Split
    device: torch.device


@dataclass(frozen=True)
class TeacherOutput:
    """A teacher's answer for one batch, in whichever form its source keeps: raw logits (a live
    teacher, the search's table) or, from a teacher-output cache, log-probabilities at the
    method's temperature (all classes, or the top k with their ``top_classes``) or probabilities
    ``q`` with each sample's ``Σ q log q``; plus tapped features.

    A method does not branch on the form: :meth:`kd_loss` computes the distillation term from
    whichever is held. Methods that need raw logits (e.g. a distiller's transforms) read
    ``logits``, which live teachers and the search's table always fill.
    """

    logits: torch.Tensor | None
    features: dict[str, torch.Tensor]
    log_probs: torch.Tensor | None = None
    top_classes: torch.Tensor | None = None
    #: a cache's full distribution as probabilities ``q`` with each sample's ``Σ q log q``, in
    #: place of ``log_probs`` (the form :func:`distill.losses.kd_loss_from_probs` takes)
    probs: torch.Tensor | None = None
    sum_p_log_p: torch.Tensor | None = None
    #: the temperature a cache's log-probabilities / probabilities are softened at
    temperature: float = 1.0

    def logits_up_to_shift(self) -> torch.Tensor:
        """The teacher's logits, or — from a cache of the whole distribution at temperature
        ``T`` — ``T · log_probs``, which differs from the logits by one constant per sample
        (the log-partition). Every softmax at any temperature, and every per-sample
        standardization, is blind to that constant, so logit losses get exact values. A top-k
        cache keeps only k classes: it cannot give them (a ``ValueError``)."""
        if self.logits is not None:
            return self.logits
        if self.top_classes is not None:
            raise ValueError(
                "a top-k teacher-output cache keeps only the k largest classes; this loss term "
                "needs the teacher's whole distribution (drop teacher_cache.top_k)"
            )
        if self.log_probs is not None:
            return self.temperature * self.log_probs
        assert self.probs is not None, "a teacher output holds logits, log-probabilities or probabilities"
        return self.temperature * self.probs.clamp_min(torch.finfo(self.probs.dtype).tiny).log()

    def kd_loss(self, student_logits: torch.Tensor, temperature: float, weight: float = 1.0) -> torch.Tensor:
        """``weight · T² · KL(teacher ‖ student)`` at temperature ``T`` (Hinton et al. 2015),
        from whichever form this output holds; every form gives the same value."""
        if self.top_classes is not None:
            assert self.log_probs is not None
            return weighted(
                weight, kd_loss_top_k(student_logits, self.log_probs, self.top_classes, temperature)
            )
        if self.probs is not None:
            assert self.sum_p_log_p is not None
            return kd_loss_from_probs(student_logits, self.probs, self.sum_p_log_p, temperature, weight)
        if self.log_probs is not None:
            return kd_loss_from_log_probs(student_logits, self.log_probs, temperature, weight)
        assert self.logits is not None, "a teacher output holds logits, log-probabilities or probabilities"
        return kd_loss(student_logits, self.logits, temperature, weight)


class Teacher(Protocol):
    """The one teacher interface methods see: prepared before each epoch, then asked per batch.

    Served by the live :class:`FrozenTeacher`, the :class:`CachedTeacher` (a teacher-output
    cache decides how it stores) and the search's table of precomputed outputs
    (:class:`distill.search.proxy.TeacherTable`).
    """

    def prepare(self, epoch: EpochStart) -> None: ...

    def __call__(self, inputs: torch.Tensor, batch: Batch | None = None) -> TeacherOutput: ...


class FrozenTeacher:
    """A pretrained teacher queried in eval mode under ``torch.inference_mode``.

    Outputs are cloned out of inference mode (a cheap copy of the logits and tapped features)
    so that student losses can save them for backward. ``precision="bfloat16"`` runs the
    teacher under bf16 autocast (outputs are returned as float32).
    """

    def __init__(
        self,
        model: nn.Module,
        tapped_layers: list[str] | None = None,
        precision: str = "float32",
    ) -> None:
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.taps = FeatureTaps(model, tapped_layers or [], owner="teacher")
        self.precision = precision

    def prepare(self, epoch: EpochStart) -> None:
        """A live teacher needs no preparation."""

    def __call__(self, inputs: torch.Tensor, batch: Batch | None = None) -> TeacherOutput:
        self.model.eval()
        bf16 = self.precision == "bfloat16"
        with torch.inference_mode(), torch.autocast(inputs.device.type, torch.bfloat16, enabled=bf16):
            logits = self.model(inputs)
            features = dict(self.taps.features)
        return TeacherOutput(
            logits.float().clone(), {name: value.float().clone() for name, value in features.items()}
        )


class TeacherOutputStore(Protocol):
    """Stored teacher log-probabilities by (draw, sample index); see
    :class:`distill.engine.cache.TeacherOutputCache`."""

    batch_size: int
    hits: int

    @property
    def temperature(self) -> float:
        """The temperature the stored log-probabilities are softened at."""
        ...

    def is_filled(self, draw: int) -> bool: ...

    def fill(
        self,
        draw: int,
        teacher: nn.Module,
        split: Split,
        plan: AugmentPlan | None,
        device: torch.device,
        batch_size: int,
    ) -> None: ...

    def outputs(
        self, draw: int, indices: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def draw_outputs(self, draw: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def features(self, draw: int, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]: ...

    def draw_features(self, draw: int, device: torch.device) -> dict[str, torch.Tensor]: ...

    def draw_bytes_in_memory(self) -> int: ...


#: A cached draw up to this size is read into memory once per epoch; a larger one is read from
#: its memory map batch by batch (the page cache then holds what fits).
RESIDENT_DRAW_BYTES = 2 * 2**30


class CachedTeacher:
    """A frozen teacher whose outputs come from a :class:`~distill.engine.cache.TeacherOutputCache`.

    Before each epoch the draw it uses is filled if missing (one pass of the live teacher over
    the augmented training split); during the epoch every batch is a lookup by (draw, index):
    a row gather from the draw held in memory, or, for a draw over ``RESIDENT_DRAW_BYTES``, a
    read of the batch's rows from the memory-mapped files.
    """

    def __init__(self, live: FrozenTeacher, cache: TeacherOutputStore, keep_log_probs: bool = False) -> None:
        self.live = live
        self.cache = cache
        #: also hand each batch the log-probabilities (for losses that need logits up to a shift)
        self.keep_log_probs = keep_log_probs
        self._draw_log_probs: torch.Tensor | None = None
        self._draw: int | None = None
        # the epoch's draw in memory: full distributions as (probs, Σ q log q per sample),
        # top-k ones as (log-probs, classes); a batch is then one or two row gathers
        self._draw_outputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._draw_features: dict[str, torch.Tensor] = {}
        self._draw_is_top_k = False

    def prepare(self, epoch: EpochStart) -> None:
        if not self.cache.is_filled(epoch.draw):
            self.cache.fill(
                epoch.draw, self.live.model, epoch.train, epoch.plan, epoch.device, self.cache.batch_size
            )
        if self._draw == epoch.draw:
            return
        self._draw, self._draw_outputs, self._draw_features = epoch.draw, None, {}
        self._draw_log_probs = None
        if self.cache.draw_bytes_in_memory() > RESIDENT_DRAW_BYTES:
            return  # too large to hold: batches read their rows from the files
        values, classes = self.cache.draw_outputs(epoch.draw, epoch.device)
        if classes is None:
            probs = values.exp()
            self._draw_outputs = (probs, (probs * values).sum(dim=1))
            self._draw_log_probs = values if self.keep_log_probs else None
        else:
            self._draw_outputs = (values, classes)
        self._draw_features = self.cache.draw_features(epoch.draw, epoch.device)
        self._draw_is_top_k = classes is not None

    def __call__(self, inputs: torch.Tensor, batch: Batch | None = None) -> TeacherOutput:
        if batch is None:
            raise ValueError("a cached teacher is addressed by the batch's (draw, indices)")
        if self._draw == batch.draw and self._draw_outputs is not None:
            self.cache.hits += 1
            first, second = self._draw_outputs
            rows = batch.indices.to(first.device)
            first, second = first.index_select(0, rows), second.index_select(0, rows)
            features = {name: value.index_select(0, rows) for name, value in self._draw_features.items()}
            temperature = self.cache.temperature
            if self._draw_is_top_k:
                return TeacherOutput(None, features, first, second, temperature=temperature)
            log_probs = None
            if self._draw_log_probs is not None:
                log_probs = self._draw_log_probs.index_select(0, rows)
            return TeacherOutput(
                None, features, log_probs, probs=first, sum_p_log_p=second, temperature=temperature
            )
        log_probs, top_classes = self.cache.outputs(batch.draw, batch.indices, inputs.device)
        features = self.cache.features(batch.draw, batch.indices, inputs.device)
        return TeacherOutput(None, features, log_probs, top_classes, temperature=self.cache.temperature)

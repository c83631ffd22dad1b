"""The one training loop every method runs in.

The trainer knows nothing about any particular method: it draws (augmented) batches, asks the
method for named loss terms, minimizes their sum, evaluates each epoch, checkpoints, and resumes.
Randomness is re-seeded from (seed, epoch) at every epoch start, so a resumed run replays the
exact batches, augmentation draws and dropout masks of an uninterrupted one.

Data parallelism (``torchrun``, see :mod:`distill.engine.distributed`): when a process group
exists, every epoch's permutation — identical on all ranks, being seeded by (seed, epoch) — is
padded by wrapping around to a multiple of the world size and rank ``r`` trains on
``order[r::world]`` (:func:`~distill.data.loader.shard_permutation`), so all ranks take the
same number of steps.
``batch_size`` is per process: one optimizer step consumes ``batch_size × world`` samples, and
the learning-rate schedule counts the per-rank steps. The method is wrapped in
``DistributedDataParallel`` (gradients are averaged over ranks); its frozen teacher is not a
submodule and is never wrapped. Loss averages are averaged over ranks and rank 0's buffers
(batch-norm statistics) are broadcast after every epoch, so every rank evaluates the same
weights and records identical numbers; only rank 0 writes checkpoints and ``resume.pt``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from distill.data.augment import AugmentPlan, AugmentSpec, apply_plan, draw_plan
from distill.data.bundle import DataBundle
from distill.data.loader import epoch_seed, train_batches
from distill.engine import distributed
from distill.engine.bml import register_bml
from distill.engine.checkpoint import atomic_torch_save, save_checkpoint
from distill.engine.metrics import evaluate
from distill.engine.mirror_reduce import MirrorAverager
from distill.engine.optim import OptimizerSpec, ScheduleSpec, build_optimizer, build_schedule
from distill.errors import DistillError
from distill.methods.base import Batch, EpochStart, Method
from distill.schema import BatchSize, Epochs, Section


class SyncSpec(Section):
    """How ranks stay in agreement under ``torchrun`` (ignored in one process).

    ``gradients`` (default): ``DistributedDataParallel`` averages gradients every step with
    PyTorch's all-reduce.
    ``bml``: the same average by BML's schedule on BCube(``ports``, k) (Wang et al., NeurIPS
    2018), a DDP communication hook over one process group per BCube level; the run needs
    ``ports^(k+1)`` processes, k ≥ 1 (see :mod:`distill.engine.bml`).
    ``mirror``: local SGD — each rank steps on its own — and after every ``period`` optimizer
    steps (and at every epoch end) each parameter and buffer becomes its weighted power mean of
    degree ``degree`` over the ranks (AIMS / HyperPrism aggregation; degree 1 is plain model
    averaging; see :mod:`distill.engine.mirror_reduce`).
    """

    rule: Literal["gradients", "bml", "mirror"] = "gradients"
    ports: int = Field(default=2, ge=2, le=1024)
    degree: float = Field(default=1.0, ge=1.0, le=64.0)
    period: int = Field(default=4, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _options_belong_to_their_rule(self) -> SyncSpec:
        owners = {"ports": "bml", "degree": "mirror", "period": "mirror"}
        stray = sorted(self.off_default(*(key for key, owner in owners.items() if owner != self.rule)))
        if stray:
            raise ValueError(
                ", ".join(f"{key} applies to rule: {owners[key]}" for key in stray) + f", not {self.rule}"
            )
        return self


class TrainSpec(Section):
    """How one model is trained: budget, optimizer, schedule, augmentation, reported epoch.

    ``report``: ``last`` reports the final epoch; ``best`` the epoch with the highest
    *validation* accuracy (never selected on the test set). ``channels_last`` stores image
    batches and convolution weights in NHWC order (faster convolutions on many CPUs and GPUs).
    ``precision: bfloat16`` trains under bf16 autocast (see the field).
    ``batch_size`` is per process under data parallelism (``torchrun``): each step then sees
    ``batch_size × processes`` samples.
    """

    epochs: Epochs = 30
    batch_size: BatchSize = 128
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    report: Literal["last", "best"] = "last"
    grad_clip: float | None = Field(default=None, gt=0.0)
    channels_last: bool = False
    #: ``bfloat16``: the training forward (and the loss) under bf16 autocast, weights and
    #: gradients in float32 — faster on GPUs with bf16 tensor cores; evaluation stays float32
    precision: Literal["float32", "bfloat16"] = "float32"
    sync: SyncSpec = Field(default_factory=SyncSpec)


EpochRecord = dict[str, Any]


def steps_per_epoch(num_samples: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps per epoch on every rank: batches of ``batch_size`` in one shard."""
    per_rank = -(-num_samples // world_size)
    return -(-per_rank // batch_size)


def augment_plan(augment: AugmentSpec, data: DataBundle, seed: int, draw: int) -> AugmentPlan | None:
    """The augmentation parameters of draw ``draw`` for every training sample of ``data`` in a
    run seeded ``seed`` (``None`` when augmentation is off)."""
    if not augment.enabled:
        return None
    return draw_plan(augment, len(data.train), data.input_shape, epoch_seed(seed, draw, stream=2))


def training_draws(spec: TrainSpec) -> list[int]:
    """Every augmentation draw that training under ``spec`` uses, in first-use order."""
    if not spec.augment.enabled:
        return [0]
    return list(dict.fromkeys(spec.augment.draw_of_epoch(epoch) for epoch in range(spec.epochs)))


def member_name(model_name: str, sub: str) -> str:
    """The reported name of a method's evaluated model ``sub`` (see
    :meth:`~distill.methods.Method.evaluated_models`): ``model_name`` itself for ``""``,
    else ``model_name/sub``."""
    return model_name if not sub else f"{model_name}/{sub}"


@dataclass
class FitResult:
    """What training produced: one record per epoch and evaluated model, and the reported one
    of each evaluated model (``reported`` is the primary model's)."""

    history: list[EpochRecord]
    reported_by_model: dict[str, EpochRecord]
    seconds: float

    @property
    def reported(self) -> EpochRecord:
        return next(iter(self.reported_by_model.values()))


@dataclass
class _State:
    epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    best_val: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _float32_output(module: nn.Module, inputs: Any, output: Any) -> Any:
    """A forward hook: a floating-point tensor output (a model's logits) as float32."""
    return output.float() if isinstance(output, torch.Tensor) and output.is_floating_point() else output


class _Update:
    """The trainer's side of :class:`~distill.methods.base.Update`."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        trainer = self.trainer
        if trainer.spec.precision != "bfloat16":  # the default path enters no autocast context
            return trainer.training_module(batch)  # Method.forward runs step(batch)
        with torch.autocast(trainer.device.type, torch.bfloat16):
            terms = trainer.training_module(batch)
        return {name: value.float() for name, value in terms.items()}

    def minimize(self, loss: torch.Tensor, group: str = "") -> None:
        trainer = self.trainer
        if group not in trainer.optimizers:
            raise KeyError(f"no optimizer group '{group}'; the method has {sorted(trainer.optimizers)}")
        optimizer = trainer.optimizers[group]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if trainer.spec.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(trainer.parameter_groups[group], trainer.spec.grad_clip)
        optimizer.step()
        if trainer.averager is not None:
            trainer.averager.after_step()


class Trainer:
    """Train ``method`` on ``data`` according to ``spec``.

    Args:
        method: the method to run; its parameters (those requiring grad) are optimized.
        data: train / val / test splits.
        spec: the training budget and options.
        seed: fixes shuffling, augmentation and dropout of every epoch.
        device: where models and batches live.
        model_name: name written into every metrics record.
        model_dir: where ``last``/``best`` checkpoints and ``resume.pt`` go (``None``: nowhere).
        checkpoint_metadata: extra JSON metadata stored with each checkpoint.
        on_epoch_end: called with each epoch's record after it is checkpointed.

    Under an initialized process group (see :mod:`distill.engine.distributed`) the trainer is
    data-parallel: construct it on every rank, with the same arguments.
    """

    def __init__(
        self,
        method: Method,
        data: DataBundle,
        spec: TrainSpec,
        *,
        seed: int,
        device: torch.device,
        model_name: str,
        model_dir: Path | None = None,
        checkpoint_metadata: dict[str, Any] | None = None,
        on_epoch_end: Callable[[EpochRecord], None] | None = None,
    ) -> None:
        self.method = method.to(device)
        if spec.channels_last:
            # Module.to accepts memory_format at runtime; torch's overloads leave it out
            self.method.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.data = data
        self.spec = spec
        self.seed = seed
        self.device = device
        self.model_name = model_name
        self.model_dir = model_dir
        self.checkpoint_metadata = checkpoint_metadata or {}
        self.on_epoch_end = on_epoch_end
        self.rank = distributed.rank() if distributed.is_initialized() else 0
        self.world_size = distributed.world_size()
        self.writes_files = self.rank == 0
        self.steps_per_epoch = steps_per_epoch(len(data.train), spec.batch_size, self.world_size)
        # What a training step calls: the method itself, or its DDP wrapper, which averages
        # gradients over ranks during backward. device_ids=None: batches are already on device.
        self.parameter_groups = method.optimizer_groups()
        self.training_module: nn.Module = self.method
        #: local SGD with mirror-space averaging across ranks (``sync.rule: mirror``)
        self.averager: MirrorAverager | None = None
        if distributed.is_initialized() and spec.sync.rule == "mirror":
            self.averager = MirrorAverager(self.method, spec.sync.degree, spec.sync.period)
        elif distributed.is_initialized():
            if len(self.parameter_groups) > 1:
                raise DistillError(
                    f"{model_name}: the method updates {len(self.parameter_groups)} optimizer groups "
                    f"in turn ({', '.join(self.parameter_groups)}), which data-parallel training "
                    "cannot synchronize; run it on one process"
                )
            self.training_module = ddp = DistributedDataParallel(self.method, device_ids=None)
            if spec.sync.rule == "bml":
                try:
                    register_bml(ddp, spec.sync.ports, device.type)
                except ValueError as error:
                    raise DistillError(f"{model_name}: train.sync: {error}") from None
        if spec.precision == "bfloat16":  # losses see float32 logits, whatever the forward ran in
            for model in method.evaluated_models().values():
                model.register_forward_hook(_float32_output)
        self.optimizers = {
            group: build_optimizer(spec.optimizer, parameters)
            for group, parameters in self.parameter_groups.items()
        }
        self.schedules = {
            group: build_schedule(spec.schedule, optimizer, self.steps_per_epoch, spec.epochs)
            for group, optimizer in self.optimizers.items()
        }
        self.optimizer = next(iter(self.optimizers.values()))
        # the evaluated models by reported name, and where each one's checkpoints go
        self.evaluated = {
            member_name(model_name, sub): model for sub, model in method.evaluated_models().items()
        }
        self.checkpoint_dirs = {
            member_name(model_name, sub): None if model_dir is None else model_dir / sub
            for sub in method.evaluated_models()
        }
        self.member_metadata = {
            member_name(model_name, sub): {"model": spec} for sub, spec in method.model_specs().items()
        }
        self.state = _State()

    # ------------------------------------------------------------------ resume
    @property
    def resume_path(self) -> Path | None:
        return None if self.model_dir is None else self.model_dir / "resume.pt"

    def _save_resume(self) -> None:
        if self.resume_path is None or not self.writes_files:
            return
        atomic_torch_save(
            self.resume_path,
            {
                "method": self.method.state_dict(),
                "optimizers": {group: optimizer.state_dict() for group, optimizer in self.optimizers.items()},
                "schedules": {group: schedule.state_dict() for group, schedule in self.schedules.items()},
                "epoch": self.state.epoch,
                "history": self.state.history,
                "best_val": self.state.best_val,
                "seconds": self.state.seconds,
                "world_size": self.world_size,
            },
        )

    def load_resume(self) -> bool:
        """Restore from ``resume.pt`` if present; returns whether anything was restored.

        Under data parallelism every rank loads the file rank 0 wrote (after a barrier, so no
        rank reads while another is still writing); it must come from a run on as many
        processes, since the shards and the schedule's step count depend on it.
        """
        distributed.barrier()
        if self.resume_path is None or not self.resume_path.exists():
            return False
        try:
            saved = torch.load(self.resume_path, map_location=self.device, weights_only=True)
        except Exception as error:  # a truncated or foreign file: say which one
            raise DistillError(f"{self.resume_path}: cannot resume from this file ({error})") from None
        saved_world = saved.get("world_size", 1)
        if saved_world != self.world_size:
            raise DistillError(
                f"{self.resume_path}: written by a run on {saved_world} process(es); resume it on "
                f"the same number (this run has {self.world_size}), since each process's share "
                "of the data and the learning-rate schedule depend on it"
            )
        if set(saved.get("optimizers", {})) != set(self.optimizers):
            raise DistillError(f"{self.resume_path}: written by a different method; cannot resume from it")
        self.method.load_state_dict(saved["method"])
        for group, optimizer in self.optimizers.items():
            optimizer.load_state_dict(saved["optimizers"][group])
            self.schedules[group].load_state_dict(saved["schedules"][group])
        self.state = _State(saved["epoch"], saved["history"], saved["best_val"], saved["seconds"])
        return True

    # ------------------------------------------------------------------ training
    def fit(self) -> FitResult:
        """Train until ``spec.epochs``, starting wherever a loaded resume state left off."""
        for epoch in range(self.state.epoch, self.spec.epochs):
            started = time.perf_counter()
            train_terms = self.train_epoch(epoch)
            records = [self._evaluate(epoch, train_terms, name) for name in self.evaluated]
            # ranks record the slowest rank's time, so that their records are identical
            self.state.seconds += distributed.all_reduce_max(time.perf_counter() - started, self.device)
            for record in records:
                record["seconds"] = round(self.state.seconds, 3)
            self.state.epoch = epoch + 1
            self.state.history.extend(records)
            self._checkpoint(records)
            if self.on_epoch_end is not None:
                for record in records:
                    self.on_epoch_end(record)
        reported = {name: self.reported_record(name) for name in self.evaluated}
        return FitResult(self.state.history, reported, self.state.seconds)

    @property
    def selection(self) -> Literal["last", "best"]:
        """Which epoch is reported: ``best`` (validation) only when there is a validation split;
        its weights are in ``<selection>.safetensors``."""
        return "best" if self.spec.report == "best" and self.data.val is not None else "last"

    def reported_record(self, name: str | None = None) -> EpochRecord:
        """The last epoch's record of evaluated model ``name`` (default: the primary one), or
        its best-validation epoch's when ``report: best``."""
        name = next(iter(self.evaluated)) if name is None else name
        history = [record for record in self.state.history if record["model"] == name]
        if self.selection == "best":
            return max(history, key=lambda record: record["val_accuracy"])
        return history[-1]

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch (0-based ``epoch``) without evaluating; returns the mean loss terms."""
        # dropout and other module RNG: distinct per rank (rank 0 draws what one process draws)
        torch.manual_seed((epoch_seed(self.seed, epoch, stream=1) + self.rank) % (2**63 - 1))
        order = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, stream=0))
        train = self.data.train
        augment = self.spec.augment
        draw = augment.draw_of_epoch(epoch) if augment.enabled else 0
        plan = augment_plan(augment, self.data, self.seed, draw)
        self.method.on_epoch_start(EpochStart(epoch, draw, plan, train, self.device))
        self.training_module.train()
        channels_last = self.spec.channels_last and len(self.data.input_shape) == 3
        update = _Update(self)
        names: list[str] = []
        running: torch.Tensor | None = None  # per-term sums, on device: no host sync per step
        steps = 0
        batches = train_batches(train, self.spec.batch_size, order, self.device, self.rank, self.world_size)
        for inputs, targets, indices in batches:
            mixing = None
            if plan is not None:
                inputs, mixing = apply_plan(plan, inputs, indices, train.inputs, train.targets)
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            batch = Batch(inputs, targets, indices, self.data.num_classes, mixing, draw)
            terms = self.method.train_step(batch, update)
            with torch.no_grad():  # the terms' record only: no autograd node for the stack
                stacked = torch.stack(list(terms.values()))
            for schedule in self.schedules.values():
                schedule.step()
            if running is None:
                names, running = list(terms), stacked.clone()
            else:
                running += stacked
            steps += 1
        if self.averager is not None:
            self.averager.average()  # every rank evaluates and checkpoints the same weights
        distributed.broadcast_buffers(self.method)
        assert running is not None, "an epoch has at least one batch"
        sums = torch.cat([running, running.sum().view(1)]).double()
        means = distributed.all_reduce_mean(sums / steps).cpu()
        averages = dict(zip([*names, "loss"], means.tolist(), strict=True))
        if not torch.isfinite(torch.tensor(averages["loss"])):
            raise DistillError(
                f"{self.model_name}: training diverged in epoch {epoch + 1} (loss is "
                f"{averages['loss']}); lower the learning rate or set train.grad_clip"
            )
        return averages

    def _evaluate(self, epoch: int, train_terms: dict[str, float], name: str) -> EpochRecord:
        model = self.evaluated[name]
        record: EpochRecord = {
            "model": name,
            "epoch": epoch + 1,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        record.update({f"train_{name}": value for name, value in train_terms.items()})
        splits = {"val": self.data.val, "test": self.data.test}
        for split_name, split in splits.items():
            if split is None:
                continue
            for metric, value in evaluate(model, split, self.device).items():
                record[f"{split_name}_{metric}"] = value
        return record

    def _checkpoint(self, records: list[EpochRecord]) -> None:
        """Save each evaluated model's ``last`` (and ``best``) and then ``resume.pt``: rank 0
        writes, every rank tracks the best epochs; then all ranks wait, so that the files are
        complete when anyone reads them."""
        if self.model_dir is None:
            return
        for record in records:
            name = record["model"]
            directory = self.checkpoint_dirs[name]
            assert directory is not None
            model = self.evaluated[name]
            metadata = {
                **self.checkpoint_metadata,
                **self.member_metadata.get(name, {}),
                "name": name,
                "epoch": record["epoch"],
                "metrics": record,
            }
            if self.writes_files:
                save_checkpoint(directory / "last.safetensors", model, metadata)
            if self.data.val is not None and record["val_accuracy"] > self.state.best_val.get(name, -1.0):
                self.state.best_val[name] = record["val_accuracy"]
                if self.writes_files:
                    save_checkpoint(directory / "best.safetensors", model, metadata)
        self._save_resume()
        distributed.barrier()

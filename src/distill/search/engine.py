"""``distill search``: KD-Zero's evolutionary distiller search for a recipe's teacher–student pair.

One search (Li et al., KD-Zero, NeurIPS 2023; the paper body was not reachable, see
``docs/methods/kd-zero.md``), written into ``output_dir``:

1. the teacher is trained once (or loaded from the recipe's checkpoint): ``teacher/``;
2. the two references are scored with the same proxy: cross-entropy alone and the recipe's KD;
3. generation 0 is ``population`` random distillers; generation ``g > 0`` is ``population``
   children of the best half of everything evaluated before it
   (:mod:`distill.search.evolution`). Each candidate first passes the loss-rejection protocol
   (:mod:`distill.search.rejection`; rejected ones are logged and replaced), then is scored by
   a proxy training on the backend (:mod:`distill.search.proxy`, :mod:`distill.search.backends`);
4. after each generation, operations that keep producing poor candidates are dropped
   (search-space shrinkage);
5. with ``rerank = k``, the k proxy-best candidates and the KD reference are trained with the
   student's full budget and the best on validation is the result (else the proxy's best);
6. the result is written as a recipe ``distill run`` trains (``best_recipe.yaml``: the
   recipe's students plus ``student-searched``), with ``summary.json`` and ``fitness.png``.

``log.jsonl`` holds one line per candidate (formula, fitness, seconds, status, why rejected),
appended as each finishes. Generation ``g``'s randomness and inputs depend only on the seed
and on the results of generations before ``g``, so a killed search started again regenerates
the same candidates and takes finished ones from the log instead of training them again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import yaml
from pydantic import Field

from distill.assemble import checkpoint_metadata, instantiate, load_teacher, select_device
from distill.config import Recipe, validate_recipe
from distill.data import DataBundle, load_data
from distill.engine.trainer import Trainer, TrainSpec
from distill.errors import DistillError, RunDirectoryError
from distill.files import atomic_write_bytes, atomic_write_json
from distill.losses.distiller import GRAMMAR_VERSION, WEIGHTS, Distiller, Op, Term
from distill.methods.base import Batch, FrozenTeacher
from distill.methods.distiller import FeatureKnowledgeSpec
from distill.methods.scratch import Scratch
from distill.models.imported import trusted_factories
from distill.models.taps import FeatureTaps
from distill.schema import Epochs, PositiveInt, Section
from distill.search.backends import Backend, Outcome, open_backend
from distill.search.evolution import (
    Scored,
    SearchSpace,
    ShrinkRule,
    best_half,
    offspring,
    operations_to_drop,
    random_distiller,
)
from distill.search.proxy import ProxyTask, proxy_bundle
from distill.search.rejection import RejectionProbe

PROBE_BATCH = 128


class SearchSettings(Section):
    """Settings of one search. All but the ``RUN_OPTIONS`` decide its candidates and fitnesses
    (a search directory refuses to continue under different ones); ``generations`` may grow
    between runs: generation ``g`` does not depend on how many follow it.

    ``rerank``: after the last generation, train the ``rerank`` best candidates and the KD
    reference with the student's full budget on the whole training split, and return the one
    with the best validation accuracy (the proxy's ranking need not survive a longer schedule);
    ``0`` returns the proxy's best."""

    generations: Epochs = 4
    population: int = Field(default=8, ge=2, le=100_000)
    parents: float = Field(default=0.5, gt=0.0, le=1.0)
    crossover: float = Field(default=0.5, ge=0.0, le=1.0)
    mutation: float = Field(default=0.5, ge=0.0, le=1.0)
    max_terms: int = Field(default=2, ge=1, le=4)
    max_transforms: int = Field(default=3, ge=0, le=5)
    weights: list[float] = Field(default_factory=lambda: list(WEIGHTS), min_length=1)
    proxy_epochs: Epochs | None = None
    proxy_fraction: float = Field(default=0.5, gt=0.0, le=1.0)
    ce_weight: float = Field(default=1.0, ge=0.0)
    features: list[FeatureKnowledgeSpec] = Field(default_factory=list)
    shrink_min_uses: PositiveInt = 6
    shrink_share: float = Field(default=0.8, gt=0.0, le=1.0)
    backend: Literal["local", "ray"] = "local"
    workers: int = Field(default=2, ge=0, le=4096)
    address: str | None = None
    timeout: float = Field(default=600.0, gt=0.0)
    budget: float | None = Field(default=None, gt=0.0)
    rerank: int = Field(default=0, ge=0, le=100_000)

    RUN_OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"generations", "backend", "workers", "address", "timeout", "budget", "rerank"}
    )

    def identity(self) -> dict[str, Any]:
        """What ``search.json`` records: the settings that decide candidates and fitnesses, and
        the grammar's semantics version (a directory searched under other semantics of the
        same formulas is refused, not continued)."""
        return {
            **self.model_dump(mode="json", exclude=set(self.RUN_OPTIONS)),
            "grammar_version": GRAMMAR_VERSION,
        }


@dataclass(frozen=True)
class GenerationReport:
    """What the progress display shows after each generation."""

    generation: int
    generations: int
    best: float | None
    median: float | None
    trained: int
    rejected: int
    per_minute: float


class SearchLog:
    """``log.jsonl``: one JSON object per line, appended and flushed to disk line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._index: dict[tuple[str, str], dict[str, Any]] = {}
        lines = path.read_text().splitlines() if path.exists() else []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                self._add(json.loads(line))
            except json.JSONDecodeError:
                if number < len(lines):  # a kill mid-write may cut the last line only
                    raise RunDirectoryError(f"{path}: line {number} is not JSON") from None
                kept = "".join(json.dumps(record) + "\n" for record in self.records)
                atomic_write_bytes(path, kept.encode())  # drop the cut line before appending

    def _add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if "key" in record:
            self._index.setdefault((record.get("kind", ""), record["key"]), record)

    def append(self, record: dict[str, Any]) -> None:
        self._add(record)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def find(self, kind: str, key: str) -> dict[str, Any] | None:
        """The first record of ``kind`` with ``key``, if any."""
        return self._index.get((kind, key))


def scored(record: dict[str, Any]) -> Scored:
    return Scored(Distiller.from_dict(record["distiller"]), record.get("fitness"), record.get("val_loss"))


class DistillerSearch:
    """One search of ``recipe``'s first student against its teacher; see the module doc."""

    def __init__(
        self,
        recipe: Recipe,
        settings: SearchSettings,
        output_dir: Path,
        on_generation: Callable[[GenerationReport], None] | None = None,
    ) -> None:
        if recipe.teacher is None:
            raise DistillError(f"distill search: recipe '{recipe.name}' has no teacher to distill from")
        self.recipe = recipe
        self.settings = settings
        self.output_dir = output_dir
        self.on_generation = on_generation
        self.seed = recipe.seed
        self.train = recipe.train_of(recipe.students[0])
        epochs = settings.proxy_epochs or max(2, self.train.epochs // 10)
        self.proxy_train = self.train.model_copy(update={"epochs": epochs, "report": "last"})
        self._backend: Backend | None = None
        self.trained_here = 0

    # ------------------------------------------------------------------ set-up
    def _open(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        identity = {"recipe": self.recipe.model_dump(mode="json"), "settings": self.settings.identity()}
        path = self.output_dir / "search.json"
        if path.exists():
            if json.loads(path.read_text()) != identity:
                raise RunDirectoryError(
                    f"{self.output_dir} holds a search of another recipe or other settings; choose "
                    "another --output-dir (nothing was overwritten)"
                )
        else:
            atomic_write_json(path, identity)
        self.log = SearchLog(self.output_dir / "log.jsonl")

    def _teacher_checkpoint(self, data: DataBundle) -> Path:
        """The recipe's teacher checkpoint, or ``teacher/last.safetensors`` trained once here."""
        spec = self.recipe.teacher
        assert spec is not None
        if spec.checkpoint is not None:
            return spec.checkpoint
        assert spec.model is not None
        directory = self.output_dir / "teacher"
        checkpoint, done = directory / "last.safetensors", directory / "result.json"
        if done.exists():
            return checkpoint
        model = instantiate(spec.model, data, "teacher", self.seed)
        trainer = Trainer(
            Scratch(model),
            data,
            self.recipe.train_of(spec),
            seed=self.seed,
            device=select_device(self.recipe.device),
            model_name=spec.name,
            model_dir=directory,
            checkpoint_metadata=checkpoint_metadata(
                spec.name, "teacher", "scratch", spec.model, data, self.recipe
            ),
        )
        trainer.load_resume()
        fit = trainer.fit()
        atomic_write_json(
            done,
            {"test_accuracy": fit.reported["test_accuracy"], "val_accuracy": fit.reported["val_accuracy"]},
        )
        if trainer.resume_path is not None and trainer.resume_path.exists():
            trainer.resume_path.unlink()
        return checkpoint

    def _probe(self, data: DataBundle, checkpoint: Path, student: torch.nn.Module) -> RejectionProbe:
        """The rejection probe: ``student`` at initialisation and the trained teacher."""
        spec = self.recipe.teacher
        assert spec is not None
        teacher = load_teacher(spec.model_copy(update={"checkpoint": checkpoint}), data, self.seed)
        if spec.model is None:  # a checkpoint-only teacher: its layers are known only now
            self._check_features(student, teacher)
        frozen = FrozenTeacher(teacher, [pair.teacher for pair in self.settings.features])
        count = min(PROBE_BATCH, len(data.train))
        batch = Batch(
            data.train.inputs[:count], data.train.targets[:count], torch.arange(count), data.num_classes
        )
        return RejectionProbe(student, frozen, batch, self.settings.features, self.seed)

    def _check_features(self, student: torch.nn.Module, teacher: torch.nn.Module) -> None:
        """Every ``--feature`` layer exists (checked before the teacher trains, where possible)."""
        features = self.settings.features
        FeatureTaps(student, [pair.student for pair in features], owner="--feature (student layer)").remove()
        FeatureTaps(teacher, [pair.teacher for pair in features], owner="--feature (teacher layer)").remove()

    def _task(self, checkpoint: Path, train: TrainSpec, fraction: float) -> ProxyTask:
        """What workers need to train candidates under ``train`` on ``fraction`` of the split."""
        return ProxyTask(
            recipe=self.recipe.model_dump(mode="json"),
            teacher_checkpoint=str(checkpoint),
            train=train.model_dump(mode="json"),
            fraction=fraction,
            features=[pair.model_dump(mode="json") for pair in self.settings.features],
            ce_weight=self.settings.ce_weight,
            trusted_factories=sorted(trusted_factories()),
        )

    def _evaluate(self, task: ProxyTask, payloads: list[dict[str, Any]]) -> list[Outcome]:
        if self._backend is None:
            s = self.settings
            self._backend = open_backend(s.backend, task, s.workers, s.timeout, s.address)
        outcomes = self._backend.evaluate(payloads, task)
        self.trained_here += len(payloads)
        return outcomes

    # ------------------------------------------------------------------ the search
    def run(self) -> dict[str, Any]:
        """Run (or continue) the search; returns the summary (also ``summary.json``)."""
        started = time.perf_counter()
        self._open()
        data = load_data(self.recipe.data)
        proxy_bundle(data, self.settings.proxy_fraction, self.seed)  # fails early without a val split
        student = instantiate(self.recipe.students[0].model, data, "students[0]", self.seed)
        spec = self.recipe.teacher
        assert spec is not None
        if spec.model is not None:  # checked before the teacher trains
            self._check_features(student, instantiate(spec.model, data, "teacher", self.seed))
        checkpoint = self._teacher_checkpoint(data)
        probe = self._probe(data, checkpoint, student)
        task = self._task(checkpoint, self.proxy_train, self.settings.proxy_fraction)
        s = self.settings
        space = SearchSpace.full(
            probe.shapes, weights=tuple(s.weights), max_terms=s.max_terms, max_transforms=s.max_transforms
        )
        try:
            self._references(task)
            stopped = None
            for generation in range(s.generations):
                if generation > 0 and s.budget is not None and time.perf_counter() - started > s.budget:
                    stopped = f"budget of {s.budget:g} s spent before generation {generation}"
                    break
                space = self._shrink(space, generation)
                self._generation(generation, space, probe, task, started)
            self._rerank(checkpoint)
        finally:
            if self._backend is not None:
                self._backend.close()
        return self._finish(checkpoint, stopped, time.perf_counter() - started)

    def _references(self, task: ProxyTask) -> None:
        """Score CE alone and the recipe's KD (or T = 4 KD) with the same proxy."""
        payloads = {"scratch": {"distiller": None, "ce_weight": 1.0}, "kd": reference_kd(self.recipe)}
        missing = [name for name in payloads if self.log.find("reference", name) is None]
        outcomes = self._evaluate(task, [payloads[name] for name in missing]) if missing else []
        for name, outcome in zip(missing, outcomes, strict=True):
            distiller = payloads[name]["distiller"]
            formula = "CE only" if distiller is None else Distiller.from_dict(distiller).formula()
            self.log.append({"kind": "reference", "key": name, "formula": formula, **_fields(outcome)})

    def _shrink(self, space: SearchSpace, generation: int) -> SearchSpace:
        """The space for ``generation`` from the previous generation's ``space``: shrunk by the
        results of every generation before this one (a function of the log alone, so a resumed
        search shrinks exactly as the first run did)."""
        if generation == 0:
            return space
        rule = ShrinkRule(self.settings.shrink_min_uses, self.settings.shrink_share)
        history = [scored(r) for r in self._candidates() if r["generation"] < generation]
        dropped = operations_to_drop(history, space, rule)
        key = str(generation - 1)
        if dropped and self.log.find("shrink", key) is None:
            self.log.append({"kind": "shrink", "key": key, "generation": generation - 1, "dropped": dropped})
        return space.without(dropped)

    def _candidates(self) -> list[dict[str, Any]]:
        return [r for r in self.log.records if r.get("kind") == "candidate"]

    def _generation(
        self, generation: int, space: SearchSpace, probe: RejectionProbe, task: ProxyTask, started: float
    ) -> None:
        s = self.settings
        rng = np.random.default_rng([self.seed, generation])
        before = [r for r in self._candidates() if r["generation"] < generation]
        parents = best_half([scored(r) for r in before], s.parents)
        seen = {r["key"] for r in before}
        chosen: list[Distiller] = []
        rejected = 0
        for _ in range(50 * s.population):
            if len(chosen) == s.population:
                break
            if generation == 0 or not any(p.fitness is not None for p in parents):
                child = random_distiller(rng, space)
            else:
                child = offspring(rng, parents, space, s.crossover, s.mutation)
            key = child.key()
            if key in seen:
                continue
            seen.add(key)
            reason = probe.reason(child)
            if reason is not None:
                rejected += 1
                if self.log.find("candidate", key) is None:
                    self.log.append(_candidate(generation, child, "rejected", rejected=reason))
                continue
            chosen.append(child)
        pending = [d for d in chosen if self.log.find("candidate", d.key()) is None]
        payloads = [{"distiller": d.to_dict(), "ce_weight": s.ce_weight} for d in pending]
        for distiller, outcome in zip(
            pending, self._evaluate(task, payloads) if payloads else [], strict=True
        ):
            self.log.append(_candidate(generation, distiller, **_fields(outcome)))
        if self.on_generation is not None:
            records = [self.log.find("candidate", d.key()) for d in chosen]
            fitnesses = [r["fitness"] for r in records if r and r.get("fitness") is not None]
            minutes = (time.perf_counter() - started) / 60
            self.on_generation(
                GenerationReport(
                    generation,
                    s.generations,
                    max(fitnesses) if fitnesses else None,
                    float(np.median(fitnesses)) if fitnesses else None,
                    len(chosen),
                    rejected,
                    self.trained_here / minutes if minutes > 0 else 0.0,
                )
            )

    def _rerank(self, checkpoint: Path) -> None:
        """Train the ``rerank`` proxy-best candidates and the KD reference at the full budget."""
        count = self.settings.rerank
        if count == 0:
            return
        trained = [r for r in self._candidates() if r.get("fitness") is not None]
        top = sorted(trained, key=lambda r: scored(r).rank_key(), reverse=True)[:count]
        entries = {r["key"]: {"distiller": r["distiller"], "ce_weight": self.settings.ce_weight} for r in top}
        entries["kd"] = reference_kd(self.recipe)
        missing = [key for key in entries if self.log.find("rerank", key) is None]
        if not missing:
            return
        full = self._task(checkpoint, self.train.model_copy(update={"report": "last"}), 1.0)
        outcomes = self._evaluate(full, [entries[key] for key in missing])
        for key, outcome in zip(missing, outcomes, strict=True):
            payload = entries[key]
            self.log.append(
                {
                    "kind": "rerank",
                    "key": key,
                    "formula": Distiller.from_dict(payload["distiller"]).formula(),
                    "distiller": payload["distiller"],
                    "ce_weight": payload["ce_weight"],
                    "reference": key == "kd",
                    **_fields(outcome),
                }
            )

    # ------------------------------------------------------------------ results
    def _finish(self, checkpoint: Path, stopped: str | None, seconds: float) -> dict[str, Any]:
        from distill.report.search import plot_search

        records = self._candidates()
        trained = [r for r in records if r.get("fitness") is not None]
        if not trained:
            raise DistillError(f"{self.output_dir}: no candidate trained (see log.jsonl for why)")
        best = max(trained, key=lambda r: scored(r).rank_key())
        selected_by, ce_weight = "proxy", self.settings.ce_weight
        reranked = [r for r in self.log.records if r.get("kind") == "rerank" and r.get("fitness") is not None]
        if self.settings.rerank and reranked:
            best = max(reranked, key=lambda r: scored(r).rank_key())
            selected_by, ce_weight = "rerank", best["ce_weight"]
        generations = []
        for generation in sorted({r["generation"] for r in records}):
            values = [r["fitness"] for r in trained if r["generation"] == generation]
            generations.append(
                {
                    "generation": generation,
                    "best": max(values) if values else None,
                    "median": float(np.median(values)) if values else None,
                    "best_so_far": max(r["fitness"] for r in trained if r["generation"] <= generation),
                    "trained": len(values),
                    "rejected": sum(
                        1 for r in records if r["generation"] == generation and r["status"] == "rejected"
                    ),
                }
            )
        references = {
            r["key"]: {"formula": r["formula"], "fitness": r.get("fitness"), "status": r["status"]}
            for r in self.log.records
            if r.get("kind") == "reference"
        }
        rejected = sum(1 for r in records if r["status"] == "rejected")
        summary = {
            "recipe": self.recipe.name,
            "seed": self.seed,
            "best": {
                **{k: best.get(k) for k in ("formula", "distiller", "fitness", "val_loss", "generation")},
                "ce_weight": ce_weight,
                "selected_by": selected_by,
                "is_kd_reference": bool(best.get("reference", False)),
            },
            "reranked": [
                {k: r.get(k) for k in ("key", "formula", "fitness", "val_loss", "seconds", "reference")}
                for r in self.log.records
                if r.get("kind") == "rerank"
            ],
            "references": references,
            "candidates": len(records),
            "trained": len(trained),
            "rejected": rejected,
            "failed": sum(1 for r in records if r["status"] in ("failed", "crashed", "timeout")),
            "rejected_share": round(rejected / len(records), 4),
            "candidate_seconds": round(sum(r.get("seconds") or 0.0 for r in records), 2),
            "wall_seconds": round(seconds, 2),
            "dropped": [op for r in self.log.records if r.get("kind") == "shrink" for op in r["dropped"]],
            "generations": generations,
            "stopped": stopped,
            "proxy": {"epochs": self.proxy_train.epochs, "fraction": self.settings.proxy_fraction},
            "best_recipe": str(self.output_dir / "best_recipe.yaml"),
        }
        self._write_best_recipe(Distiller.from_dict(best["distiller"]), checkpoint, ce_weight)
        plot_search(generations, references, self.output_dir / "fitness.png", self.recipe.name)
        atomic_write_json(self.output_dir / "summary.json", summary)
        return summary

    def _write_best_recipe(self, distiller: Distiller, checkpoint: Path, ce_weight: float) -> None:
        payload = self.recipe.model_dump(mode="json", exclude_none=True)
        teacher = payload["teacher"]
        teacher["checkpoint"] = str(checkpoint.resolve())
        teacher.pop("train", None)
        base = self.recipe.students[0]
        method = {
            "name": "distiller",
            "ce_weight": ce_weight,
            "features": [pair.model_dump(mode="json") for pair in self.settings.features],
            **distiller.to_dict(),
        }
        student = {"name": "student-searched", "model": base.model.model_dump(mode="json"), "method": method}
        payload["students"] = [*payload["students"], student]
        payload["name"] = f"{self.recipe.name}-searched"
        payload["description"] = (
            f"{self.recipe.name} with the distiller found by distill search: {distiller.formula()}"
        )
        validate_recipe(payload, str(self.output_dir / "best_recipe.yaml"))
        header = f"# written by distill search; best distiller: {distiller.formula()}\n"
        atomic_write_bytes(
            self.output_dir / "best_recipe.yaml",
            (header + yaml.safe_dump(payload, sort_keys=False, allow_unicode=True)).encode(),
        )


def reference_kd(recipe: Recipe) -> dict[str, Any]:
    """The recipe's ``kd`` student (or Hinton's T = 4, 0.9/0.1) as a distiller payload:
    ``kd_weight·T²·KL(σ(z_t/T) ‖ σ(z_s/T))`` is ``kl`` of the two temperature log-softmaxes
    at weight ``kd_weight`` (``kl`` carries the ``T²``)."""
    template = next(
        (s.method for s in recipe.students if s.method.name == "kd" and getattr(s.method, "kd_weight", None)),
        None,
    )
    temperature = getattr(template, "temperature", 4.0)
    kd_weight = getattr(template, "kd_weight", 0.9)
    ce_weight = getattr(template, "ce_weight", 0.1)
    term = Term("logits", (Op("log_softmax", float(temperature)),), "kl", kd_weight)
    return {"distiller": Distiller((term,)).to_dict(), "ce_weight": ce_weight}


def _candidate(generation: int, distiller: Distiller, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "candidate",
        "generation": generation,
        "key": distiller.key(),
        "formula": distiller.formula(),
        "distiller": distiller.to_dict(),
        "status": status,
        **fields,
    }


def _fields(outcome: Outcome) -> dict[str, Any]:
    result = outcome.result or {}
    return {
        "status": outcome.status,
        "fitness": result.get("fitness"),
        "val_loss": result.get("val_loss"),
        "seconds": result.get("seconds"),
        "error": outcome.error,
    }

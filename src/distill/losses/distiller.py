"""The distiller grammar of KD-Zero: knowledge inputs, transformations, distances, weights.

Li, Dong, Li, Wei, Yang, "KD-Zero: Evolving Knowledge Distiller for Any Teacher-Student Pairs"
(NeurIPS 2023) write a distiller as knowledge transformations applied to teacher and student
knowledge, a distance between the transformed pair, and a loss weight. Here a distiller is a
small expression tree::

    distiller  = Σ_k  w_k · d_k( T_k(K_s), T_k(K_t) )            (one term per k, 1–max_terms)
    T_k        = τ_m ∘ … ∘ τ_1                                      (0–max_transforms unary ops)

where ``K`` is a knowledge input (the logits, or a tapped feature pair whose student side is
mapped to the teacher's shape by a learned projection), each ``τ`` a registered
:class:`Transform` applied alike to both sides, ``d`` a registered :class:`Distance` and ``w``
a weight. Every operation is defined on every finite input (``log`` takes the magnitude,
``exp`` saturates), so any valid tree gives a finite loss on inputs of ordinary scale; the
rejection protocol catches the rest. The same chain on both sides keeps the pair's shapes
equal by construction; shape checking (:meth:`Distiller.check`) rejects a chain that applies
an operation to a tensor it cannot take (e.g. a spatial attention map of the logits), naming
the term and the operation.

**KL and temperature.** ``kl`` is the one distance defined on probability distributions (over
dim 1, the axis ``softmax``/``log_softmax`` normalise), and it carries Hinton's ``T²``. The
rule, with ``x = τ_{m-1} ∘ … ∘ τ_1 (K)`` the chain before its last operation (trailing
``identity`` ops aside)::

    chain ends in softmax[T]:      p = softmax(x/T)          (the probabilities themselves)
    chain ends in log_softmax[T]:  log p = log_softmax(x/T)
    any other chain (or none):     p = softmax(T_k(K)), T = 1 (an implicit softmax[T=1], printed)

    kl = T² · KL(p_t ‖ p_s) = T² · Σ_c p_t,c (log p_t,c − log p_s,c)

summed over dim 1 and averaged over the batch and any remaining axes (a feature map's
positions), so ``w·kl(softmax[T](z_s), softmax[T](z_t))`` is ``w`` times Hinton's KD at ``T``
(``kd_loss``), and so is the same chain with ``log_softmax[T]``: a final ``softmax[T]`` is
never followed by a second softmax. ``T²`` multiplies ``kl`` only (it keeps the gradient's
scale independent of ``T``); the other distances take the transformed tensors as they are.
The printed formula shows both: ``2·4²·kl(softmax[T=4](z_s), softmax[T=4](z_t))``, and an
implicit ``softmax[T=1]`` appears in it. Equal formulas are equal losses.

:data:`GRAMMAR_VERSION` names these semantics; a search directory records it, so a search
begun under other semantics is not continued under these.

Every distiller serialises to a recipe fragment (:meth:`Distiller.to_dict`, the ``terms`` of
a ``distiller`` method) and back, and prints as a formula (:meth:`Distiller.formula`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F

from distill.errors import DistillError, unknown_name_message
from distill.registry import Registry

Shape = tuple[int, ...]
_EPS = 1e-6
#: The semantics of the grammar's operations. 1: ``kl`` applied a log-softmax to whatever it
#: received (a second softmax after a final ``softmax[T]``) and no ``T²``. 2: the rule in the
#: module doc.
GRAMMAR_VERSION = 2
_EXP_LIMIT = 10.0


class ShapeError(ValueError):
    """An operation cannot take a tensor of the given shape."""


# ----------------------------------------------------------------------------- transforms
@dataclass(frozen=True)
class Transform:
    """A knowledge transformation ``(batch, ...) → (batch, ...)``.

    ``apply(x, p)`` computes it (``p`` is the parameter, e.g. a temperature, or ``None``);
    ``shape(s, p)`` is the output shape for an input of shape ``s`` (raises :class:`ShapeError`
    when the input cannot be taken); ``params`` the values the search chooses from (a recipe
    may give any positive value).
    """

    apply: Callable[[torch.Tensor, float | None], torch.Tensor]
    shape: Callable[[Shape, float | None], Shape]
    params: tuple[float, ...] = ()


def _same(shape: Shape, _p: float | None) -> Shape:
    return shape


def _needs_spatial(name: str) -> Callable[[Shape], None]:
    def check(shape: Shape) -> None:
        if len(shape) < 3:
            raise ShapeError(f"{name} needs a (batch, channels, *spatial) tensor, got shape {shape}")

    return check


def _needs_batch(name: str) -> Callable[[Shape], None]:
    def check(shape: Shape) -> None:
        if shape[0] < 2:
            raise ShapeError(f"{name} normalizes over the batch and needs at least 2 samples, got {shape}")

    return check


def _standardize(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    std = x.var(dim=dims, keepdim=True, unbiased=False).add(_EPS).sqrt()
    return (x - mean) / std


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _pyramid(x: torch.Tensor) -> torch.Tensor:
    pool = F.adaptive_avg_pool1d if x.dim() == 3 else F.adaptive_avg_pool2d
    return torch.cat([pool(x, size).flatten(2) for size in (1, 2, 4)], dim=2)


def _pyramid_shape(shape: Shape, _p: float | None) -> Shape:
    _needs_spatial("pyramid_pool")(shape)
    if len(shape) > 4:
        raise ShapeError(f"pyramid_pool takes 1-D or 2-D feature maps, got shape {shape}")
    cells = 1 + 2 + 4 if len(shape) == 3 else 1 + 4 + 16
    return (shape[0], shape[1], cells)


def _spatial_attention(x: torch.Tensor, _p: float | None) -> torch.Tensor:
    return x.pow(2).mean(dim=1).reshape(x.shape[0], -1)


def _channel_attention(x: torch.Tensor, _p: float | None) -> torch.Tensor:
    return x.pow(2).reshape(x.shape[0], x.shape[1], -1).mean(dim=2)


def _batch_similarity(x: torch.Tensor, _p: float | None) -> torch.Tensor:
    rows = F.normalize(_flat(x), dim=1, eps=_EPS)
    return rows @ rows.t()


def _channel_gram(x: torch.Tensor, _p: float | None) -> torch.Tensor:
    maps = x.reshape(x.shape[0], x.shape[1], -1)
    return maps @ maps.transpose(1, 2) / maps.shape[2]


def _min_max(x: torch.Tensor, _p: float | None) -> torch.Tensor:
    flat = _flat(x)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low + _EPS)).reshape(x.shape)


def _checked(check: Callable[[Shape], None], out: Callable[[Shape, float | None], Shape]):
    def shape(value: Shape, p: float | None) -> Shape:
        check(value)
        return out(value, p)

    return shape


TEMPERATURES = (1.0, 2.0, 4.0, 8.0)

#: Every knowledge transformation, with the sentence ``distill list`` would print.
TRANSFORMS: Registry[Transform] = Registry("transform")
_T = TRANSFORMS.register
_T("identity", "no-op")(Transform(lambda x, p: x, _same))
# ``p`` is the temperature Op.parse requires; an Op built without one divides by None and raises
# TypeError, which the rejection protocol reports (hence a cast, not an assert).
_T("softmax", "temperature softmax over dim 1 (classes / channels)")(
    Transform(lambda x, p: torch.softmax(x / cast(float, p), dim=1), _same, TEMPERATURES)
)
_T("log_softmax", "temperature log-softmax over dim 1")(
    Transform(lambda x, p: torch.log_softmax(x / cast(float, p), dim=1), _same, TEMPERATURES)
)
_T("batch_norm", "standardize each coordinate over the batch")(
    Transform(lambda x, p: _standardize(x, (0,)), _checked(_needs_batch("batch_norm"), _same))
)
_T("channel_norm", "standardize over dim 1 (classes / channels)")(
    Transform(lambda x, p: _standardize(x, (1,)), _same)
)
_T("spatial_norm", "standardize over the spatial axes of a feature map")(
    Transform(
        lambda x, p: _standardize(x, tuple(range(2, x.dim()))),
        _checked(_needs_spatial("spatial_norm"), _same),
    )
)
_T("l2_norm", "divide each sample by its L2 norm")(
    Transform(lambda x, p: F.normalize(_flat(x), dim=1, eps=_EPS).reshape(x.shape), _same)
)
_T("spatial_attention", "mean of squares over channels: (B, C, *S) → (B, ΠS) (attention transfer)")(
    Transform(
        _spatial_attention,
        _checked(_needs_spatial("spatial_attention"), lambda s, p: (s[0], _prod(s[2:]))),
    )
)
_T("channel_attention", "mean of squares over space: (B, C, *S) → (B, C)")(
    Transform(_channel_attention, _checked(_needs_spatial("channel_attention"), lambda s, p: s[:2]))
)
_T("pyramid_pool", "average pooling at 1, 2 and 4 cells per axis, concatenated (multi-scale)")(
    Transform(lambda x, p: _pyramid(x), _pyramid_shape)
)
_T("batch_similarity", "cosine similarity between the batch's samples: → (B, B)")(
    Transform(_batch_similarity, lambda s, p: (s[0], s[0]))
)
_T("channel_gram", "Gram matrix of the channels: (B, C, *S) → (B, C, C)")(
    Transform(_channel_gram, _checked(_needs_spatial("channel_gram"), lambda s, p: (s[0], s[1], s[1])))
)
_T("abs", "absolute value")(Transform(lambda x, p: x.abs(), _same))
_T("square", "x²")(Transform(lambda x, p: x.pow(2), _same))
_T("log", "log(|x| + ε): the log magnitude (defined everywhere)")(
    Transform(lambda x, p: torch.log(x.abs() + _EPS), _same)
)
_T("exp", f"exponential saturated at x = {_EXP_LIMIT:g} (chains of three stay finite in float32)")(
    Transform(lambda x, p: torch.exp(x.clamp(max=_EXP_LIMIT)), _same)
)
_T("sigmoid", "logistic sigmoid")(Transform(lambda x, p: torch.sigmoid(x), _same))
_T("tanh", "hyperbolic tangent")(Transform(lambda x, p: torch.tanh(x), _same))
_T("min_max", "scale each sample to [0, 1]")(Transform(_min_max, _same))


def _prod(values: Shape) -> int:
    out = 1
    for value in values:
        out *= value
    return out


# ----------------------------------------------------------------------------- distances
@dataclass(frozen=True)
class Distance:
    """A distance between the transformed student and teacher knowledge: ``≥ 0``, and ``0``
    when they are equal. ``fn(student, teacher)`` returns a scalar; both are ``(B, ...)``.

    A ``tempered`` distance compares distributions over dim 1: a :class:`Term` hands it the
    log-probabilities of the chain's final ``softmax[T]``/``log_softmax[T]`` (or of an implicit
    ``softmax[T=1]``) and multiplies it by ``T²`` (see the module doc)."""

    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    min_batch: int = 1
    tempered: bool = False


def _kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``KL(p_t ‖ p_s) = Σ_c p_t (log p_t − log p_s)`` over dim 1 with ``p = softmax(x, dim=1)``,
    mean over the batch and any further axes. Log-probabilities pass through unchanged
    (``log_softmax`` of a log-softmax is itself), so a tempered term's inputs are not
    normalised twice."""
    log_t = torch.log_softmax(teacher, dim=1)
    log_s = torch.log_softmax(student, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1).mean()


def _cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``½‖s/‖s‖ − t/‖t‖‖²`` per row, i.e. ``1 − cos(s, t)``; 0 for equal rows, also zero ones."""
    unit_s = F.normalize(student, dim=1, eps=_EPS)
    unit_t = F.normalize(teacher, dim=1, eps=_EPS)
    return 0.5 * (unit_s - unit_t).pow(2).sum(dim=1).mean()


def _pearson(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    s, t = _flat(student), _flat(teacher)
    return _cosine(s - s.mean(dim=1, keepdim=True), t - t.mean(dim=1, keepdim=True))


def _pearson_batch(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    s, t = _flat(student).t(), _flat(teacher).t()  # one row per coordinate, over the batch
    return _cosine(s - s.mean(dim=1, keepdim=True), t - t.mean(dim=1, keepdim=True))


#: Every distance function.
DISTANCES: Registry[Distance] = Registry("distance")
DISTANCES.register(
    "kl",
    "T²·KL(p_t ‖ p_s) over dim 1: p from the chain's final softmax[T] / log_softmax[T], "
    "else softmax[T=1] of it",
)(Distance(_kl, tempered=True))
DISTANCES.register("mse", "mean squared error")(Distance(lambda s, t: F.mse_loss(s, t)))
DISTANCES.register("l1", "mean absolute error")(Distance(lambda s, t: F.l1_loss(s, t)))
DISTANCES.register("smooth_l1", "Huber loss with β = 1")(Distance(lambda s, t: F.smooth_l1_loss(s, t)))
DISTANCES.register("cosine", "1 − cosine similarity per sample")(
    Distance(lambda s, t: _cosine(_flat(s), _flat(t)))
)
DISTANCES.register("pearson", "1 − Pearson correlation per sample (DIST's inter-class relation)")(
    Distance(_pearson)
)
DISTANCES.register("pearson_batch", "1 − Pearson correlation over the batch per coordinate (DIST intra)")(
    Distance(_pearson_batch, min_batch=2)
)

#: The loss weights a search chooses from.
WEIGHTS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


# ----------------------------------------------------------------------------- the tree
@dataclass(frozen=True)
class Op:
    """One transformation node: a registered transform and its parameter (or ``None``)."""

    name: str
    param: float | None = None

    @classmethod
    def parse(cls, text: str) -> Op:
        """``"softmax:4"`` → ``Op("softmax", 4.0)``; ``"l2_norm"`` → ``Op("l2_norm")``."""
        name, _, param = text.partition(":")
        transform = TRANSFORMS.get(name)
        if not param:
            if transform.params:
                raise DistillError(
                    f"transform '{name}' needs a parameter, one of "
                    f"{', '.join(f'{name}:{value:g}' for value in transform.params)}"
                )
            return cls(name)
        if not transform.params:
            raise DistillError(f"transform '{name}' takes no parameter, got '{text}'")
        try:
            value = float(param)
        except ValueError:
            raise DistillError(f"transform '{text}': parameter '{param}' is not a number") from None
        if not value > 0:
            raise DistillError(f"transform '{text}': the parameter must be a positive number")
        return cls(name, value)

    def __str__(self) -> str:
        return self.name if self.param is None else f"{self.name}:{self.param:g}"

    def symbol(self) -> str:
        return self.name if self.param is None else f"{self.name}[T={self.param:g}]"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return TRANSFORMS.get(self.name).apply(x, self.param)

    def output_shape(self, shape: Shape) -> Shape:
        return TRANSFORMS.get(self.name).shape(shape, self.param)


@dataclass(frozen=True)
class Term:
    """``weight · distance(T(K_s), T(K_t))`` with ``T`` the chain ``transforms`` (first op
    applied first) and ``K`` the knowledge input named ``knowledge``; for ``kl``,
    ``weight · T² · KL(p_t ‖ p_s)`` by the rule in the module doc."""

    knowledge: str
    transforms: tuple[Op, ...]
    distance: str
    weight: float

    def __post_init__(self) -> None:
        DISTANCES.get(self.distance)  # an unknown name is a DistillError listing the known ones
        if not self.weight > 0:
            raise DistillError(f"a term's weight must be > 0, got {self.weight}")

    def output_shape(self, shape: Shape) -> Shape:
        """The shape both sides have after the chain; :class:`ShapeError` if an op cannot apply."""
        for op in self.transforms:
            shape = op.output_shape(shape)
        min_batch = DISTANCES.get(self.distance).min_batch
        if shape[0] < min_batch:
            raise ShapeError(f"{self.distance} needs at least {min_batch} samples")
        return shape

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.transforms:
            x = op(x)
        return x

    def distribution(self) -> tuple[tuple[Op, ...], Op, bool]:
        """For a tempered distance (``kl``): the ops before the distribution, the op that makes
        it (the chain's last ``softmax``/``log_softmax``, trailing ``identity`` ops aside, else
        ``softmax[T=1]``) and whether that op is implicit (not in ``transforms``)."""
        ops = self.transforms
        while ops and ops[-1].name == "identity":
            ops = ops[:-1]
        if ops and ops[-1].name in ("softmax", "log_softmax"):
            return ops[:-1], ops[-1], False
        return ops, Op("softmax", 1.0), True

    def loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The weighted distance between the transformed pair (the teacher side is detached);
        for a tempered distance, ``weight · T² · d(log p_s, log p_t)`` (module doc)."""
        distance = DISTANCES.get(self.distance)
        teacher = teacher.detach()
        if not distance.tempered:
            return self.weight * distance.fn(self.transform(student), self.transform(teacher))
        before, final, _implicit = self.distribution()
        # ``final.param`` is None only for an Op built without Op.parse: dividing by it raises
        # TypeError, which the rejection protocol reports (as for the transform itself).
        temperature = cast(float, final.param)

        def log_probs(x: torch.Tensor) -> torch.Tensor:
            for op in before:
                x = op(x)
            return torch.log_softmax(x / temperature, dim=1)

        return self.weight * temperature**2 * distance.fn(log_probs(student), log_probs(teacher))

    def formula(self) -> str:
        """``weight[·T²]·distance(T(K_s), T(K_t))``: exactly what :meth:`loss` computes (a
        tempered distance shows its ``T²`` when ``T ≠ 1`` and an implicit ``softmax[T=1]``)."""
        chain, factor = self.transforms, ""
        if DISTANCES.get(self.distance).tempered:
            _before, final, implicit = self.distribution()
            if implicit:
                chain = (*chain, final)
            if final.param is not None and final.param != 1:
                factor = f"·{final.param:g}²"

        def side(symbol: str) -> str:
            text = symbol
            for op in chain:
                text = f"{op.symbol()}({text})"
            return text

        student, teacher = _knowledge_symbols(self.knowledge)
        return f"{self.weight:g}{factor}·{self.distance}({side(student)}, {side(teacher)})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "knowledge": self.knowledge,
            "transforms": [str(op) for op in self.transforms],
            "distance": self.distance,
            "weight": self.weight,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Term:
        return cls(
            str(payload.get("knowledge", "logits")),
            tuple(Op.parse(str(text)) for text in payload.get("transforms", [])),
            str(payload["distance"]),
            float(payload["weight"]),
        )


def _knowledge_symbols(knowledge: str) -> tuple[str, str]:
    if knowledge == "logits":
        return "z_s", "z_t"
    return f"F_s[{knowledge}]", f"F_t[{knowledge}]"


@dataclass(frozen=True)
class Distiller:
    """A sum of :class:`Term` s: the distillation loss a student minimizes next to its CE."""

    terms: tuple[Term, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.terms:
            raise DistillError("a distiller needs at least one term")

    def check(self, shapes: dict[str, Shape]) -> None:
        """Raise :class:`DistillError` naming the first term (and op) whose chain cannot take
        the shape of its knowledge input. ``shapes`` maps each knowledge name to its (teacher
        side) shape, batch dimension first."""
        for index, term in enumerate(self.terms):
            if term.knowledge not in shapes:
                raise DistillError(
                    f"terms[{index}].knowledge: "
                    + unknown_name_message("knowledge input", term.knowledge, shapes)
                )
            try:
                term.output_shape(shapes[term.knowledge])
            except ShapeError as error:
                raise DistillError(f"terms[{index}] ({term.formula()}): {error}") from None

    def is_valid(self, shapes: dict[str, Shape]) -> bool:
        try:
            self.check(shapes)
        except DistillError:
            return False
        return True

    def losses(
        self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]
    ) -> list[torch.Tensor]:
        """Each term's weighted loss, from knowledge tensors by name."""
        return [term.loss(student[term.knowledge], teacher[term.knowledge]) for term in self.terms]

    def formula(self) -> str:
        return " + ".join(term.formula() for term in self.terms)

    def to_dict(self) -> dict[str, Any]:
        return {"terms": [term.to_dict() for term in self.terms]}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Distiller:
        return cls(tuple(Term.from_dict(term) for term in payload["terms"]))

    def key(self) -> str:
        """A canonical text of the tree (terms sorted): equal keys, equal distillers."""
        return " + ".join(sorted(term.formula() for term in self.terms))

    def operations(self) -> set[str]:
        """The transforms (by name) and distances it uses, e.g. for search-space statistics."""
        names = {f"distance:{term.distance}" for term in self.terms}
        names.update(f"transform:{op.name}" for term in self.terms for op in term.transforms)
        return names


def distiller_loss(
    distiller: Distiller, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The summed loss of ``distiller`` on knowledge tensors by name (the registered loss)."""
    return torch.stack(distiller.losses(student, teacher)).sum()

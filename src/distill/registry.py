"""Name → object registries with one-line descriptions (what ``distill list`` prints)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar, Union

from pydantic import Discriminator, Tag

from distill.errors import DistillError, unknown_name_message

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object and the sentence that describes it."""

    name: str
    obj: T
    description: str


class Registry(Generic[T]):
    """A named collection of factories; registration happens once, next to the definition."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` with a one-line ``description``."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(name, obj, description)
            return obj

        return decorate

    def get(self, name: str) -> T:
        """The object registered as ``name``; a :class:`DistillError` lists the allowed names."""
        try:
            return self._entries[name].obj
        except KeyError:
            raise DistillError(unknown_name_message(self.kind, name, self._entries)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda entry: entry.name))

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)


@dataclass(frozen=True)
class SpecEntry:
    """A registered factory and the typed recipe section (a pydantic model) that configures it."""

    spec: type
    build: Callable[..., object]


class SpecRegistry(Registry[SpecEntry]):
    """Registry of factories whose first parameter is their typed spec.

    ``@REGISTRY.register_factory(name, description)`` on ``def build(spec: FooSpec, ...)`` records
    both the factory and ``FooSpec`` (read from the annotation), so each thing registers in one
    place and the recipe schema is assembled from the registry.
    """

    def register_factory(
        self, name: str, description: str
    ) -> Callable[[Callable[..., object]], Callable[..., object]]:
        def decorate(build: Callable[..., object]) -> Callable[..., object]:
            import inspect

            first = next(iter(inspect.signature(build, eval_str=True).parameters.values()))
            self.register(name, description)(SpecEntry(first.annotation, build))
            return build

        return decorate

    def union(
        self,
        kind: str,
        fallback: tuple[str, type, Callable[[str], bool]] | None = None,
        optional: bool = False,
    ) -> Any:
        """A pydantic discriminated union over every spec registered *so far*, selected by the
        value's ``name`` key; an unknown name is the error ``unknown <kind>`` listing the names.

        ``fallback``: ``(tag, spec, matches)`` — a member for names that are not registered but
        ``matches(name)`` (e.g. ``package.module:callable`` for imported models). ``optional``
        adds ``None`` as a member (an outer ``X | None`` would try to hash the discriminator's
        error context).
        """
        members: dict[str, Any] = {entry.name: entry.obj.spec for entry in self}
        if fallback is not None:
            members[fallback[0]] = fallback[1]
        if optional:
            members["null"] = type(None)

        def tag_of(value: Any) -> str | None:
            if value is None and optional:
                return "null"
            name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
            if not isinstance(name, str):
                return None
            if name in members:
                return name
            if fallback is not None and fallback[2](name):
                return fallback[0]
            return None

        variants = tuple(Annotated[spec, Tag(name)] for name, spec in members.items())
        return Annotated[
            Union[variants],  # noqa: UP007  (a runtime-built union)
            Discriminator(
                tag_of,
                custom_error_type="unknown_name",
                custom_error_message=f"unknown {kind}",
                custom_error_context={"kind": kind, "allowed": ", ".join(self.names())},
            ),
        ]

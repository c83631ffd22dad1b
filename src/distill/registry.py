"""Name → object registries with one-line descriptions (what ``distill list`` prints)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

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

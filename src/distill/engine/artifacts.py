"""The files behind :class:`~distill.methods.base.MethodArtifacts`: what a method makes besides
the student, kept in the student's folder of the run directory.

A module named ``NAME`` is a checkpoint, ``NAME.safetensors`` with its metadata in ``NAME.json``
(:mod:`distill.engine.checkpoint`); a table named ``NAME`` is ``NAME.json``. All are written
atomically. :class:`ModuleFileReader` reads the modules a recipe names by path
(``loss_teacher: PATH``); the assembly hands one to every method factory
(:attr:`~distill.methods.MethodContext.module_reader`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from distill.engine.checkpoint import load_weights, read_metadata, save_checkpoint
from distill.errors import CheckpointError
from distill.files import atomic_write_json

__all__ = ["ModuleFileReader", "RunArtifacts"]


class ModuleFileReader:
    """Reads saved modules by path (:class:`~distill.methods.base.ModuleReader`)."""

    def module_file_metadata(self, path: Path) -> dict[str, Any] | None:
        if not Path(path).is_file():
            return None
        return read_metadata(path)

    def load_module_file(self, path: Path, module: nn.Module) -> dict[str, Any]:
        load_weights(path, module)
        return read_metadata(path)


class RunArtifacts(ModuleFileReader):
    """A method's artifacts (:class:`~distill.methods.base.MethodArtifacts`) in ``directory``
    (the student's folder, created on the first write)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _module_path(self, name: str) -> Path:
        return self.directory / f"{name}.safetensors"

    def _table_path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def has_module(self, name: str) -> bool:
        return self._module_path(name).is_file()

    def module_metadata(self, name: str) -> dict[str, Any] | None:
        return self.module_file_metadata(self._module_path(name))

    def load_module(self, name: str, module: nn.Module) -> dict[str, Any]:
        return self.load_module_file(self._module_path(name), module)

    def save_module(self, name: str, module: nn.Module, metadata: dict[str, Any]) -> None:
        save_checkpoint(self._module_path(name), module, metadata)

    def module_location(self, name: str) -> str:
        return str(self._module_path(name))

    def read_table(self, name: str) -> Any | None:
        path = self._table_path(name)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path}: cannot read this table ({error})") from None

    def write_table(self, name: str, rows: Any) -> None:
        atomic_write_json(self._table_path(name), rows)

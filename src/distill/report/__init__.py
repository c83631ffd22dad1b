"""Run directories, result tables and plots.

The names below are imported when first used, so that a command that only reads JSON (``distill
summarize``, :mod:`distill.report.seeds`) does not pay for PyTorch and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distill.report.plots import plot_learning_curves
    from distill.report.rundir import RunDirectory, default_run_dir, latest_run_dir
    from distill.report.table import print_results, results_table

_HOMES = {
    "plot_learning_curves": "distill.report.plots",
    "RunDirectory": "distill.report.rundir",
    "default_run_dir": "distill.report.rundir",
    "latest_run_dir": "distill.report.rundir",
    "print_results": "distill.report.table",
    "results_table": "distill.report.table",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'distill.report' has no attribute {name!r}")


__all__ = [
    "RunDirectory",
    "default_run_dir",
    "latest_run_dir",
    "plot_learning_curves",
    "print_results",
    "results_table",
]

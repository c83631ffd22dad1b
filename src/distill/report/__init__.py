"""Run directories, result tables and plots."""

from distill.report.plots import plot_learning_curves
from distill.report.rundir import RunDirectory, default_run_dir, latest_run_dir
from distill.report.table import print_results, results_table

__all__ = [
    "RunDirectory",
    "default_run_dir",
    "latest_run_dir",
    "plot_learning_curves",
    "print_results",
    "results_table",
]

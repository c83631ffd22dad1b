"""The results table a run prints: pool runs show every model's accuracy on U and SLaM's α."""

from __future__ import annotations

from rich.console import Console

from distill.report.table import print_results


def row(name, role, method, accuracy, extras=None):
    return {
        "name": name,
        "role": role,
        "method": method,
        "test_accuracy": accuracy,
        "params": 1000,
        "epochs": 2,
        "seconds": 1.0,
        "extras": extras,
    }


def printed(summary):
    console = Console(record=True, width=200)
    print_results(summary, console)
    return console.export_text()


def test_a_pool_run_prints_accuracy_on_u_and_alpha_calibration():
    text = printed(
        {
            "recipe": "unlabeled",
            "results": [
                row("teacher", "teacher", "scratch", 0.8, {"unlabeled_accuracy": 0.75}),
                row("scratch", "student", "scratch", 0.5),
                row(
                    "slam",
                    "student",
                    "slam",
                    0.7,
                    {"student_unlabeled_accuracy": 0.66, "alpha_calibration_error": 0.0271},
                ),
            ],
        }
    )
    assert "U acc (%)" in text
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 2}
    assert "75.00" in lines["teacher"] and "66.00" in lines["slam"] and "—" in lines["scratch"]
    assert "slam: α(x)'s calibration error against the teacher's real correctness on U: 0.027" in text


def test_a_run_without_pool_has_no_u_column():
    text = printed({"recipe": "q", "results": [row("student", "student", "kd", 0.9)]})
    assert "U acc" not in text and "calibration" not in text


def test_a_leaderboard_marks_a_single_seed_instead_of_a_zero_spread():
    from distill.report.leaderboard import Leaderboard, LeaderboardRow

    def board(accuracies):
        row = LeaderboardRow("kd", "kd", "student", accuracies, 100, [1.0] * len(accuracies))
        return Leaderboard("q", ("kd",), list(range(len(accuracies))), {"name": "mlp"}, {"name": "x"}, [row])

    assert "| kd | kd | 91.00 (1 seed) |" in board([0.91]).markdown()
    assert "± 0.00" not in board([0.91]).markdown()
    assert "| kd | kd | 90.00 ± 1.41 |" in board([0.89, 0.91]).markdown()

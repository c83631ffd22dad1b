"""What a newcomer sees: log lines when piped, progress bars, unwrapped output, readable plots."""

import io
import re

import pytest
from rich.console import Console
from rich.progress import TimeRemainingColumn

from distill.cli import main
from distill.pareto import ParetoPoint, pareto_figure
from distill.report import rundir
from distill.report.leaderboard import Leaderboard, LeaderboardRow
from distill.report.plots import learning_curves_figure
from distill.report.progress import RunProgress
from distill.report.search import search_figure
from tests.conftest import interrupt_after, tiny_recipe

EPOCH_LINE = re.compile(
    r"^(\w+) epoch (\d+)/(\d+): train loss [-\d.e+]+, val acc [\d.]+ %(, test acc [\d.]+ %)?, [\d.]+ s$"
)


def _record(model: str, epoch: int, **extra) -> dict:
    return {
        "model": model,
        "epoch": epoch,
        "train_loss": 0.5,
        "val_accuracy": 0.9,
        "seconds": epoch / 10,
    } | extra


@pytest.mark.slow
def test_piped_run_logs_epochs_and_resume_continues_where_it_stopped(
    tmp_path, write_recipe, monkeypatch, capsys
):
    recipe = write_recipe(tiny_recipe())
    run_dir = tmp_path / ("a-long-directory-name-" * 9)  # the `recipe … → run_dir` line: > 200 characters
    original = interrupt_after(monkeypatch, "kd", 2)
    assert main(["run", str(recipe), "--output-dir", str(run_dir)]) == 130
    out = capsys.readouterr().out.splitlines()
    header = next(line for line in out if line.startswith("recipe "))
    assert len(header) > 200 and header.endswith(str(run_dir))  # one line, not wrapped at 120 columns
    epochs = [EPOCH_LINE.match(line) for line in out if " epoch " in line]
    assert all(epochs), out
    logged = [(m[1], int(m[2])) for m in epochs if m]
    assert ("teacher", 1) in logged and ("teacher", 3) in logged and ("kd", 1) in logged
    final = next(line for line in out if line.startswith("teacher epoch 3/3"))
    assert "test acc" in final  # the last epoch carries the test accuracy

    monkeypatch.setattr(rundir.RunDirectory, "append_metrics", original)
    assert main(["run", str(recipe), "--output-dir", str(run_dir), "--resume"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "kd: resuming after epoch 2/3" in out
    assert [line.split(":")[0] for line in out if EPOCH_LINE.match(line)] == ["kd epoch 3/3"]


def test_piped_log_lines_are_throttled_but_keep_first_and_last_epoch():
    stream = io.StringIO()
    now = [0.0]
    with RunProgress(Console(file=stream, width=80), clock=lambda: now[0]) as progress:
        progress.model_start("teacher", 200)
        for epoch in range(1, 201):
            now[0] += 0.1  # 20 s in all: about ten lines, not 200
            progress.epoch_end("teacher", _record("teacher", epoch, test_accuracy=0.8), 200)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "teacher epoch 1/200: train loss 0.5, val acc 90.0 %, 0.1 s"
    assert lines[-1] == "teacher epoch 200/200: train loss 0.5, val acc 90.0 %, test acc 80.0 %, 20.0 s"
    assert 10 <= len(lines) <= 12
    assert all(EPOCH_LINE.match(line) for line in lines)


def test_quiet_progress_prints_nothing():
    stream = io.StringIO()
    with RunProgress(Console(file=stream), enabled=False) as progress:
        progress.model_start("teacher", 2, 1)
        progress.epoch_end("teacher", _record("teacher", 2), 2)
    assert stream.getvalue() == ""


def test_terminal_bar_has_an_eta_and_starts_at_the_epochs_already_done():
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with RunProgress(console) as progress:
        assert progress._progress is not None
        assert any(isinstance(column, TimeRemainingColumn) for column in progress._progress.columns)
        progress.model_start("teacher", 60, 12)
        (task,) = progress._progress.tasks
        assert (task.completed, task.total) == (12, 60)
        progress.epoch_end("teacher", _record("teacher", 13), 60)
        assert task.completed == 13


def test_bench_prints_each_task_as_it_ends_and_an_unwrapped_table(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    import distill.bench.cache_accuracy
    import distill.bench.tasks
    import distill.bench.timing

    keys = [
        "scratch_epoch_s",
        "kd_live_epoch_s",
        "kd_cached_epoch_s",
        "plain_loop_epoch_s",
        "kd_cached_over_scratch",
        "kd_cached_extra_ms_per_step",
        "kd_live_over_plain_loop",
        "kd_live_over_scratch",
        "kd_cached_augmented_over_scratch_augmented",
        "scratch_unfused_optimizer_over_scratch",
    ]
    seen = []

    def fake_compare(scale, temperature):
        seen.append(capsys.readouterr().out)  # what was printed before the bench ended
        return {
            "task": "synthetic",
            "epochs": 1,
            "temperature": temperature,
            "seeds": [0],
            "full_mean": 0.5,
            "top10_mean": 0.5,
            "difference_points": 0.0,
            "bin_difference_points": 0.0,
            "bytes_per_sample": {"full": 400, "top10": 40},
            "bytes_ratio": 0.1,
        }

    tasks = [SimpleNamespace(name="first-task"), SimpleNamespace(name="second-task")]
    monkeypatch.setattr(distill.bench.tasks, "bench_tasks", lambda scale: tasks)
    monkeypatch.setattr(
        distill.bench.timing,
        "time_task",
        lambda task, repeats, seconds: dict.fromkeys(keys, 0.25) | {"repeats": 1},
    )
    monkeypatch.setattr(distill.bench.cache_accuracy, "compare_top_k", fake_compare)
    assert main(["bench", "--tiny", "--output-dir", str(tmp_path / "bench")]) == 0
    out = "".join(seen) + capsys.readouterr().out
    assert "task 1/2 first-task: scratch 0.250 s/epoch" in seen[0] and "task 2/2 second-task" in seen[0]
    assert "top-k cache at T = 4: full logits 50.00% vs top10 50.00%" in seen[1]
    header = (tmp_path / "bench" / "bench.md").read_text().splitlines()[0]
    assert header.startswith("| task | scratch s/epoch |") and len(header) > 150
    assert header in out.splitlines()  # one line, not wrapped at 120 columns


def test_errors_are_not_wrapped_either(tmp_path, capsys):
    missing = tmp_path / ("no-such-directory-" * 12) / "recipe.yaml"
    assert main(["run", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and len(err.splitlines()[0]) > 200


def test_learning_curves_have_whole_epoch_ticks():
    for epochs in ((1, 2, 3), (1,)):
        records = [_record(model, epoch) for model in ("teacher", "kd") for epoch in epochs]
        for axis in learning_curves_figure(records, "tiny").axes:
            low, high = axis.get_xlim()
            ticks = [tick for tick in axis.get_xticks() if low <= tick <= high]
            assert ticks and all(float(tick).is_integer() for tick in ticks), ticks


def test_search_plot_of_one_generation_has_one_integer_tick():
    generation = {"generation": 1, "best": 80.0, "median": 70.0, "best_so_far": 80.0}
    figure = search_figure([generation], {"kd": {"fitness": 75.0}}, "tiny")
    (axis,) = figure.axes
    assert axis.get_xlim() == (0.5, 1.5)
    low, high = axis.get_xlim()
    assert [tick for tick in axis.get_xticks() if low <= tick <= high] == [1.0]
    generations = [{"generation": g, "best": 80.0, "median": 70.0, "best_so_far": 80.0} for g in range(4)]
    axis = search_figure(generations, {}, "tiny").axes[0]
    assert all(float(tick).is_integer() for tick in axis.get_xticks())


def _leaderboard(accuracies: dict[str, float]) -> Leaderboard:
    rows = [
        LeaderboardRow(name, "kd", "teacher" if name == "teacher" else "student", [value], 10, [1.0])
        for name, value in accuracies.items()
    ]
    return Leaderboard("tiny", ("kd",), [0], {}, {}, rows)


def test_a_truncated_leaderboard_axis_says_where_it_starts():
    axis = _leaderboard({"teacher": 0.95, "scratch": 0.81, "kd": 0.86}).figure().axes[0]
    assert axis.get_xlim() == (75.0, 100.0)
    assert axis.get_xlabel().endswith("; axis starts at 75 %")
    axis = _leaderboard({"teacher": 0.6, "scratch": 0.04}).figure().axes[0]
    assert axis.get_xlim()[0] == 0.0 and "axis starts" not in axis.get_xlabel()


def test_pareto_labels_every_point_off_its_marker():
    latency = {"onnxruntime_batch1_ms": 1.0}
    points = [
        ParetoPoint("teacher", 1000, 10, 100, {"onnxruntime_batch1_ms": 2.0}, [], [0.9]),
        ParetoPoint("G4", 300, 3, 30, latency, [0.85], [0.8]),
        ParetoPoint("B2", 200, 2, 20, latency, [0.7], [0.75]),
    ]
    figure = pareto_figure(points, "tiny")
    for axis in figure.axes:
        labels = {text.get_text(): text for text in axis.texts}
        assert set(labels) == {"teacher", "G4", "G4 scratch", "B2", "B2 scratch"}
        assert all(text.xyann != (0, 0) for text in labels.values())  # set off the marker
        assert labels["teacher"].xyann[1] > 0
        assert labels["G4"].xyann[1] > 0 > labels["G4 scratch"].xyann[1]  # distilled above scratch
        assert labels["B2 scratch"].xyann[1] > 0 > labels["B2"].xyann[1]

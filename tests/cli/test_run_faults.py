"""Runs that OS faults and their own tools cannot corrupt: a full disk mid-run, an output
directory that cannot be written, a cut metrics line, leftover temporaries, two processes on one
run directory (real processes), and sweep values that would leave the output directory."""

from __future__ import annotations

import errno
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import pytest

import distill.files
from distill.cli import main
from distill.compare import sweep_folder_name
from tests.conftest import records_without_seconds

pytestmark = pytest.mark.slow


def run_cli(*args):
    return main([str(arg) for arg in args])


def test_a_full_disk_mid_run_is_clear_and_the_run_resumes_exactly(
    finished_run, tmp_path, monkeypatch, capsys
):
    """The disk fills while the KD student writes its epoch-2 checkpoint, after the teacher has
    trained: exit 2, a message naming the file and how to continue, nothing half-written; a
    cut metrics line and leftover temporaries do not stop the resume, which reproduces the
    uninterrupted run."""
    recipe, reference = finished_run
    run = tmp_path / "run"
    real = distill.files.tempfile.NamedTemporaryFile
    writes = {"kd": 0}

    def filling_disk(*args, **kwargs):
        if kwargs.get("prefix") == ".last.safetensors." and pathlib.Path(kwargs["dir"]).name == "kd":
            writes["kd"] += 1
            if writes["kd"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(distill.files.tempfile, "NamedTemporaryFile", filling_disk)
    assert run_cli("run", recipe, "--output-dir", run, "--quiet") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"cannot write {run / 'kd' / 'last.safetensors'}: No space left on device" in err
    assert f"every completed epoch is kept in {run}" in err
    assert f"--output-dir {run} --resume" in err
    assert "Traceback" not in err
    assert (run / "teacher" / "result.json").is_file()  # the teacher's work is not lost
    assert not [path for path in run.rglob(".*") if path.name != ".lock"]
    monkeypatch.setattr(distill.files.tempfile, "NamedTemporaryFile", real)

    # what a kill at a worse moment leaves: a cut last line and temporaries of atomic writes
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"model": "kd", "epoch": 2, "train_lo')
    stale = [run / ".summary.json.abcd_123", run / "kd" / ".last.json.x1y2z3w4"]
    for path in stale:
        path.write_bytes(b"half")

    assert run_cli("run", recipe, "--output-dir", run, "--resume", "--quiet") == 0
    assert records_without_seconds(run / "metrics.jsonl") == records_without_seconds(
        reference / "metrics.jsonl"
    )
    assert not any(path.exists() for path in stale)
    assert (run / ".lock").is_file()  # the lock file stays; its flock went with the process


def test_a_damaged_metrics_line_before_the_last_is_an_error_naming_it(finished_run, tmp_path, capsys):
    recipe, reference = finished_run
    run = tmp_path / "run"
    run.mkdir()
    for name in ("recipe.yaml", "metrics.jsonl"):
        (run / name).write_bytes((reference / name).read_bytes())
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert run_cli("run", recipe, "--output-dir", run, "--resume", "--quiet") == 2
    assert (
        f"{run / 'metrics.jsonl'}: line 2 is not a JSON record; the file is damaged"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize("where", ["through a file", "read-only"])
def test_an_unwritable_output_directory_is_refused_before_anything_trains(
    where, finished_run, tmp_path, monkeypatch, capsys
):
    recipe, _ = finished_run
    (tmp_path / "file").write_text("a regular file")
    if where == "through a file":
        target = tmp_path / "file" / "run"
        expected = f"cannot create {target}: a part of the path is a regular file, not a folder"
    else:  # root ignores permission bits, so a read-only file system is simulated
        target = tmp_path / "ro" / "run"
        real = pathlib.Path.mkdir

        def read_only(self, *args, **kwargs):
            if str(self).startswith(str(tmp_path / "ro")):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
        expected = f"cannot create {target}: Read-only file system"
    trained = []
    monkeypatch.setattr("distill.runner.Trainer.fit", lambda self: trained.append(1))
    assert run_cli("run", recipe, "--output-dir", target, "--quiet") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert expected in err and "Traceback" not in err
    assert trained == []


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from distill.report.rundir import RunDirectory
    run = RunDirectory(Path(sys.argv[1]))
    run.open({"name": "held"}, resume=False)
    print("holding", flush=True)
    time.sleep(120)
    """
)


def test_a_live_run_directory_is_locked_against_a_second_process(finished_run, tmp_path, capsys):
    """A real second process holds the run; a resume is refused naming its pid, and once the
    holder is killed (-9) the operating system has released the lock."""
    recipe, _ = finished_run
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        assert run_cli("run", recipe, "--output-dir", run, "--resume", "--quiet") == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"{run} is in use: another distill process (pid {holder.pid}) is writing this run" in err
        assert run_cli("run", recipe, "--output-dir", run, "--quiet") == 2
        assert "is in use" in capsys.readouterr().err
        assert (run / "recipe.yaml").read_text().strip() == "name: held"  # untouched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder is gone: the run it left is no longer locked (its recipe differs, which is said)
    assert run_cli("run", recipe, "--output-dir", run, "--resume", "--quiet") == 2
    assert "the recipe differs" in capsys.readouterr().err


def test_sweep_values_never_name_a_folder_outside_the_output_directory():
    assert sweep_folder_name("train.epochs", "2") == "train.epochs=2"
    assert sweep_folder_name("students[0].model.hidden", "[64,64]") == "students[0].model.hidden=[64,64]"
    for value in ("../../escape", "a/b", "/abs", "..", "x\\y", "\x00"):
        name = sweep_folder_name("data.path", value)
        assert "/" not in name and "\\" not in name and "\x00" not in name and name not in (".", "..")
        assert (pathlib.Path("out") / name).parent == pathlib.Path("out")
    assert sweep_folder_name("k", "a/b") != sweep_folder_name("k", "a_b")
    assert sweep_folder_name("k", "a/b") != sweep_folder_name("k", "a?b")


def test_an_error_message_is_printed_as_text_not_markup(tmp_path, capsys):
    folder = tmp_path / "[raw]"
    folder.mkdir()
    assert main(["eval", str(folder / "x.safetensors")]) == 2
    assert f"checkpoint not found: {folder / 'x.safetensors'}" in " ".join(capsys.readouterr().err.split())

import json

import pytest

from distill.files import atomic_file, atomic_write_json


def test_atomic_write_replaces_whole_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "deep" / "out.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(path) as handle:
        handle.write(b"half")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_written_files_get_the_umask_mode_not_0600(tmp_path):
    import os
    import stat

    from distill.files import new_file_mode

    mask = os.umask(0o022)
    os.umask(mask)
    assert new_file_mode() == 0o666 & ~mask
    path = tmp_path / "out.json"
    atomic_write_json(path, {"a": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_stale_temporaries_are_found_at_any_depth_and_nothing_else(tmp_path):
    from distill.files import remove_stale_temporaries

    stale = [tmp_path / ".metrics.jsonl.k2_9zq0a", tmp_path / "kd" / ".last.safetensors.abcdefgh"]
    kept = [tmp_path / ".lock", tmp_path / "kd" / "last.safetensors", tmp_path / ".hidden.cfg"]
    for path in stale + kept:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(path.exists() for path in kept) and not any(path.exists() for path in stale)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (28, "No space left on device"),
        (30, "Read-only file system"),
        (36, "File name too long (a file or folder name is longer than the file system allows)"),
    ],
)
def test_os_faults_while_writing_name_the_file_and_keep_the_old_one(tmp_path, monkeypatch, code, reason):
    import errno
    import os

    from distill.errors import StorageError

    assert code in (errno.ENOSPC, errno.EROFS, errno.ENAMETOOLONG)
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def fault(_descriptor):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("distill.files.os.fsync", fault)
    with pytest.raises(StorageError) as caught:
        atomic_file_write(path)
    assert str(caught.value) == f"cannot write {path}: {reason}"
    assert caught.value.errno == code
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def atomic_file_write(path):
    with atomic_file(path) as handle:
        handle.write(b"new")


def test_a_name_too_long_for_the_file_system_is_a_clear_error(tmp_path):
    from distill.errors import StorageError

    with pytest.raises(StorageError, match="File name too long"):
        atomic_write_json(tmp_path / ("n" * 300) / "result.json", {})

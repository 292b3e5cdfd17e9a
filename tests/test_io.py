"""Atomic writes: complete or absent, never half-written; usual permissions."""

from __future__ import annotations

import json
import os

import pytest

from loralens.errors import RunFolderError
from loralens.io import atomic_write_json, atomic_write_text, atomic_write_with, read_json


def test_atomic_write_json_round_trip(tmp_path):
    import numpy as np

    target = tmp_path / "sub" / "r.json"
    atomic_write_json(target, {"a": np.float32(1.5), "b": np.arange(3), "p": tmp_path})
    assert read_json(target) == {"a": 1.5, "b": [0, 1, 2], "p": str(tmp_path)}
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]  # no temporary left behind


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "r.txt"
    atomic_write_text(target, "old")

    def boom(path):
        path.write_text("half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, boom)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.txt"]


def test_permissions_follow_umask(tmp_path):
    target = tmp_path / "r.txt"
    atomic_write_text(target, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(RunFolderError, match="missing.json"):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RunFolderError, match="bad.json"):
        read_json(bad)
    json.loads("{}")


def test_user_os_errors_are_found_behind_wrappers_and_worded():
    import errno

    from loralens.io import describe_os_error, user_os_error

    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x.json")
        except OSError as inner:
            raise RuntimeError("writer failed") from inner
    except RuntimeError as e:
        found = user_os_error(e)
    assert found is not None and found.errno == errno.EROFS
    assert describe_os_error(found)[0] == "read-only file system: cannot write /mnt/ro/x.json"
    native = user_os_error(RuntimeError("IoError: No space left on device (os error 28)"))
    assert native is not None and native.errno == errno.ENOSPC
    assert describe_os_error(native)[0] == "no space left on the device while writing a file"
    assert user_os_error(ValueError("bug")) is None and user_os_error(FileNotFoundError(2, "x")) is None
    assert describe_os_error(OSError(errno.ENOENT, "x")) is None

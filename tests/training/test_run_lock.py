"""The run-folder lock: one holder, re-entrant in its process, released at the end, stale locks taken over, locks of
other hosts and damaged lock files never taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from loralens.errors import RunFolderError
from loralens.training.run_folder import LOCK_NAME, RunLock


def test_reentrant_and_released(tmp_path):
    with RunLock(tmp_path / "run", command="a") as lock:
        held = json.loads(lock.path.read_text())
        assert held["pid"] == os.getpid() and held["command"] == "a"
        with RunLock(tmp_path / "run"):  # the pipeline holding <out> while a stage takes it again
            pass
        assert lock.path.exists()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_released_when_the_body_raises(tmp_path):
    with pytest.raises(ValueError), RunLock(tmp_path):
        raise ValueError("boom")
    assert not (tmp_path / LOCK_NAME).exists()


def test_other_host_and_damaged_locks_are_not_taken_over(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": proc.pid, "host": "elsewhere", "started": "T"}))
    with pytest.raises(RunFolderError) as e:
        RunLock(tmp_path).acquire()
    assert e.value.message == f"{tmp_path} is in use by process {proc.pid} on elsewhere since T"
    assert e.value.hint == ("wait for it to finish, or use another folder; if it is not running any more, delete "
                            f"{tmp_path / LOCK_NAME}")
    (tmp_path / LOCK_NAME).write_text("{half")
    with pytest.raises(RunFolderError) as e:
        RunLock(tmp_path).acquire()
    assert e.value.message == f"{tmp_path} is in use by another process"
    assert (tmp_path / LOCK_NAME).read_text() == "{half"  # left as found

"""Runs that cannot corrupt each other and say what they left out (issue 13), end to end through the CLI: the
run-folder lock (held, stale), dry runs that refuse what the real run refuses, bad audio left out and listed,
one-line errors for a full disk, a read-only folder and a denied permission with nothing lost."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import soundfile as sf

from loralens.cli import main
from loralens.io import read_json
from loralens.training.run_folder import LOCK_NAME
from tests.cli.test_own_corpus_cli import balanced_rows, write_manifest
from tests.cli.test_run_cli import _flags
from tests.pipeline_helpers import copy_run
from tests.training.conftest import REPO, subprocess_env

_HOLD = ("import sys, time\nfrom loralens.training.run_folder import RunLock\n"
         "RunLock(sys.argv[1], command='holder').acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")


def _hold_lock(folder):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env=subprocess_env(), cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------- 1: the run-folder lock


def test_a_second_command_on_a_held_folder_is_refused_naming_the_holder(tmp_path, pipeline_run, capsys):
    out = copy_run(pipeline_run[0], tmp_path / "out")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    proc = _hold_lock(out)
    capsys.readouterr()  # what building the shared run printed
    try:
        holder = json.loads((out / LOCK_NAME).read_text())
        assert main(["run", "--config", str(out / "run.yaml"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == (f"error: {out} is in use by process {proc.pid} on {socket.gethostname()} since "
                       f"{holder['started']} (holder)\n"
                       "  hint: wait for it to finish (or stop it), or use another folder\n")
        after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != LOCK_NAME}
        assert after == {p: t for p, t in before.items()}  # nothing touched
        # a training folder is locked the same way
        run_dir = out / "train" / "lora_r4"
        proc2 = _hold_lock(run_dir)
        try:
            code = main(["train", "--config", str(run_dir / "config.yaml"), "--run-dir", str(run_dir)])
            assert code == 2
            assert capsys.readouterr().err.startswith(f"error: {run_dir} is in use by process {proc2.pid} on ")
            assert main(["analyze", str(run_dir), "--analyses", "layer_contribution"]) == 2  # analyses wait too
            assert capsys.readouterr().err.startswith(f"error: {run_dir} is in use by process {proc2.pid} on ")
        finally:
            proc2.kill()
            proc2.wait()
    finally:
        proc.kill()
        proc.wait()


def test_a_stale_lock_is_taken_over(tmp_path, pipeline_run, capsys):
    out = copy_run(pipeline_run[0], tmp_path / "out")
    pid = _dead_pid()
    (out / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                             "started": "2026-01-01T00:00:00+0000", "command": "loralens run"}))
    code = main(["run", "--config", str(out / "run.yaml"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert printed.splitlines()[0] == (f"{out}: took over the lock of process {pid} (started "
                                       "2026-01-01T00:00:00+0000), which is no longer running")
    assert not (out / LOCK_NAME).exists()  # released at the end


# ------------------------------------------------------------------------- 10: dry runs are honest


def test_dry_run_refuses_what_the_real_run_refuses(tmp_path, pipeline_run, capsys):
    out = copy_run(pipeline_run[0], tmp_path / "out")
    assert main(["run", "--config", str(out / "run.yaml"), "--out", str(out), "--epochs", "2", "--dry-run"]) == 2
    dry = capsys.readouterr()
    assert main(["run", "--config", str(out / "run.yaml"), "--out", str(out), "--epochs", "2"]) == 2
    real = capsys.readouterr()
    assert dry.err == real.err and "to run" not in dry.out
    assert "variant(s) trained with other settings: lora_r4 (epochs: 1 there, 2 now)" in dry.err
    run_dir = out / "train" / "lora_r4"
    assert main(["train", "--config", str(run_dir / "config.yaml"), "--run-dir", str(run_dir), "--epochs", "3",
                 "--dry-run"]) == 2
    assert capsys.readouterr().err == (
        f"error: {run_dir} holds a run with other settings (epochs: 1 there, 3 now)\n"
        "  hint: use a new run folder (--run-dir), or the settings of config.yaml to resume it\n")


# ------------------------------------------------------------------------- 5: bad audio left out and listed


def _corpus_with_a_silent_clip(tmp_path, pipeline_inputs):
    corpus = tmp_path / "corpus"
    shutil.copytree(pipeline_inputs["corpus"], corpus)
    sf.write(corpus / "silent.wav", np.zeros(8000, dtype=np.float32), 16000)
    with open(corpus / "manifest.csv", "a", newline="") as f:
        csv.writer(f).writerow(["silent.wav", "happy", "spk0", "female"])
    return corpus


@pytest.mark.slow
def test_bad_audio_stops_with_a_hint_naming_the_flag_or_is_listed_in_summary_and_report(
        tmp_path, pipeline_inputs, monkeypatch, capsys):
    i = pipeline_inputs
    monkeypatch.setenv("LORALENS_CACHE", str(tmp_path / "cache"))
    corpus = _corpus_with_a_silent_clip(tmp_path, pipeline_inputs)
    flags = _flags({**i, "corpus": corpus})
    common = ["--fold", "0", "--ranks", "2", "--no-baseline", "--analyses", "layer_contribution",
              "--test-per-class", "2", "--n-boot", "10"]
    assert main(["run", *flags, "--out", str(tmp_path / "a"), *common]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {corpus / 'silent.wav'}: silent: peak |sample| 0.00e+00 is below the silence "
                          "threshold 0.0001 (−80 dBFS) (clip silent)\n")
    assert err.endswith("  hint: the recording is empty or was muted; replace it, or leave bad files out with "
                        "--on-bad-audio skip\n")
    out = tmp_path / "b"
    assert main(["run", *flags, "--out", str(out), *common, "--on-bad-audio", "skip"]) == 0
    printed = capsys.readouterr().out
    assert (f"warning: left out 1 bad audio file(s) (on_bad_audio: skip), listed in {out / 'data' / 'bad_files.json'}: "
            f"{corpus / 'silent.wav'}: silent") in printed
    skipped = read_json(out / "data" / "summary.json")["skipped"]
    assert [s["id"] for s in skipped] == ["silent"] and skipped[0]["reason"].startswith("silent: peak")
    assert [s["id"] for s in read_json(out / "train" / "lora_r2" / "summary.json")["skipped"]] == ["silent"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Files left out" in html and str(corpus / "silent.wav") in html


# ------------------------------------------------------------------------- 8: disk full, read-only, permission


def _folds_args(tmp_path, out):
    m = write_manifest(tmp_path / "c", balanced_rows(6))
    return ["data", "folds", "--corpus", "manifest", "--corpus-root", str(m), "--out", str(out)]


def test_a_full_disk_is_one_line_and_loses_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "folds.json"
    out.write_text("previous")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("loralens.io.os.fsync", full)
    assert main(_folds_args(tmp_path, out)) == 1
    err = capsys.readouterr().err
    free = err.split(" MiB free on ")[0].rsplit("(", 1)[1]
    assert err == (f"error: no space left on the device while writing {out} ({free} MiB free on {tmp_path})\n"
                   "  hint: free space there (old runs, checkpoints/ folders, the feature cache in $LORALENS_CACHE) "
                   "or write elsewhere (--out, --run-dir, --feature-cache); files written before are complete, and "
                   "re-running the same command resumes\n")
    assert out.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["c", "folds.json"]


def test_read_only_and_denied_folders_are_one_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "folds.json"
    for code, text in ((errno.EROFS, "read-only file system: cannot write"),
                       (errno.EACCES, "permission denied: cannot write")):
        def refuse(*args, code=code, **kwargs):
            raise OSError(code, os.strerror(code), str(tmp_path))

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
        assert main(_folds_args(tmp_path, out)) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {text} {tmp_path}\n  hint: write to a ")
        assert err.count("\n") == 2 and not out.exists()

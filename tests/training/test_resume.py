"""Kill a training run with SIGKILL in the middle of an epoch, run the same command again: it skips the finished
fold, resumes the interrupted one from its last checkpoint and ends with exactly the uninterrupted run's results."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from loralens.io import read_json
from tests.training.conftest import (
    REPO,
    TRAIN_MAIN,
    assert_same_predictions,
    cli_args,
    one_thread,
    strip_times,
    subprocess_env,
)


def _kill_when_mid_epoch_in_fold_1(proc: subprocess.Popen, run_dir, timeout: float = 240) -> dict:
    """Wait until fold 1 has a mid-epoch checkpoint, then SIGKILL; return that checkpoint's progress."""
    latest = run_dir / "fold_1" / "checkpoints" / "latest.json"
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"training ended before it could be killed:\n{proc.stdout.read()[-3000:]}")
        if latest.exists():
            try:
                d = run_dir / "fold_1" / "checkpoints" / read_json(latest)["dir"]
                progress = read_json(d / "state.json")["progress"]
            except Exception:  # noqa: BLE001 - the checkpoint is being replaced; look again
                progress = None
            if progress and 0 < progress["batch"]:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return progress
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("no mid-epoch checkpoint of fold 1 appeared")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_matches_uninterrupted(reference_run, tmp_path, capsys):
    ref_settings, ref_dir = reference_run
    run_dir = tmp_path / "run"
    settings = dict(ref_settings, run_dir=str(run_dir))

    proc = subprocess.Popen([*TRAIN_MAIN, *cli_args(settings)], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed_at = _kill_when_mid_epoch_in_fold_1(proc, run_dir)
    assert proc.returncode == -signal.SIGKILL
    assert (run_dir / "fold_0" / "metrics.json").exists()
    assert not (run_dir / "fold_1" / "metrics.json").exists()
    fold0_mtime = (run_dir / "fold_0" / "metrics.json").stat().st_mtime_ns

    from loralens.cli.train import main

    with one_thread():
        assert main(cli_args(settings)) == 0  # the same command again, here in this process
    out = capsys.readouterr().out
    assert "fold 0 (fold0): complete, skipped" in out
    assert "resuming fold_1 from step" in out
    assert (run_dir / "fold_0" / "metrics.json").stat().st_mtime_ns == fold0_mtime
    print(f"killed after step {killed_at['step']} (epoch {killed_at['epoch']}, batch {killed_at['batch']})")

    for k in (0, 1):
        got = read_json(run_dir / f"fold_{k}" / "metrics.json")
        want = read_json(ref_dir / f"fold_{k}" / "metrics.json")
        for key in ("selected_epoch", "epochs_trained", "steps", "validation", "test"):
            assert got[key] == want[key], (k, key)
        assert strip_times(run_dir / f"fold_{k}" / "log.jsonl") == strip_times(ref_dir / f"fold_{k}" / "log.jsonl")
        assert_same_predictions(run_dir / f"fold_{k}" / "predictions.json", ref_dir / f"fold_{k}" / "predictions.json")
        assert not (run_dir / f"fold_{k}" / "checkpoints").exists()  # removed once the fold is complete
    got = read_json(run_dir / "summary.json")
    want = read_json(ref_dir / "summary.json")
    assert got["mean_std"] == want["mean_std"]

"""Two CPU processes (DDP over gloo, started by `accelerate launch`) end with the same results as one process with the
same global batch: each process takes half of every global batch and the loss is scaled so that a step's gradient is
the mean over the whole global batch."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from loralens.io import read_json
from tests.training.conftest import REPO, cli_args, strip_times, subprocess_env

pytestmark = pytest.mark.slow  # end-to-end runs of several seconds each (`-m "not slow"` leaves them out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(reference_run, tmp_path):
    accelerate = shutil.which("accelerate", path=str(REPO / ".venv" / "bin")) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate launcher is not installed")
    settings, ref = reference_run
    run_dir = tmp_path / "run"
    # eval batches of 5: 24 test clips make 5 batches, so one process gets a padded share that gather_for_metrics drops
    args = cli_args(dict(settings, run_dir=str(run_dir), fold=0, eval_batch_size=5))
    # `--multi_gpu` selects accelerate's torchrun launcher; without CUDA, Accelerator(cpu=True) makes it MULTI_CPU
    # over gloo (accelerate's `--cpu` launcher starts more than one process only through mpirun).
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "loralens", "train", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    got = read_json(run_dir / "fold_0" / "metrics.json")
    want = read_json(ref / "fold_0" / "metrics.json")
    assert got["processes"] == 2 and want["processes"] == 1
    assert got["sizes"] == want["sizes"] and got["steps"] == want["steps"]
    # every logged loss and learning rate within float tolerance (all-reduce sums in another order)
    a, b = strip_times(run_dir / "fold_0" / "log.jsonl"), strip_times(ref / "fold_0" / "log.jsonl")
    assert [(r["type"], r["step"]) for r in a] == [(r["type"], r["step"]) for r in b]
    for ra, rb in zip(a, b):
        key = "loss" if ra["type"] == "step" else "train_loss"
        assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6)
        assert ra["lr"] == pytest.approx(rb["lr"])
    # the trained weights agree, and so do the selected epoch and the test metrics
    for name in ("head.safetensors", "adapter/adapter_model.safetensors"):
        wa, wb = load_file(str(run_dir / "fold_0" / name)), load_file(str(ref / "fold_0" / name))
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    assert got["selected_epoch"] == want["selected_epoch"]
    assert got["test"]["uar"] == pytest.approx(want["test"]["uar"])
    assert got["validation"]["uar"] == pytest.approx(want["validation"]["uar"])
    # evaluation gathered every clip exactly once
    assert sum(map(sum, got["test"]["confusion"])) == got["sizes"]["test"]
    assert read_json(run_dir / "fold_0" / "predictions.json")["ids"] == \
        read_json(ref / "fold_0" / "predictions.json")["ids"]

"""Fixtures of the training tests: a tiny random Whisper saved as a Hugging Face folder, a tiny synthetic corpus,
and one reference run (subprocess, 1 process) that the resume and multi-process tests compare against."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from transformers import WhisperForConditionalGeneration

    from tests.conftest import tiny_whisper_config

    out = tmp_path_factory.mktemp("tiny_whisper")
    torch.manual_seed(0)
    WhisperForConditionalGeneration(tiny_whisper_config()).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """4 speakers x 4 classes x 3 clips of 0.5-1.0 s (48 clips), manifest layout."""
    from loralens.data.synthetic import generate_corpus

    out = tmp_path_factory.mktemp("synthetic")
    generate_corpus(out, n_speakers=4, clips_per_class_per_speaker=3, min_duration=0.5, max_duration=1.0, seed=0)
    return out


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("features")


def base_settings(model_dir: Path, corpus_root: Path, cache: Path, run_dir: Path, **over) -> dict:
    """Settings of the small runs: speaker 2-fold (train 1 speaker, validation 1, test 2), LoRA r=4 without dropout
    (so that several processes draw no random numbers and can match one process), no LP-FT stage (tests that need it
    set it), the weighted-layer-sum head on every fold (tests of `auto-all`, the default, set it), selection on
    validation UAR (the recipe keeps the last epoch; selection exercises the best-epoch bookkeeping that resume must
    restore), trimmed windows, batch 4; fp32,
    so that two processes match one within float tolerance (bf16 sums taken in another order differ by ~1e-4)."""
    d = {
        "corpus": "manifest", "corpus_root": str(corpus_root), "folds": "speaker-kfold", "folds_k": 2,
        "model": str(model_dir), "method": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "head": {"projector_dim": 16, "weighted_layer_sum": True}, "window": "trim", "batch_size": 4, "epochs": 4,
        "lr_head": 5e-3, "lr_encoder": 2e-3, "lp_ft_epochs": 0, "lp_fit": "gradient", "select_on": "uar",
        "patience": None, "feature_cache": str(cache),
        "run_dir": str(run_dir),
        "checkpoint_every": 1, "log_every": 1, "seed": 3, "precision": "fp32",
    }
    for k, v in over.items():
        d[k] = v
    return d


def cli_args(settings: dict) -> list[str]:
    """`loralens train` flags of `settings` (the keys base_settings uses)."""
    args = []
    for k, v in settings.items():
        if v is None:
            continue
        if isinstance(v, dict):
            for kk, vv in v.items():
                if kk == "weighted_layer_sum":
                    args.append("--weighted-layer-sum" if vv else "--last-layer")
                    continue
                name = {"r": "lora-r", "alpha": "lora-alpha", "dropout": "lora-dropout",
                        "projector_dim": "projector-dim"}[kk]
                args += [f"--{name}", str(vv)]
            continue
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO), TQDM_DISABLE="1",
               TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    return env


TRAIN_MAIN = [sys.executable, "-m", "loralens", "train"]


def run_train_subprocess(settings: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*TRAIN_MAIN, *cli_args(settings)], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)


def load_bench(name: str):
    """The benchmark script `bench/<name>.py` as a module (benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = mod
    spec.loader.exec_module(mod)
    return mod


def assert_same_predictions(got: Path, want: Path, atol: float = 1e-5) -> None:
    """Two `predictions.json` files: the same clips, labels and predicted classes, and class probabilities equal
    within `atol` (runs in two processes agree within float tolerance, see `base_settings`)."""
    a, b = json.loads(Path(got).read_text()), json.loads(Path(want).read_text())
    pa, pb = a.pop("probabilities"), b.pop("probabilities")
    assert a == b
    assert torch.allclose(torch.tensor(pa, dtype=torch.float64), torch.tensor(pb, dtype=torch.float64), atol=atol)


def strip_times(log: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in log.read_text().splitlines()]


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread, as the subprocesses do (OMP_NUM_THREADS=1), so results match bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_in_process(settings: dict) -> dict:
    from loralens.training.config import make_config
    from loralens.training.crossval import train

    with one_thread():
        return train(make_config(settings))


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, tiny_model_dir, synthetic_root, feature_cache) -> tuple[dict, Path]:
    """Both folds trained uninterrupted, in this process on one thread; returns (settings, run folder)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    settings = base_settings(tiny_model_dir, synthetic_root, feature_cache, run_dir)
    train_in_process(settings)
    return settings, run_dir

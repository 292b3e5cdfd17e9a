"""The tiny `loralens run` shared by tests/test_pipeline.py and the CLI / analysis tests: a random 2-layer Whisper
saved as a Hugging Face folder, a small synthetic corpus, the run settings, and helpers to copy and inspect a run.
The session fixtures `pipeline_inputs` and `pipeline_run` (tests/conftest.py) build them once per session."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from loralens.io import read_json
from loralens.pipeline import RunConfig, run_pipeline

N_SPEAKERS, CLIPS_PER_CLASS = 4, 2  # 4 speakers x 4 classes x 2 clips = 32 clips; 2 folds of 2 test speakers


def make_tiny_model(folder: Path) -> Path:
    """A random 2-layer Whisper (d_model 64, tests/conftest.py) and an 80-bin feature extractor, as a HF folder."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from tests.conftest import tiny_whisper_config

    torch.manual_seed(0)
    WhisperForConditionalGeneration(tiny_whisper_config()).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def tiny_run_settings(model: Path, corpus: Path, features: Path, out: Path) -> dict[str, Any]:
    """A run YAML mapping: LoRA r=4 (`ranks: [4]`, so the variant is lora_r4) and the frozen baseline, speaker
    2-fold, 1 epoch, analyses on fold 0 with 2 clips per class and 10 bootstrap resamples."""
    return {
        "out": str(out),
        "train": {"corpus": "manifest", "corpus_root": str(corpus), "model": str(model), "window": "trim",
                  "folds": "speaker-kfold", "folds_k": 2, "epochs": 1, "batch_size": 4, "patience": None,
                  "lr_head": 5e-3, "lr_encoder": 2e-3, "feature_cache": str(features), "seed": 0,
                  "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "head": {"projector_dim": 16}},
        "ranks": [4],
        "analysis": {"folds": [0], "batch_size": 8, "test_per_class": 2, "train_per_class": 2, "n_boot": 10},
        "synthetic": True,
    }


def make_pipeline_inputs(root: Path) -> dict[str, Path]:
    """The tiny model folder, corpus and (empty) feature cache folder under `root`."""
    from loralens.data.synthetic import generate_corpus

    generate_corpus(root / "corpus", n_speakers=N_SPEAKERS, clips_per_class_per_speaker=CLIPS_PER_CLASS,
                    min_duration=0.5, max_duration=1.0, seed=0)
    return {"model": make_tiny_model(root / "model"), "corpus": root / "corpus", "features": root / "features"}


def run_tiny_pipeline(inputs: dict[str, Path], out: Path) -> tuple[Path, list[str], float]:
    """The whole pipeline on `inputs` into `out`: (output folder, echoed lines, wall seconds)."""
    lines: list[str] = []
    t0 = time.perf_counter()
    run_pipeline(
        RunConfig.model_validate(tiny_run_settings(inputs["model"], inputs["corpus"], inputs["features"], out)),
        echo=lines.append,
    )
    return out, lines, time.perf_counter() - t0


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run output folder (paths inside it still name `src`: pass the new `out`)."""
    shutil.copytree(src, dst)
    return dst


def settings_for(out: Path, inputs: dict[str, Path], **changes: Any) -> dict[str, Any]:
    """The tiny run settings on `inputs` (the `pipeline_inputs` fixture) into `out`, with top-level `changes`."""
    s = tiny_run_settings(inputs["model"], inputs["corpus"], inputs["features"], out)
    s.update(changes)
    return s


def mtimes(root: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.glob(pattern))}


def stages(out: Path) -> dict[str, dict]:
    return {s["name"]: s for s in read_json(out / "stages.json")["stages"]}


def failing_analysis(monkeypatch, name: str) -> None:
    """Make registered analysis `name` raise when it runs."""
    import dataclasses

    from loralens.analysis import suite

    def crash(ctx):
        raise RuntimeError(f"{name} broke (simulated)")

    suite.available()
    monkeypatch.setitem(suite.ANALYSES, name, dataclasses.replace(suite.ANALYSES[name], run=crash))

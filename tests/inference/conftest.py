"""Fixtures of the inference tests: small trained runs (tiny random Whisper, synthetic corpus, speaker 2-fold, one
epoch), one with `trim` windows and a padding mask, one with 30-s windows and none (the paper's setting)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import base_settings, feature_cache, synthetic_root, tiny_model_dir, train_in_process  # noqa: F401 (fixtures)


def _train(tmp_path_factory, name: str, model: Path, corpus: Path, cache: Path, **over) -> Path:
    run_dir = tmp_path_factory.mktemp(name) / "run"
    train_in_process(base_settings(model, corpus, cache, run_dir, epochs=1, checkpoint_every=1000, **over))
    return run_dir


@pytest.fixture(scope="session")
def trim_run(tmp_path_factory, tiny_model_dir, synthetic_root, feature_cache) -> Path:
    """LoRA r=4 with the paper's last-layer head (transformers' own, so that the plain export is exact but for
    the pooling), trim windows, padding mask on (the default for trim), both folds complete."""
    return _train(tmp_path_factory, "trim_run", tiny_model_dir, synthetic_root, feature_cache,
                  head={"projector_dim": 16, "weighted_layer_sum": False})


@pytest.fixture(scope="session")
def full_run(tmp_path_factory, tiny_model_dir, synthetic_root, feature_cache) -> Path:
    """LoRA r=4 with a learned weighted layer sum, 30-s windows, no padding mask; fold 0 only."""
    return _train(tmp_path_factory, "full_run", tiny_model_dir, synthetic_root, feature_cache, window="full",
                  fold=0, head={"projector_dim": 16, "weighted_layer_sum": True, "speaker_norm": False})

"""Shared fixtures: tiny random Whisper models, the shared data folder, temporary run folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LORALENS_SHARED_DATA", REPO.parent / "shared" / "data"))
RAVDESS = SHARED_DATA / "ravdess"
RAVDESS_ORIGINAL = SHARED_DATA / "ravdess-original-sample"
REFERENCE_HASHES = SHARED_DATA / "reference_hashes"

# Tests on these session fixtures are `slow`: the first one to run pays for a whole tiny `loralens run` (~40 s).
SLOW_FIXTURES = frozenset({"pipeline_run"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def require(path: Path) -> Path:
    """Skip the calling test, with the reason, when shared data at `path` is absent."""
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set LORALENS_SHARED_DATA to the shared/data folder)")
    return path


@pytest.fixture
def ravdess_root() -> Path:
    return require(RAVDESS)


@pytest.fixture
def ravdess_original_root() -> Path:
    return require(RAVDESS_ORIGINAL)


def tiny_whisper_config(**overrides):
    """A 2-layer Whisper config small enough for CPU tests (d_model 64, 4 heads, 80 mel bins)."""
    from transformers import WhisperConfig

    kw = dict(
        vocab_size=128,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_layers=1,
        decoder_attention_heads=4,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    kw.update(overrides)
    return WhisperConfig(**kw)


@pytest.fixture
def tiny_whisper():
    """A tiny random `WhisperForConditionalGeneration` in eval mode, seeded."""
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(tiny_whisper_config())
    return model.eval()


@pytest.fixture(scope="session")
def pipeline_inputs(tmp_path_factory) -> dict[str, Path]:
    """The tiny model folder, synthetic corpus and feature cache folder of tests/pipeline_helpers.py (once per
    session). Do not modify them: copy what a test changes."""
    from tests.pipeline_helpers import make_pipeline_inputs

    return make_pipeline_inputs(tmp_path_factory.mktemp("pipeline_inputs"))


@pytest.fixture(scope="session")
def pipeline_run(pipeline_inputs, tmp_path_factory) -> tuple[Path, list[str], float]:
    """The whole tiny pipeline, run once per session: (output folder, echoed lines, wall seconds). Do not modify
    it: copy it with `tests.pipeline_helpers.copy_run`."""
    from tests.pipeline_helpers import run_tiny_pipeline

    return run_tiny_pipeline(pipeline_inputs, tmp_path_factory.mktemp("pipeline_run") / "out")

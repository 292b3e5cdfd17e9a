"""Encoder outputs of the converted models agree with CTranslate2's own Whisper encoder on the same features."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from loralens.models.loading import load_feature_extractor, load_whisper
from loralens.models.registry import embedded_files
from tests.conftest import RAVDESS

pytestmark = pytest.mark.slow  # end-to-end runs of several seconds each (`-m "not slow"` leaves them out)

ctranslate2 = pytest.importorskip("ctranslate2")

TOLERANCE = 2e-3


def _audio() -> list[np.ndarray]:
    # Real speech when the shared data is there, else a deterministic voiced-like signal: parity needs no content.
    # One clip: Whisper pads every input to 30 s, so one already covers all 1500 encoder frames.
    clip = RAVDESS / "Actor_03" / "03-01-05-02-02-01-03.flac"
    if clip.is_file():
        import soundfile as sf

        speech = sf.read(clip, dtype="float32")[0]
    else:
        t = np.arange(48000) / 16000
        speech = (0.3 * np.sin(2 * np.pi * 140 * t * (1 + 0.1 * np.sin(3 * t)))).astype(np.float32)
    return [speech]


def _ct2_folder(name: str, tmp: Path) -> Path:
    files = embedded_files(name)
    if len(files.parts) == 1:
        return files.folder
    # CTranslate2 itself reads only a single model.bin: join the parts, with the vocabulary and config next to it.
    folder = tmp / name
    folder.mkdir()
    with open(folder / "model.bin", "wb") as out:
        for part in files.parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    for side in ("config.json", "vocabulary.txt", "vocabulary.json"):
        if (files.folder / side).is_file():
            shutil.copy(files.folder / side, folder / side)
    return folder


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_encoder_matches_ctranslate2(name, tmp_path):
    extractor = load_feature_extractor(name)
    features = extractor(_audio(), sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)
    reference = ctranslate2.models.Whisper(str(_ct2_folder(name, tmp_path)), device="cpu", compute_type="float32",
                                             intra_threads=torch.get_num_threads())
    want = np.asarray(reference.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), to_cpu=True))
    model = load_whisper(name)
    with torch.inference_mode():
        got = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    assert got.shape == want.shape == (1, 1500, model.config.d_model)
    diff = float(np.abs(got - want).max())
    print(f"\n{name}: max |HF encoder - CTranslate2 encoder| = {diff:.2e} (output max {np.abs(want).max():.1f})")
    assert diff <= TOLERANCE


def test_greedy_tokens_match_ctranslate2():
    """The decoder too: greedy token ids of tiny.en agree with CTranslate2's greedy search on the same features."""
    if not (RAVDESS / "Actor_03").is_dir():
        pytest.skip(f"needs real speech (a sentence to decode) from {RAVDESS}; the synthetic fallback decodes to "
                    "nothing")
    extractor = load_feature_extractor("tiny.en")
    features = extractor(_audio(), sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)
    reference = ctranslate2.models.Whisper(str(embedded_files("tiny.en").folder), device="cpu",
                                           compute_type="float32", intra_threads=torch.get_num_threads())
    model = load_whisper("tiny.en")
    g = model.generation_config
    prompt = [g.decoder_start_token_id, g.no_timestamps_token_id]
    result = reference.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), [prompt],
                                beam_size=1, max_length=40, suppress_tokens=list(g.suppress_tokens))
    want = result[0].sequences_ids[0]
    with torch.inference_mode():
        ids = model.generate(torch.from_numpy(features), max_new_tokens=38)[0].tolist()
    got = [t for t in ids if t not in (g.eos_token_id, g.pad_token_id) and t not in prompt]
    assert len(want) >= 5 and got == want

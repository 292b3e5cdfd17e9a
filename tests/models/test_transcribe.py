"""Converted tiny.en and base transcribe real RAVDESS speech with greedy decoding (WER <= 0.2 over 8 actors)."""

from __future__ import annotations

import csv
import functools
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from loralens.models.convert import convert
from tests.conftest import RAVDESS, require

SENTENCES = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


def normalise(text: str) -> list[str]:
    """Lower case, punctuation removed, split on white space."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between word lists (substitutions + deletions + insertions)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER: total word errors over total reference words, after `normalise`."""
    errors = sum(word_errors(normalise(r), normalise(h)) for r, h in zip(refs, hyps))
    return errors / sum(len(normalise(r)) for r in refs)


def test_wer_known_answers():
    assert word_errors("a b c".split(), "a b c".split()) == 0
    assert word_errors("a b c".split(), "a x c".split()) == 1
    assert word_errors("a b c".split(), "a c".split()) == 1
    assert word_errors("a b c".split(), "a b c d e".split()) == 2
    assert word_errors([], "a".split()) == 1
    assert wer(["Kids are talking by the door."], [" kids are talking, by the door!"]) == 0.0
    assert wer(["Kids are talking by the door", "Dogs are sitting by the door"],
               ["Kids are walking by the door", "Dogs sitting by a door"]) == pytest.approx(3 / 12)


def ravdess_clips(root: Path, n: int = 8) -> list[tuple[Path, str]]:
    """`n` clips of `n` different actors, alternating statements and cycling through the emotions (labels.csv)."""
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    actors = sorted({r["speaker"] for r in rows})[:n]
    emotions = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    clips = []
    for k, actor in enumerate(actors):
        statement = "01" if k % 2 == 0 else "02"
        pick = [r for r in rows if r["speaker"] == actor and r["statement"] == statement
                and r["emotion"] == emotions[k % len(emotions)] and r["repetition"] == "01"]
        clips.append((root / pick[0]["path"], SENTENCES[statement]))
    return clips


@pytest.fixture(scope="session")
def clips() -> list[tuple[Path, str]]:
    return ravdess_clips(require(RAVDESS))


def _converted(name: str, tmp_path_factory) -> Path:
    start = time.perf_counter()
    out = convert(name, tmp_path_factory.mktemp("hf") / name)
    print(f"\nconversion time {name}: {time.perf_counter() - start:.2f} s")
    return out


@pytest.fixture(scope="session")
def tiny_en_hf(tmp_path_factory) -> Path:
    return _converted("tiny.en", tmp_path_factory)


@pytest.fixture(scope="session")
def base_hf(tmp_path_factory) -> Path:
    return _converted("base", tmp_path_factory)


@functools.lru_cache(maxsize=2)
def _pipeline(folder: Path):
    """Model, feature extractor and tokenizer of a converted HF folder (loaded once per folder)."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    return (WhisperForConditionalGeneration.from_pretrained(folder).eval(),
            WhisperFeatureExtractor.from_pretrained(folder), WhisperTokenizer.from_pretrained(folder))


def transcribe(folder: Path, audio: list[np.ndarray], **generate_kw) -> list[str]:
    """Greedy transcription with the model, feature extractor and tokenizer of an HF folder."""
    model, extractor, tokenizer = _pipeline(folder)
    features = extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        ids = model.generate(features, num_beams=1, do_sample=False, max_new_tokens=32, **generate_kw)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def _read(clips) -> list[np.ndarray]:
    import soundfile as sf

    audio = []
    for path, _ in clips:
        data, sr = sf.read(path, dtype="float32")
        assert sr == 16000 and data.ndim == 1, path
        audio.append(data)
    return audio


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_greedy_transcription_of_ravdess(name, clips, request):
    folder = request.getfixturevalue("tiny_en_hf" if name == "tiny.en" else "base_hf")
    assert len({p.parent.name for p, _ in clips}) == len(clips) >= 8
    kw = {} if name == "tiny.en" else {"language": "en", "task": "transcribe"}
    hyps = transcribe(folder, _read(clips), **kw)
    refs = [text for _, text in clips]
    score = wer(refs, hyps)
    print(f"\n{name}: WER {score:.3f} over {len(clips)} clips")
    for (path, _), hyp in zip(clips, hyps):
        print(f"  {path.name}: {hyp.strip()}")
    assert score <= 0.2


@pytest.mark.slow
def test_base_detects_english_unprompted(base_hf, clips):
    # No language given: the generation config detects it, then transcribes (not translates).
    hyps = transcribe(base_hf, _read(clips[1:2]))
    assert wer([clips[1][1]], hyps) == 0.0

"""Corpus summary: counts per class / speaker / fold and duration statistics, on known corpora."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from loralens.data.clips import Clip, Corpus
from loralens.data.folds import make_folds
from loralens.data.summary import duration_stats, format_summary, summarize
from loralens.errors import AudioError

LABELS = ("neutral", "happy", "sad")


def small_corpus(tmp_path: Path, with_files: bool = True) -> Corpus:
    """6 speakers (odd male) x 3 clips of lengths 0.5 s, 1.0 s, 1.5 s written as 16 kHz WAV files."""
    clips = []
    for a in range(1, 7):
        for j in range(3):
            path = tmp_path / f"s{a}" / f"c{j}.wav"
            if with_files:
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, np.zeros(8000 * (j + 1), dtype=np.float32), 16000)
            clips.append(Clip(f"s{a}/c{j}", path, LABELS[j] if a != 6 else "sad", f"s{a}",
                              gender="male" if a % 2 else "female"))
    return Corpus("toy", tmp_path, LABELS, clips)


def test_duration_stats_known_values():
    d = duration_stats([1.0, 2.0, 4.0, 9.0])
    assert d == {"n": 4, "min_s": 1.0, "median_s": 3.0, "mean_s": 4.0, "max_s": 9.0, "total_s": 16.0,
                 "total_h": 16.0 / 3600}
    assert duration_stats([])["n"] == 0


def test_summarize_counts_and_header_durations(tmp_path):
    corpus = small_corpus(tmp_path)
    s = summarize(corpus)
    assert s["n_clips"] == 18 and s["n_speakers"] == 6
    assert s["classes"] == {"neutral": 5, "happy": 5, "sad": 8}
    assert s["genders"] == {"female": 3, "male": 3}
    assert s["speakers"]["s6"] == {"gender": "female", "n_clips": 3, "classes": {"neutral": 0, "happy": 0, "sad": 3}}
    d = s["durations"]
    assert d["n"] == 18 and d["min_s"] == 0.5 and d["max_s"] == 1.5 and d["median_s"] == 1.0
    assert d["total_s"] == pytest.approx(6 * 3.0) and d["mean_s"] == pytest.approx(1.0)


def test_known_durations_are_used_without_files(tmp_path):
    corpus = small_corpus(tmp_path, with_files=False)
    corpus.clips = [c.with_duration(2.0) for c in corpus.clips]
    assert summarize(corpus)["durations"]["total_s"] == 36.0
    corpus.clips[0] = Clip("x", tmp_path / "missing.wav", "sad", "s1")
    with pytest.raises(AudioError, match="missing.wav"):
        summarize(corpus)
    assert "durations" not in summarize(corpus, durations=False)


def test_summarize_folds_and_table(tmp_path):
    corpus = small_corpus(tmp_path)
    folds = make_folds(corpus, "speaker-kfold", k=3, n_val_speakers=1)
    s = summarize(corpus, folds)
    assert len(s["folds"]) == 3
    for f in s["folds"]:
        assert f["n_clips"] == {"train": 9, "validation": 3, "test": 6}
        assert sum(f["classes"]["test"].values()) == 6
        assert len(f["speakers"]["test"]) == 2
    text = format_summary(s)
    assert "corpus toy" in text and "18 clips, 6 speakers (3 female, 3 male)" in text
    assert re.search(r"^sad +8 +44\.4%$", text, re.M)
    assert re.search(r"^s6 +female +3 +0 +0 +3$", text, re.M)
    assert "median 1.00" in text and "total 18.0" in text
    assert "fold0" in text and "fold2" in text

"""RAVDESS parser: agrees with the independent labels.csv on all 1440 files; miniature layouts for the edge cases."""

from __future__ import annotations

import csv
import warnings

import pytest

from loralens.data.corpora import CorpusWarning, load_corpus
from loralens.data.corpora.ravdess import parse_name
from loralens.errors import CorpusError


def test_parser_agrees_with_labels_csv_on_every_file(ravdess_root):
    with open(ravdess_root / "labels.csv", newline="") as f:
        oracle = {row["path"]: row for row in csv.DictReader(f)}
    assert len(oracle) == 1440
    corpus = load_corpus("ravdess", ravdess_root)
    assert len(corpus.clips) == 1440
    assert corpus.labels == ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    seen = set()
    for clip in corpus.clips:
        rel = clip.path.relative_to(ravdess_root).as_posix()
        row = oracle[rel]
        seen.add(rel)
        assert clip.id == rel.rsplit(".", 1)[0]
        assert (clip.label, clip.speaker, clip.gender, clip.session) == (
            row["emotion"], row["speaker"], row["gender"], None
        ), rel
        name = parse_name(clip.path.stem)
        assert (name.intensity, f"{name.statement:02d}", f"{name.repetition:02d}") == (
            row["intensity"], row["statement"], row["repetition"]
        ), rel
    assert seen == set(oracle)
    assert corpus.class_counts() == {"neutral": 96, **{e: 192 for e in corpus.labels[1:]}}
    assert corpus.speakers() == [f"Actor_{i:02d}" for i in range(1, 25)]


def test_4class_and_durations(ravdess_root):
    corpus = load_corpus("ravdess", ravdess_root, "4class", with_durations=True)
    assert corpus.labels == ("neutral", "happy", "sad", "angry")
    assert corpus.class_counts() == {"neutral": 96, "happy": 192, "sad": 192, "angry": 192}
    assert all(2.5 < c.duration < 6.0 for c in corpus.clips)


def test_release_wavs_parse_too(ravdess_original_root):
    corpus = load_corpus("ravdess", ravdess_original_root)
    assert len(corpus.clips) == 13
    assert all(c.path.suffix == ".wav" for c in corpus.clips)


def test_parse_name_fields():
    n = parse_name("03-01-05-02-01-02-12")
    assert (n.emotion, n.intensity, n.statement, n.repetition, n.actor) == ("angry", "strong", 1, 2, 12)
    assert (n.speaker, n.gender, n.is_audio_speech) == ("Actor_12", "female", True)
    assert parse_name("03-02-03-01-01-01-07").is_audio_speech is False  # song
    for bad in ("03-01-09-01-01-01-01", "03-01-01-03-01-01-01", "03-01-01-01-01-01-25", "3-1-1",
                "04-01-01-01-01-01-01"):
        with pytest.raises(ValueError):
            parse_name(bad)


@pytest.fixture
def mini(tmp_path, build_layout, reference_names):
    """Actors 01 and 02 with their official file names (120 files), as WAV and FLAC names mixed."""
    names = [n for n in reference_names("ravdess_speech.sha256.tsv") if n.startswith(("Actor_01/", "Actor_02/"))]
    assert len(names) == 120
    names = [n if i % 2 else n.replace(".wav", ".flac") for i, n in enumerate(names)]
    build_layout(tmp_path, names)
    (tmp_path / "Actor_01" / "._03-01-01-01-01-01-01.wav").write_bytes(b"\0" * 10)  # macOS fork: ignored
    (tmp_path / "Actor_01" / "notes.txt").write_text("not audio: ignored")
    return tmp_path


def test_miniature(mini):
    corpus = load_corpus("ravdess", mini)
    assert len(corpus.clips) == 120
    assert {c.speaker: c.gender for c in corpus.clips} == {"Actor_01": "male", "Actor_02": "female"}
    assert corpus.clips[0].id == "Actor_01/03-01-01-01-01-01-01"


def test_song_and_video_files_are_left_out_with_a_warning(mini, build_layout):
    build_layout(mini, ["Actor_01/03-02-03-01-01-01-01.wav", "Actor_02/01-01-03-01-01-01-02.wav"])
    with pytest.warns(CorpusWarning, match=r"left out 2 file\(s\) that are not audio-only speech"):
        corpus = load_corpus("ravdess", mini)
    assert len(corpus.clips) == 120


def test_no_warning_for_a_clean_folder(mini):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_corpus("ravdess", mini)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("Actor_01/hello.wav", r"hello.wav: 'hello' is not a RAVDESS name"),
        ("Actor_01/03-01-09-01-01-01-01.wav", "emotion code 09"),
        ("Actor_01/03-01-01-01-01-01-02.wav", "names actor 02 but lies in Actor_01"),
        ("Actor_01/03-01-01-01-01-01-01.flac", "are the same clip"),
    ],
)
def test_bad_names_are_errors(mini, build_layout, name, match):
    (mini / "Actor_01" / "03-01-01-01-01-01-01.flac").unlink(missing_ok=True)
    (mini / "Actor_01" / "03-01-01-01-01-01-01.wav").unlink(missing_ok=True)
    build_layout(mini, ["Actor_01/03-01-01-01-01-01-01.wav", name])
    with pytest.raises(CorpusError, match=match):
        load_corpus("ravdess", mini)


def test_wrong_root(tmp_path):
    with pytest.raises(CorpusError, match="does not exist") as e:
        load_corpus("ravdess", tmp_path / "nowhere")
    assert "Actor_01" in e.value.hint
    with pytest.raises(CorpusError, match="no Actor_XX folders"):
        load_corpus("ravdess", tmp_path)


def test_empty_actor_folders(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    with pytest.raises(CorpusError, match="no clips with labels"):
        load_corpus("ravdess", tmp_path)

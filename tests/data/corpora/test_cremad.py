"""CREMA-D parser on a miniature of the release layout: all 7442 official file names, tiny audio."""

from __future__ import annotations

import pytest

from loralens.data.corpora import load_corpus
from loralens.errors import CorpusError

DEMOGRAPHICS = "ActorID,Age,Sex,Race,Ethnicity\n" + "".join(
    f"{1000 + i},{20 + i % 50},{'Female' if i % 3 == 0 else 'Male'},Caucasian,Not Hispanic\n" for i in range(1, 92)
)


@pytest.fixture
def mini(tmp_path, cremad_audio_wav):
    (tmp_path / "AudioWAV").symlink_to(cremad_audio_wav, target_is_directory=True)
    return tmp_path


def test_full_name_list(mini):
    corpus = load_corpus("crema-d", mini)
    assert len(corpus.clips) == 7442
    assert corpus.labels == ("neutral", "happy", "sad", "angry", "fearful", "disgust")
    assert corpus.class_counts() == {
        "neutral": 1087, "happy": 1271, "sad": 1271, "angry": 1271, "fearful": 1271, "disgust": 1271,
    }  # fmt: skip
    assert corpus.speakers() == [str(a) for a in range(1001, 1092)]
    first = corpus.clips[0]
    assert (first.id, first.label, first.speaker, first.gender, first.session) == (
        "AudioWAV/1001_DFA_ANG_XX", "angry", "1001", None, None
    )


def test_genders_from_demographics(mini):
    (mini / "VideoDemographics.csv").write_text(DEMOGRAPHICS)
    corpus = load_corpus("cremad", mini, "4class")
    assert corpus.labels == ("neutral", "happy", "sad", "angry")
    assert len(corpus.clips) == 1087 + 3 * 1271
    by_speaker = {c.speaker: c.gender for c in corpus.clips}
    assert by_speaker["1003"] == "female" and by_speaker["1001"] == "male"
    # The AudioWAV folder itself is accepted as root; the demographics next to it are still found.
    inner = load_corpus("CREMA-D", mini / "AudioWAV")
    assert inner.clips[0].id == "1001_DFA_ANG_XX" and inner.clips[0].gender == "male"


def test_bad_demographics(mini):
    (mini / "VideoDemographics.csv").write_text("Actor,Gender\n1001,Male\n")
    with pytest.raises(CorpusError, match=r"VideoDemographics.csv line 1: expected columns ActorID and Sex"):
        load_corpus("crema-d", mini)
    (mini / "VideoDemographics.csv").write_text("ActorID,Sex\n1001,Male\n1002,X\n")
    with pytest.raises(CorpusError, match=r"line 3: Sex is 'X'"):
        load_corpus("crema-d", mini)


@pytest.mark.parametrize("bad", ["1001_DFA_XYZ_XX.wav", "1001_ABC_ANG_XX.wav", "readme.wav"])
def test_bad_names(tmp_path, build_layout, bad):
    build_layout(tmp_path / "AudioWAV", ["1001_DFA_ANG_XX.wav", bad])
    with pytest.raises(CorpusError, match="not a CREMA-D file name"):
        load_corpus("crema-d", tmp_path)


def test_wrong_root(tmp_path, build_layout):
    build_layout(tmp_path, ["somewhere/else.wav"])
    with pytest.raises(CorpusError, match="no AudioWAV folder") as e:
        load_corpus("crema-d", tmp_path)
    assert "1001_DFA_ANG_XX.wav" in e.value.hint
    (tmp_path / "empty" / "AudioWAV").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no clips"):
        load_corpus("crema-d", tmp_path / "empty")

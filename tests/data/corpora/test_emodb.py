"""EmoDB parser on a miniature of the release layout: all 535 official file names, tiny audio."""

from __future__ import annotations

from collections import Counter

import pytest

from loralens.data.corpora import load_corpus
from loralens.errors import CorpusError


@pytest.fixture
def mini(tmp_path, build_layout, reference_names):
    build_layout(tmp_path / "wav", reference_names("emodb_wav.sha256.tsv"))
    return tmp_path


def test_full_name_list(mini):
    corpus = load_corpus("emodb", mini)
    assert len(corpus.clips) == 535
    assert corpus.labels == ("neutral", "happy", "sad", "angry", "fearful", "disgust", "boredom")
    # Letters in the release: A 69, E 46, F 71, L 81, N 79, T 62, W 127.
    assert corpus.class_counts() == {
        "neutral": 79, "happy": 71, "sad": 62, "angry": 127, "fearful": 69, "disgust": 46, "boredom": 81,
    }  # fmt: skip
    assert corpus.speakers() == ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]
    genders = {c.speaker: c.gender for c in corpus.clips}
    assert [s for s, g in sorted(genders.items()) if g == "female"] == ["08", "09", "13", "14", "16"]
    first = corpus.clips[0]
    assert (first.id, first.label, first.speaker) == ("wav/03a01Fa", "happy", "03")
    assert Counter(c.gender for c in corpus.clips) == {"female": 302, "male": 233}


def test_4class_and_wav_folder_as_root(mini):
    corpus = load_corpus("emodb", mini / "wav", "4class")
    assert corpus.class_counts() == {"neutral": 79, "happy": 71, "sad": 62, "angry": 127}
    assert corpus.clips[0].id == "03a01Fa"


@pytest.mark.parametrize("bad", ["03a01Xa.wav", "07a01Fa.wav", "03a01F.wav"])
def test_bad_names(tmp_path, build_layout, bad):
    build_layout(tmp_path / "wav", ["03a01Fa.wav", bad])
    with pytest.raises(CorpusError, match="not an EmoDB file name"):
        load_corpus("emodb", tmp_path)


def test_wrong_root(tmp_path):
    with pytest.raises(CorpusError, match="no wav folder"):
        load_corpus("emodb", tmp_path)

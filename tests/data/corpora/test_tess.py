"""TESS parser on a miniature of the release layout: all 2800 official paths (with their quirks), tiny audio."""

from __future__ import annotations

import pytest

from loralens.data.corpora import load_corpus
from loralens.errors import CorpusError


@pytest.fixture
def mini(tmp_path, build_layout, reference_names):
    names = reference_names("tess.sha256.tsv")
    # The quirks the parser must handle are in the official list.
    assert "OAF_Pleasant_surprise/OAF_back_ps.wav" in names
    assert any(n.startswith("YAF_pleasant_surprised/") for n in names)
    assert "OAF_neutral/OA_bite_neutral.wav" in names
    build_layout(tmp_path, names)
    return tmp_path


def test_full_name_list(mini):
    corpus = load_corpus("tess", mini)
    assert len(corpus.clips) == 2800
    assert corpus.labels == ("neutral", "happy", "sad", "angry", "fearful", "disgust", "pleasant_surprise")
    assert corpus.class_counts() == {label: 400 for label in corpus.labels}
    assert corpus.speakers() == ["OAF", "YAF"]
    assert {c.gender for c in corpus.clips} == {"female"}
    by_id = corpus.by_id()
    assert by_id["OAF_neutral/OA_bite_neutral"].speaker == "OAF"
    assert by_id["YAF_pleasant_surprised/YAF_back_ps"].label == "pleasant_surprise"
    assert by_id["OAF_Fear/OAF_back_fear"].label == "fearful"


def test_4class(mini):
    corpus = load_corpus("tess", mini, "4class")
    assert corpus.class_counts() == {"neutral": 400, "happy": 400, "sad": 400, "angry": 400}


def test_file_emotion_must_match_its_folder(mini, build_layout):
    build_layout(mini, ["OAF_angry/OAF_back_sad.wav"])
    with pytest.raises(CorpusError,
                       match=r"OAF_back_sad.wav: file name does not end in the folder's emotion \(angry\)"):
        load_corpus("tess", mini)


def test_unknown_folder_emotion(tmp_path, build_layout):
    build_layout(tmp_path, ["OAF_bored/OAF_back_bored.wav"])
    with pytest.raises(CorpusError, match="names an unknown emotion 'bored'"):
        load_corpus("tess", tmp_path)


def test_wrong_root_points_to_the_nested_folder(tmp_path, build_layout):
    build_layout(tmp_path / "TESS Toronto emotional speech set data", ["OAF_angry/OAF_back_angry.wav"])
    with pytest.raises(CorpusError, match="no OAF_\\*/YAF_\\* folders") as e:
        load_corpus("tess", tmp_path)
    assert "TESS Toronto emotional speech set data" in e.value.hint

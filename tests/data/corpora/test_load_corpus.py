"""The corpus table and load_corpus: names, label sets, custom selections, errors."""

from __future__ import annotations

import pytest

from loralens.data.corpora import CORPORA, get_spec, load_corpus
from loralens.errors import CorpusError


def test_table():
    assert list(CORPORA) == ["ravdess", "crema-d", "emodb", "tess", "iemocap", "manifest", "hf"]
    for spec in CORPORA.values():
        assert spec.description and spec.layout
        if spec.name not in ("manifest", "hf"):  # open vocabularies
            assert spec.default_label_set in spec.label_sets
            for ls in spec.label_sets.values():
                assert set(ls.labels) == set(ls.mapping.values())
                assert set(ls.mapping) <= set(spec.raw_labels)
            assert spec.label_sets["4class"].labels == ("neutral", "happy", "sad", "angry")


def test_names_ignore_case_and_separators():
    assert get_spec("CREMA_D") is CORPORA["crema-d"] and get_spec("Cremad") is CORPORA["crema-d"]
    with pytest.raises(CorpusError, match="unknown corpus 'timit'") as e:
        get_spec("timit")
    assert "ravdess" in e.value.hint


@pytest.fixture
def emodb(tmp_path, build_layout):
    build_layout(tmp_path / "wav", ["03a01Fa.wav", "03a01Nc.wav", "08a01Wa.wav", "08b02Lb.wav"])
    return tmp_path


def test_custom_label_set(emodb):
    corpus = load_corpus("emodb", emodb, "boredom,neutral")
    assert corpus.labels == ("boredom", "neutral")
    assert [(c.id, c.label) for c in corpus.clips] == [("wav/03a01Nc", "neutral"), ("wav/08b02Lb", "boredom")]
    with pytest.raises(CorpusError, match="names labels the corpus does not have: calm") as e:
        load_corpus("emodb", emodb, "neutral,calm")
    assert "boredom" in e.value.hint
    with pytest.raises(CorpusError, match="at least two distinct labels"):
        load_corpus("emodb", emodb, "neutral,neutral")


def test_unknown_label_set(emodb):
    with pytest.raises(CorpusError, match="emodb: unknown label set '8class'") as e:
        load_corpus("emodb", emodb, "8class")
    assert "7class, 4class" in e.value.hint


def test_empty_after_label_selection(emodb):
    with pytest.raises(CorpusError,
                       match=r"no clips with labels sad, fearful .*\(4 clip\(s\) before label selection\)"):
        load_corpus("emodb", emodb, "sad,fearful")


def test_durations_and_sorted_ids(emodb):
    corpus = load_corpus("emodb", emodb, with_durations=True)
    assert [c.id for c in corpus.clips] == sorted(c.id for c in corpus.clips)
    assert [c.duration for c in corpus.clips] == [0.25] * 4
    assert corpus.root == emodb and corpus.name == "emodb"

"""Generic manifest (CSV / JSONL): paths relative to the manifest, optional columns, errors naming file and line."""

from __future__ import annotations

import json

import pytest

from loralens.data.corpora import CorpusWarning, load_corpus
from loralens.errors import CorpusError


@pytest.fixture
def data(tmp_path, build_layout):
    build_layout(tmp_path, ["audio/a.wav", "audio/b.flac", "audio/sub/c.wav"])
    build_layout(tmp_path.parent / f"{tmp_path.name}_outside", ["d.wav"])
    return tmp_path


def _csv(root, text):
    p = root / "manifest.csv"
    p.write_text(text)
    return p


def test_csv(data):
    outside = data.parent / f"{data.name}_outside" / "d.wav"
    p = _csv(
        data,
        "path,label,speaker,session,gender\n"
        "audio/a.wav,happy,s1,day1,F\n"
        "audio/b.flac,sad,s1,,female\n"
        "\n"
        f"audio/sub/c.wav,happy,s2,day2,\n{outside},angry,s3,,m\n",
    )
    corpus = load_corpus("manifest", p)
    assert corpus.root == data
    assert corpus.labels == ("happy", "sad", "angry")  # default "all": the shared vocabulary order
    by_id = corpus.by_id()
    assert set(by_id) == {"audio/a", "audio/b", "audio/sub/c", f"../{data.name}_outside/d"}
    a = by_id["audio/a"]
    assert (a.path, a.label, a.speaker, a.session, a.gender) == (data / "audio/a.wav", "happy", "s1", "day1", "female")
    assert by_id["audio/b"].session is None and by_id["audio/sub/c"].gender is None
    assert by_id[f"../{data.name}_outside/d"].gender == "male"
    # A folder holding manifest.csv works too; a custom label set selects and orders classes.
    with pytest.warns(CorpusWarning,
                      match=r"left out 1 clip\(s\) whose labels are not in the label set sad,happy: angry \(1\)"):
        sel = load_corpus("manifest", data, "sad,happy", with_durations=True)
    assert sel.labels == ("sad", "happy") and len(sel.clips) == 3
    assert all(c.duration == pytest.approx(0.25) for c in sel.clips)


def test_jsonl_with_ids(data):
    p = data / "clips.jsonl"
    rows = [
        {"path": "audio/a.wav", "label": "neutral", "speaker": 7, "id": "first"},
        {"path": "audio/b.flac", "label": "angry", "speaker": "8", "gender": None},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    corpus = load_corpus("manifest", p)
    assert [c.id for c in corpus.clips] == ["audio/b", "first"]
    assert corpus.by_id()["first"].speaker == "7"


def test_missing_column_names_file_and_line(data):
    p = _csv(data, "file,label,speaker\naudio/a.wav,happy,s1\n")
    with pytest.raises(CorpusError, match=r"manifest.csv line 1: missing column\(s\) path"):
        load_corpus("manifest", p)
    p = data / "m.jsonl"
    p.write_text('{"path": "audio/a.wav", "label": "x", "speaker": "s"}\n{"path": "audio/b.flac", "label": "y"}\n')
    with pytest.raises(CorpusError, match=r"m.jsonl line 2: missing key\(s\) speaker"):
        load_corpus("manifest", p)


def test_missing_file_names_file_and_line(data):
    p = _csv(data, "path,label,speaker\naudio/a.wav,happy,s1\naudio/nope.wav,sad,s2\n")
    with pytest.raises(CorpusError, match=r"1 audio file\(s\) not found: .*manifest.csv line 3: .*audio/nope.wav"):
        load_corpus("manifest", p)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("path,label,speaker\naudio/a.wav,,s1\n", r"line 2: empty 'label'"),
        ("path,label,speaker,gender\naudio/a.wav,x,s1,robot\n", r"line 2: gender 'robot'"),
        ("path,label,speaker,id\naudio/a.wav,x,s1,same\naudio/b.flac,y,s1,same\n",
         r"lines 2 and 3 have the same clip id .same."),
        ("path,label,speaker\n", "lists no clips"),
    ],
)
def test_bad_rows(data, text, match):
    with pytest.raises(CorpusError, match=match):
        load_corpus("manifest", _csv(data, text))


def test_bad_json_and_format(data):
    p = data / "m.jsonl"
    p.write_text('{"path": "audio/a.wav", "label": "x", "speaker": "s"}\n{oops\n')
    with pytest.raises(CorpusError, match=r"m.jsonl line 2: not valid JSON"):
        load_corpus("manifest", p)
    q = data / "m.txt"
    q.write_text("x")
    with pytest.raises(CorpusError, match="unknown manifest format '.txt'"):
        load_corpus("manifest", q)
    with pytest.raises(CorpusError, match="no manifest.csv / manifest.jsonl"):
        load_corpus("manifest", data / "audio")
    with pytest.raises(CorpusError, match="not found"):
        load_corpus("manifest", data / "none.csv")

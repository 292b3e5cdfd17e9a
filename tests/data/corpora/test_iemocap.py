"""IEMOCAP parser on a miniature of the release layout: evaluation files in the official format, tiny audio."""

from __future__ import annotations

import pytest

from loralens.data.corpora import load_corpus
from loralens.errors import CorpusError

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _block(start: float, end: float, utt: str, code: str) -> str:
    # A summary line followed by per-annotator lines, as in the release.
    return (
        f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[2.5000, 3.0000, 2.5000]\n"
        "C-E2:\tNeutral;\t()\n"
        "C-E3:\tFrustration; Anger;\t()\n"
        "A-E3:\tval 3; act 2; dom  2;\t()\n"
        "A-F1:\tval 3; act 2; dom  1;\t(mildly aggravated but staying polite, attitude)\n\n"
    )


DIALOGS = {
    # session, dialog -> (utterance, code)
    ("Session1", "Ses01F_impro01"): [
        ("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "fru"), ("Ses01F_impro01_F001", "exc"),
        ("Ses01F_impro01_M001", "ang"), ("Ses01F_impro01_F002", "xxx"),
    ],
    ("Session1", "Ses01M_script01_1"): [
        ("Ses01M_script01_1_F000", "hap"), ("Ses01M_script01_1_M000", "sad"), ("Ses01M_script01_1_M001", "sur"),
    ],
    ("Session2", "Ses02F_impro05"): [("Ses02F_impro05_F000", "sad"), ("Ses02F_impro05_M000", "neu")],
}  # fmt: skip


@pytest.fixture
def mini(tmp_path, build_layout):
    for (session, dialog), utts in DIALOGS.items():
        eval_dir = tmp_path / session / "dialog" / "EmoEvaluation"
        eval_dir.mkdir(parents=True, exist_ok=True)
        text = HEADER + "".join(_block(2.0 * i, 2.0 * i + 1.5, u, c) for i, (u, c) in enumerate(utts))
        (eval_dir / f"{dialog}.txt").write_text(text)
        build_layout(tmp_path / session / "sentences" / "wav" / dialog, [f"{u}.wav" for u, _ in utts])
        # Sub-folders with other formats, and a macOS fork, are not read.
        (eval_dir / "Categorical").mkdir(exist_ok=True)
        (eval_dir / "Categorical" / f"{dialog}_e2_cat.txt").write_text(f"{utts[0][0]} :Neutral; ()\n")
        (eval_dir / f"._{dialog}.txt").write_bytes(b"\0\1garbage")
    return tmp_path


def test_4class_merges_excited_into_happy(mini):
    corpus = load_corpus("iemocap", mini)
    assert corpus.labels == ("neutral", "happy", "sad", "angry")
    got = {c.id.rsplit("/", 1)[1]: c.label for c in corpus.clips}
    assert got == {
        "Ses01F_impro01_F000": "neutral", "Ses01F_impro01_F001": "happy", "Ses01F_impro01_M001": "angry",
        "Ses01M_script01_1_F000": "happy", "Ses01M_script01_1_M000": "sad",
        "Ses02F_impro05_F000": "sad", "Ses02F_impro05_M000": "neutral",
    }  # fmt: skip


def test_speaker_session_gender_and_id(mini):
    by_id = load_corpus("iemocap", mini).by_id()
    c = by_id["Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001"]
    assert (c.speaker, c.session, c.gender) == ("Ses01M", "Session1", "male")
    c = by_id["Session1/sentences/wav/Ses01M_script01_1/Ses01M_script01_1_F000"]
    assert (c.speaker, c.session, c.gender) == ("Ses01F", "Session1", "female")
    assert c.path == mini / "Session1/sentences/wav/Ses01M_script01_1/Ses01M_script01_1_F000.wav"
    assert sorted({x.speaker for x in by_id.values()}) == ["Ses01F", "Ses01M", "Ses02F", "Ses02M"]


def test_other_label_sets(mini):
    noexc = load_corpus("iemocap", mini, "4class_noexc")
    assert noexc.class_counts() == {"neutral": 2, "happy": 1, "sad": 2, "angry": 1}
    full = load_corpus("iemocap", mini, "all")
    assert full.class_counts()["frustrated"] == 1 and full.class_counts()["excited"] == 1
    assert full.class_counts()["surprised"] == 1
    assert len(full.clips) == 9  # xxx (no majority) is never a class


def test_missing_audio(mini):
    (mini / "Session2/sentences/wav/Ses02F_impro05/Ses02F_impro05_M000.wav").unlink()
    with pytest.raises(CorpusError, match=r"1 labelled utterance\(s\) have no audio file.*Ses02F_impro05_M000.wav"):
        load_corpus("iemocap", mini)


def test_unknown_code_names_file_and_line(mini):
    f = mini / "Session2/dialog/EmoEvaluation/Ses02F_impro05.txt"
    f.write_text(f.read_text().replace("\tneu\t", "\tcalm\t"))
    with pytest.raises(CorpusError, match=r"Ses02F_impro05.txt line 9: unknown emotion code 'calm'"):
        load_corpus("iemocap", mini)


def test_malformed_summary_line(mini):
    f = mini / "Session2/dialog/EmoEvaluation/Ses02F_impro05.txt"
    f.write_text(f.read_text() + "[12.0 - oops]\tSes02F_impro05_F009\n")
    with pytest.raises(CorpusError, match=r"line 15: cannot read"):
        load_corpus("iemocap", mini)


def test_utterance_in_the_wrong_session(mini):
    f = mini / "Session2/dialog/EmoEvaluation/Ses02F_impro05.txt"
    f.write_text(f.read_text().replace("Ses02F_impro05_F000", "Ses03F_impro05_F000"))
    with pytest.raises(CorpusError, match="does not belong to Session2"):
        load_corpus("iemocap", mini)


def test_wrong_root_and_incomplete_session(tmp_path):
    with pytest.raises(CorpusError, match="no Session1..Session5 folders"):
        load_corpus("iemocap", tmp_path)
    (tmp_path / "Session1" / "sentences").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no evaluation files"):
        load_corpus("iemocap", tmp_path)

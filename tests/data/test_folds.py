"""Folds: schemes, validation split, leak check, JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loralens.data.clips import Clip, Corpus
from loralens.data.folds import (
    Fold,
    check_folds,
    load_folds,
    make_folds,
    pick_validation_speakers,
    resolve_folds,
    resolve_scheme,
    save_folds,
)
from loralens.errors import FoldError

LABELS = ("neutral", "happy", "sad", "angry")


def ravdess_like(n_actors: int = 24, per_actor: int = 4, name: str = "ravdess") -> Corpus:
    """RAVDESS-shaped corpus: Actor_01..Actor_NN, odd actors male, `per_actor` clips each."""
    clips = []
    for a in range(1, n_actors + 1):
        spk = f"Actor_{a:02d}"
        for j in range(per_actor):
            clips.append(
                Clip(
                    id=f"{spk}/clip-{j:02d}-{a:02d}",
                    path=Path(f"/nowhere/{spk}/clip-{j:02d}-{a:02d}.wav"),
                    label=LABELS[j % len(LABELS)],
                    speaker=spk,
                    gender="male" if a % 2 else "female",
                    duration=1.0 + j,
                )
            )
    return Corpus(name, Path("/nowhere"), LABELS, clips)


def sessions_like() -> Corpus:
    """IEMOCAP-shaped: 5 sessions with one female and one male speaker each."""
    clips = []
    for s in range(1, 6):
        for g in ("F", "M"):
            spk = f"Ses0{s}{g}"
            for j in range(3):
                clips.append(
                    Clip(f"Session{s}/{spk}_{j}", Path(f"/x/{spk}_{j}.wav"), LABELS[j], spk, session=f"Session{s}",
                         gender="female" if g == "F" else "male")
                )
    return Corpus("iemocap", Path("/x"), LABELS, clips)


def speakers_of(corpus: Corpus, ids: list[str]) -> set[str]:
    by_id = corpus.by_id()
    return {by_id[i].speaker for i in ids}


def test_ravdess6_is_default_and_groups_consecutive_actors():
    corpus = ravdess_like()
    assert resolve_scheme(corpus) == "ravdess6"
    folds = make_folds(corpus)
    assert [f.name for f in folds] == [f"fold{i}" for i in range(6)]
    for i, f in enumerate(folds):
        assert speakers_of(corpus, f.test) == {f"Actor_{a:02d}" for a in range(4 * i + 1, 4 * i + 5)}
        sp = f.speakers(corpus)
        assert len(sp["test"]) == 4 and len(sp["train"]) + len(sp["validation"]) == 20
        # 2 validation speakers out of 20 training speakers, one per gender
        val_genders = sorted(corpus.by_id()[i].gender for i in f.validation[::4])
        assert len(sp["validation"]) == 2 and val_genders == ["female", "male"]
        assert not set(sp["validation"]) & set(sp["test"])
        assert len(f.train) + len(f.validation) + len(f.test) == len(corpus.clips)


def test_folds_are_deterministic_and_seed_changes_validation_only():
    corpus = ravdess_like()
    a, b = make_folds(corpus, seed=3), make_folds(corpus, seed=3)
    assert a == b
    c = make_folds(corpus, seed=4)
    assert [f.test for f in a] == [f.test for f in c]
    assert [f.validation for f in a] != [f.validation for f in c]


def test_test_splits_cover_corpus_without_overlap_for_every_scheme():
    corpus = ravdess_like(n_actors=10)
    for scheme, kw, n in [("leave-one-speaker-out", {}, 10), ("speaker-kfold", {"k": 3}, 3), ("loso", {}, 10)]:
        folds = make_folds(corpus, scheme, **kw)
        assert len(folds) == n
        tests = [i for f in folds for i in f.test]
        assert sorted(tests) == sorted(c.id for c in corpus.clips)  # each clip in exactly one test split
        for f in folds:
            tr, va, te = (speakers_of(corpus, x) for x in (f.train, f.validation, f.test))
            assert not (tr & va or tr & te or va & te)


def test_speaker_kfold_balances_speakers_and_genders():
    corpus = ravdess_like(n_actors=12)
    folds = make_folds(corpus, "speaker-kfold", k=3, seed=1)
    by_id = corpus.by_id()
    for f in folds:
        genders = sorted(by_id[i].gender for i in f.test)
        assert genders.count("female") == genders.count("male") == 2 * 4  # 2 speakers of each, 4 clips each
    assert make_folds(corpus, "speaker-kfold", k=3, seed=1) == folds
    assert [f.test for f in make_folds(corpus, "speaker-kfold", k=3, seed=2)] != [f.test for f in folds]


def test_leave_one_session_out_is_auto_for_sessions():
    corpus = sessions_like()
    assert resolve_scheme(corpus) == "leave-one-session-out"
    folds = make_folds(corpus)
    assert len(folds) == 5
    assert speakers_of(corpus, folds[2].test) == {"Ses03F", "Ses03M"}
    # 8 training speakers, 2 genders -> 2 validation speakers, one of each
    assert sorted(folds[2].speakers(corpus)["validation"])[0].endswith("F")
    assert len(folds[2].speakers(corpus)["validation"]) == 2


def test_validation_size_options():
    corpus = ravdess_like()
    folds = make_folds(corpus, n_val_speakers=5)
    assert all(len(f.speakers(corpus)["validation"]) == 5 for f in folds)
    folds = make_folds(corpus, val_fraction=0.25)
    assert all(len(f.speakers(corpus)["validation"]) == 5 for f in folds)
    with pytest.raises(FoldError, match="cannot take 20 validation speakers"):
        make_folds(corpus, n_val_speakers=20)


def test_pick_validation_is_stratified_by_gender():
    import random

    speakers = [f"s{i}" for i in range(12)]
    genders = {s: ("female" if i < 9 else "male") for i, s in enumerate(speakers)}  # 9 F, 3 M
    picked = pick_validation_speakers(speakers, genders, 4, random.Random(0))
    assert sum(genders[s] == "female" for s in picked) == 3 and sum(genders[s] == "male" for s in picked) == 1


def test_bad_scheme_and_bad_ravdess_speakers():
    with pytest.raises(FoldError, match="unknown fold scheme 'nope'"):
        make_folds(ravdess_like(), "nope")
    with pytest.raises(FoldError, match="outside 1-24"):
        make_folds(ravdess_like(n_actors=25), "ravdess6")
    with pytest.raises(FoldError, match="no session"):
        make_folds(ravdess_like(), "leave-one-session-out")


def test_check_folds_names_leaking_speaker_and_splits():
    corpus = ravdess_like()
    folds = make_folds(corpus)
    f = folds[0]
    leaked = f.test[0]  # a clip of Actor_01 (test) moved into train
    bad = Fold(f.name, f.train + [leaked], f.validation, f.test[1:])
    with pytest.raises(FoldError, match=r"speaker 'Actor_01' is in train \(1 clips\) and test \(3 clips\)"):
        check_folds([bad] + folds[1:], corpus, require_cover=False)


def test_check_folds_rejects_empty_overlapping_and_uncovering():
    corpus = ravdess_like()
    folds = make_folds(corpus)
    with pytest.raises(FoldError, match="validation split is empty"):
        check_folds([Fold("fold0", folds[0].train + folds[0].validation, [], folds[0].test)] + folds[1:], corpus)
    with pytest.raises(FoldError, match="in no test split"):
        check_folds(folds[:-1], corpus)
    with pytest.raises(FoldError, match="test split of both 'fold0' and 'dup'"):
        check_folds(folds + [Fold("dup", folds[0].train, folds[0].validation, folds[0].test)], corpus)
    with pytest.raises(FoldError, match="not clips of corpus"):
        check_folds([Fold("fold0", folds[0].train, folds[0].validation, folds[0].test + ["Actor_99/x"])], corpus)


def test_json_round_trip(tmp_path):
    corpus = ravdess_like()
    folds = make_folds(corpus, seed=7)
    path = save_folds(tmp_path / "folds.json", folds, corpus, scheme="ravdess6", seed=7)
    doc = json.loads(path.read_text())
    assert doc["scheme"] == "ravdess6" and doc["seed"] == 7 and doc["corpus"] == "ravdess"
    assert doc["folds"][0]["speakers"]["test"] == ["Actor_01", "Actor_02", "Actor_03", "Actor_04"]
    assert load_folds(path, corpus) == folds
    again, scheme = resolve_folds(str(path), corpus)
    assert again == folds and scheme == "ravdess6"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


def test_handcrafted_leaking_folds_file_is_rejected(tmp_path):
    corpus = ravdess_like()
    folds = make_folds(corpus)
    doc = json.loads(save_folds(tmp_path / "f.json", folds, corpus, scheme="ravdess6", seed=0).read_text())
    # Actor_05 (a test speaker of fold1) also put into fold0's validation split
    actor5 = [i for i in doc["folds"][1]["test"] if i.startswith("Actor_05/")]
    for split in ("train", "validation"):
        doc["folds"][0][split] = [i for i in doc["folds"][0][split] if not i.startswith("Actor_05/")]
    doc["folds"][0]["validation"] += actor5[:2]
    doc["folds"][0]["test"] += actor5[2:]
    leaky = tmp_path / "leaky.json"
    leaky.write_text(json.dumps(doc))
    with pytest.raises(FoldError) as e:
        load_folds(leaky, corpus)
    msg = str(e.value)
    assert "leaky.json" in msg and "speaker 'Actor_05'" in msg and "validation (2 clips) and test (2 clips)" in msg


def test_load_folds_rejects_unknown_ids_other_corpus_and_edited_speakers(tmp_path):
    corpus = ravdess_like()
    folds = make_folds(corpus)
    path = save_folds(tmp_path / "f.json", folds, corpus, scheme="ravdess6", seed=0)
    smaller = ravdess_like(per_actor=3)
    with pytest.raises(FoldError, match="not clips of corpus 'ravdess'"):
        load_folds(path, smaller)
    with pytest.raises(FoldError, match="made for corpus 'ravdess', not 'crema-d'"):
        load_folds(path, ravdess_like(name="crema-d"))
    doc = json.loads(path.read_text())
    doc["folds"][0]["speakers"]["test"] = ["Actor_01"]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    with pytest.raises(FoldError, match="test speakers recorded"):
        load_folds(edited, corpus)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(FoldError, match="not a valid JSON"):
        load_folds(tmp_path / "junk.json", corpus)
    with pytest.raises(FoldError, match="not found"):
        load_folds(tmp_path / "missing.json", corpus)


def test_real_ravdess_folds(ravdess_root):
    from loralens.data.corpora import load_corpus

    corpus = load_corpus("ravdess", ravdess_root)
    folds = make_folds(corpus)  # auto -> ravdess6
    assert [len(f.test) for f in folds] == [240] * 6
    assert sorted(i for f in folds for i in f.test) == sorted(c.id for c in corpus.clips)
    by_id = corpus.by_id()
    for i, f in enumerate(folds):
        sp = f.speakers(corpus)
        assert sp["test"] == [f"Actor_{a:02d}" for a in range(4 * i + 1, 4 * i + 5)]
        assert len(sp["validation"]) == 2 and len(sp["train"]) == 18
        assert sorted(by_id[c].gender for c in f.validation[::60]) == ["female", "male"]
    assert make_folds(corpus) == folds

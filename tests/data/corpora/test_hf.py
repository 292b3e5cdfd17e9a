"""The `hf` corpus: a dataset built with `datasets` from the synthetic corpus, saved with save_to_disk and as
parquet, read with the same clips, labels and audio as the manifest; decoded arrays and paths; column options;
`data summary` and a training run on it giving the manifest run's results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from loralens.cli import main
from loralens.data.corpora import load_corpus
from loralens.errors import CorpusError, MissingExtraError
from loralens.io import read_json
from tests.training.conftest import base_settings, cli_args, feature_cache, one_thread, synthetic_root, tiny_model_dir  # noqa: F401 (fixtures)

datasets = pytest.importorskip("datasets", reason="the hf corpus needs the `datasets` extra (pip install -e '.[hf]')")

COLUMNS = {"label_column": "emotion", "speaker_column": "actor"}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Audio written out of datasets goes to this test's folder, not the user's cache."""
    monkeypatch.setenv("LORALENS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def hf_folders(tmp_path_factory, synthetic_root) -> dict[str, Path]:
    """The synthetic corpus as a dataset (audio bytes + basename, ClassLabel emotion, actor, id, gender), saved with
    save_to_disk, as a DatasetDict of two splits, and as two parquet files."""
    manifest = load_corpus("manifest", synthetic_root)
    clips = manifest.clips
    labels = sorted(manifest.labels)
    ds = datasets.Dataset.from_dict({
        "audio": [{"bytes": c.path.read_bytes(), "path": c.path.name} for c in clips],
        "emotion": [labels.index(c.label) for c in clips],
        "actor": [c.speaker for c in clips],
        "id": [c.id for c in clips],
        "gender": [c.gender or "" for c in clips],
    })
    # cast, not built with these features: encoding through datasets.Audio would need torchcodec
    ds = ds.cast_column("audio", datasets.Audio()).cast_column("emotion", datasets.ClassLabel(names=labels))
    root = tmp_path_factory.mktemp("hf")
    ds.save_to_disk(str(root / "disk"))
    datasets.DatasetDict({"train": ds.select(range(30)), "test": ds.select(range(30, len(ds)))}).save_to_disk(
        str(root / "dict"))
    (root / "parquet").mkdir()
    ds.select(range(20)).to_parquet(str(root / "parquet" / "part-0.parquet"))
    ds.select(range(20, len(ds))).to_parquet(str(root / "parquet" / "part-1.parquet"))
    return {"disk": root / "disk", "dict": root / "dict", "parquet": root / "parquet"}


@pytest.mark.parametrize("kind", ["disk", "dict", "parquet"])
def test_same_clips_labels_and_audio_as_the_manifest(kind, hf_folders, synthetic_root):
    ref = load_corpus("manifest", synthetic_root)
    got = load_corpus("hf", hf_folders[kind], options=COLUMNS)
    assert got.name == "hf" and got.labels == ref.labels
    assert [(c.id, c.label, c.speaker, c.gender) for c in got.clips] == [
        (c.id, c.label, c.speaker, c.gender) for c in ref.clips]
    assert all(a.path.read_bytes() == b.path.read_bytes() for a, b in zip(got.clips, ref.clips))
    sub = load_corpus("hf", hf_folders[kind], "sad,angry", options=COLUMNS)
    assert sub.labels == ("sad", "angry") and {c.label for c in sub.clips} == {"sad", "angry"}


def test_decoded_arrays_and_paths(tmp_path, synthetic_root):
    files = sorted(synthetic_root.rglob("*.wav"))[:4]
    audio = [sf.read(f, dtype="float32")[0] for f in files]
    arrays = datasets.Dataset.from_dict({
        "wave": [{"array": a.tolist(), "sampling_rate": 16000} for a in audio],
        "label": ["a", "b", "a", "b"], "speaker": ["s1", "s1", "s2", "s2"]})
    arrays.save_to_disk(str(tmp_path / "arrays"))
    c = load_corpus("hf", tmp_path / "arrays", options={"audio_column": "wave"})
    assert [x.id for x in c.clips] == [f"row_{i:06d}" for i in range(4)]
    for clip, a in zip(c.clips, audio):
        back, sr = sf.read(clip.path, dtype="float32")
        assert sr == 16000 and np.array_equal(back, a)  # float WAV: the samples exactly
    # a list of samples with a sampling_rate column, and paths relative to the dataset folder
    (tmp_path / "paths" / "audio").mkdir(parents=True)
    for f in files:
        (tmp_path / "paths" / "audio" / f.name).write_bytes(f.read_bytes())
    datasets.Dataset.from_dict({"file": [f"audio/{f.name}" for f in files], "label": ["a", "b", "a", "b"],
                                "speaker": ["s1", "s1", "s2", "s2"], "session": ["d1", "d2", "d1", "d2"]}
                               ).to_parquet(str(tmp_path / "paths" / "data.parquet"))
    c = load_corpus("hf", tmp_path / "paths", options={"audio_column": "file"})
    assert [x.id for x in c.clips] == [f"audio/{f.stem}" for f in files]
    assert c.clips[0].path == tmp_path / "paths" / "audio" / files[0].name and c.clips[1].session == "d2"
    datasets.Dataset.from_dict({"audio": [a.tolist() for a in audio[:2]], "sampling_rate": [16000, 16000],
                                "label": ["a", "b"], "speaker": ["s1", "s2"]}).save_to_disk(str(tmp_path / "lists"))
    c = load_corpus("hf", tmp_path / "lists")
    assert np.array_equal(sf.read(c.clips[1].path, dtype="float32")[0], audio[1])


def test_errors_name_the_column_option_and_the_extra(hf_folders, tmp_path, synthetic_root, monkeypatch):
    with pytest.raises(CorpusError, match="no column 'label'.*\n.*--label-column"):
        load_corpus("hf", hf_folders["disk"])
    with pytest.raises(CorpusError, match="no column 'sess'"):
        load_corpus("hf", hf_folders["disk"], options={**COLUMNS, "session_column": "sess"})
    with pytest.raises(CorpusError, match="apply to the hf corpus only"):
        load_corpus("manifest", synthetic_root, options={"label_column": "x"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="save_to_disk"):
        load_corpus("hf", tmp_path / "empty")
    datasets.Dataset.from_dict({"audio": ["missing.wav"], "label": ["a"], "speaker": ["s"]}).save_to_disk(
        str(tmp_path / "missing"))
    with pytest.raises(CorpusError, match="1 audio file\\(s\\) not found.*missing.wav"):
        load_corpus("hf", tmp_path / "missing")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtraError, match="datasets") as e:
        load_corpus("hf", hf_folders["disk"], options=COLUMNS)
    assert 'loralens[hf]' in e.value.hint


def test_data_summary_cli_matches_the_manifest(hf_folders, synthetic_root, capsys):
    assert main(["data", "summary", "--corpus", "manifest", "--root", str(synthetic_root), "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert main(["data", "summary", "--corpus", "hf", "--root", str(hf_folders["parquet"]), "--label-column",
                 "emotion", "--speaker-column", "actor", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    for key in ("labels", "n_clips", "n_speakers", "classes", "genders", "speakers"):
        assert got[key] == ref[key], key
    assert got["durations"]["total_s"] == pytest.approx(ref["durations"]["total_s"])


@pytest.mark.slow
def test_training_on_the_dataset_equals_the_manifest_run(hf_folders, tiny_model_dir, synthetic_root, feature_cache,
                                                         tmp_path):
    runs = {}
    for kind, root, extra in (("manifest", synthetic_root, []),
                              ("hf", hf_folders["disk"], ["--label-column", "emotion", "--speaker-column", "actor"])):
        s = base_settings(tiny_model_dir, root, feature_cache, tmp_path / kind, corpus=kind, epochs=1, fold=0,
                          checkpoint_every=1000)
        with one_thread():
            assert main(["train", *cli_args(s), *extra]) == 0
        runs[kind] = tmp_path / kind
    a, b = (read_json(runs[k] / "folds.json")["folds"] for k in ("manifest", "hf"))
    assert [{s: f[s] for s in ("train", "validation", "test")} for f in a] == [
        {s: f[s] for s in ("train", "validation", "test")} for f in b]
    pa, pb = (read_json(runs[k] / "fold_0" / "predictions.json") for k in ("manifest", "hf"))
    assert pa == pb
    ma, mb = (read_json(runs[k] / "fold_0" / "metrics.json")["test"] for k in ("manifest", "hf"))
    assert ma == mb
    snap = (runs["hf"] / "config.yaml").read_text()
    assert "label_column: emotion" in snap and "speaker_column: actor" in snap


def test_corpus_options_are_hashed_only_when_set():
    """Runs trained before `corpus_options` existed keep their configuration hash (their folds stay complete)."""
    import hashlib

    from loralens.training.config import _HASHED_WHEN_SET, _NOT_HASHED, _SECTIONS_ADDED, config_hash, make_config

    # every field added later at its "before" value (the head of then: the last layer)
    plain = make_config({"corpus": "manifest", "lp_ft_epochs": 0, "lp_fit": "gradient", "select_on": "uar",
                         "head": {"weighted_layer_sum": False}})
    before = plain.model_dump(mode="json", exclude=_NOT_HASHED | {"corpus_options"} | set(_SECTIONS_ADDED))
    for *sections, key in _HASHED_WHEN_SET:  # the other fields added after runs existed, at their defaults
        if sections and sections[0] in _SECTIONS_ADDED:
            continue
        owner = before
        for s in sections:
            owner = owner[s]
        owner.pop(key, None)
    assert config_hash(plain) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    with_columns = make_config({"corpus": "hf"}, {"corpus_options.label_column": "emotion"})
    assert with_columns.corpus_options == {"label_column": "emotion"}
    assert config_hash(with_columns) != config_hash(make_config({"corpus": "hf"}))

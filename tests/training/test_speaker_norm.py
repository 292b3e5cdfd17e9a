"""Per-speaker normalisation of the head's input (`head.speaker_norm`) through training, the rebuilt fold models
and the analysis suite, on the tiny random Whisper and the tiny synthetic corpus."""

from __future__ import annotations

import json

import pytest
import torch

from loralens.errors import ConfigError
from loralens.io import read_json
from loralens.training.config import make_config
from tests.training.conftest import base_settings, train_in_process

SPK_HEAD = {"projector_dim": 16, "speaker_norm": True}


def test_config_speaker_norm_needs_standardize_and_old_snapshots_read_it_off():
    from loralens.training.config import config_from_snapshot, config_hash

    with pytest.raises(ConfigError, match="speaker_norm.*needs head.standardize"):
        make_config({"head": {"speaker_norm": True, "standardize": False}})
    assert make_config({}).head.speaker_norm  # the default since loralens 0.6
    # a run folder's snapshot written before the field existed: off, and hashed as it was (off is not hashed)
    old = make_config({"head": {"speaker_norm": False}}).model_dump(mode="json")
    del old["head"]["speaker_norm"]
    snap = config_from_snapshot(old)
    assert snap.head.speaker_norm is False
    assert config_hash(snap) == config_hash(make_config({"head": {"speaker_norm": False}}))
    assert config_hash(make_config({})) != config_hash(snap)


@pytest.fixture(scope="module")
def spk_runs(tiny_model_dir, synthetic_root, feature_cache, tmp_path_factory):
    """A LoRA run (LP-FT, last epoch) and a frozen run, both with `head.speaker_norm`, fold 0."""
    tmp = tmp_path_factory.mktemp("spk")
    lora = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp / "lora", fold=0, epochs=2,
                         lp_ft_epochs=2, select_on="last", head=SPK_HEAD)
    frozen = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp / "frozen", fold=0, epochs=3,
                           method="frozen", head=SPK_HEAD)
    frozen.pop("lora")
    frozen.pop("lr_encoder")
    train_in_process(lora)
    train_in_process(frozen)
    return tmp


@pytest.mark.slow
def test_runs_store_each_speakers_statistics_and_the_analyses_run(spk_runs, synthetic_root, tmp_path):
    from loralens.analysis.api import analyze_run
    from loralens.analysis.loading import context_from_runs
    from loralens.data.corpora import load_corpus
    from loralens.models.speaker_stats import SpeakerStatistics

    by_id = load_corpus("manifest", synthetic_root).by_id()
    for run in ("lora", "frozen"):
        fold = spk_runs / run / "fold_0"
        assert 0.0 <= read_json(fold / "metrics.json")["test"]["uar"] <= 1.0
        stats = SpeakerStatistics.load(fold / "speaker_statistics.safetensors")
        folds = read_json(spk_runs / run / "folds.json")["folds"][0]
        ids = [*folds["train"], *folds["validation"], *folds["test"]]
        # every clip of the fold, each under its own speaker, 12 clips per speaker (4 classes x 3)
        assert stats.speaker_of == {i: by_id[i].speaker for i in ids}
        assert set(stats.n_clips.values()) == {12}

    # the rebuilt fold model (its statistics read back) gives the test predictions training wrote
    ctx = context_from_runs(spk_runs / "lora", fold=0, baseline_dir=spk_runs / "frozen", batch_size=4)
    pred = read_json(spk_runs / "lora" / "fold_0" / "predictions.json")
    want = dict(zip(pred["ids"], pred["probabilities"]))
    with torch.no_grad():
        for b in ctx.test:
            ctx.adapted.select_clips(b.ids)
            p = torch.softmax(ctx.adapted(b.features, b.mel_lengths).double(), -1)
            assert torch.allclose(p, torch.tensor([want[i] for i in b.ids], dtype=torch.float64), atol=1e-4)

    out = tmp_path / "analysis"
    results = analyze_run(spk_runs / "lora", fold=0, baseline_dir=spk_runs / "frozen", out_dir=out, batch_size=4,
                          n_boot=20, echo=lambda s: None)
    errors = {p.parent.name: json.loads(p.read_text())["error"] for p in out.glob("*/error.json")}
    assert not errors, errors
    assert len(results) >= 8, sorted(results)


@pytest.mark.slow
def test_predict_takes_speakers_and_reproduces_the_test_predictions(spk_runs, synthetic_root, tmp_path, capsys):
    from loralens.cli import main as cli
    from loralens.data.corpora import load_corpus
    from loralens.inference.predict import InputClip, predict

    by_id = load_corpus("manifest", synthetic_root).by_id()
    pred = read_json(spk_runs / "lora" / "fold_0" / "predictions.json")
    clips = [InputClip(i, by_id[i].path, by_id[i].label, by_id[i].speaker) for i in pred["ids"]]
    got = predict(spk_runs / "lora", clips, fold=0, device="cpu")
    # each test speaker's statistics over all their clips (the fold's test split holds all of them), as in training
    for c, want in zip(got.clips, pred["probabilities"]):
        assert [c.probabilities[lab] for lab in pred["labels"]] == pytest.approx(want, abs=1e-4)

    with pytest.raises(ConfigError, match="have no speaker, e.g."):
        predict(spk_runs / "lora", [InputClip(c.id, c.path) for c in clips], fold=0, device="cpu")
    one = [c for c in clips if c.speaker == clips[0].speaker]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,id\n" + "".join(f"{c.path},{c.id}\n" for c in one))
    code = cli(["predict", str(spk_runs / "lora"), str(manifest), "--fold", "0", "--speaker", "x", "--json",
                "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    rows = {p["id"]: p for p in json.loads(out.out)["predictions"]}
    for c in got.clips:
        if c.id in rows:
            assert [rows[c.id]["probabilities"][k] for k in pred["labels"]] == pytest.approx(
                [c.probabilities[k] for k in pred["labels"]], abs=1e-4)
    code = cli(["predict", str(spk_runs / "lora"), str(one[0].path), "--fold", "0", "--speaker", "x", "--no-progress"])
    assert code != 0 and "at least 2 clips per speaker" in capsys.readouterr().err


@pytest.mark.slow
def test_hugging_face_export_is_refused_with_the_reason(spk_runs, tmp_path):
    from loralens.inference.export import export_fold

    with pytest.raises(ConfigError, match="speaker_norm.*one clip at a time"):
        export_fold(spk_runs / "lora", 0, tmp_path / "hf")


def test_few_clips_per_speaker_warn_and_the_statistics_are_stored(tmp_path):
    from types import SimpleNamespace

    from loralens.data.folds import Fold
    from loralens.models.speaker_stats import SpeakerStatistics
    from loralens.training.crossval import _standardize_head
    from loralens.training.run_folder import FoldFolder

    ids = [f"c{i}" for i in range(14)]
    speaker_of = {i: ("a" if n < 11 else "b") for n, i in enumerate(ids)}  # a: 11 clips, b: 3
    pooled = {i: torch.randn(3, 4) for i in ids}
    clf = SimpleNamespace(head=SimpleNamespace(speaker_norm=True), speaker_statistics=None)
    said = []
    _standardize_head(clf, Fold("f", ids[:6], ids[6:8], ids[8:]), pooled, speaker_of, FoldFolder(tmp_path), True,
                      said.append)
    assert clf.speaker_statistics.n_clips == {"a": 11, "b": 3}
    assert len(said) == 1 and "few clips per speaker (b: 3)" in said[0] and "--no-speaker-norm" in said[0]
    assert SpeakerStatistics.load(tmp_path / "speaker_statistics.safetensors").n_clips == {"a": 11, "b": 3}

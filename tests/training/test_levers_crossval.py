"""The recipe levers through the cross-validation driver on the tiny random Whisper: LP-FT's head stage, more
validation speakers (folds and `loralens run`'s pass-through), and exact resume after SIGKILL with every lever on
(augmentation of audio, features and batches; selection on loss; weight averaging; LP-FT)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from loralens.io import read_json
from loralens.training.config import make_config
from loralens.training.crossval import train
from tests.training.conftest import (
    REPO,
    assert_same_predictions,
    base_settings,
    one_thread,
    strip_times,
    subprocess_env,
    train_in_process,
)
from tests.training.test_resume import _kill_when_mid_epoch_in_fold_1

AUGMENT = {"spec_time_masks": 2, "spec_time_width": 10, "spec_freq_masks": 1, "spec_freq_width": 8,
           "speed": [0.9, 1.0, 1.1], "noise_snr_db": [5.0, 20.0], "noise_prob": 0.5, "mixup_alpha": 0.4,
           "label_smoothing": 0.1}


@pytest.mark.slow
def test_lp_ft_starts_from_the_probe_head(tiny_model_dir, synthetic_root, feature_cache, tmp_path):
    from loralens.data.batching import Collator, FeatureDataset
    from loralens.data.corpora import load_corpus
    from loralens.data.features import FeatureCache, FeatureSettings
    from loralens.models.classifier import whisper_encoder
    from loralens.models.loading import load_whisper
    from loralens.models.speaker_stats import SpeakerStatistics
    from loralens.training.crossval import build_classifier
    from loralens.training.metrics import classification_metrics

    settings = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / "run", fold=0, epochs=2,
                             lp_ft_epochs=3)
    train_in_process(settings)
    fold = tmp_path / "run" / "fold_0"
    m = read_json(fold / "metrics.json")
    lp = m["linear_probe"]
    assert lp["epochs"] == 3 and 0 <= lp["selected_epoch"] < 3
    assert len([x for x in (fold / "lp" / "log.jsonl").read_text().splitlines() if '"type": "epoch"' in x]) == 3
    assert not (fold / "lp" / "checkpoints").exists() and (tmp_path / "run" / "encoder_cache").is_dir()
    # the adapted classifier at initialisation (LoRA B = 0: the frozen encoder) with the probe's head reproduces the
    # probe's validation UAR: the adapted fit started from exactly that function
    cfg = make_config(settings)
    clf = build_classifier(cfg, whisper_encoder(load_whisper(tiny_model_dir)), 4)
    clf.head.load_state_dict(load_file(str(fold / "lp" / "head.safetensors")))
    clf.eval()
    corpus = load_corpus("manifest", synthetic_root)
    by_id = corpus.by_id()
    val_ids = read_json(tmp_path / "run" / "folds.json")["folds"][0]["validation"]
    ds = FeatureDataset([by_id[i] for i in val_ids], FeatureCache(feature_cache, FeatureSettings()), corpus.labels)
    batch = Collator("trim")([ds[i] for i in range(len(ds))])
    clf.speaker_statistics = SpeakerStatistics.load(fold / "speaker_statistics.safetensors")  # the default head's
    clf.select_clips(batch.ids)
    with torch.no_grad():
        pred = clf(batch.features, batch.mel_lengths).argmax(-1).tolist()
    assert classification_metrics(batch.labels.tolist(), pred,
                                  corpus.labels).uar == pytest.approx(lp["validation"]["uar"])
    # rerunning the complete fold does nothing; the head stage is not repeated
    mtime = (fold / "lp" / "head.safetensors").stat().st_mtime_ns
    train_in_process(settings)
    assert (fold / "lp" / "head.safetensors").stat().st_mtime_ns == mtime


@pytest.fixture(scope="module")
def six_speakers(tmp_path_factory):
    from loralens.data.synthetic import generate_corpus

    out = tmp_path_factory.mktemp("six")
    generate_corpus(out, n_speakers=6, clips_per_class_per_speaker=1, min_duration=0.5, max_duration=1.0, seed=0)
    return out


def test_validation_speakers_in_train_and_run(tiny_model_dir, six_speakers, feature_cache, tmp_path, capsys):
    from loralens.pipeline import load_run_config, prepare_data, variant_configs

    def plan(**over):
        s = base_settings(tiny_model_dir, six_speakers, feature_cache, tmp_path / "never", **over)
        return train(make_config(s), dry_run=True)

    default, four = plan(), plan(validation_speakers=2)
    assert [f["speakers"] for f in default["folds"]] == [{"train": 2, "validation": 1, "test": 3}] * 2
    assert [f["speakers"] for f in four["folds"]] == [{"train": 1, "validation": 2, "test": 3}] * 2
    assert default["config_hash"] != four["config_hash"]
    # `loralens run` passes the levers through its train: section, and makes its folds with the validation count
    train_section = {"corpus": "manifest", "corpus_root": str(six_speakers), "folds": "speaker-kfold", "folds_k": 2,
                     "model": str(tiny_model_dir), "validation_speakers": 2, "select_on": "loss", "lp_ft_epochs": 2,
                     "average_last": 3, "augment": {"speed": [0.9, 1.1], "mixup_alpha": 0.2}}
    cfg = load_run_config(None, {"out": str(tmp_path / "out"), "train": train_section})
    variants = variant_configs(cfg)
    lora = variants["lora"]
    assert (lora.validation_speakers, lora.select_on, lora.lp_ft_epochs, lora.average_last) == (2, "loss", 2, 3)
    assert lora.augment.speed == (0.9, 1.1) and lora.augment.mixup_alpha == 0.2
    frozen = variants["frozen"]  # without what a head on cached encoder outputs cannot take; the rest stays
    assert frozen.lp_ft_epochs == 0 and frozen.augment.speed == () and frozen.augment.mixup_alpha == 0.2
    assert (frozen.validation_speakers, frozen.select_on, frozen.average_last) == (2, "loss", 3)
    prepare_data(cfg, lora, echo=print)
    folds = read_json(tmp_path / "out" / "folds.json")["folds"]
    assert [len(f["speakers"]["validation"]) for f in folds] == [2, 2]


@pytest.mark.slow
def test_sigkill_with_every_lever_on_then_rerun_matches_uninterrupted(tiny_model_dir, synthetic_root, feature_cache,
                                                                     tmp_path, capsys):
    levers = {"augment": AUGMENT, "select_on": "loss", "average_last": 2, "lp_ft_epochs": 2, "epochs": 3}
    ref = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / "ref", **levers)
    train_in_process(ref)
    run_dir = tmp_path / "run"
    settings = dict(ref, run_dir=str(run_dir))
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(settings))  # JSON is YAML
    code = "import sys; from loralens.training import load_config, train; train(load_config(sys.argv[1]))"
    proc = subprocess.Popen([sys.executable, "-c", code, str(config)], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _kill_when_mid_epoch_in_fold_1(proc, run_dir)
    assert proc.returncode == -signal.SIGKILL and not (run_dir / "fold_1" / "metrics.json").exists()
    capsys.readouterr()
    train_in_process(settings)
    out = capsys.readouterr().out
    assert "fold 0 (fold0): complete, skipped" in out and "resuming fold_1 from step" in out
    for k in (0, 1):
        got = read_json(run_dir / f"fold_{k}" / "metrics.json")
        want = read_json(tmp_path / "ref" / f"fold_{k}" / "metrics.json")
        for key in ("selected_epoch", "epochs_trained", "steps", "validation", "test", "averaged_epochs",
                    "selected_validation"):
            assert got[key] == want[key], (k, key)
        assert got["linear_probe"]["validation"] == want["linear_probe"]["validation"]
        for log in ("log.jsonl", "lp/log.jsonl"):
            assert strip_times(run_dir / f"fold_{k}" / log) == strip_times(tmp_path / "ref" / f"fold_{k}" / log)
        assert_same_predictions(run_dir / f"fold_{k}" / "predictions.json",
                                tmp_path / "ref" / f"fold_{k}" / "predictions.json")
    # the augmentation did act: the reference's training loss differs from an unaugmented run's first epoch
    plain = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / "plain", fold=0, epochs=1)
    with one_thread():
        train(make_config(plain))
    # noqa: E731
    def first(p):
        return json.loads([x for x in p.read_text().splitlines() if '"type": "step"' in x][0])["loss"]
    assert first(tmp_path / "plain" / "fold_0" / "log.jsonl") != first(tmp_path / "ref" / "fold_0" / "log.jsonl")


def test_validation_speakers_on_ravdess6_keeps_test_splits_and_the_default(tmp_path):
    """RAVDESS-like speakers (odd actors male, even female): the default folds are those of the code before the lever
    (2 validation speakers); 4 validation speakers are 2 + 2 by gender and leave the test splits as they were."""
    from pathlib import Path

    from loralens.data.clips import Clip, Corpus
    from loralens.data.folds import make_folds
    from loralens.training.crossval import _folds
    from loralens.training.run_folder import RunFolder

    clips = [Clip(f"Actor_{a:02d}/{i}", Path(f"/x/{a}/{i}.wav"), "neutral" if i % 2 else "sad", f"Actor_{a:02d}",
                  None, "male" if a % 2 else "female") for a in range(1, 25) for i in range(2)]
    corpus = Corpus("ravdess", Path("/x"), ("neutral", "sad"), clips)
    run = RunFolder(tmp_path / "run")
    default, *_ = _folds(corpus, make_config({"folds": "ravdess6"}), run)
    assert [(f.train, f.validation, f.test) for f in default] == \
        [(f.train, f.validation, f.test) for f in make_folds(corpus, "ravdess6", seed=0)]
    four, *_ = _folds(corpus, make_config({"folds": "ravdess6", "validation_speakers": 4}), run)
    by_id = corpus.by_id()
    for d, f in zip(default, four):
        assert f.test == d.test
        speakers = {by_id[i].speaker for i in f.validation}
        assert len(speakers) == 4 and \
            sorted(by_id[i].gender for i in f.validation[::2]) == ["female"] * 2 + ["male"] * 2
        assert len({by_id[i].speaker for i in f.train}) == 16

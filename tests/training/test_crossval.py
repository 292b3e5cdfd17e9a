"""The cross-validation driver on a tiny random Whisper and a tiny synthetic corpus: the run folder it writes, that the
saved adapter + head reproduce the reported test metrics, skipping of complete folds, the frozen shortcut, dry runs."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file

from loralens.errors import RunFolderError
from loralens.io import read_json
from loralens.training.config import make_config
from loralens.training.crossval import train
from tests.training.conftest import base_settings, train_in_process


@pytest.mark.slow
def test_run_folder_contents(reference_run):
    settings, run = reference_run
    cfg = make_config(settings)
    assert (run / "config.yaml").exists() and (run / "folds.json").exists()
    folds = read_json(run / "folds.json")
    assert [f["name"] for f in folds["folds"]] == ["fold0", "fold1"]
    for k in (0, 1):
        fold = run / f"fold_{k}"
        m = read_json(fold / "metrics.json")
        assert m["sizes"] == {"train": 12, "validation": 12, "test": 24}
        assert m["epochs_trained"] == cfg.epochs and m["steps"] == cfg.epochs * 3
        assert 0 <= m["selected_epoch"] < cfg.epochs
        assert set(m["test"]) >= {"uar", "war", "macro_f1", "per_class_recall", "confusion"}
        assert sum(map(sum, m["test"]["confusion"])) == 24
        # the selected epoch is the one of best validation UAR in the log
        epochs = [json.loads(x) for x in (fold / "log.jsonl").read_text().splitlines() if '"epoch", "epoch"' in x
                  or json.loads(x)["type"] == "epoch"]
        uars = [e["validation"]["uar"] for e in epochs if e["type"] == "epoch"]
        assert m["selected_epoch"] == uars.index(max(uars))
        assert m["validation"]["uar"] == max(uars)
        # A+B of 2 v_proj, head (projector, classifier, the default head's 3 layer weights)
        assert m["trainable_params"] == 2 * 4 * 64 * 2 + (64 * 16 + 16) + (16 * 4 + 4) + 3
        assert m["peak_memory"]["cpu_rss_peak_mib"] > 0 and m["wall_time_s"] > 0
        for f in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "head.safetensors",
                  "predictions.json", "figures/training_curve.png", "figures/training_curve.svg",
                  "figures/confusion.png", "figures/confusion.svg"):
            assert (fold / f).is_file(), f
        assert not (fold / "checkpoints").exists()
    s = read_json(run / "summary.json")
    assert set(s["folds"]) == {"fold0", "fold1"} and s["missing_folds"] == []
    u = [s["folds"][n]["uar"] for n in ("fold0", "fold1")]
    assert s["mean_std"]["uar"]["mean"] == pytest.approx(sum(u) / 2)
    assert s["mean_std"]["uar"]["std"] == pytest.approx(abs(u[0] - u[1]) / 2 ** 0.5)  # ddof=1 with 2 folds
    assert "mean ± std" in (run / "summary.md").read_text()


def test_saved_adapter_and_head_reproduce_test_metrics(reference_run, tiny_model_dir):
    """Load fold 0's adapter with peft.PeftModel.from_pretrained and its head; re-evaluate the test split."""
    from peft import PeftModel

    from loralens.data.batching import Collator, FeatureDataset
    from loralens.data.corpora import load_corpus
    from loralens.data.features import FeatureCache, FeatureSettings
    from loralens.models.classifier import EmotionClassifier, whisper_encoder
    from loralens.models.loading import load_whisper
    from loralens.models.speaker_stats import SpeakerStatistics
    from loralens.training.metrics import classification_metrics

    settings, run = reference_run
    m = read_json(run / "fold_0" / "metrics.json")
    pred_file = read_json(run / "fold_0" / "predictions.json")
    encoder = whisper_encoder(load_whisper(tiny_model_dir))
    peft_model = PeftModel.from_pretrained(encoder, str(run / "fold_0" / "adapter"))
    assert sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n) == 2 * 4 * 64 * 2
    clf = EmotionClassifier(encoder, 4, proj_size=16, mask_padding=True, use_weighted_layer_sum=True,
                            normalize_layers=True, standardize=True, speaker_norm=True)  # the default head
    clf.head.load_state_dict(load_file(str(run / "fold_0" / "head.safetensors")))
    clf.speaker_statistics = SpeakerStatistics.load(run / "fold_0" / "speaker_statistics.safetensors")
    clf.eval()
    corpus = load_corpus("manifest", settings["corpus_root"])
    by_id = corpus.by_id()
    clips = [by_id[i] for i in pred_file["ids"]]
    ds = FeatureDataset(clips, FeatureCache(settings["feature_cache"], FeatureSettings()), corpus.labels)
    batch = Collator("trim")([ds[i] for i in range(len(ds))])
    clf.select_clips(batch.ids)
    with torch.no_grad():
        pred = clf(batch.features, batch.mel_lengths).argmax(-1).tolist()
    assert pred == pred_file["pred"]
    again = classification_metrics(batch.labels.tolist(), pred, corpus.labels)
    assert again.uar == pytest.approx(m["test"]["uar"]) and again.confusion == m["test"]["confusion"]


def test_complete_folds_are_skipped_and_other_settings_refused(reference_run, capsys):
    settings, run = reference_run
    before = {k: (run / f"fold_{k}" / "metrics.json").stat().st_mtime_ns for k in (0, 1)}
    t0 = time.perf_counter()
    summary = train_in_process(settings)
    assert time.perf_counter() - t0 < 60
    out = capsys.readouterr().out
    assert "fold 0 (fold0): complete, skipped" in out and "fold 1 (fold1): complete, skipped" in out
    assert {k: (run / f"fold_{k}" / "metrics.json").stat().st_mtime_ns for k in (0, 1)} == before
    assert summary["mean_std"] == read_json(run / "summary.json")["mean_std"]
    with pytest.raises(RunFolderError, match="other settings.*lr_head"):
        train(make_config(dict(settings, lr_head=0.5)))


def test_dry_run_prints_plan_and_writes_nothing(tiny_model_dir, synthetic_root, feature_cache, tmp_path, capsys):
    settings = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / "run", fold=1)
    plan = train(make_config(settings), dry_run=True)
    out = capsys.readouterr().out
    assert not (tmp_path / "run").exists()
    assert plan["n_folds"] == 2 and [f["index"] for f in plan["folds"]] == [1]
    assert plan["folds"][0]["train"] == 12 and plan["folds"][0]["steps_per_epoch"] == 3
    assert plan["trainable_params"] == 2 * 4 * 64 * 2 + 64 * 16 + 16 + 16 * 4 + 4 + 3
    assert "fold1" in out and "trainable" in out and "to run" in out
    # base_settings: 4 epochs, lr 2e-3 / 5e-3, no LP-FT, no patience; the default head
    assert ("schedule: 4 epochs at most, lr 2e-03 adapters / 5e-03 head, batch 4, selection on validation uar; head on "
            "the weighted sum of all hidden states (each normalised), input z-scored per speaker\n" in out)


def test_schedule_line_of_the_default_recipe_and_of_frozen():
    from loralens.training.crossval import schedule_line

    assert schedule_line(make_config({})) == (
        "schedule: head alone 20 epochs on the frozen encoder (LP-FT), then 3 epochs, lr 3e-04 adapters / 1e-03 "
        "head, batch 8, the last epoch kept (no selection); head on the hidden state or the weighted sum of all hidden "
        "states, whichever each fold chooses (speaker-grouped probe on the frozen outputs), input z-scored per speaker")
    assert schedule_line(make_config({"lp_fit": "logistic", "head": {"weighted_layer_sum": True}})) == (
        "schedule: head fitted as a logistic regression on the frozen encoder (LP-FT), then 3 epochs, lr 3e-04 "
        "adapters / 1e-03 head, batch 8, the last epoch kept (no selection); head on "
        "the weighted sum of all hidden states (each normalised), input z-scored per speaker")
    frozen = schedule_line(make_config({"method": "frozen", "average_last": 2, "select_on": "loss",
                                        "head": {"weighted_layer_sum": False}}))
    assert frozen == ("schedule: 10 epochs at most, lr 1e-03 head, batch 8, selection on validation loss, early stop "
                      "after 3 epochs without improvement, mean of the last 2 epochs' weights")
    cut = schedule_line(make_config({"head": {"hidden_state": 2, "standardize": True}}))
    assert cut.endswith("; head on hidden state 2 (encoder cut there), input z-scored per speaker")
    plain_z = schedule_line(make_config({"head": {"hidden_state": 2, "speaker_norm": False}}))
    assert plain_z.endswith("; head on hidden state 2 (encoder cut there), z-scored input")
    assert "the hidden state each fold chooses" in schedule_line(make_config({"head": {"hidden_state": "auto"}}))


@pytest.mark.parametrize("weighted,normalized", [(False, False), (True, False), (True, True)])
def test_pooled_head_equals_classifier(tiny_whisper, weighted, normalized):
    """The frozen shortcut: PooledHead on cached per-layer means gives the classifier's logits."""
    from loralens.models.classifier import EmotionClassifier
    from loralens.training.frozen_cache import PooledHead, pool_layers

    torch.manual_seed(0)
    clf = EmotionClassifier(tiny_whisper.model.encoder, 3, proj_size=8, use_weighted_layer_sum=weighted,
                            normalize_layers=normalized).eval()
    if weighted:
        with torch.no_grad():
            clf.head.layer_weights.copy_(torch.tensor([0.3, -1.0, 2.0]))
    feats = torch.randn(3, 80, 60)
    lengths = torch.tensor([60, 41, 17])
    with torch.no_grad():
        want = clf(feats, lengths)
        got = PooledHead(clf.head)(pool_layers(clf, feats, lengths))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_frozen_method_trains_head_on_cached_encoder_outputs(tiny_model_dir, synthetic_root, feature_cache, tmp_path):
    settings = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / "run", method="frozen",
                             lora=None, epochs=30, lr_head=2e-2, fold=0, checkpoint_every=50, log_every=10)
    settings.pop("lora")
    t0 = time.perf_counter()
    s = train_in_process(settings)
    m = read_json(tmp_path / "run" / "fold_0" / "metrics.json")
    assert list((tmp_path / "run" / "encoder_cache").glob("*.safetensors"))
    assert m["trainable_params"] == 64 * 16 + 16 + 16 * 4 + 4 + 3  # + the default head's layer weights
    assert not (tmp_path / "run" / "fold_0" / "adapter").exists()
    print(f"frozen fold: {m['wall_time_s']} s for {m['steps']} steps, test UAR {m['test']['uar']:.3f}, "
          f"total {time.perf_counter() - t0:.1f} s")
    assert s["missing_folds"] == ["fold1"]


@pytest.mark.slow
def test_full_method_saves_encoder(tiny_model_dir, synthetic_root, feature_cache, tmp_path):
    settings = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / "run", method="full",
                             epochs=1, fold=1, checkpoint_every=50, gradient_checkpointing=True)
    settings.pop("lora")
    train_in_process(settings)
    fold = tmp_path / "run" / "fold_1"
    enc = load_file(str(fold / "encoder.safetensors"))
    assert "layers.0.self_attn.v_proj.weight" in enc
    m = read_json(fold / "metrics.json")
    assert m["total_params"] - m["trainable_params"] == 1500 * 64  # all but the fixed sinusoidal positions


def test_bad_audio_policy(tiny_model_dir, synthetic_root, feature_cache, tmp_path):
    import shutil

    from loralens.errors import AudioError

    root = tmp_path / "corpus"
    shutil.copytree(synthetic_root, root)
    bad = sorted(root.glob("*/*.wav"))[5]
    bad.write_bytes(b"RIFF not really a wave file")
    settings = base_settings(tiny_model_dir, root, feature_cache, tmp_path / "run", on_bad_audio="stop")
    with pytest.raises(AudioError, match=bad.stem):
        train(make_config(settings), dry_run=True)
    plan = train(make_config(dict(settings, on_bad_audio="skip")), dry_run=True)
    assert plan["bad_files"] == 1 and plan["clips"] == 47

"""`loralens.inference.export` and `loralens export`: the merged WhisperForAudioClassification folder loaded by plain
transformers (in a subprocess that never imports loralens), the exact export through `trust_remote_code`, the model
card and the measured agreement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from loralens.cli import main
from loralens.data.audio import load_audio
from loralens.data.features import FeatureSettings, compute_features
from loralens.errors import ConfigError, RunFolderError
from loralens.inference.export import export_fold
from loralens.inference.fold_model import load_run_models
from loralens.inference.predict import predict
from tests.training.conftest import feature_cache, subprocess_env, synthetic_root, tiny_model_dir  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # end-to-end runs of several seconds each (`-m "not slow"` leaves them out)

# Runs in a fresh interpreter: plain transformers only; prints the model class, the logits of each clip's 30-s
# features and the pipeline's scores.
PLAIN = r"""
import json, sys
import numpy as np, soundfile as sf, torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline
folder, trust, files = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=trust).eval()
fe = AutoFeatureExtractor.from_pretrained(folder)
pipe = pipeline("audio-classification", model=folder, top_k=None, trust_remote_code=trust)
out = {"class": type(model).__name__, "id2label": model.config.id2label, "logits": [], "scores": []}
for f in files:
    audio, sr = sf.read(f, dtype="float32")
    feats = fe(audio, sampling_rate=sr, return_tensors="pt", return_attention_mask=False)
    with torch.no_grad():
        out["logits"].append(model(input_features=feats["input_features"]).logits[0].tolist())
    out["scores"].append({d["label"]: d["score"] for d in pipe({"raw": audio, "sampling_rate": sr})})
out["loralens_imported"] = any(m == "loralens" or m.startswith("loralens.") for m in sys.modules)
print(json.dumps(out))
"""


def _plain(folder: Path, files: list[Path], trust: bool, tmp_path: Path) -> dict:
    env = subprocess_env()
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", PYTHONPATH="")
    res = subprocess.run([sys.executable, "-c", PLAIN, str(folder), "1" if trust else "0", *map(str, files)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["loralens_imported"] is False
    return out


def _files(corpus: Path, n: int) -> list[Path]:
    return sorted(corpus.rglob("*.wav"))[:n]


def test_plain_export_loads_in_transformers(trim_run, synthetic_root, tmp_path):
    out = tmp_path / "export"
    info = export_fold(trim_run, 0, out, measure_clips=8)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md", "loralens_export.json",
                 "peft_adapter/adapter_config.json", "peft_adapter/adapter_model.safetensors",
                 "peft_adapter/head.safetensors"):
        assert (out / name).is_file(), name
    assert not (out / "modeling_loralens_whisper.py").exists()
    cfg = json.loads((out / "config.json").read_text())
    labels = ["neutral", "happy", "sad", "angry"]  # the corpus order (shared vocabulary order, docs/corpora.md)
    assert cfg["id2label"] == {str(i): lab for i, lab in enumerate(labels)}
    assert cfg["label2id"] == {lab: i for i, lab in enumerate(labels)}
    assert cfg["architectures"] == ["WhisperForAudioClassification"]
    assert info["merge_check_max_abs_logit_diff"] < 1e-5

    files = _files(synthetic_root, 3)
    got = _plain(out, files, trust=False, tmp_path=tmp_path)
    assert got["class"] == "WhisperForAudioClassification"
    # the merged model is the fold's model under transformers' pooling (every frame of the 30-s window)
    clf = load_run_models(trim_run, 0).folds[0].classifier
    for f, logits, scores in zip(files, got["logits"], got["scores"]):
        feats = compute_features(load_audio(f), FeatureSettings.from_n_mels(80)).full()[None]
        with torch.inference_mode():
            ours = clf(feats, None, mask_padding=False)[0]
        np.testing.assert_allclose(logits, ours.numpy(), atol=1e-5)
        probs = torch.softmax(torch.tensor(logits), -1).tolist()
        assert [scores[lab] for lab in labels] == pytest.approx(probs, abs=1e-5)

    ag = info["agreement"]
    assert ag["clips"] == 8 and 0 <= ag["agreement"] <= 1 and ag["trust_remote_code"] is False
    assert 0 <= ag["mean_abs_prob_diff"] <= ag["max_abs_prob_diff"] <= 1
    card = (out / "README.md").read_text()
    assert "pipeline_tag: audio-classification" in card and "Measured on 8 test clips of fold 0" in card
    assert f"| same label as `loralens predict` | {100 * ag['agreement']:.1f} % |" in card
    assert "CC BY-NC-SA" not in card and "the licence of your data" in card and "peft_adapter/" in card
    assert "Prefer the exact export" in card  # a trim run: transformers' 30-s pooling is not what it learned
    selected = json.loads((trim_run / "fold_0" / "metrics.json").read_text())["selected_epoch"] + 1
    assert f"1 epochs max (selected epoch {selected} on validation uar)" in card  # base_settings: select_on uar


@pytest.mark.parametrize("run", ["trim_run", "full_run"])
def test_exact_export_reproduces_predict(run, request, synthetic_root, tmp_path):
    run_dir = request.getfixturevalue(run)
    out = tmp_path / "exact"
    info = export_fold(run_dir, 0, out, exact=True, measure_clips=6)
    assert info["agreement"]["agreement"] == 1.0 and info["agreement"]["max_abs_prob_diff"] < 1e-5
    files = _files(synthetic_root, 5)
    ours = predict(run_dir, files, fold=0, batch_size=3)
    got = _plain(out, files, trust=True, tmp_path=tmp_path)
    assert got["class"] == "LoralensWhisperForAudioClassification"
    for pred, scores in zip(ours.clips, got["scores"]):
        assert scores == pytest.approx(pred.probabilities, abs=1e-5)
    # without trust_remote_code the same folder is the plain model
    assert _plain(out, files[:1], trust=False, tmp_path=tmp_path)["class"] == "WhisperForAudioClassification"
    assert "trust_remote_code=True" in (out / "README.md").read_text()
    assert "Prefer the exact export" not in (out / "README.md").read_text()


def test_export_refusals(trim_run, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not an empty folder"):
        export_fold(trim_run, 0, tmp_path / "busy", measure=False)
    with pytest.raises(RunFolderError, match="fold 3 is not a complete fold"):
        export_fold(trim_run, 3, tmp_path / "new", measure=False)


def test_cli_export(full_run, tmp_path, capsys):
    code = main(["export", str(full_run), "--fold", "0", "--out", str(tmp_path / "m"), "--no-measure"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"fold 0 of {full_run} exported to {tmp_path / 'm'}" in out.out
    card = (tmp_path / "m" / "README.md").read_text()
    assert "not measured" in card and "window `full`, padding mask off" in card
    assert json.loads((tmp_path / "m" / "config.json").read_text())["use_weighted_layer_sum"] is True


def test_frozen_run_predicts_and_exports_without_adapter(tiny_model_dir, synthetic_root, feature_cache, tmp_path):
    from tests.training.conftest import base_settings, train_in_process

    # the default head but for the speaker normalisation (not exportable): weighted layer sum of every hidden state,
    # each z-scored with the training clips' statistics and normalised
    s = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / "frozen", method="frozen", epochs=2,
                      fold=0, head={"projector_dim": 16, "weighted_layer_sum": True, "speaker_norm": False},
                      select_on="last")
    s.pop("lora")
    train_in_process(s)
    files = _files(synthetic_root, 4)
    res = predict(tmp_path / "frozen", files, fold=0)
    assert len(res.clips) == 4
    with pytest.raises(ConfigError, match="head.layer_norm, head.standardize") as e:
        export_fold(tmp_path / "frozen", 0, tmp_path / "plain", exact=False, measure=False)  # transformers' cannot
    assert "--exact" in e.value.hint
    info = export_fold(tmp_path / "frozen", 0, tmp_path / "m", measure_clips=4)  # exact: the head needs it
    assert info["exact"] is True
    assert info["method"] == "frozen" and not (tmp_path / "m" / "peft_adapter").exists()
    assert info["merge_check_max_abs_logit_diff"] < 1e-5 and info["agreement"]["agreement"] == 1.0
    assert info["agreement"]["max_abs_prob_diff"] < 1e-5
    card = (tmp_path / "m" / "README.md").read_text()
    assert "encoder frozen (head only)" in card and "2 epochs (the last kept)" in card
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["loralens_normalize_layers"] is True and cfg["loralens_standardize"] is True
    got = _plain(tmp_path / "m", files, trust=True, tmp_path=tmp_path)  # transformers alone, remote code
    for pred, scores in zip(res.clips, got["scores"]):
        assert scores == pytest.approx(pred.probabilities, abs=1e-5)


def test_measurement_needs_the_corpus_and_follows_it(trim_run, synthetic_root, tmp_path):
    said = []
    info = export_fold(trim_run, 1, tmp_path / "a", corpus_root=tmp_path / "moved", echo=said.append)
    assert info["agreement"] is None and "not measured" in said[0] and "--corpus-root" in said[0]
    assert "was not measured" in (tmp_path / "a" / "README.md").read_text()
    info = export_fold(trim_run, 1, tmp_path / "b", corpus_root=synthetic_root, measure_clips=3)
    assert info["agreement"]["clips"] == 3


def test_hidden_state_head_exports_exactly_as_a_one_hot_layer_sum(tiny_model_dir, synthetic_root, feature_cache,
                                                                  tmp_path):
    from tests.training.conftest import base_settings, train_in_process

    # LoRA (with its LP-FT stage on the cut encoder's cached outputs) and the head on hidden state 1 of 2, z-scored
    # (statistics folded into the exported projector)
    s = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / "cut", epochs=2, fold=0,
                      lp_ft_epochs=2, head={"projector_dim": 16, "hidden_state": 1, "standardize": True,
                                            "speaker_norm": False})
    train_in_process(s)
    files = _files(synthetic_root, 4)
    res = predict(tmp_path / "cut", files, fold=0)
    models = load_run_models(tmp_path / "cut", fold=0)
    std = models.folds[0].classifier.head.input_std
    assert std.shape == (64,) and float(std.min()) > 1e-4 and not torch.allclose(std, torch.ones_like(std))
    info = export_fold(tmp_path / "cut", 0, tmp_path / "m", measure=False)  # transformers' own class
    assert info["merge_check_max_abs_logit_diff"] < 1e-5
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["use_weighted_layer_sum"] is True and cfg["encoder_layers"] == 2  # the base model's depth
    info = export_fold(tmp_path / "cut", 0, tmp_path / "exact", exact=True, measure_clips=4)
    assert info["merge_check_max_abs_logit_diff"] < 1e-5 and info["agreement"]["agreement"] == 1.0
    got = _plain(tmp_path / "exact", files, trust=True, tmp_path=tmp_path)  # transformers alone, remote code
    for pred, scores in zip(res.clips, got["scores"]):
        assert scores == pytest.approx(pred.probabilities, abs=1e-5)

"""End to end on the embedded tiny.en (real Whisper weights): a two-fold LoRA run on the synthetic corpus, `predict`
on a file and a folder with a bad file in the middle (ensemble and one fold), `export --exact`, and transformers'
pipeline on the exported folder agreeing with `predict`."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import soundfile as sf

from loralens.cli import main
from loralens.inference.predict import predict
from loralens.io import read_json
from loralens.models.registry import is_installed
from tests.training.conftest import base_settings, feature_cache, synthetic_root, train_in_process  # noqa: F401 (fixtures)


@pytest.mark.slow
def test_tiny_en_train_predict_export(synthetic_root, feature_cache, tmp_path, capsys):
    if not is_installed("tiny.en"):
        pytest.skip("embedded tiny.en is not installed")
    run = tmp_path / "run"
    # the default head but for the speaker normalisation (its predict and refused export: test_speaker_norm.py)
    train_in_process(base_settings("tiny.en", synthetic_root, feature_cache, run, epochs=1, checkpoint_every=1000,
                                   batch_size=8, head={"projector_dim": 16, "speaker_norm": False}))
    capsys.readouterr()  # the training's own output
    folder = tmp_path / "clips"
    folder.mkdir()
    files = sorted(synthetic_root.rglob("*.wav"))[::8]
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    sf.write(folder / f"{files[2].stem}_z.wav", np.zeros(8000, dtype=np.float32), 16000)  # silent, sorted mid-list
    single = sorted(synthetic_root.rglob("*.wav"))[1]
    for extra, models in (([], "ensemble of folds 0, 1"), (["--fold", "1"], "fold 1")):
        code = main(["predict", str(run), str(single), str(folder), "--on-bad-audio", "skip", "--no-progress",
                     *extra])
        out = capsys.readouterr()
        assert code == 0, out.err
        assert f"{files[2].stem}_z.wav" in out.err and "silent" in out.err
        assert f"{len(files) + 1} clip(s) classified with {models}, 1 bad file(s) skipped" in out.err
        rows = list(csv.DictReader(io.StringIO(out.out)))
        assert [r["id"] for r in rows] == [single.stem, *[f.stem for f in files]]

    code = main(["export", str(run), "--fold", "0", "--out", str(tmp_path / "model"), "--exact", "--measure-clips", "6",
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    info = read_json(tmp_path / "model" / "loralens_export.json")
    assert info["model"] == "tiny.en" and info["agreement"]["agreement"] == 1.0
    assert info["agreement"]["max_abs_prob_diff"] < 1e-4
    card = (tmp_path / "model" / "README.md").read_text()
    assert "MIT (OpenAI Whisper" in card and "license: mit" in card

    from transformers import pipeline

    pipe = pipeline("audio-classification", model=str(tmp_path / "model"), top_k=None, trust_remote_code=True)
    ours = predict(run, files[:3], fold=0)
    for f, p in zip(files[:3], ours.clips):
        audio, sr = sf.read(f, dtype="float32")
        scores = {d["label"]: d["score"] for d in pipe({"raw": audio, "sampling_rate": sr})}
        assert scores == pytest.approx(p.probabilities, abs=1e-4)

"""`loralens.inference.predict` and `loralens predict`: windows and their combination, fold and ensemble
probabilities, batch independence, bad files skipped or stopping, CSV / JSON output, a manifest as input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from loralens.cli import main
from loralens.data.audio import load_audio
from loralens.data.features import FeatureSettings, compute_features
from loralens.errors import AudioError, RunFolderError
from loralens.inference.fold_model import load_run_models
from loralens.inference.predict import collect_inputs, combine_windows, predict, split_windows

SR = 16000


def test_split_windows_known_answer():
    a = np.arange(10, dtype=np.float32)
    assert [w.tolist() for w in split_windows(a, 4, 2)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    # a last piece under min_samples is dropped when there are other windows, kept when it is the only one
    assert [len(w) for w in split_windows(a, 4, 3)] == [4, 4]
    assert [len(w) for w in split_windows(a[:2], 4, 3)] == [2]
    assert [len(w) for w in split_windows(a[:8], 4, 3)] == [4, 4]


def test_combine_windows_weights_by_length():
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert combine_windows(p, [3, 1]).tolist() == [0.75, 0.25]
    assert combine_windows(p[:1], [7]).tolist() == [1.0, 0.0]


def _clips(corpus: Path, n: int) -> list[Path]:
    return sorted(corpus.rglob("*.wav"))[:n]


def _write(path: Path, audio: np.ndarray) -> Path:
    sf.write(path, audio, SR, subtype="FLOAT")
    return path


def test_fold_probabilities_equal_the_classifier_on_a_30s_window(trim_run, synthetic_root):
    """predict's trimmed, batched windows give what the fold's classifier gives on each clip's full 30-s window
    with the padding masked (an independent route through the runner)."""
    files = _clips(synthetic_root, 6)
    res = predict(trim_run, files, fold=0, batch_size=4, device="cpu")
    models = load_run_models(trim_run, 0)
    clf = models.folds[0].classifier
    settings = FeatureSettings.from_n_mels(80)
    for f, pred in zip(files, res.clips):
        feats = compute_features(load_audio(f), settings)
        with torch.inference_mode():
            logits = clf(feats.full()[None], torch.tensor([feats.n_frames]))
        expect = torch.softmax(logits.double(), -1)[0].numpy()
        got = np.array([pred.probabilities[lab] for lab in res.labels])
        np.testing.assert_allclose(got, expect, atol=2e-6)
        assert pred.label == res.labels[int(expect.argmax())] and pred.windows == 1
        assert pred.duration_s == pytest.approx(sf.info(f).duration, abs=1e-3)


def test_batch_independence_and_ensemble_is_the_mean_of_folds(trim_run, synthetic_root):
    files = _clips(synthetic_root, 9)
    one_by_one = [predict(trim_run, [f], fold=1, batch_size=1).clips[0] for f in files[:3]]
    batched = predict(trim_run, files, fold=1, batch_size=8).clips[:3]
    for a, b in zip(one_by_one, batched):
        for lab in a.probabilities:
            assert a.probabilities[lab] == pytest.approx(b.probabilities[lab], abs=1e-6)
    f0, f1 = (predict(trim_run, files, fold=k).clips for k in (0, 1))
    ens = predict(trim_run, files)
    assert ens.folds == [0, 1] and ens.ensemble
    for a, b, e in zip(f0, f1, ens.clips):
        for lab in e.probabilities:
            assert e.probabilities[lab] == pytest.approx((a.probabilities[lab] + b.probabilities[lab]) / 2, abs=1e-9)
        assert sum(e.probabilities.values()) == pytest.approx(1.0, abs=1e-9)


def test_long_clip_is_the_length_weighted_mean_of_its_windows(trim_run, synthetic_root, tmp_path):
    pieces = [load_audio(f) for f in _clips(synthetic_root, 12)]
    audio = np.tile(np.concatenate(pieces), 12)[: 65 * SR]
    long = _write(tmp_path / "long.wav", audio)
    parts = [_write(tmp_path / f"part{i}.wav", audio[i * 30 * SR : (i + 1) * 30 * SR]) for i in range(3)]
    res = predict(trim_run, [long, *parts], fold=0)
    whole, *windows = res.clips
    assert whole.windows == 3 and whole.duration_s == pytest.approx(65.0)
    expect = combine_windows(np.array([[w.probabilities[lab] for lab in res.labels] for w in windows]), [30, 30, 5])
    np.testing.assert_allclose([whole.probabilities[lab] for lab in res.labels], expect, atol=1e-6)
    # a trailing 0.05 s is left out (under the 0.1-s minimum), the clip is still 60.05 s long
    short_tail = _write(tmp_path / "tail.wav", audio[: 60 * SR + 800])
    r2 = predict(trim_run, [short_tail], fold=0).clips[0]
    assert r2.windows == 2 and r2.duration_s == pytest.approx(60.05)


def test_bad_file_skipped_or_stopping(trim_run, synthetic_root, tmp_path):
    good = _clips(synthetic_root, 2)
    silent = _write(tmp_path / "silent.wav", np.zeros(SR, dtype=np.float32))
    seen = []
    res = predict(trim_run, [good[0], silent, tmp_path / "missing.wav", good[1]], fold=0, on_bad_audio="skip",
                  on_bad=seen.append)
    assert [c.path for c in res.clips] == [str(good[0]), str(good[1])]
    assert [Path(b.path).name for b in res.bad_files] == ["silent.wav", "missing.wav"] == \
        [Path(b.path).name for b in seen]
    assert "silent" in res.bad_files[0].reason and "not found" in res.bad_files[1].reason
    with pytest.raises(AudioError, match="silent.wav"):
        predict(trim_run, [good[0], silent, good[1]], fold=0)


def test_inputs_folders_and_manifest(synthetic_root, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.wav", "a/b/y.flac", "a/._x.wav", "a/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    clips = collect_inputs([tmp_path / "a", tmp_path / "single.wav"])
    assert [(c.id, c.path.name) for c in clips] == [("b/y", "y.flac"), ("x", "x.wav"), ("single", "single.wav")]
    clips = collect_inputs([synthetic_root / "manifest.csv"])
    assert len(clips) == 48 and clips[0].true_label == "neutral" and clips[0].path.is_file()
    assert clips[0].id == "spk01/spk01_neutral_01"
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "a/x.wav", "id": "clip-x"}) + "\n")
    assert collect_inputs([tmp_path / "m.jsonl"])[0].id == "clip-x"


def test_incomplete_fold_is_refused(trim_run):
    with pytest.raises(RunFolderError, match="fold 5 is not a complete fold"):
        predict(trim_run, ["x.wav"], fold=5)


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["predict", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_csv_json_and_bad_files(trim_run, synthetic_root, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    for f in _clips(synthetic_root, 4):
        (folder / f.name).write_bytes(f.read_bytes())
    _write(folder / "spk01_b_bad.wav", np.zeros(SR, dtype=np.float32))  # sorted into the middle
    out = tmp_path / "pred.csv"
    code, _, err = _run(capsys, trim_run, folder, "--on-bad-audio", "skip", "--out", out, "--no-progress")
    assert code == 0, err
    assert "spk01_b_bad.wav" in err and "4 clip(s) classified with ensemble of folds 0, 1" in err
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 4 and "spk01_b_bad" not in {r["id"] for r in rows}
    labels = ["neutral", "happy", "sad", "angry"]  # the corpus order (shared vocabulary order, docs/corpora.md)
    assert list(rows[0]) == ["id", "path", "duration_s", "windows", "label", *[f"prob_{lab}" for lab in labels]]
    assert all(abs(sum(float(r[f"prob_{lab}"]) for lab in labels) - 1) < 1e-5 for r in rows)
    assert all(r["label"] == max(labels, key=lambda lab: float(r[f"prob_{lab}"])) for r in rows)

    code, stdout, err = _run(capsys, trim_run, folder, "--fold", "1", "--json", "--on-bad-audio", "skip",
                             "--no-progress")
    assert code == 0, err
    d = json.loads(stdout)
    assert d["folds"] == [1] and not d["ensemble"] and d["labels"] == labels and d["window"] == "trim"
    assert len(d["predictions"]) == 4 and d["bad_files"][0]["id"] == "spk01_b_bad"

    code, _, err = _run(capsys, trim_run, folder, "--out", tmp_path / "stop.csv", "--no-progress")
    assert code == 2 and "spk01_b_bad.wav" in err and "silent" in err
    assert not (tmp_path / "stop.csv").exists()
    code, _, err = _run(capsys, trim_run, folder, "--fold", "0", "--ensemble")
    assert code == 2 and "--fold and --ensemble" in err


def test_cli_manifest_reports_accuracy(trim_run, synthetic_root, capsys):
    code, stdout, err = _run(capsys, trim_run, synthetic_root / "manifest.csv", "--fold", "0", "--no-progress")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(stdout)))
    assert len(rows) == 48 and rows[0]["true_label"] == "neutral"
    acc = sum(r["label"] == r["true_label"] for r in rows) / 48
    assert f"accuracy against the manifest's labels {acc:.4f}" in err


def test_runs_join_one_ensemble(trim_run, full_run, synthetic_root, capsys):
    """--join: the fold models of several runs (seeds of one recipe) averaged together; known answer: a run joined
    with itself gives its own probabilities, from twice as many models. Runs that classify differently are refused."""
    files = _clips(synthetic_root, 3)
    alone = predict(trim_run, files, fold=1)
    twice = predict(trim_run, files, fold=1, join=[trim_run])
    assert twice.folds == [1, 1] and twice.ensemble and twice.joined_runs == [str(trim_run)]
    for a, b in zip(alone.clips, twice.clips):
        for lab in a.probabilities:
            assert b.probabilities[lab] == pytest.approx(a.probabilities[lab], abs=1e-9)
    with pytest.raises(RunFolderError, match="window") as e:
        predict(trim_run, files, fold=0, join=[full_run])  # 30-s windows, no padding mask, another head
    assert "seed" in e.value.hint
    assert main(["predict", str(trim_run), *map(str, files), "--fold", "1", "--join", str(trim_run), "--json",
                 "--no-progress"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["joined_runs"] == [str(trim_run)] and "of 2 runs" in out.err

"""`loralens data summary | folds | verify | download | synth`, end to end on the real RAVDESS copy, a local server and
the synthetic generator."""

from __future__ import annotations

import json
import shutil

import pytest

from loralens.cli import main
from tests.data.test_download import FILES, Server, hash_list, make_zip


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["data", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_summary_json_on_real_ravdess(capsys, ravdess_root):
    code, out, _ = run(capsys, "summary", "--corpus", "ravdess", "--root", str(ravdess_root), "--folds", "ravdess6",
                       "--json")
    assert code == 0
    s = json.loads(out)
    assert s["n_clips"] == 1440 and s["n_speakers"] == 24 and s["genders"] == {"female": 12, "male": 12}
    assert s["classes"]["neutral"] == 96 and all(s["classes"][k] == 192 for k in s["labels"] if k != "neutral")
    assert all(d["n_clips"] == 60 for d in s["speakers"].values())
    d = s["durations"]
    assert d["n"] == 1440 and 2.5 < d["min_s"] < d["median_s"] < d["max_s"] < 6.0
    assert 5000 < d["total_s"] < 5600  # about 1.5 h of speech
    assert s["fold_scheme"] == "ravdess6" and len(s["folds"]) == 6
    assert s["folds"][5]["speakers"]["test"] == ["Actor_21", "Actor_22", "Actor_23", "Actor_24"]
    assert all(f["n_clips"]["test"] == 240 for f in s["folds"])


def test_summary_table_with_label_set(capsys, ravdess_root):
    code, out, _ = run(capsys, "summary", "--corpus", "ravdess", "--root", str(ravdess_root),
                       "--label-set", "4class", "--no-durations")
    assert code == 0
    assert "672 clips, 24 speakers (12 female, 12 male), 4 classes" in out
    assert "durations" not in out


def test_folds_file_round_trip_and_leak_rejected(capsys, ravdess_root, tmp_path):
    path = tmp_path / "folds.json"
    code, out, _ = run(capsys, "folds", "--corpus", "ravdess", "--root", str(ravdess_root), "--seed", "5",
                       "--out", str(path))
    assert code == 0 and "6 folds (ravdess6, seed 5)" in out
    code, out, _ = run(capsys, "summary", "--corpus", "ravdess", "--root", str(ravdess_root), "--folds", str(path),
                       "--no-durations", "--json")
    assert code == 0 and len(json.loads(out)["folds"]) == 6
    doc = json.loads(path.read_text())
    moved = [i for i in doc["folds"][0]["test"] if i.startswith("Actor_02/")][:1]
    doc["folds"][0]["test"] = [i for i in doc["folds"][0]["test"] if i not in moved]
    doc["folds"][0]["train"] += moved
    leaky = tmp_path / "leaky.json"
    leaky.write_text(json.dumps(doc))
    code, _, err = run(capsys, "summary", "--corpus", "ravdess", "--root", str(ravdess_root), "--folds", str(leaky),
                       "--no-durations")
    assert code == 2 and "speaker 'Actor_02' is in train (1 clips) and test (59 clips)" in err


def test_verify_converted_copy_fails(capsys, ravdess_root):
    code, out, err = run(capsys, "verify", "--corpus", "ravdess", "--root", str(ravdess_root), "--no-progress")
    assert code == 1
    assert "missing: 1440" in out and "converted copy" in out and "FAILED" in out and "does not match" in err


def test_verify_subset_and_corrupted_copy(capsys, ravdess_original_root, tmp_path):
    code, out, _ = run(capsys, "verify", "--corpus", "ravdess", "--root", str(ravdess_original_root), "--subset")
    assert code == 0 and "ok: 13" in out and "PASSED" in out
    copy = tmp_path / "copy"
    shutil.copytree(ravdess_original_root, copy)
    victim = copy / "Actor_10" / "03-01-08-01-01-01-10.wav"
    data = bytearray(victim.read_bytes())
    data[1000] ^= 0xFF
    victim.write_bytes(bytes(data))
    code, out, _ = run(capsys, "verify", "--corpus", "ravdess", "--root", str(copy), "--subset", "--json")
    report = json.loads(out)
    assert code == 1 and report["n_ok"] == 12
    assert [m["path"] for m in report["hash_mismatch"]] == ["Actor_10/03-01-08-01-01-01-10.wav"]


def test_verify_needs_a_list(capsys, tmp_path):
    assert run(capsys, "verify", "--root", str(tmp_path))[0] == 2
    code, _, err = run(capsys, "verify", "--corpus", "iemocap", "--root", str(tmp_path))
    assert code == 2 and "no packaged hash list for corpus 'iemocap'" in err


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    with Server() as s:
        yield s


def test_download_from_local_server(capsys, server, tmp_path):
    server.content["/r.zip"] = make_zip(FILES)
    hashes = hash_list(tmp_path / "h.tsv", FILES)
    dest = tmp_path / "ravdess"
    code, out, err = run(capsys, "download", "ravdess", "--dest", str(dest), "--url", server.url + "/r.zip",
                         "--hashes", str(hashes), "--no-progress")
    assert code == 0, err
    assert "ravdess: 6 files verified" in out and (dest / next(iter(FILES))).exists()
    server.content["/evil.zip"] = make_zip({"../evil": b"x"})
    code, _, err = run(capsys, "download", "ravdess", "--dest", str(tmp_path / "d2"), "--url",
                       server.url + "/evil.zip", "--hashes", str(hashes), "--no-progress")
    assert code == 2 and "refusing to extract member '../evil'" in err
    assert not (tmp_path / "evil").exists()


def test_synth_writes_a_corpus_that_summary_reads(capsys, tmp_path):
    code, out, _ = run(capsys, "synth", str(tmp_path / "hard"), "--speakers", "2", "--clips", "1",
                       "--separation", "0.5", "--clip-sd", "0.15", "--max-duration", "2.0")
    assert code == 0 and "8 clips of 2 speakers" in out
    params = json.loads((tmp_path / "hard" / "synthetic.json").read_text())
    assert params["separation"] == 0.5 and params["durations_s"] == [1.5, 2.0]
    manifest = str(tmp_path / "hard" / "manifest.csv")
    code, out, _ = run(capsys, "summary", "--corpus", "manifest", "--corpus-root", manifest,
                       "--label-set", "neutral,happy,sad,angry", "--json")
    assert code == 0 and json.loads(out)["n_clips"] == 8


def test_synth_refuses_a_bad_separation(capsys, tmp_path):
    code, _, err = run(capsys, "synth", str(tmp_path / "x"), "--separation", "3")
    assert code == 2 and "separation=3.0" in err and not (tmp_path / "x" / "manifest.csv").exists()

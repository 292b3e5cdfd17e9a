"""Checksum verification against per-file SHA-256 lists, on real release files and on damaged copies."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from loralens.data.verify import (
    PACKAGED_HASHES,
    format_verify_report,
    packaged_hash_list,
    read_hash_list,
    sha256_file,
    verify_files,
)
from loralens.errors import CorpusError
from tests.conftest import REFERENCE_HASHES


def write_list(path: Path, files: dict[str, bytes]) -> Path:
    path.write_text("".join(f"{k}\t{hashlib.sha256(v).hexdigest()}\t{len(v)}\n" for k, v in files.items()))
    return path


def test_sha256_known_answer(tmp_path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big"
    data = bytes(range(256)) * 9000  # > 2 chunks
    big.write_bytes(data)
    seen = []
    assert sha256_file(big, seen.append) == hashlib.sha256(data).hexdigest()
    assert sum(seen) == len(data) and len(seen) == 3


def test_packaged_lists_match_shared_reference():
    for corpus, name in PACKAGED_HASHES.items():
        path = packaged_hash_list(corpus)
        if REFERENCE_HASHES.exists():
            assert path.read_bytes() == (REFERENCE_HASHES / name).read_bytes()
    assert len(read_hash_list(packaged_hash_list("ravdess"))) == 1440
    assert len(read_hash_list(packaged_hash_list("CREMA_D"))) == 7442
    with pytest.raises(CorpusError, match="no packaged hash list for corpus 'iemocap'"):
        packaged_hash_list("iemocap")


def test_read_hash_list_rejects_malformed_lines(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a.wav\tnothex\t12\n")
    with pytest.raises(CorpusError, match=r"bad.tsv:1: 'nothex' is not a hex SHA-256"):
        read_hash_list(bad)
    bad.write_text("# comment\n\n../a.wav\t" + "0" * 64 + "\t12\n")
    with pytest.raises(CorpusError, match=r"bad.tsv:3: '../a.wav' is not a relative path"):
        read_hash_list(bad)
    bad.write_text("a.wav\t" + "0" * 64 + "\n")
    with pytest.raises(CorpusError, match="expected 3 tab-separated fields"):
        read_hash_list(bad)


def test_subset_of_release_files_passes(ravdess_original_root):
    report = verify_files(ravdess_original_root, corpus="ravdess", subset=True, progress=False)
    assert report.passed, format_verify_report(report)
    assert len(report.ok) == 13 and len(report.missing) == 1440 - 13 and not report.extra
    full = verify_files(ravdess_original_root, corpus="ravdess", progress=False)
    assert not full.passed and len(full.missing) == 1427
    assert "missing: 1427" in format_verify_report(full) and "FAILED" in format_verify_report(full)


def test_damaged_copy_names_the_files(ravdess_original_root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ravdess_original_root, copy)
    flipped = copy / "Actor_07" / "03-01-05-01-01-01-07.wav"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    cut = copy / "Actor_03" / "03-01-01-01-01-01-03.wav"
    cut.write_bytes(cut.read_bytes()[:-10])
    (copy / "Actor_03" / "stray.wav").write_bytes(b"RIFF")
    report = verify_files(copy, corpus="ravdess", subset=True, progress=False)
    assert not report.passed
    assert [p for p, _, _ in report.hash_mismatch] == ["Actor_07/03-01-05-01-01-01-07.wav"]
    assert [(p, a - e) for p, e, a in report.size_mismatch] == [("Actor_03/03-01-01-01-01-01-03.wav", -10)]
    assert report.extra == ["Actor_03/stray.wav"] and len(report.ok) == 11
    text = format_verify_report(report)
    assert "hash mismatch: 1\n  Actor_07/03-01-05-01-01-01-07.wav: sha256" in text
    assert "Actor_03/03-01-01-01-01-01-03.wav" in text and "FAILED" in text


def test_converted_copy_reports_all_missing(ravdess_root):
    report = verify_files(ravdess_root, corpus="ravdess", progress=False)
    assert not report.passed and not report.ok
    assert len(report.missing) == 1440 and len(report.extra) == 1440
    assert report.extra[0] == "Actor_01/03-01-01-01-01-01-01.flac"
    assert "converted copy" in format_verify_report(report)


def test_list_base_found_in_subfolder(tmp_path):
    files = {"1001_DFA_ANG_XX.wav": b"one", "1001_DFA_DIS_XX.wav": b"two"}
    hashes = write_list(tmp_path / "h.tsv", files)
    audio = tmp_path / "CREMA-D" / "AudioWAV"
    audio.mkdir(parents=True)
    for k, v in files.items():
        (audio / k).write_bytes(v)
    (tmp_path / "CREMA-D" / "README.md").write_text("not audio: ignored")
    report = verify_files(tmp_path / "CREMA-D", hashes, progress=False)
    assert report.passed and report.base == audio and sorted(report.ok) == sorted(files)


def test_empty_folder_fails_and_missing_root_raises(tmp_path):
    hashes = write_list(tmp_path / "h.tsv", {"a.wav": b"a"})
    (tmp_path / "empty").mkdir()
    assert not verify_files(tmp_path / "empty", hashes, subset=True, progress=False).passed
    with pytest.raises(CorpusError, match="corpus folder not found"):
        verify_files(tmp_path / "nope", hashes)

"""Audio decoding, down-mixing, resampling and the bad-audio checks, on synthetic and real RAVDESS files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from loralens.data.audio import (
    SILENCE_PEAK,
    audio_info,
    load_audio,
    screen_clips,
)
from loralens.data.clips import Clip
from loralens.errors import AudioError


def _sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write(path: Path, data: np.ndarray, sr: int, subtype: str | None = None) -> Path:
    sf.write(str(path), data, sr, subtype=subtype)
    return path


# --- known answers -------------------------------------------------------------------------------------------


def test_mono_16k_file_is_returned_as_is(tmp_path):
    x = _sine(440, 0.5, 16000)
    y = load_audio(_write(tmp_path / "a.wav", x, 16000, "FLOAT"))
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, x)


def test_stereo_is_mixed_to_the_mean_of_channels(tmp_path):
    left = _sine(440, 0.5, 16000)
    right = -0.5 * left
    y = load_audio(_write(tmp_path / "s.wav", np.stack([left, right], axis=1), 16000, "FLOAT"))
    np.testing.assert_allclose(y, 0.25 * left, atol=1e-7)


def test_resampling_48k_to_16k_keeps_a_1khz_tone(tmp_path):
    y = load_audio(_write(tmp_path / "t.wav", _sine(1000, 1.0, 48000), 48000, "FLOAT"))
    assert abs(y.shape[0] - 16000) <= 1
    expected = _sine(1000, 1.0, 16000)[: y.shape[0]]
    mid = slice(800, y.shape[0] - 800)  # filter edges excluded
    assert np.max(np.abs(y[mid] - expected[mid])) < 1e-3


def test_resampling_is_band_limited(tmp_path):
    # 12 kHz is above the 8 kHz output Nyquist: naive decimation would alias it to 4 kHz at full amplitude.
    y = load_audio(_write(tmp_path / "hf.wav", _sine(12000, 1.0, 48000), 48000, "FLOAT"))
    mid = y[800:-800]
    assert np.sqrt(np.mean(mid**2)) < 1e-3


def test_other_rates_and_formats_decode(tmp_path):
    x = _sine(300, 0.8, 22050)
    for name, subtype in (("a.flac", "PCM_16"), ("a.ogg", "VORBIS"), ("b.wav", "PCM_24")):
        y = load_audio(_write(tmp_path / name, x, 22050, subtype))
        assert y.dtype == np.float32 and y.ndim == 1
        assert abs(y.shape[0] - round(0.8 * 16000)) <= 2
        assert 0.3 < np.abs(y).max() < 0.7


def test_audio_info_reads_the_header(tmp_path):
    p = _write(tmp_path / "i.wav", np.zeros((24000, 2), np.float32) + 0.1, 48000)
    info = audio_info(p)
    assert (info.sample_rate, info.channels, info.frames) == (48000, 2, 24000)
    assert info.duration == pytest.approx(0.5)
    assert info.format == "WAV"


# --- bad audio: each case raises AudioError naming the file and the reason ------------------------------------


def _raises(path: Path, match: str, **kw) -> AudioError:
    with pytest.raises(AudioError, match=match) as exc:
        load_audio(path, **kw)
    assert exc.value.path == str(path)
    assert str(path) in str(exc.value)
    assert exc.value.hint
    return exc.value


def test_missing_file(tmp_path):
    _raises(tmp_path / "nope.wav", "file not found")


def test_unreadable_file(tmp_path):
    p = tmp_path / "text.wav"
    p.write_text("this is not audio\n" * 10)
    _raises(p, "cannot read the audio header")


def test_truncated_file(tmp_path):
    p = _write(tmp_path / "full.flac", _sine(440, 1.0, 16000), 16000, "PCM_16")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(p.read_bytes()[:40])
    with pytest.raises(AudioError, match="cannot (read the audio header|decode the audio)|zero length"):
        load_audio(cut)


def test_zero_length(tmp_path):
    p = _write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    _raises(p, r"no audio samples \(zero length\)")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = _sine(440, 0.5, 16000)
    x[1234] = bad
    p = _write(tmp_path / "nan.wav", x, 16000, "FLOAT")
    _raises(p, r"1 non-finite \(NaN/Inf\) samples, the first at sample 1234")


def test_all_silent(tmp_path):
    p = _write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    _raises(p, "silent: peak")


def test_silence_threshold_is_the_documented_one(tmp_path):
    quiet = np.full(16000, SILENCE_PEAK * 0.5, np.float32)
    _raises(_write(tmp_path / "q.wav", quiet, 16000, "FLOAT"), "silent")
    audible = np.full(16000, SILENCE_PEAK * 2, np.float32)
    assert load_audio(_write(tmp_path / "a.wav", audible, 16000, "FLOAT")).shape == (16000,)


def test_stereo_that_cancels_to_silence(tmp_path):
    x = _sine(440, 0.5, 16000)
    _raises(_write(tmp_path / "c.wav", np.stack([x, -x], axis=1), 16000, "FLOAT"), "silent")


def test_too_short(tmp_path):
    p = _write(tmp_path / "short.wav", _sine(440, 0.05, 48000), 48000)
    _raises(p, r"only 0.050 s long .* shorter than the minimum 0.1 s")


def test_too_long(tmp_path):
    p = _write(tmp_path / "long.wav", _sine(440, 2.0, 16000), 16000)
    _raises(p, r"2.0 s long, longer than the limit of 1.5 s", max_seconds=1.5)
    assert load_audio(p).shape == (32000,)


# --- the run policy: stop at the first bad file, or skip and list them -----------------------------------------


def _clips(tmp_path: Path) -> list[Clip]:
    good = _write(tmp_path / "good.wav", _sine(440, 0.5, 16000), 16000)
    silent = _write(tmp_path / "silent.wav", np.zeros(8000, np.float32), 16000)
    short = _write(tmp_path / "short.wav", _sine(440, 0.02, 16000), 16000)
    return [
        Clip("good", good, "happy", "s1"),
        Clip("silent", silent, "sad", "s1"),
        Clip("short", short, "sad", "s2"),
        Clip("missing", tmp_path / "missing.wav", "sad", "s2"),
    ]


def test_screen_stops_at_the_first_bad_file(tmp_path):
    with pytest.raises(AudioError, match=r"silent.*\(clip silent\)"):
        screen_clips(_clips(tmp_path))


def test_screen_skips_and_lists_bad_files(tmp_path):
    out = tmp_path / "run" / "bad_files.json"
    good, bad = screen_clips(_clips(tmp_path), on_bad="skip", bad_list_path=out)
    assert [c.id for c in good] == ["good"]
    assert good[0].duration == pytest.approx(0.5)
    assert [b.id for b in bad] == ["silent", "short", "missing"]
    written = json.loads(out.read_text())
    assert written["count"] == 3
    assert [f["id"] for f in written["files"]] == ["silent", "short", "missing"]
    assert "file not found" in written["files"][2]["reason"]
    assert written["files"][0]["path"].endswith("silent.wav")


def test_screen_writes_an_empty_list_when_all_are_good(tmp_path):
    out = tmp_path / "bad.json"
    good, bad = screen_clips(_clips(tmp_path)[:1], on_bad="skip", bad_list_path=out)
    assert len(good) == 1 and bad == []
    assert json.loads(out.read_text()) == {"count": 0, "files": []}


def test_screen_rejects_an_unknown_policy(tmp_path):
    with pytest.raises(ValueError, match="on_bad"):
        screen_clips([], on_bad="ignore")  # type: ignore[arg-type]


# --- real release files: 48 kHz WAV (stereo included) against an independent polyphase resampling -------------


def _read_labels(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _rel_rms(d: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(np.mean(d**2) / np.mean(ref**2)))


def _below_7k(x: np.ndarray) -> np.ndarray:
    sos = scipy.signal.butter(10, 7000, fs=16000, output="sos")
    return scipy.signal.sosfiltfilt(sos, x)


def test_ravdess_release_wavs_match_polyphase_resampling(ravdess_original_root):
    rows = _read_labels(ravdess_original_root / "labels.csv")
    assert len(rows) == 13
    assert sum(int(r["channels"]) == 2 for r in rows) == 5
    for row in rows:
        path = ravdess_original_root / row["path"]
        info = audio_info(path)
        assert (info.sample_rate, info.channels) == (int(row["sample_rate"]), int(row["channels"]))
        raw, sr = sf.read(str(path), dtype="float64", always_2d=True)
        ref = scipy.signal.resample_poly(raw.mean(axis=1), 1, 3)
        y = load_audio(path)
        assert y.dtype == np.float32 and y.ndim == 1
        assert abs(y.shape[0] - ref.shape[0]) <= 1
        n = min(y.shape[0], ref.shape[0])
        d = y[:n] - ref[:n]
        # Measured: max |d| <= 9.3e-3, relative RMS <= 0.027 (signal RMS 1.5e-3..2.1e-2); >98% of the
        # difference power lies above 7 kHz, where the two anti-alias filters' transition bands differ.
        assert np.max(np.abs(d)) < 0.02, row["path"]
        assert _rel_rms(d, ref[:n]) < 0.05, row["path"]
        # Below 7 kHz the two resamplers agree to ~1e-3 relative RMS (measured <= 9.8e-4).
        assert _rel_rms(_below_7k(d), ref[:n]) < 3e-3, row["path"]


def test_converted_ravdess_flacs_match_the_release_wavs(ravdess_original_root, ravdess_root):
    for row in _read_labels(ravdess_original_root / "labels.csv"):
        wav = ravdess_original_root / row["path"]
        flac = ravdess_root / Path(row["path"]).with_suffix(".flac")
        raw, _ = sf.read(str(wav), dtype="float64", always_2d=True)
        ref = scipy.signal.resample_poly(raw.mean(axis=1), 1, 3)
        z = load_audio(flac)  # already 16 kHz mono: decoded as is
        assert z.shape[0] == ref.shape[0]
        # The FLACs were made by polyphase resampling: equal up to 16-bit quantisation (half an LSB = 1.53e-5).
        assert np.max(np.abs(z - ref)) <= 0.5 / 32768 + 1e-7, row["path"]
        y = load_audio(wav)
        n = min(y.shape[0], z.shape[0])
        d = y[:n] - z[:n]
        assert np.max(np.abs(d)) < 0.02 and _rel_rms(d, z[:n]) < 0.05, row["path"]
        # Below 7 kHz: resampler difference (~1e-3 relative) plus the FLAC's 16-bit quantisation noise (RMS ~9e-6).
        assert np.sqrt(np.mean(_below_7k(d) ** 2)) < 3e-3 * np.sqrt(np.mean(z[:n] ** 2)) + 1.5e-5, row["path"]

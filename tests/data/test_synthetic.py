"""Synthetic emotion corpus: determinism, files and manifest, acoustics that follow the emotion profiles,
speakers that differ in pitch, and the acoustic measurements themselves on signals with known answers."""

from __future__ import annotations

import csv
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from loralens.data.synthetic import (
    LABELS,
    PROFILES,
    AcousticFeatures,
    acoustic_features,
    generate_corpus,
    make_speakers,
    scaled_profile,
    synthesize_clip,
)
from loralens.errors import ConfigError

SR = 16000


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------
# Known answers of the acoustic measurements.


def _sawtooth(f0: float, seconds: float, amp: float = 0.5, sr: int = SR) -> np.ndarray:
    """Band-limited sawtooth: harmonics k*f0 below 7.5 kHz with amplitude amp/k (a -6 dB/octave spectrum)."""
    t = np.arange(int(seconds * sr)) / sr
    ks = np.arange(1, int(7500 // f0) + 1)
    return (amp * np.sin(2 * np.pi * f0 * t[:, None] * ks[None, :]) / ks).sum(axis=1)


def test_f0_of_a_sawtooth_and_of_a_sine():
    for f0 in (90.0, 200.0, 310.0):
        feats = acoustic_features(_sawtooth(f0, 1.0))
        assert feats.f0_mean_hz == pytest.approx(f0, rel=0.01)
        assert feats.f0_sd_st < 0.05
        assert feats.voiced_fraction > 0.95
    t = np.arange(SR) / SR
    assert acoustic_features(0.3 * np.sin(2 * np.pi * 150.0 * t)).f0_mean_hz == pytest.approx(150.0, rel=0.01)


def test_f0_spread_of_a_two_note_signal():
    # Half the time at 200 Hz, half at 200 * 2^(4/12) Hz: semitone values 0 or 4, IQR = 4, robust SD = 4 / 1.349.
    x = np.concatenate([_sawtooth(200.0, 1.0), _sawtooth(200.0 * 2 ** (4 / 12), 1.0)])
    assert acoustic_features(x).f0_sd_st == pytest.approx(4 / 1.349, rel=0.05)


def test_rms_centroid_of_a_sine():
    t = np.arange(SR) / SR
    feats = acoustic_features(0.2 * np.sin(2 * np.pi * 1000.0 * t))
    assert feats.rms_dbfs == pytest.approx(20 * np.log10(0.2 / np.sqrt(2)), abs=0.1)
    assert feats.centroid_hz == pytest.approx(1000.0, rel=0.01)
    assert feats.duration_s == pytest.approx(1.0)


def test_tilt_and_alpha_ratio_of_a_sawtooth():
    feats = acoustic_features(_sawtooth(190.0, 1.0))
    # Harmonic amplitudes 1/k: power per Hz falls as f^-2, i.e. -6.02 dB per octave.
    assert feats.tilt_db_per_oct == pytest.approx(-6.02, abs=0.5)
    # Alpha ratio: sum 1/k^2 over harmonics in [1, 5) kHz (k = 6..26: 1140..4940 Hz) over [50, 1000) Hz
    # (k = 1..5: 190..950 Hz); no harmonic near a band edge, so window leakage does not matter.
    k = np.arange(1, 40)
    expected = 10 * np.log10(np.sum(1.0 / k[5:26] ** 2) / np.sum(1.0 / k[:5] ** 2))
    assert feats.alpha_ratio_db == pytest.approx(expected, abs=0.3)


def test_syllable_rate_of_a_modulated_tone():
    # 2 s of a 150 Hz sawtooth gated into 8 bursts (4 per second), silence around it.
    t = np.arange(2 * SR) / SR
    gate = np.sin(np.pi * 4 * t) ** 2  # 4 bumps per second
    x = np.concatenate([np.zeros(SR // 4), _sawtooth(150.0, 2.0) * gate, np.zeros(SR // 4)])
    assert acoustic_features(x).syllable_rate == pytest.approx(4.0, abs=0.3)


# ---------------------------------------------------------------------------------------------------------
# The corpus: files, manifest, determinism.


def test_files_manifest_and_corpus(tmp_path):
    corpus = generate_corpus(tmp_path / "syn", n_speakers=2, clips_per_class_per_speaker=2, seed=3)
    assert corpus.labels == LABELS
    assert len(corpus.clips) == 2 * 4 * 2
    assert corpus.speakers() == ["spk01", "spk02"]
    assert corpus.class_counts() == {label: 4 for label in LABELS}
    assert {c.gender for c in corpus.clips} == {"female", "male"}
    rows = list(csv.DictReader((tmp_path / "syn" / "manifest.csv").open()))
    assert list(rows[0]) == ["path", "label", "speaker", "gender"]
    assert len(rows) == len(corpus.clips)
    assert [c.id for c in corpus.clips] == sorted(c.id for c in corpus.clips)
    by_id = corpus.by_id()
    for row in rows:
        clip = by_id[row["path"].rsplit(".", 1)[0]]
        assert (tmp_path / "syn" / row["path"]).resolve() == clip.path
        assert (row["label"], row["speaker"], row["gender"]) == (clip.label, clip.speaker, clip.gender)
        info = sf.info(str(clip.path))
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert 1.5 <= info.duration <= 3.0
        assert clip.duration == pytest.approx(info.duration)
        x, _ = sf.read(str(clip.path))
        assert np.all(np.isfinite(x)) and np.max(np.abs(x)) < 0.99 and np.std(x) > 1e-3
    params = json.loads((tmp_path / "syn" / "synthetic.json").read_text())
    assert params["seed"] == 3 and len(params["speakers"]) == 2 and set(params["profiles"]) == set(LABELS)


def test_the_generic_manifest_loader_reads_it_back(tmp_path):
    from loralens.data.corpora import load_corpus

    made = generate_corpus(tmp_path, n_speakers=2, clips_per_class_per_speaker=1)
    read = load_corpus("manifest", tmp_path, ",".join(LABELS), with_durations=True)
    assert read.labels == made.labels and read.root == made.root
    key = lambda c: (c.id, c.path, c.label, c.speaker, c.gender, round(c.duration, 4))  # noqa: E731
    assert [key(c) for c in read.clips] == [key(c) for c in made.clips]


def test_same_seed_gives_byte_identical_files(tmp_path):
    kw = dict(n_speakers=2, clips_per_class_per_speaker=1)
    generate_corpus(tmp_path / "a", seed=7, **kw)
    generate_corpus(tmp_path / "b", seed=7, **kw)
    generate_corpus(tmp_path / "c", seed=8, **kw)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 8 + 2 and a == b
    audio = [k for k in a if k.endswith(".wav")]
    assert all(a[k] != c[k] for k in audio)


def test_a_clip_does_not_depend_on_how_many_others_are_made(tmp_path):
    generate_corpus(tmp_path / "small", n_speakers=1, clips_per_class_per_speaker=1, labels=("sad",))
    generate_corpus(tmp_path / "big", n_speakers=2, clips_per_class_per_speaker=2)
    rel = "spk01/spk01_sad_01.wav"
    assert (tmp_path / "small" / rel).read_bytes() == (tmp_path / "big" / rel).read_bytes()


def test_flac_output(tmp_path):
    corpus = generate_corpus(tmp_path, n_speakers=1, clips_per_class_per_speaker=1, audio_format="flac")
    clip = corpus.by_id()["spk01/spk01_neutral_01"]
    x_flac, sr = sf.read(str(clip.path))
    assert sr == SR and clip.path.suffix == ".flac"
    rng = np.random.default_rng([0, 2, 0, LABELS.index("neutral"), 0])  # the stream of that clip
    duration = round(float(rng.uniform(1.5, 3.0)), 3)
    x = synthesize_clip(make_speakers(1)[0], PROFILES["neutral"], duration, rng)
    np.testing.assert_allclose(x_flac, x, atol=1.0 / 32768)  # lossless up to 16-bit quantisation


@pytest.mark.parametrize(
    "kw",
    [
        dict(n_speakers=0),
        dict(clips_per_class_per_speaker=0),
        dict(min_duration=3.0, max_duration=2.0),
        dict(audio_format="mp3"),
        dict(labels=("angry", "bored")),
        dict(sr=4000),
        dict(separation=-0.1),
        dict(separation=2.5),
        dict(clip_sd=0.6),
    ],
)
def test_bad_arguments(tmp_path, kw):
    with pytest.raises(ConfigError):
        generate_corpus(tmp_path, **kw)


# ---------------------------------------------------------------------------------------------------------
# The corpus follows the emotion profiles (one 96-clip corpus, measured once).


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    corpus = generate_corpus(tmp_path_factory.mktemp("syn"), n_speakers=8, clips_per_class_per_speaker=3, seed=0)
    feats = np.array([acoustic_features(sf.read(str(c.path))[0], SR).as_array() for c in corpus.clips])
    names = [f.name for f in fields(AcousticFeatures)]
    labels = np.array([c.label for c in corpus.clips])
    speakers = np.array([c.speaker for c in corpus.clips])
    genders = np.array([c.gender for c in corpus.clips])
    return names, feats, labels, speakers, genders


def _class_means(measured, name: str) -> dict[str, float]:
    names, feats, labels, _, _ = measured
    col = feats[:, names.index(name)]
    return {lab: float(col[labels == lab].mean()) for lab in LABELS}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, order",
    [
        ("rms_dbfs", ["angry", "happy", "neutral", "sad"]),  # intensity
        ("syllable_rate", ["angry", "happy", "neutral", "sad"]),  # tempo
        ("centroid_hz", ["angry", "happy", "neutral", "sad"]),  # brightness
        ("alpha_ratio_db", ["angry", "happy", "neutral", "sad"]),  # spectral tilt: flat -> steep
        ("tilt_db_per_oct", ["angry", "happy", "neutral", "sad"]),
        ("f0_sd_st", ["happy", "angry", "neutral", "sad"]),  # pitch variability
    ],
)
def test_class_means_follow_the_profiles(measured, name, order):
    means = _class_means(measured, name)
    ranked = sorted(means, key=means.get, reverse=True)
    assert ranked == order, means


@pytest.mark.slow
def test_pitch_level_follows_the_profiles(measured):
    means = _class_means(measured, "f0_mean_hz")
    assert min(means["angry"], means["happy"]) > means["neutral"] * 1.15
    assert means["sad"] < means["neutral"] * 0.92


@pytest.mark.slow
def test_rates_and_levels_are_close_to_the_profile_values(measured):
    rate = _class_means(measured, "syllable_rate")
    rms = _class_means(measured, "rms_dbfs")
    for lab in LABELS:
        # measured syllable rate ~ nominal (speaker tempo factors average ~1 over 8 speakers)
        assert rate[lab] == pytest.approx(PROFILES[lab].syllable_rate, rel=0.15)
        # level relative to neutral ~ nominal (a rare loud angry clip is scaled down to avoid clipping)
        assert rms[lab] - rms["neutral"] == pytest.approx(PROFILES[lab].level_db, abs=1.5)


def test_speakers_differ_in_pitch(measured):
    names, feats, labels, speakers, genders = measured
    f0 = feats[:, names.index("f0_mean_hz")]
    neutral = labels == "neutral"
    per_speaker = {s: float(np.median(f0[neutral & (speakers == s)])) for s in np.unique(speakers)}
    values = np.sort(np.array(list(per_speaker.values())))
    assert np.min(np.diff(values)) > 3.0, per_speaker  # all 8 speakers at distinct pitches
    female = np.median(f0[genders == "female"])
    male = np.median(f0[genders == "male"])
    assert female > 1.5 * male
    nominal = {s.id: s.f0_hz for s in make_speakers(8, 0)}
    for s, measured_f0 in per_speaker.items():
        assert measured_f0 == pytest.approx(nominal[s], rel=0.15)


@pytest.mark.slow
def test_separable_by_acoustics_but_not_by_duration(measured):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names, feats, labels, speakers, _ = measured
    # Speaker-normalised features (z-score within speaker), as is usual in SER; leave-one-speaker-out CV.
    z = feats.copy()
    for s in np.unique(speakers):
        m = speakers == s
        z[m] = (feats[m] - feats[m].mean(0)) / (feats[m].std(0) + 1e-9)

    def accuracy(cols: list[str]) -> float:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        x = z[:, [names.index(c) for c in cols]]
        return float(cross_val_score(clf, x, labels, groups=speakers, cv=LeaveOneGroupOut()).mean())

    assert accuracy(["f0_mean_hz", "rms_dbfs", "syllable_rate", "alpha_ratio_db"]) > 0.85
    assert accuracy(["duration_s"]) < 0.4  # chance is 0.25: durations are drawn independently of the class
    for single in ("f0_mean_hz", "rms_dbfs", "syllable_rate", "alpha_ratio_db"):
        assert accuracy([single]) < 0.9  # no single cue gives the class away


def test_generation_of_a_small_corpus_writes_every_clip(tmp_path):
    # (this test used to assert < 0.25 s per clip of wall time, which fails on a loaded machine: tests never assert
    # on wall time. ~0.03 s per clip on one core, docs/synthetic.md.)
    generate_corpus(tmp_path, n_speakers=2, clips_per_class_per_speaker=3)
    assert len(list(tmp_path.rglob("*.wav")) + list(tmp_path.rglob("*.flac"))) == 24


def test_the_shortest_allowed_clips_are_made(tmp_path):
    # 0.3 s is allowed; lead + trail silence (up to 0.4 s) used to exceed it and the source blew up (TiB allocation)
    corpus = generate_corpus(tmp_path, n_speakers=6, clips_per_class_per_speaker=1, min_duration=0.3,
                             max_duration=0.5, seed=1)
    for clip in corpus.clips:
        audio, sr = sf.read(clip.path)
        assert 0.3 <= len(audio) / sr <= 0.5
        assert np.isfinite(audio).all() and 0.0 < np.abs(audio).max() < 1.0


def test_scaled_profile_moves_every_field_toward_neutral():
    angry, neutral = PROFILES["angry"], PROFILES["neutral"]
    assert scaled_profile(angry, 1.0) == angry  # exactly unchanged
    assert scaled_profile(angry, 0.0, clip_sd=angry.clip_sd) == neutral  # all the way: the neutral voice
    half = scaled_profile(angry, 0.5, clip_sd=0.2)
    assert half.f0_ratio == pytest.approx((1.25 + 1.00) / 2) and half.level_db == pytest.approx(3.5)
    assert half.tilt_pole == pytest.approx((0.15 + 0.55) / 2) and half.clip_sd == 0.2
    assert scaled_profile(neutral, 0.3) == neutral  # the reference does not move


def test_separation_one_keeps_the_files_and_a_harder_corpus_differs(tmp_path):
    kw = dict(n_speakers=1, clips_per_class_per_speaker=1, labels=("angry",))
    generate_corpus(tmp_path / "default", **kw)
    generate_corpus(tmp_path / "one", separation=1.0, **kw)
    generate_corpus(tmp_path / "hard", separation=0.5, clip_sd=0.15, **kw)
    rel = "spk01/spk01_angry_01.wav"
    assert _files(tmp_path / "default") == _files(tmp_path / "one")  # manifest and synthetic.json included
    assert (tmp_path / "hard" / rel).read_bytes() != (tmp_path / "default" / rel).read_bytes()
    params = json.loads((tmp_path / "hard" / "synthetic.json").read_text())
    assert params["separation"] == 0.5 and params["profiles"]["angry"]["clip_sd"] == 0.15

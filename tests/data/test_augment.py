"""Augmentation of training clips (loralens.data.augment): known answers for speed perturbation, noise at an SNR,
spectrogram masks, and the augmented dataset's determinism per (seed, epoch, clip) and its feature caching."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from loralens.data.augment import (
    AugmentedFeatureDataset,
    AugmentSettings,
    add_noise,
    clip_rng,
    spec_mask,
    speed_perturb,
)
from loralens.data.batching import FeatureDataset
from loralens.data.clips import Clip
from loralens.data.features import FeatureCache, FeatureSettings, compute_features

SR = 16000


def _tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_clip_rng_is_a_function_of_its_arguments():
    a = clip_rng(1, 2, 3).random(4)
    assert np.array_equal(a, clip_rng(1, 2, 3).random(4))
    assert not np.array_equal(a, clip_rng(1, 3, 3).random(4)) and not np.array_equal(a, clip_rng(1, 2, 4).random(4))
    assert not np.array_equal(a, clip_rng(1, 2, 3, stream=1).random(4))


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_scales_length_and_pitch(factor):
    out = speed_perturb(_tone(500.0), factor, SR)
    assert abs(len(out) - SR / factor) <= 2
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    peak_hz = np.argmax(spectrum) * SR / len(out)
    assert peak_hz == pytest.approx(500.0 * factor, abs=3.0)
    assert np.array_equal(speed_perturb(_tone(500.0), 1.0, SR), _tone(500.0))


def test_add_noise_reaches_the_requested_snr():
    x = _tone(300.0, 4.0)
    for snr in (0.0, 10.0, 25.0):
        y = add_noise(x, snr, np.random.default_rng(0))
        noise = y.astype(np.float64) - x
        measured = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(noise ** 2))
        assert measured == pytest.approx(snr, abs=0.1)
    silent = np.zeros(100, np.float32)
    assert np.array_equal(add_noise(silent, 10.0, np.random.default_rng(0)), silent)


def test_spec_mask_known_answer():
    mel = torch.arange(6 * 20, dtype=torch.float32).reshape(6, 20)
    assert torch.equal(spec_mask(mel, 15, np.random.default_rng(0), time_masks=0, time_width=5, freq_masks=0,
                                 freq_width=2), mel)
    out = spec_mask(mel, 15, np.random.default_rng(3), time_masks=2, time_width=5, freq_masks=1, freq_width=2)
    fill = float(mel[:, :15].mean())
    assert torch.equal(out[:, 15:], mel[:, 15:])  # padding frames untouched
    changed = out[:, :15] != mel[:, :15]
    assert bool((out[:, :15][changed] == fill).all())
    # the same draws by hand: time spans then a frequency band
    rng = np.random.default_rng(3)
    want = mel.clone()
    for _ in range(2):
        w = int(rng.integers(0, 6))
        t0 = int(rng.integers(0, 15 - w + 1))
        want[:, t0:t0 + w] = fill
    w = int(rng.integers(0, 3))
    f0 = int(rng.integers(0, 6 - w + 1))
    want[f0:f0 + w, :15] = fill
    assert torch.equal(out, want)


@pytest.fixture
def clips_and_cache(tmp_path):
    clips = []
    for i, (freq, secs) in enumerate([(220.0, 0.8), (440.0, 1.1), (330.0, 0.6)]):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, _tone(freq, secs), SR, subtype="FLOAT")
        clips.append(Clip(f"c{i}", path, "a" if i % 2 else "b", f"s{i}"))
    return clips, FeatureCache(tmp_path / "cache", FeatureSettings())


def test_augmented_dataset_is_deterministic_per_epoch_and_caches_speed(clips_and_cache):
    clips, cache = clips_and_cache
    base = FeatureDataset(clips, cache, ["a", "b"])
    settings = AugmentSettings(spec_time_masks=1, spec_freq_masks=1, speed=(0.9, 1.1))
    ds = AugmentedFeatureDataset(base, settings, seed=7)
    ds.set_epoch(0)
    first = [ds[i].features.mel for i in range(3)]
    again = AugmentedFeatureDataset(FeatureDataset(clips, cache, ["a", "b"]), settings, seed=7)
    again.set_epoch(0)
    assert all(torch.equal(a, again[i].features.mel) for i, a in enumerate(first))
    assert [ds[i].label for i in range(3)] == [1, 0, 1] and ds.mel_lengths() == base.mel_lengths()
    ds.set_epoch(1)
    assert any(not torch.equal(a, ds[i].features.mel) for i, a in enumerate(first))
    # speed only: the features are those of the perturbed audio, cached under its own content key
    speed = AugmentedFeatureDataset(base, AugmentSettings(speed=(1.1,)), seed=7)
    f = speed[1].features
    want = compute_features(speed_perturb(cache._load_audio(clips[1])[0], 1.1, SR), FeatureSettings())
    assert torch.equal(f.mel, want.mel) and f.n_frames == want.n_frames < base.mel_lengths()[1]
    assert cache.entry_path(f.key).exists() and f.key != cache.content_key(clips[1])
    computed = cache.computed
    assert torch.equal(speed[1].features.mel, f.mel) and cache.computed == computed  # read back, not recomputed


def test_noise_features_are_computed_on_the_fly(clips_and_cache):
    clips, cache = clips_and_cache
    ds = AugmentedFeatureDataset(FeatureDataset(clips, cache, ["a", "b"]),
                                 AugmentSettings(noise_snr_db=(5.0, 5.0), noise_prob=1.0), seed=0)
    clean = cache.get(clips[0])
    noisy = ds[0].features
    before = cache.computed
    assert noisy.n_frames == clean.n_frames and not torch.equal(noisy.mel, clean.mel)
    assert torch.equal(ds[0].features.mel, noisy.mel) and cache.computed == before  # same draw, nothing stored
    never = AugmentedFeatureDataset(FeatureDataset(clips, cache, ["a", "b"]),
                                    AugmentSettings(noise_snr_db=(5.0, 5.0), noise_prob=0.0), seed=0)
    assert torch.equal(never[0].features.mel, clean.mel)

"""Training-time augmentation: speed perturbation, additive noise, SpecAugment-style masks (per clip), mixup (per
batch). Every random choice comes from a generator seeded by (seed, epoch, clip index) or (seed, epoch, batch index),
never from a global RNG, so an epoch's augmented data are a pure function of those numbers: a run resumed in the
middle of an epoch sees exactly what the uninterrupted run saw.

Speed perturbation resamples the audio (factor f: the clip read at f times its rate, so tempo and pitch change
together, as Kaldi's `speed` perturbation); the features of each (clip, factor) are stored in the feature cache
under the content key of the perturbed samples, so they are computed once. Noise is white Gaussian noise at an SNR
drawn per clip; those features are computed on the fly (`compute_features` on the short window, a few ms a clip).
Masks are applied to the log-mel frames that see audio and filled with the clip's mean over them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from loralens.data.clips import Clip
from loralens.data.features import ClipFeatures, FeatureCache, compute_features
from loralens.errors import ConfigError


@dataclass(frozen=True)
class AugmentSettings:
    """What to do to a training clip (see `loralens.training.config.AugmentConfig` for the meaning)."""

    spec_time_masks: int = 0
    spec_time_width: int = 40
    spec_freq_masks: int = 0
    spec_freq_width: int = 10
    speed: tuple[float, ...] = ()
    noise_snr_db: tuple[float, float] | None = None
    noise_prob: float = 0.5

    @classmethod
    def from_config(cls, augment) -> AugmentSettings:
        return cls(**{f: getattr(augment, f) for f in cls.__dataclass_fields__})

    @property
    def active(self) -> bool:
        return bool(self.spec_time_masks or self.spec_freq_masks or (self.speed and set(self.speed) != {1.0})
                    or self.noise_snr_db is not None)


def clip_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of one clip (or batch) in one epoch: a pure function of its arguments."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index), int(stream)])


def speed_perturb(audio: np.ndarray, factor: float, sr: int = 16000) -> np.ndarray:
    """`audio` played `factor` times faster (length / factor samples; pitch up by the same ratio): band-limited
    resampling from `factor * sr` to `sr` Hz (soxr). factor 1 returns the samples unchanged."""
    from loralens.data.audio import resample

    if factor == 1.0:
        return np.asarray(audio, dtype=np.float32)
    return resample(audio, int(round(sr * factor)), sr)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """`audio` plus white Gaussian noise whose power is the signal's mean power / 10^(snr_db / 10). Silent audio
    is returned unchanged (an SNR is undefined)."""
    audio = np.asarray(audio, dtype=np.float32)
    power = float(np.mean(audio.astype(np.float64) ** 2))
    if power == 0.0:
        return audio.copy()
    noise = rng.standard_normal(audio.shape[0]) * np.sqrt(power / 10 ** (snr_db / 10))
    return (audio + noise).astype(np.float32)


def spec_mask(mel: torch.Tensor, n_frames: int, rng: np.random.Generator, *, time_masks: int, time_width: int,
              freq_masks: int, freq_width: int) -> torch.Tensor:
    """A copy of `mel` `[n_mels, frames]` with `time_masks` time spans (width uniform in 0..time_width mel frames,
    within the first `n_frames`) and `freq_masks` bands (width 0..freq_width bins) set to the mean of
    `mel[:, :n_frames]`. Frames past `n_frames` are left alone (they are padding)."""
    out = mel.clone()
    n_frames = max(1, min(int(n_frames), out.shape[1]))
    fill = float(out[:, :n_frames].mean())
    for _ in range(time_masks):
        w = int(rng.integers(0, min(time_width, n_frames) + 1))
        t0 = int(rng.integers(0, n_frames - w + 1))
        out[:, t0:t0 + w] = fill
    n_mels = out.shape[0]
    for _ in range(freq_masks):
        w = int(rng.integers(0, min(freq_width, n_mels) + 1))
        f0 = int(rng.integers(0, n_mels - w + 1))
        out[f0:f0 + w, :n_frames] = fill
    return out


class AugmentedFeatureDataset(Dataset):
    """The training split's `FeatureDataset` with augmentation: item i of epoch e is the `FeatureItem` of clip i,
    speed-perturbed, noised and masked as drawn by `clip_rng(seed, e, i)`. Call `set_epoch(e)` before each epoch
    (the loop does, before it creates the epoch's DataLoader, so workers see the right epoch).

    base: a `loralens.data.batching.FeatureDataset` (its clips, cache and labels). `mel_lengths()` are those of
    the unperturbed clips (used only to group batches by length)."""

    def __init__(self, base, settings: AugmentSettings, seed: int) -> None:
        self.base = base
        self.settings = settings
        self.seed = int(seed)
        self.epoch = 0
        self._speed_keys: dict[tuple[int, float], str] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def mel_lengths(self) -> list[int]:
        return self.base.mel_lengths()

    @property
    def clips(self) -> list[Clip]:
        return self.base.clips

    def _audio(self, clip: Clip, cache: FeatureCache) -> np.ndarray:
        return cache._load_audio(clip)[0]

    def features(self, i: int, epoch: int) -> ClipFeatures:
        """The augmented features of clip `i` in `epoch`."""
        s = self.settings
        clip = self.base.clips[i]
        cache: FeatureCache = self.base.cache
        sr = cache.settings.sampling_rate
        rng = clip_rng(self.seed, epoch, zlib.crc32(clip.id.encode()), 0)
        factor = float(s.speed[int(rng.integers(len(s.speed)))]) if s.speed else 1.0
        noisy = s.noise_snr_db is not None and rng.random() < s.noise_prob
        snr = float(rng.uniform(*s.noise_snr_db)) if noisy else None
        if snr is not None:
            audio = speed_perturb(self._audio(clip, cache), factor, sr)
            feats = compute_features(add_noise(audio, snr, rng), cache.settings, cache._get_extractor(),
                                     where=f"{clip.path} (noise {snr:.1f} dB, speed {factor:g})")
        elif factor != 1.0:
            key = self._speed_keys.get((i, factor))
            feats = _lookup_by_key(cache, key) if key is not None else None
            if feats is None:
                audio = speed_perturb(self._audio(clip, cache), factor, sr)
                feats = cache.get(audio)
                self._speed_keys[(i, factor)] = feats.key
        else:
            feats = cache.get(clip)
        if s.spec_time_masks or s.spec_freq_masks:
            mel = spec_mask(feats.mel, feats.n_frames, rng, time_masks=s.spec_time_masks, time_width=s.spec_time_width,
                            freq_masks=s.spec_freq_masks, freq_width=s.spec_freq_width)
            feats = replace(feats, mel=mel)
        return feats

    def __getitem__(self, i: int):
        from loralens.data.batching import FeatureItem

        label = None if self.base._label_index is None else self.base._label_index[i]
        return FeatureItem(id=self.base.clips[i].id, features=self.features(i, self.epoch), label=label)


def _lookup_by_key(cache: FeatureCache, key: str) -> ClipFeatures | None:
    try:
        return cache._read(cache.entry_path(key), key)
    except Exception:  # noqa: BLE001 - a broken entry is recomputed by the caller
        return None


def mixup_batch(features: torch.Tensor, mel_lengths: torch.Tensor, labels: torch.Tensor, alpha: float,
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup within a batch: (features lam*x + (1-lam)*x[perm], mel_lengths max(len, len[perm]), labels, labels[perm],
    lam) with lam ~ Beta(alpha, alpha) and perm a permutation, both from `rng`. The loss of a clip is then
    lam * CE(y) + (1 - lam) * CE(y[perm])."""
    if alpha <= 0:
        raise ConfigError(f"mixup alpha={alpha} must be > 0")
    lam = float(rng.beta(alpha, alpha))
    perm = torch.as_tensor(rng.permutation(features.shape[0]), device=features.device)
    mixed = lam * features + (1.0 - lam) * features[perm]
    return mixed, torch.maximum(mel_lengths, mel_lengths[perm]), labels, labels[perm], lam


__all__ = ["AugmentSettings", "AugmentedFeatureDataset", "add_noise", "clip_rng", "mixup_batch", "spec_mask",
           "speed_perturb"]

"""Whisper log-mel features of clips, computed once and cached on disk.

Exactness contract (docs/architecture.md, docs/features.md): the features of a clip are exactly what
`WhisperFeatureExtractor(feature_size=n_mels)(audio, sampling_rate=16000, return_tensors="pt")` gives on
the clip (the extractor pads it to 30 s = 3000 frames). The cache keeps only the prefix of frames that can
see audio plus the clip's padding value: every frame past the audio holds that one value (silence maps to
the floor `max(log_spec, log_spec.max() - 8)`, then `(x + 4) / 4`), so `ClipFeatures.full()` rebuilds the
extractor output bit for bit and `ClipFeatures.window(T)` is its prefix.

Layout: `<root>/<settings-key>/<k[:2]>/<k>.safetensors` with `k` the sha256 of the audio file's bytes
(or of the float32 samples for in-memory audio), `settings-key` a hash of the feature settings, the
transformers and torch versions and the audio loader id. `<root>/<settings-key>/settings.json` says what
the key stands for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loralens.data.clips import Clip
from loralens.errors import ConfigError, LoralensError
from loralens.io import atomic_write_json, atomic_write_with

log = logging.getLogger(__name__)

#: Bumped when the layout or the meaning of a cache entry changes; part of the settings key.
CACHE_FORMAT = "loralens-features-1"
#: Names `loralens.data.audio.load_audio` (decode, down-mix, soxr resampling) in the settings key; bump it
#: when that function changes what it returns. `default_loader_id()` adds the soxr version and quality.
DEFAULT_LOADER_ID = "loralens.data.audio.load_audio/1"

AudioSource = Clip | str | os.PathLike | np.ndarray


class FeatureCacheError(LoralensError):
    """The features of a clip break the exactness contract (padding frames are not one constant)."""


@dataclass(frozen=True)
class FeatureSettings:
    """What determines a clip's features: the `WhisperFeatureExtractor` settings.

    n_mels: mel bins (80 for Whisper up to large-v2, 128 for large-v3). sampling_rate: Hz.
    hop_length, n_fft: STFT hop and window in samples. chunk_length: seconds every clip is padded to.
    """

    n_mels: int = 80
    sampling_rate: int = 16000
    hop_length: int = 160
    n_fft: int = 400
    chunk_length: int = 30

    def __post_init__(self) -> None:
        for name in ("n_mels", "sampling_rate", "hop_length", "n_fft", "chunk_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"feature settings: {name}={value!r} is not a positive integer")

    @classmethod
    def from_n_mels(cls, n_mels: int) -> FeatureSettings:
        """Whisper's defaults with `n_mels` bins."""
        return cls(n_mels=int(n_mels))

    @classmethod
    def from_extractor(cls, extractor: Any) -> FeatureSettings:
        """The settings of a `WhisperFeatureExtractor` (e.g. from `load_feature_extractor(model)`).

        Raises ConfigError for extractors whose output is not a deterministic function of the audio
        (dither) or whose padding is not silence; neither is used by any Whisper release.
        """
        dither = float(getattr(extractor, "dither", 0.0))
        if dither != 0.0:
            raise ConfigError(
                f"feature extractor has dither={dither}: its features are random and cannot be cached",
                "set dither=0.0 (the Whisper default)",
            )
        padding_value = float(getattr(extractor, "padding_value", 0.0))
        if padding_value != 0.0:
            raise ConfigError(
                f"feature extractor pads audio with {padding_value}, not silence",
                "use padding_value=0.0 (the Whisper default)",
            )
        return cls(
            n_mels=int(extractor.feature_size),
            sampling_rate=int(extractor.sampling_rate),
            hop_length=int(extractor.hop_length),
            n_fft=int(extractor.n_fft),
            chunk_length=int(extractor.chunk_length),
        )

    @property
    def max_samples(self) -> int:
        """Samples in one window (480,000 for 30 s at 16 kHz); longer clips are cut to this."""
        return self.chunk_length * self.sampling_rate

    @property
    def max_frames(self) -> int:
        """Mel frames of one window (3000): what `full` pads to."""
        return self.max_samples // self.hop_length

    def extractor(self) -> Any:
        """A `WhisperFeatureExtractor` with these settings."""
        from transformers import WhisperFeatureExtractor

        return WhisperFeatureExtractor(
            feature_size=self.n_mels,
            sampling_rate=self.sampling_rate,
            hop_length=self.hop_length,
            n_fft=self.n_fft,
            chunk_length=self.chunk_length,
        )

    def valid_frames(self, n_samples: int) -> int:
        """Valid mel frames of a clip of `n_samples` samples: ceil(min(n, max_samples) / hop_length).

        Frame t is centred on sample t * hop_length; it is valid when that sample is audio. This is the
        extractor's own `attention_mask` (`mask[:, ::hop_length]`), at most `max_frames`.
        """
        n = min(int(n_samples), self.max_samples)
        return min(-(-n // self.hop_length), self.max_frames)

    def covered_frames(self, n_samples: int) -> int:
        """Frames whose STFT window (n_fft samples centred on t * hop_length) holds at least one sample of audio.

        Frames from here on see only padding, so they all hold the clip's padding value.
        """
        n = min(int(n_samples), self.max_samples)
        return min(-(-(n + self.n_fft // 2) // self.hop_length), self.max_frames)

    def key_material(self, loader_id: str) -> dict[str, Any]:
        """Everything the cached values depend on, as JSON-able data (what `settings.json` holds)."""
        import transformers

        return {
            "format": CACHE_FORMAT,
            "extractor": "transformers.WhisperFeatureExtractor",
            "settings": asdict(self),
            "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0],
            "loader": loader_id,
        }

    def key(self, loader_id: str) -> str:
        """Short hash (16 hex digits) of `key_material`: the name of the settings folder in the cache."""
        text = json.dumps(self.key_material(loader_id), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class ClipFeatures:
    """The cached features of one clip.

    mel: `[n_mels, stored_frames]` float32, the first frames of the extractor output; stored_frames is
        `covered_frames(n_samples)` (the frames that see audio, 1-2 more than n_frames), at most 3000.
    n_frames: valid mel frames, `ceil(min(n_samples, 480000) / 160)` (see `FeatureSettings.valid_frames`).
    pad_value: the value of every frame past `stored_frames` in the extractor output.
    n_samples: samples of the audio as loaded (before any cut to 30 s). truncated: the audio was cut.
    key: the content key (sha256) the entry is stored under.
    """

    mel: torch.Tensor
    n_frames: int
    pad_value: float
    n_samples: int
    truncated: bool = False
    key: str = ""

    @property
    def n_mels(self) -> int:
        return int(self.mel.shape[0])

    @property
    def stored_frames(self) -> int:
        return int(self.mel.shape[1])

    def window(self, frames: int) -> torch.Tensor:
        """The first `frames` frames of the extractor output, `[n_mels, frames]` float32 (pads or cuts;
        a view of `mel` when `frames <= stored_frames`)."""
        if frames <= self.stored_frames:
            return self.mel[:, :frames]
        out = self.mel.new_full((self.n_mels, frames), self.pad_value)
        out[:, : self.stored_frames] = self.mel
        return out

    def full(self, max_frames: int = 3000) -> torch.Tensor:
        """The extractor output, `[n_mels, max_frames]` float32: equal bit for bit to `input_features[0]`."""
        return self.window(max_frames)


def _as_mono_float32(audio: np.ndarray, where: str) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ConfigError(f"{where}: audio has shape {audio.shape}, expected mono samples [samples]")
    if audio.size == 0:
        raise ConfigError(f"{where}: audio is empty")
    return np.ascontiguousarray(audio, dtype=np.float32)


def prefix_samples(settings: FeatureSettings, n_samples: int) -> int:
    """Samples of the shortened window that `compute_features` hands the extractor for a clip of `n_samples`.

    The kept frames (`covered_frames`) reach at most `n_fft // 2` samples past the audio; the window adds two
    hops and a whole `n_fft` of silence after that, so (a) every kept frame sees exactly the samples it sees
    in the 30-s window, (b) the STFT's reflect padding at the window's end mirrors only silence, as it does
    at 30 s, and (c) at least one frame sees only silence, as in the 30-s window of any clip shorter than it.
    Rounded up to a whole hop; at most `max_samples` (then it is the 30-s window itself).
    """
    covered = settings.covered_frames(n_samples)
    want = (covered + 2) * settings.hop_length + settings.n_fft
    want = -(-want // settings.hop_length) * settings.hop_length
    return min(settings.max_samples, want)


def compute_features(
    audio: np.ndarray, settings: FeatureSettings, extractor: Any = None, where: str = "audio"
) -> ClipFeatures:
    """Run the Whisper feature extractor on one clip and keep the frames that see audio.

    audio: `[samples]` float32 mono at `settings.sampling_rate`. Clips longer than `chunk_length` seconds are
    cut to it (as the extractor does), with a warning; `truncated` records it. Raises FeatureCacheError when
    the frames past the audio are not one constant (the contract the cache rests on).

    The extractor runs on the clip padded with silence to `prefix_samples` samples instead of 30 s (about 8x
    less work for a 4-s clip). The kept frames are the same: each frame's STFT sees the same samples, and the
    extractor's per-clip floor `max(log_spec, log_spec.max() - 8)` takes its maximum over frames that are
    either kept or see only silence (log-mel -10, the smallest value the extractor can produce) in both
    windows, so the maximum is the same (docs/features.md; tested against the 30-s window on every RAVDESS
    clip, silence, clipped audio and clips of 0.1, 29.9 and 30 s).
    """
    audio = _as_mono_float32(audio, where)
    extractor = extractor if extractor is not None else settings.extractor()
    n_samples = int(audio.shape[0])
    truncated = n_samples > settings.max_samples
    if truncated:
        warnings.warn(
            f"{where}: {n_samples / settings.sampling_rate:.2f} s is longer than the {settings.chunk_length} s "
            f"Whisper window; only the first {settings.chunk_length} s are used",
            stacklevel=2,
        )
    length = prefix_samples(settings, n_samples)
    out = extractor(audio, sampling_rate=settings.sampling_rate, return_tensors="pt", padding="max_length",
                    max_length=length, truncation=True)["input_features"][0]
    frames = length // settings.hop_length
    if out.shape != (settings.n_mels, frames) or out.dtype != torch.float32:
        raise FeatureCacheError(
            f"{where}: the feature extractor gave {tuple(out.shape)} {out.dtype}, "
            f"expected ({settings.n_mels}, {frames}) float32"
        )
    stored = settings.covered_frames(n_samples)
    if stored < frames:
        pad_value = float(out[0, -1])
        tail = out[:, stored:]
        if not bool((tail == tail[0, -1]).all()):
            raise FeatureCacheError(
                f"{where}: frames {stored}..{frames} past the audio are not one constant",
                "the installed transformers computes features differently; report this with its version",
            )
    else:
        # No frame sees only padding, so no extractor output ever shows this value; it is the padding
        # the extractor would use, max(log_max - 8, -10) rescaled, i.e. max(max - 2, -1.5).
        pad_value = float(max(float(out.max()) - 2.0, -1.5))
    return ClipFeatures(
        mel=out[:, :stored].contiguous().clone(),
        n_frames=settings.valid_frames(n_samples),
        pad_value=pad_value,
        n_samples=n_samples,
        truncated=truncated,
    )


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def array_sha256(audio: np.ndarray) -> str:
    """Content key of in-memory audio: sha256 over a tag and the float32 samples."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    h = hashlib.sha256(b"loralens-array-float32:")
    h.update(audio.tobytes())
    return h.hexdigest()


def _tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def default_loader_id() -> str:
    """Id of the default audio loader: `DEFAULT_LOADER_ID`, soxr version and resampling quality."""
    import soxr

    from loralens.data.audio import RESAMPLE_QUALITY

    return f"{DEFAULT_LOADER_ID} soxr-{soxr.__version__} {RESAMPLE_QUALITY}"


def _default_loader(path: Path, sr: int) -> np.ndarray:
    from loralens.data.audio import load_audio

    return load_audio(path, sr=sr)


@dataclass
class FeatureCache:
    """Features of clips on disk under `root`, one safetensors file per clip, keyed by file content.

    root: cache folder (shared by all runs). settings: the feature settings.
    loader: `(path, sr) -> [samples] float32`, default `loralens.data.audio.load_audio`; loader_id names
    it in the settings key (required with a custom loader; default `default_loader_id()`).
    computed: features computed by this object (not counting cache hits); recovered: broken entries found and
    recomputed.
    """

    root: Path
    settings: FeatureSettings = field(default_factory=FeatureSettings)
    loader: Callable[[Path, int], np.ndarray] | None = None
    loader_id: str | None = None
    computed: int = 0
    recovered: int = 0

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.loader_id is None:
            if self.loader is not None:
                raise ConfigError(
                    "FeatureCache: a custom audio loader needs a loader_id",
                    "name the loader (and its version) in loader_id, so its features get their own cache folder",
                )
            self.loader_id = default_loader_id()
        self._extractor: Any = None
        self._settings_key = self.settings.key(self.loader_id)
        # (path, size, mtime_ns, inode) -> sha256, for this process only: a file changed between two calls
        # gets a new stat and so is hashed again; nothing stale survives the process.
        self._hash_memo: dict[tuple[str, int, int, int], str] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_extractor"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        """`<root>/<settings-key>`: where the entries of these settings live."""
        return self.root / self._settings_key

    @property
    def settings_key(self) -> str:
        return self._settings_key

    def entry_path(self, key: str) -> Path:
        """Where the entry with content key `key` (64 hex digits) is stored."""
        return self.folder / key[:2] / f"{key}.safetensors"

    def content_key(self, source: AudioSource) -> str:
        """sha256 of the audio file's bytes (or of in-memory float32 samples)."""
        if isinstance(source, np.ndarray):
            return array_sha256(source)
        path = Path(source.path if isinstance(source, Clip) else source)
        try:
            st = path.stat()
        except OSError as e:
            from loralens.errors import AudioError

            raise AudioError(str(path), f"cannot read file ({e.strerror})", "check the corpus folder") from None
        memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        key = self._hash_memo.get(memo_key)
        if key is None:
            key = file_sha256(path)
            self._hash_memo[memo_key] = key
        return key

    def _get_extractor(self) -> Any:
        if self._extractor is None:
            self._extractor = self.settings.extractor()
        return self._extractor

    def _load_audio(self, source: AudioSource) -> tuple[np.ndarray, str]:
        if isinstance(source, np.ndarray):
            return source, "audio array"
        path = Path(source.path if isinstance(source, Clip) else source)
        loader = self.loader if self.loader is not None else _default_loader
        return loader(path, self.settings.sampling_rate), str(path)

    def _read(self, path: Path, key: str) -> ClipFeatures | None:
        """The entry at `path`, or None when it is missing; raises on a broken one."""
        from safetensors import safe_open

        if not path.exists():
            return None
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            mel = f.get_tensor("mel")
            pad = f.get_tensor("pad_value")
        problems = []
        if meta.get("format") != CACHE_FORMAT:
            problems.append(f"format {meta.get('format')!r}")
        if meta.get("settings_key") != self._settings_key:
            problems.append("settings key")
        if meta.get("content_sha256") != key:
            problems.append("content key")
        n_samples = int(meta.get("n_samples", -1))
        expected_frames = self.settings.covered_frames(n_samples) if n_samples > 0 else -1
        if mel.dtype != torch.float32 or tuple(mel.shape) != (self.settings.n_mels, expected_frames):
            problems.append(f"mel {tuple(mel.shape)} {mel.dtype}")
        elif meta.get("mel_sha256") != _tensor_sha256(mel):
            problems.append("mel checksum")
        if pad.dtype != torch.float32 or pad.numel() != 1:
            problems.append("pad_value")
        if problems:
            raise ValueError(", ".join(problems))
        return ClipFeatures(
            mel=mel,
            n_frames=int(meta["n_frames"]),
            pad_value=float(pad.reshape(())),
            n_samples=n_samples,
            truncated=meta.get("truncated") == "1",
            key=key,
        )

    def _write(self, path: Path, feats: ClipFeatures, key: str) -> None:
        from safetensors.torch import save_file

        tensors = {
            "mel": feats.mel.contiguous(),
            "pad_value": torch.tensor([feats.pad_value], dtype=torch.float32),
        }
        meta = {
            "format": CACHE_FORMAT,
            "settings_key": self._settings_key,
            "content_sha256": key,
            "n_samples": str(feats.n_samples),
            "n_frames": str(feats.n_frames),
            "truncated": "1" if feats.truncated else "0",
            "mel_sha256": _tensor_sha256(feats.mel),
        }
        if not (self.folder / "settings.json").exists():
            atomic_write_json(self.folder / "settings.json", self.settings.key_material(self.loader_id))
        # Each writer renames its own complete temporary file into place, so two processes writing the
        # same entry leave one of two identical complete files, and readers never see a partial one.
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    def lookup(self, source: AudioSource) -> ClipFeatures | None:
        """The cached features of `source`, or None when not cached (or the entry is broken)."""
        key = self.content_key(source)
        try:
            return self._read(self.entry_path(key), key)
        except _broken_entry_errors() as e:
            log.debug("unusable cache entry %s: %s", self.entry_path(key), e)
            return None

    def get(self, source: AudioSource) -> ClipFeatures:
        """Features of a clip (a `Clip`, an audio file path or `[samples]` float32 audio at the settings' rate).

        Read from the cache when present and intact, otherwise computed, stored and returned. A broken
        entry (truncated, corrupted, another format) is logged, counted in `recovered` and recomputed.
        """
        key = self.content_key(source)
        path = self.entry_path(key)
        try:
            feats = self._read(path, key)
        except _broken_entry_errors() as e:
            log.warning("cache entry %s is broken (%s); recomputing it", path, e)
            with self._lock:
                self.recovered += 1
            feats = None
        if feats is not None:
            return feats
        audio, where = self._load_audio(source)
        with self._lock:
            extractor = self._get_extractor()
        feats = compute_features(audio, self.settings, extractor, where=where)
        feats.key = key
        self._write(path, feats, key)
        with self._lock:
            self.computed += 1
        return feats

    def prefetch(self, sources: Iterable[AudioSource], progress: bool = True) -> int:
        """Make sure every clip of `sources` is cached; returns how many were computed now."""
        from tqdm.auto import tqdm

        sources = list(sources)
        before = self.computed
        for source in tqdm(sources, desc="features", unit="clip", disable=not progress):
            self.get(source)
        return self.computed - before


def _broken_entry_errors() -> tuple[type[Exception], ...]:
    # safetensors raises its own error for bad headers and OSError/ValueError for short files; _read raises
    # ValueError for failed checks, KeyError for missing tensors or fields. Each means: rebuild the entry.
    from safetensors import SafetensorError

    return (SafetensorError, OSError, ValueError, KeyError, RuntimeError)


__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_LOADER_ID",
    "ClipFeatures",
    "FeatureCache",
    "FeatureCacheError",
    "FeatureSettings",
    "array_sha256",
    "compute_features",
    "default_loader_id",
    "file_sha256",
    "prefix_samples",
]

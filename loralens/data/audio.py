"""Audio decoding for the models: any file libsndfile reads → mono float32 at 16 kHz, with bad-audio checks.

Every check raises `AudioError(path, reason, hint)`; nothing is dropped silently. `screen_clips` applies the
checks to a whole corpus under the user's policy: stop at the first bad file, or skip and list the bad ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from loralens.data.clips import Clip
from loralens.errors import AudioError
from loralens.io import atomic_write_json

TARGET_SR = 16000
"""Whisper's sample rate (Hz)."""

MIN_SECONDS = 0.1
"""Clips shorter than this (seconds) are rejected: below one Whisper encoder frame pair they carry no content."""

MAX_SECONDS = 600.0
"""Default upper limit (seconds): anything longer is most likely a whole session, not an utterance."""

SILENCE_PEAK = 1e-4
"""A clip whose peak |sample| after down-mixing is below this (−80 dBFS, ~3 LSB of 16-bit audio) is silent."""

RESAMPLE_QUALITY = "HQ"
"""soxr quality recipe: band-limited (passband to ~95% of the output Nyquist), 20-bit precision."""

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
"""File name endings corpus parsers treat as audio (all decoded by libsndfile)."""

OnBad = Literal["stop", "skip"]


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file, read without decoding. duration in seconds."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    duration: float
    format: str
    subtype: str


@dataclass(frozen=True)
class BadFile:
    """An audio file that failed a check: the clip id (or the path when there is no clip), why, what to do."""

    id: str
    path: str
    reason: str
    hint: str | None = None


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Sample rate, channels, frames and duration (s) of an audio file from its header only (cheap)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(str(path), "file not found", "check the corpus root and that the copy is complete")
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as e:
        raise AudioError(str(path), f"cannot read the audio header ({_short(e)})", _UNREADABLE_HINT) from None
    frames = int(info.frames)
    sr = int(info.samplerate)
    duration = frames / sr if sr > 0 else 0.0
    return AudioInfo(path, sr, int(info.channels), frames, duration, str(info.format), str(info.subtype))


def decode_checked(path: str | os.PathLike[str], *, max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, int]:
    """Decode `path`, mix to mono (mean of channels) and run every bad-audio check; no resampling.

    Returns (samples float32 [samples], sample_rate in Hz). Raises `AudioError` for an unreadable or empty
    file, non-finite samples, a clip shorter than `MIN_SECONDS` or longer than `max_seconds`, or silence
    (peak below `SILENCE_PEAK`).
    """
    info = audio_info(path)
    path = info.path
    if info.frames <= 0 or info.sample_rate <= 0:
        raise AudioError(str(path), "file contains no audio samples (zero length)", _REPLACE_HINT)
    # The length limit comes from the header so that an hours-long file is refused before it is decoded.
    if info.duration > max_seconds:
        raise AudioError(
            str(path),
            f"{info.duration:.1f} s long, longer than the limit of {max_seconds:g} s",
            "cut it into utterances, or leave it out with --on-bad-audio skip (train, run; on_bad_audio: skip in YAML)",
        )
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as e:
        raise AudioError(str(path), f"cannot decode the audio ({_short(e)})", _UNREADABLE_HINT) from None
    if data.shape[0] == 0:
        raise AudioError(str(path), "file contains no audio samples (zero length)", _REPLACE_HINT)
    finite = np.isfinite(data)
    if not finite.all():
        n_bad = int((~finite).sum())
        first = int(np.argwhere(~finite)[0][0])
        raise AudioError(
            str(path),
            f"{n_bad} non-finite (NaN/Inf) samples, the first at sample {first} ({first / sr:.3f} s)",
            _REPLACE_HINT,
        )
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    seconds = mono.shape[0] / sr
    if seconds < MIN_SECONDS:
        raise AudioError(
            str(path),
            f"only {seconds:.3f} s long ({mono.shape[0]} samples at {sr} Hz), shorter than the minimum {MIN_SECONDS} s",
            "remove the file from the corpus, or leave bad files out with --on-bad-audio skip",
        )
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        raise AudioError(
            str(path),
            f"silent: peak |sample| {peak:.2e} is below the silence threshold {SILENCE_PEAK:g} (−80 dBFS)",
            "the recording is empty or was muted; replace it, or leave bad files out with --on-bad-audio skip",
        )
    return np.ascontiguousarray(mono, dtype=np.float32), int(sr)


def resample(samples: np.ndarray, orig_sr: int, sr: int = TARGET_SR) -> np.ndarray:
    """Band-limited resampling of mono `samples` [samples] from `orig_sr` to `sr` Hz with soxr ('HQ'); float32."""
    if orig_sr == sr:
        return np.asarray(samples, dtype=np.float32)
    out = soxr.resample(np.asarray(samples, dtype=np.float32), orig_sr, sr, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(out, dtype=np.float32)


def load_audio(path: str | os.PathLike[str], sr: int = TARGET_SR, *, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Decode any libsndfile format (WAV, FLAC, OGG, ...) to mono float32 [samples] at `sr` Hz (default 16 kHz).

    Channels are averaged; resampling is band-limited (soxr 'HQ'). Raises `AudioError` for bad audio
    (see `decode_checked`).
    """
    mono, orig_sr = decode_checked(path, max_seconds=max_seconds)
    return resample(mono, orig_sr, sr)


def screen_clips(
    clips: Iterable[Clip],
    on_bad: OnBad = "stop",
    *,
    max_seconds: float = MAX_SECONDS,
    bad_list_path: str | os.PathLike[str] | None = None,
    progress: Callable[[Iterable[Clip]], Iterable[Clip]] | None = None,
) -> tuple[list[Clip], list[BadFile]]:
    """Decode every clip and run the bad-audio checks, under the user's policy.

    on_bad="stop" (default): raise the first `AudioError`. on_bad="skip": keep going and return the bad files.
    Returns (good clips with `duration` set in seconds, bad files). When `bad_list_path` is given the bad
    list is written there as JSON (also when it is empty, so a run records that it screened its data).
    `progress` optionally wraps the iteration (e.g. tqdm).
    """
    if on_bad not in ("stop", "skip"):
        raise ValueError(f"on_bad must be 'stop' or 'skip', not {on_bad!r}")
    clips = list(clips)
    good: list[Clip] = []
    bad: list[BadFile] = []
    for clip in progress(clips) if progress is not None else clips:
        try:
            mono, sr = decode_checked(clip.path, max_seconds=max_seconds)
        except AudioError as e:
            if on_bad == "stop":
                raise AudioError(
                    e.path,
                    f"{e.reason} (clip {clip.id})",
                    e.hint or "leave bad files out (listed in bad_files.json) with --on-bad-audio skip",
                ) from None
            bad.append(BadFile(clip.id, e.path, e.reason, e.hint))
            continue
        good.append(clip.with_duration(mono.shape[0] / sr))
    if bad_list_path is not None:
        write_bad_files(bad, bad_list_path)
    return good, bad


def write_bad_files(bad: list[BadFile], path: str | os.PathLike[str]) -> None:
    """Write the bad-file list as JSON `{"count": n, "files": [{id, path, reason, hint}, ...]}` atomically."""
    atomic_write_json(path, {"count": len(bad), "files": bad})


def is_audio_file(path: Path) -> bool:
    """True for a visible file whose name ends in one of `AUDIO_EXTENSIONS` (macOS `._*` forks excluded)."""
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


_UNREADABLE_HINT = ("the file is damaged or not an audio format libsndfile reads (WAV, FLAC, OGG); "
                    "re-download or convert it")
_REPLACE_HINT = ("the file is damaged; re-download it or remove it from the corpus, or leave bad files out with "
                 "--on-bad-audio skip")

__all__ = [
    "AUDIO_EXTENSIONS",
    "MAX_SECONDS",
    "MIN_SECONDS",
    "SILENCE_PEAK",
    "TARGET_SR",
    "AudioInfo",
    "BadFile",
    "audio_info",
    "decode_checked",
    "is_audio_file",
    "load_audio",
    "resample",
    "screen_clips",
    "write_bad_files",
]

"""Helpers for building faithful miniature corpus layouts: the official file names, tiny audio content."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import loralens.data

HASHES = Path(loralens.data.__file__).resolve().parent / "hashes"


def _names(list_name: str) -> list[str]:
    path = HASHES / list_name
    if not path.is_file():
        pytest.skip(f"reference hash list {path} not found")
    return [line.split("\t")[0] for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def cremad_audio_wav(tmp_path_factory) -> Path:
    """An AudioWAV/ folder with all 7442 CREMA-D release names (tiny audio), built once per session."""
    folder = tmp_path_factory.mktemp("cremad") / "AudioWAV"
    folder.mkdir()
    data = tiny_wav_bytes()
    for name in _names("crema-d_AudioWAV.sha256.tsv"):
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def reference_names() -> Callable[[str], list[str]]:
    """names(list_name): relative paths of the release files from a packaged reference hash list (first column)."""

    return _names


def tiny_wav_bytes(seconds: float = 0.25, sr: int = 16000, freq: float = 220.0) -> bytes:
    """A short 16-bit mono sine WAV file, as bytes."""
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture
def build_layout() -> Callable[[Path, Iterable[str]], list[Path]]:
    """build(root, relative_paths) writes the same tiny WAV at every path (folders created); returns the paths."""
    data = tiny_wav_bytes()

    def build(root: Path, rel_paths: Iterable[str]) -> list[Path]:
        out = []
        for rel in rel_paths:
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            out.append(p)
        return out

    return build

"""A clip is one labelled utterance; a corpus is the clips of one data set with its label names."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class Clip:
    """One utterance.

    id: unique within its corpus, stable across machines (a path relative to the corpus root, no extension).
    path: absolute path of the audio file. label: class name (one of the corpus' `labels`).
    speaker: speaker id, unique within the corpus. session: recording session where the corpus has one.
    gender: "female", "male" or None. duration: seconds, when known.
    """

    id: str
    path: Path
    label: str
    speaker: str
    session: str | None = None
    gender: str | None = None
    duration: float | None = None

    def with_duration(self, seconds: float) -> Clip:
        return replace(self, duration=float(seconds))


@dataclass
class Corpus:
    """The clips of one corpus under one label set; class index = position of the label in `labels`."""

    name: str
    root: Path
    labels: tuple[str, ...]
    clips: list[Clip] = field(default_factory=list)

    def label_index(self, label: str) -> int:
        return self.labels.index(label)

    def by_id(self) -> dict[str, Clip]:
        return {c.id: c for c in self.clips}

    def speakers(self) -> list[str]:
        return sorted({c.speaker for c in self.clips})

    def class_counts(self) -> dict[str, int]:
        counts = Counter(c.label for c in self.clips)
        return {label: counts.get(label, 0) for label in self.labels}

"""What every corpus parser shares: label sets, the parser record, root checks and audio-file listing.

Parsers return clips labelled with the corpus' full emotion vocabulary (the "raw" label, in the shared
vocabulary below); a `LabelSet` then selects and merges classes and fixes the class order.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from loralens.data.audio import AUDIO_EXTENSIONS, is_audio_file
from loralens.data.clips import Clip
from loralens.errors import CorpusError

# One vocabulary across corpora, so that e.g. the 4-class set is the same four names everywhere.
NEUTRAL, CALM, HAPPY, SAD, ANGRY, FEARFUL, DISGUST, SURPRISED = (
    "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised",
)  # fmt: skip
FOUR_CLASS = (NEUTRAL, HAPPY, SAD, ANGRY)


class CorpusWarning(UserWarning):
    """Something in a corpus folder was left out on purpose (e.g. RAVDESS song files next to speech)."""


@dataclass(frozen=True)
class LabelSet:
    """Class names in class-index order, and which raw labels map to each; raw labels not mapped are dropped."""

    name: str
    labels: tuple[str, ...]
    mapping: Mapping[str, str]
    description: str = ""

    @classmethod
    def identity(cls, name: str, labels: Iterable[str], description: str = "") -> LabelSet:
        labels = tuple(labels)
        return cls(name, labels, {label: label for label in labels}, description)

    def map(self, raw: str) -> str | None:
        return self.mapping.get(raw)


@dataclass(frozen=True)
class CorpusSpec:
    """A registered corpus: its parser `parse(root) -> list[Clip]` (raw labels) and label sets."""

    name: str
    description: str
    layout: str
    raw_labels: tuple[str, ...]
    label_sets: Mapping[str, LabelSet]
    default_label_set: str
    parse: Callable[[Path], list[Clip]] = field(repr=False, compare=False)


def require_dir(root: str | Path, corpus: str, expected: str) -> Path:
    """`root` as an absolute Path, or CorpusError when it is not a folder."""
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise CorpusError(
            f"{corpus}: corpus root {path} {what}",
            f"pass the folder that holds {expected}",
        )
    # abspath, not resolve: a symlinked corpus folder keeps its own name and neighbours (e.g. demographics).
    return Path(os.path.abspath(path))


def audio_files(folder: Path) -> list[Path]:
    """Audio files (see `AUDIO_EXTENSIONS`) directly in `folder`, sorted by name; hidden files excluded."""
    return sorted(p for p in folder.iterdir() if is_audio_file(p))


def clip_id(root: Path, path: Path) -> str:
    """A clip id: the POSIX path of `path` relative to `root`, without extension."""
    return path.relative_to(root).with_suffix("").as_posix()


def check_unique_ids(clips: list[Clip], corpus: str) -> None:
    """CorpusError when two files share an id (e.g. the same utterance as both .wav and .flac)."""
    seen: dict[str, Path] = {}
    for c in clips:
        if c.id in seen:
            raise CorpusError(
                f"{corpus}: {seen[c.id]} and {c.path} are the same clip ({c.id})",
                "keep one audio format per utterance in the corpus folder",
            )
        seen[c.id] = c.path


def warn_skipped(corpus: str, skipped: list[Path], why: str) -> None:
    if skipped:
        example = ", ".join(str(p) for p in skipped[:3])
        warnings.warn(
            f"{corpus}: left out {len(skipped)} file(s) {why} (e.g. {example})", CorpusWarning, stacklevel=3
        )


def apply_label_set(clips: list[Clip], label_set: LabelSet) -> list[Clip]:
    """Relabel clips under `label_set`, dropping those whose raw label it does not map."""
    out = []
    for c in clips:
        mapped = label_set.map(c.label)
        if mapped is not None:
            out.append(c if mapped == c.label else replace(c, label=mapped))
    return out


def custom_label_set(spec: str, known: tuple[str, ...] | None, corpus: str) -> LabelSet:
    """A label set written as a comma-separated list of labels, e.g. "neutral,happy,sad,angry" (class order)."""
    labels = tuple(s.strip() for s in spec.split(",") if s.strip())
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise CorpusError(
            f"{corpus}: label set {spec!r} must list at least two distinct labels",
            "write e.g. 'neutral,happy,sad,angry'",
        )
    if known is not None:
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise CorpusError(
                f"{corpus}: label set {spec!r} names labels the corpus does not have: {', '.join(unknown)}",
                f"its labels are: {', '.join(known)}",
            )
    return LabelSet.identity(spec, labels, "custom selection")


__all__ = [
    "AUDIO_EXTENSIONS",
    "FOUR_CLASS",
    "CorpusSpec",
    "CorpusWarning",
    "LabelSet",
    "apply_label_set",
    "audio_files",
    "check_unique_ids",
    "clip_id",
    "custom_label_set",
    "require_dir",
    "warn_skipped",
]

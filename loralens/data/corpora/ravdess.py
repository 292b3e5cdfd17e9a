"""RAVDESS, audio-only speech: `Actor_XX/03-01-EE-II-SS-RR-AA.wav` (or `.flac`), labels from the file name.

Name fields (official): modality (01 AV, 02 video, 03 audio), vocal channel (01 speech, 02 song), emotion
(01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised), intensity
(01 normal, 02 strong), statement (01 "Kids are talking by the door", 02 "Dogs are sitting by the door"),
repetition (01, 02), actor (01..24; odd male, even female).

Files of the other RAVDESS releases (song, video) in the same folders are left out with a `CorpusWarning`,
so a folder holding both the speech and song zips still yields the speech corpus; any other audio file
name in an `Actor_XX` folder is a `CorpusError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from loralens.data.clips import Clip
from loralens.data.corpora.base import (
    ANGRY,
    CALM,
    DISGUST,
    FEARFUL,
    FOUR_CLASS,
    HAPPY,
    NEUTRAL,
    SAD,
    SURPRISED,
    CorpusSpec,
    LabelSet,
    audio_files,
    check_unique_ids,
    clip_id,
    require_dir,
    warn_skipped,
)  # fmt: skip
from loralens.errors import CorpusError

NAME = "ravdess"
EMOTIONS = (NEUTRAL, CALM, HAPPY, SAD, ANGRY, FEARFUL, DISGUST, SURPRISED)  # codes 01..08
INTENSITIES = ("normal", "strong")  # codes 01, 02
LABEL_SETS = {
    "8class": LabelSet.identity("8class", EMOTIONS, "all eight emotions"),
    "4class": LabelSet.identity("4class", FOUR_CLASS, "neutral, happy, sad, angry; the other emotions dropped"),
}

_NAME_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_ACTOR_DIR_RE = re.compile(r"^Actor_(\d{2})$")
_EXPECTED = "Actor_01 ... Actor_24 folders with files named like 03-01-05-02-01-01-01.wav"


@dataclass(frozen=True)
class RavdessName:
    """The fields of a RAVDESS file name (see the module docstring)."""

    modality: int
    channel: int
    emotion: str
    intensity: str
    statement: int
    repetition: int
    actor: int

    @property
    def gender(self) -> str:
        return "male" if self.actor % 2 == 1 else "female"

    @property
    def speaker(self) -> str:
        return f"Actor_{self.actor:02d}"

    @property
    def is_audio_speech(self) -> bool:
        return self.modality == 3 and self.channel == 1


def parse_name(stem: str) -> RavdessName:
    """Parse a RAVDESS file name without extension, e.g. "03-01-05-02-01-01-01"; ValueError if malformed."""
    m = _NAME_RE.match(stem)
    if m is None:
        raise ValueError(f"{stem!r} is not a RAVDESS name (seven two-digit fields joined by '-')")
    modality, channel, emotion, intensity, statement, repetition, actor = (int(g) for g in m.groups())
    if modality not in (1, 2, 3) or channel not in (1, 2):
        raise ValueError(f"{stem!r}: modality {modality:02d} / vocal channel {channel:02d} do not exist")
    if not 1 <= emotion <= 8:
        raise ValueError(f"{stem!r}: emotion code {emotion:02d} is not 01..08")
    if intensity not in (1, 2) or statement not in (1, 2) or repetition not in (1, 2):
        raise ValueError(f"{stem!r}: intensity, statement and repetition must each be 01 or 02")
    if not 1 <= actor <= 24:
        raise ValueError(f"{stem!r}: actor {actor:02d} is not 01..24")
    return RavdessName(modality, channel, EMOTIONS[emotion - 1], INTENSITIES[intensity - 1], statement, repetition,
                       actor)


def parse(root: Path) -> list[Clip]:
    """Clips of the RAVDESS speech corpus under `root` (the folder holding `Actor_XX/`), 8-class labels."""
    root = require_dir(root, NAME, _EXPECTED)
    actor_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _ACTOR_DIR_RE.match(p.name))
    if not actor_dirs:
        raise CorpusError(
            f"{NAME}: no Actor_XX folders in {root}",
            f"pass the folder that holds {_EXPECTED} (unzip Audio_Speech_Actors_01-24.zip there)",
        )
    clips: list[Clip] = []
    skipped: list[Path] = []
    for folder in actor_dirs:
        folder_actor = int(_ACTOR_DIR_RE.match(folder.name).group(1))  # type: ignore[union-attr]
        for path in audio_files(folder):
            try:
                name = parse_name(path.stem)
            except ValueError as e:
                raise CorpusError(
                    f"{NAME}: {path}: {e}",
                    "remove or rename files that are not RAVDESS recordings from the Actor_XX folders",
                ) from None
            if not name.is_audio_speech:
                skipped.append(path)
                continue
            if name.actor != folder_actor:
                raise CorpusError(
                    f"{NAME}: {path} names actor {name.actor:02d} but lies in {folder.name}",
                    "the copy is mixed up; restore the official layout",
                )
            clips.append(Clip(clip_id(root, path), path, name.emotion, name.speaker, None, name.gender))
    warn_skipped(NAME, skipped, "that are not audio-only speech (modality 03, vocal channel 01)")
    check_unique_ids(clips, NAME)
    return clips


SPEC = CorpusSpec(
    name=NAME,
    description="RAVDESS audio-only speech: 24 actors (12 female), 1440 clips, 8 emotions, acted, 2 sentences",
    layout="Actor_XX/03-01-EE-II-SS-RR-AA.wav|.flac",
    raw_labels=EMOTIONS,
    label_sets=LABEL_SETS,
    default_label_set="8class",
    parse=parse,
)

"""CREMA-D: `AudioWAV/1001_DFA_ANG_XX.wav` = actor _ sentence _ emotion _ level, labels from the file name.

91 actors (1001..1091), 12 sentences (IEO spoken at levels LO/MD/HI, the others at XX = unspecified),
6 emotions ANG DIS FEA HAP NEU SAD. Genders come from the official `VideoDemographics.csv`
(columns ActorID, Sex) next to `AudioWAV/` when it is there, else they are None.
The root is the corpus folder holding `AudioWAV/` (the repository layout), or the `AudioWAV` folder itself.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from loralens.data.clips import Clip
from loralens.data.corpora.base import (
    ANGRY,
    DISGUST,
    FEARFUL,
    FOUR_CLASS,
    HAPPY,
    NEUTRAL,
    SAD,
    CorpusSpec,
    LabelSet,
    audio_files,
    check_unique_ids,
    clip_id,
    require_dir,
)  # fmt: skip
from loralens.errors import CorpusError

NAME = "crema-d"
CODES = {"NEU": NEUTRAL, "HAP": HAPPY, "SAD": SAD, "ANG": ANGRY, "FEA": FEARFUL, "DIS": DISGUST}
EMOTIONS = (NEUTRAL, HAPPY, SAD, ANGRY, FEARFUL, DISGUST)
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
LABEL_SETS = {
    "6class": LabelSet.identity("6class", EMOTIONS, "all six emotions"),
    "4class": LabelSet.identity("4class", FOUR_CLASS, "neutral, happy, sad, angry; fearful and disgust dropped"),
}
DEMOGRAPHICS = "VideoDemographics.csv"

_NAME_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
_EXPECTED = "AudioWAV/ with files named like 1001_DFA_ANG_XX.wav"


def parse(root: Path) -> list[Clip]:
    """Clips of CREMA-D under `root`, 6-class labels; speaker = actor id ("1001")."""
    root = require_dir(root, NAME, _EXPECTED)
    audio_dir = root / "AudioWAV"
    if not audio_dir.is_dir():
        if root.name == "AudioWAV" or any(_NAME_RE.match(p.stem) for p in audio_files(root)):
            audio_dir = root
        else:
            raise CorpusError(f"{NAME}: no AudioWAV folder in {root}", f"pass the folder that holds {_EXPECTED}")
    genders = read_demographics(audio_dir.parent / DEMOGRAPHICS)
    clips: list[Clip] = []
    for path in audio_files(audio_dir):
        m = _NAME_RE.match(path.stem)
        if m is None or m.group(3) not in CODES or m.group(2) not in SENTENCES:
            raise CorpusError(
                f"{NAME}: {path}: not a CREMA-D file name (actor_sentence_emotion_level, e.g. 1001_DFA_ANG_XX)",
                f"emotion codes are {', '.join(CODES)}; remove other files from {audio_dir}",
            )
        actor = m.group(1)
        clips.append(Clip(clip_id(root, path), path, CODES[m.group(3)], actor, None, genders.get(actor)))
    check_unique_ids(clips, NAME)
    return clips


def read_demographics(path: Path) -> dict[str, str]:
    """Actor id -> "female"/"male" from VideoDemographics.csv; {} when the file is absent."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [h.strip() for h in reader.fieldnames or []]
        if "ActorID" not in fields or "Sex" not in fields:
            raise CorpusError(
                f"{NAME}: {path} line 1: expected columns ActorID and Sex, found {', '.join(fields) or 'none'}",
                "use the official VideoDemographics.csv or remove it (genders are then unknown)",
            )
        out: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            sex = row["Sex"].lower()
            if sex not in ("male", "female"):
                raise CorpusError(f"{NAME}: {path} line {line}: Sex is {row['Sex']!r}, expected Male or Female")
            out[row["ActorID"]] = sex
    return out


SPEC = CorpusSpec(
    name=NAME,
    description="CREMA-D: 91 actors (43 female), 7442 clips, 6 emotions, 12 sentences",
    layout="AudioWAV/AAAA_SSS_EEE_LL.wav (+ VideoDemographics.csv for genders)",
    raw_labels=EMOTIONS,
    label_sets=LABEL_SETS,
    default_label_set="6class",
    parse=parse,
)

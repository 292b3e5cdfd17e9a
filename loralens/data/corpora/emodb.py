"""Berlin EmoDB: `wav/03a01Fa.wav` = speaker (2 digits), text code (a01..b10), emotion letter, version letter.

Emotion letters (German initials): W anger (Wut), L boredom (Langeweile), E disgust (Ekel), A fear (Angst),
F happiness (Freude), T sadness (Trauer), N neutral. Ten speakers with documented genders.
The root is the corpus folder holding `wav/`, or the `wav` folder itself.
"""

from __future__ import annotations

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

NAME = "emodb"
BOREDOM = "boredom"
CODES = {"N": NEUTRAL, "F": HAPPY, "T": SAD, "W": ANGRY, "A": FEARFUL, "E": DISGUST, "L": BOREDOM}
EMOTIONS = (NEUTRAL, HAPPY, SAD, ANGRY, FEARFUL, DISGUST, BOREDOM)
GENDERS = {
    "03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
    "12": "male", "13": "female", "14": "female", "15": "male", "16": "female",
}  # fmt: skip
LABEL_SETS = {
    "7class": LabelSet.identity("7class", EMOTIONS, "all seven emotions"),
    "4class": LabelSet.identity("4class", FOUR_CLASS, "neutral, happy, sad, angry; the others dropped"),
}

_NAME_RE = re.compile(r"^(\d{2})([ab]\d{2})([A-Z])([a-z])$")
_EXPECTED = "wav/ with files named like 03a01Fa.wav"


def parse(root: Path) -> list[Clip]:
    """Clips of EmoDB under `root`, 7-class labels; speaker = the two-digit speaker code ("03")."""
    root = require_dir(root, NAME, _EXPECTED)
    audio_dir = root / "wav"
    if not audio_dir.is_dir():
        if root.name == "wav" or any(_NAME_RE.match(p.stem) for p in audio_files(root)):
            audio_dir = root
        else:
            raise CorpusError(f"{NAME}: no wav folder in {root}", f"pass the folder that holds {_EXPECTED}")
    clips: list[Clip] = []
    for path in audio_files(audio_dir):
        m = _NAME_RE.match(path.stem)
        if m is None or m.group(3) not in CODES or m.group(1) not in GENDERS:
            raise CorpusError(
                f"{NAME}: {path}: not an EmoDB file name (speaker, text, emotion, version, e.g. 03a01Fa)",
                f"speakers are {', '.join(GENDERS)}, emotion letters {''.join(CODES)}; remove other files",
            )
        speaker = m.group(1)
        clips.append(Clip(clip_id(root, path), path, CODES[m.group(3)], speaker, None, GENDERS[speaker]))
    check_unique_ids(clips, NAME)
    return clips


SPEC = CorpusSpec(
    name=NAME,
    description="Berlin EmoDB: 10 speakers (5 female), 535 clips, 7 emotions, German, 10 sentences",
    layout="wav/SSTTTEV.wav (speaker, text, emotion letter, version)",
    raw_labels=EMOTIONS,
    label_sets=LABEL_SETS,
    default_label_set="7class",
    parse=parse,
)

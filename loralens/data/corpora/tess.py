"""TESS (Toronto emotional speech set): `<SPK>_<emotion>/<SPK>_<word>_<emotion>.wav`, SPK = OAF or YAF.

Two female speakers (OAF older, YAF younger), 200 target words each, 7 emotions: angry, disgust, fear,
happy, neutral, pleasant surprise, sad. The emotion and the speaker are taken from the folder name,
because the release is not uniform: folders `OAF_Fear`, `OAF_Pleasant_surprise`, `YAF_pleasant_surprised`
(case and wording vary), file names use `ps` for pleasant surprise, and one file is `OA_bite_neutral.wav`.
The emotion at the end of each file name must agree with its folder's, else `CorpusError`.
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

NAME = "tess"
PLEASANT_SURPRISE = "pleasant_surprise"
EMOTIONS = (NEUTRAL, HAPPY, SAD, ANGRY, FEARFUL, DISGUST, PLEASANT_SURPRISE)
# Spellings found in folder and file names (lower-cased) -> label.
SPELLINGS = {
    "neutral": NEUTRAL, "happy": HAPPY, "sad": SAD, "angry": ANGRY, "fear": FEARFUL, "disgust": DISGUST,
    "ps": PLEASANT_SURPRISE, "pleasant_surprise": PLEASANT_SURPRISE, "pleasant_surprised": PLEASANT_SURPRISE,
}  # fmt: skip
SPEAKERS = ("OAF", "YAF")
LABEL_SETS = {
    "7class": LabelSet.identity("7class", EMOTIONS, "all seven emotions"),
    "4class": LabelSet.identity("4class", FOUR_CLASS, "neutral, happy, sad, angry; the others dropped"),
}

_DIR_RE = re.compile(r"^(OAF|YAF)_(.+)$")
_FILE_RE = re.compile(r"^[A-Za-z]+_[A-Za-z]+_([A-Za-z_]+)$")
_EXPECTED = "folders OAF_<emotion>/ and YAF_<emotion>/ with files named like OAF_back_angry.wav"


def parse(root: Path) -> list[Clip]:
    """Clips of TESS under `root` (the folder holding the OAF_*/YAF_* folders); speaker = "OAF" or "YAF"."""
    root = require_dir(root, NAME, _EXPECTED)
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and _DIR_RE.match(p.name))
    if not dirs:
        nested = sorted(
            p for p in root.iterdir() if p.is_dir() and any(_DIR_RE.match(q.name) for q in p.iterdir() if q.is_dir())
        )
        hint = (f"the emotion folders are in {nested[0]}: pass that folder" if nested
                else f"pass the folder that holds {_EXPECTED}")
        raise CorpusError(f"{NAME}: no OAF_*/YAF_* folders in {root}", hint)
    clips: list[Clip] = []
    for folder in dirs:
        speaker, spelled = _DIR_RE.match(folder.name).groups()  # type: ignore[union-attr]
        emotion = SPELLINGS.get(spelled.lower())
        if emotion is None:
            raise CorpusError(
                f"{NAME}: folder {folder} names an unknown emotion {spelled!r}",
                f"TESS folders end in one of: {', '.join(sorted(SPELLINGS))}",
            )
        for path in audio_files(folder):
            m = _FILE_RE.match(path.stem)
            file_emotion = SPELLINGS.get(m.group(1).lower()) if m else None
            if file_emotion != emotion:
                raise CorpusError(
                    f"{NAME}: {path}: file name does not end in the folder's emotion ({spelled})",
                    "TESS files are named <speaker>_<word>_<emotion>.wav inside the folder of that emotion",
                )
            clips.append(Clip(clip_id(root, path), path, emotion, speaker, None, "female"))
    check_unique_ids(clips, NAME)
    return clips


SPEC = CorpusSpec(
    name=NAME,
    description="TESS: 2 female speakers (OAF, YAF), 2800 clips, 7 emotions, 200 words in a carrier phrase",
    layout="OAF_<emotion>/OAF_<word>_<emotion>.wav, YAF_<emotion>/YAF_<word>_<emotion>.wav",
    raw_labels=EMOTIONS,
    label_sets=LABEL_SETS,
    default_label_set="7class",
    parse=parse,
)

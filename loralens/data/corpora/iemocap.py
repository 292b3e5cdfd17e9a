"""IEMOCAP: labels from `SessionN/dialog/EmoEvaluation/<dialog>.txt`, audio `SessionN/sentences/wav/<dialog>/<utt>.wav`.

Each utterance has one summary line in its dialog's evaluation file (the per-annotator lines below it
and the files in the Categorical/, Attribute/ and Self-evaluation/ sub-folders are not read):

    [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]

Category codes: neu hap exc sad ang fru sur fea dis oth, and xxx (no majority). The usual 4-class set
merges excited into happy (neutral, happy+excited, sad, angry: 5,531 utterances of the full corpus).
Speaker = session and the gender letter before the utterance number (`Ses01F_impro01_M003` -> `Ses01M`,
the male actor of session 1); session = `Session1`..`Session5`.
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
    SURPRISED,
    CorpusSpec,
    LabelSet,
    check_unique_ids,
    clip_id,
    require_dir,
)  # fmt: skip
from loralens.errors import CorpusError

NAME = "iemocap"
EXCITED, FRUSTRATED, OTHER, NO_AGREEMENT = "excited", "frustrated", "other", "no_agreement"
CODES = {
    "neu": NEUTRAL, "hap": HAPPY, "exc": EXCITED, "sad": SAD, "ang": ANGRY, "fru": FRUSTRATED,
    "sur": SURPRISED, "fea": FEARFUL, "dis": DISGUST, "oth": OTHER, "xxx": NO_AGREEMENT,
}  # fmt: skip
EMOTIONS = (NEUTRAL, HAPPY, EXCITED, SAD, ANGRY, FRUSTRATED, SURPRISED, FEARFUL, DISGUST, OTHER, NO_AGREEMENT)
LABEL_SETS = {
    "4class": LabelSet(
        "4class",
        FOUR_CLASS,
        {NEUTRAL: NEUTRAL, HAPPY: HAPPY, EXCITED: HAPPY, SAD: SAD, ANGRY: ANGRY},
        "neutral, happy (+excited merged), sad, angry",
    ),
    "4class_noexc": LabelSet.identity("4class_noexc", FOUR_CLASS, "neutral, happy, sad, angry; excited dropped"),
    "all": LabelSet.identity("all", EMOTIONS[:-1], "every category with a majority label (xxx dropped)"),
}

_SESSION_RE = re.compile(r"^Session(\d)$")
_LINE_RE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(Ses(\d\d)[FM]_\S+)\s+(\w+)\s+\[")
_UTT_RE = re.compile(r"^Ses\d\d[FM]_.+_([FM])\d{3}$")
_EXPECTED = "Session1 ... Session5 folders, each with dialog/EmoEvaluation/*.txt and sentences/wav/"


def parse(root: Path) -> list[Clip]:
    """Clips of IEMOCAP under `root` (the folder holding `SessionN/`), every category (see `EMOTIONS`)."""
    root = require_dir(root, NAME, _EXPECTED)
    sessions = sorted(p for p in root.iterdir() if p.is_dir() and _SESSION_RE.match(p.name))
    if not sessions:
        raise CorpusError(f"{NAME}: no Session1..Session5 folders in {root}", f"pass the folder that holds {_EXPECTED}")
    clips: list[Clip] = []
    missing: list[str] = []
    for session in sessions:
        eval_dir = session / "dialog" / "EmoEvaluation"
        eval_files = (sorted(p for p in eval_dir.glob("*.txt") if not p.name.startswith("."))
                      if eval_dir.is_dir() else [])
        if not eval_files:
            raise CorpusError(
                f"{NAME}: no evaluation files {eval_dir}/*.txt",
                "the session folder is incomplete; restore dialog/EmoEvaluation from the release",
            )
        session_no = _SESSION_RE.match(session.name).group(1)  # type: ignore[union-attr]
        for eval_file in eval_files:
            for line_no, utt, code in _summary_lines(eval_file):
                where = f"{eval_file} line {line_no}"
                m = _UTT_RE.match(utt)
                if m is None or utt[3:5] != f"{int(session_no):02d}":
                    raise CorpusError(f"{NAME}: {where}: utterance name {utt!r} does not belong to {session.name}")
                if code not in CODES:
                    raise CorpusError(
                        f"{NAME}: {where}: unknown emotion code {code!r}", f"known codes: {', '.join(CODES)}"
                    )
                dialog = utt.rsplit("_", 1)[0]
                wav = session / "sentences" / "wav" / dialog / f"{utt}.wav"
                if not wav.is_file():
                    missing.append(f"{wav} ({where})")
                    continue
                speaker = f"Ses{int(session_no):02d}{m.group(1)}"
                gender = "female" if m.group(1) == "F" else "male"
                clips.append(Clip(clip_id(root, wav), wav, CODES[code], speaker, session.name, gender))
    if missing:
        raise CorpusError(
            f"{NAME}: {len(missing)} labelled utterance(s) have no audio file, e.g. {'; '.join(missing[:3])}",
            "the copy is incomplete; restore sentences/wav/ from the release",
        )
    check_unique_ids(clips, NAME)
    return clips


def _summary_lines(path: Path) -> list[tuple[int, str, str]]:
    """(line number, utterance name, category code) of each summary line of an EmoEvaluation file."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            if line.startswith("["):
                m = _LINE_RE.match(line)
                if m is None:
                    raise CorpusError(
                        f"{NAME}: {path} line {line_no}: cannot read {line.strip()!r}",
                        "expected '[start - end]<TAB>utterance<TAB>code<TAB>[v, a, d]'",
                    )
                out.append((line_no, m.group(3), m.group(5)))
    return out


SPEC = CorpusSpec(
    name=NAME,
    description="IEMOCAP: 5 sessions x 2 actors (5 female), dyadic improvised and scripted dialogs, 10,039 turns",
    layout="SessionN/dialog/EmoEvaluation/<dialog>.txt + SessionN/sentences/wav/<dialog>/<utt>.wav",
    raw_labels=EMOTIONS,
    label_sets=LABEL_SETS,
    default_label_set="4class",
    parse=parse,
)

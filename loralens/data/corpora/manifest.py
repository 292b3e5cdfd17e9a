"""A generic manifest for one's own data: a CSV or JSONL file with one row per clip.

Columns: `path`, `label`, `speaker` (required); `session`, `gender`, `id` (optional). Relative paths are
resolved against the manifest's folder; the clip id is the `id` column when given, else the path relative
to that folder without extension. `gender` accepts female/male/f/m (any case) or empty.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
from collections import Counter
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
)
from loralens.errors import CorpusError

NAME = "manifest"
REQUIRED = ("path", "label", "speaker")
OPTIONAL = ("session", "gender", "id")
DEFAULT_NAMES = ("manifest.csv", "manifest.jsonl")
#: The shared vocabulary in the built-in corpora's class order; `all` puts these first, other labels after (by name).
SHARED_VOCABULARY = (NEUTRAL, CALM, HAPPY, SAD, ANGRY, FEARFUL, DISGUST, SURPRISED)
_GENDERS = {"female": "female", "f": "female", "male": "male", "m": "male", "": None}


def find_manifest(root: str | Path) -> Path:
    """The manifest file: `root` itself, or `manifest.csv` / `manifest.jsonl` inside the folder `root` (the name
    matched ignoring case, so that MANIFEST.csv is found on every file system)."""
    path = Path(root).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.name.lower() in DEFAULT_NAMES and p.is_file())
        if len(found) != 1:
            names = f" ({', '.join(p.name for p in found)})" if found else ""
            raise CorpusError(
                f"{NAME}: {'no' if not found else 'more than one'} manifest.csv / manifest.jsonl in {path}{names}",
                "pass the manifest file itself",
            )
        path = found[0]
    if not path.is_file():
        raise CorpusError(f"{NAME}: manifest {path} not found",
                          "pass a .csv or .jsonl file with columns path, label, speaker")
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise CorpusError(f"{NAME}: {path}: unknown manifest format {path.suffix!r}", "use a .csv or .jsonl file")
    return Path(os.path.abspath(path))


@dataclass
class Manifest:
    """A manifest as read: its file, its clips (raw labels, row order) and the line of each clip id."""

    path: Path
    clips: list[Clip]
    lines: dict[str, int]

    def line_list(self, ids: list[str], n: int = 8) -> str:
        """'lines 4, 9 and 12' for the clip ids `ids` (the first `n`, then a count)."""
        nums = sorted(self.lines[i] for i in ids)
        shown = ", ".join(str(x) for x in nums[:n]) + (f" and {len(nums) - n} more" if len(nums) > n else "")
        return f"line{'s' if len(nums) > 1 else ''} {shown}"


def read_manifest(root: str | Path) -> Manifest:
    """The manifest at `root` (a file, or a folder holding manifest.csv / manifest.jsonl), every row checked:
    required columns, audio files present, gender values, no file listed twice, unique ids (errors name lines)."""
    path = find_manifest(root)
    rows = _read_csv(path) if path.suffix.lower() == ".csv" else _read_jsonl(path)
    if not rows:
        raise CorpusError(f"{NAME}: {path} lists no clips", "add one row per clip: path, label, speaker")
    folder = path.parent
    missing: list[str] = []
    entries: list[tuple[int, Path, dict[str, str]]] = []
    line_of_file: dict[Path, int] = {}
    repeats: list[str] = []
    for line, row in rows:
        where = f"{path} line {line}"
        for col in REQUIRED:
            if not row.get(col):
                raise CorpusError(f"{NAME}: {where}: empty {col!r}", f"every row needs {', '.join(REQUIRED)}")
        audio = Path(row["path"]).expanduser()
        audio = Path(os.path.abspath(audio if audio.is_absolute() else folder / audio))
        if audio in line_of_file:
            repeats.append(f"line {line} repeats line {line_of_file[audio]} ({row['path']})")
            continue
        line_of_file[audio] = line
        if not audio.is_file():
            missing.append(f"{where}: {audio}")
            continue
        gender_text = (row.get("gender") or "").strip().lower()
        if gender_text not in _GENDERS:
            raise CorpusError(
                f"{NAME}: {where}: gender {row['gender']!r} is not female/male/f/m", "leave it empty when unknown"
            )
        entries.append((line, audio, row))
    if repeats:
        raise CorpusError(f"{NAME}: {path}: {len(repeats)} row(s) list a file already listed: {'; '.join(repeats[:5])}",
                          "list each audio file once (delete the repeated rows)")
    if missing:
        raise CorpusError(
            f"{NAME}: {len(missing)} audio file(s) not found: {'; '.join(missing[:5])}",
            "relative paths are resolved against the manifest's folder; fix the paths or the files",
        )
    # A clip id is the path without extension unless an `id` is given; two files of one name in different
    # formats (a.mp3, a.ogg) are two clips, so they keep their extension in the id.
    stems = Counter(Path(os.path.relpath(a, folder)).with_suffix("").as_posix()
                    for _, a, r in entries if not r.get("id"))
    clips: list[Clip] = []
    lines: dict[str, int] = {}
    for line, audio, row in entries:
        rel = Path(os.path.relpath(audio, folder))
        stem = rel.with_suffix("").as_posix()
        clip_id = row.get("id") or (stem if stems[stem] == 1 else rel.as_posix())
        if clip_id in lines:
            raise CorpusError(f"{NAME}: {path}: lines {lines[clip_id]} and {line} have the same clip id {clip_id!r}",
                              "give every row its own id (or leave the id column empty)")
        lines[clip_id] = line
        gender = _GENDERS[(row.get("gender") or "").strip().lower()]
        clips.append(Clip(clip_id, audio, row["label"], row["speaker"], row.get("session") or None, gender))
    return Manifest(path, clips, lines)


def parse(root: Path) -> list[Clip]:
    """Clips listed in the manifest at `root` (a file, or a folder holding manifest.csv / manifest.jsonl)."""
    return read_manifest(root).clips


def _clips(n: int) -> str:
    return f"{n} clip{'' if n == 1 else 's'}"


def check_labels(m: Manifest, clips: list[Clip], chosen: tuple[str, ...], explicit: bool,
                 on_unknown_label: str = "error") -> tuple[list[Clip], str | None]:
    """Check the labels of `clips` (already mapped by a label map) against the label set `chosen`.

    Errors (CorpusError naming the lines): a label that differs only in case from another label of the manifest
    or of the set; a label of few clips that is a near spelling (difflib ratio >= 0.8) of a label with more clips
    or of the set ("hapy" for "happy"); with an `explicit` label set, a label outside it that is not in the shared
    vocabulary (neutral, calm, happy, sad, angry, fearful, disgust, surprised). With `on_unknown_label` "skip",
    these clips are left out instead. Labels of the shared vocabulary outside an explicit set are left out (a
    subset such as 4class). Returns the clips kept and a warning with the counts of what was left out (or None).
    """
    counts = Counter(c.label for c in clips)
    ids_of: dict[str, list[str]] = {}
    for c in clips:
        ids_of.setdefault(c.label, []).append(c.id)
    in_set = set(chosen)
    problems: list[str] = []
    suspect: dict[str, str] = {}  # label -> the label it is probably meant to be
    by_fold: dict[str, set[str]] = {}
    for label in set(counts) | in_set:
        by_fold.setdefault(label.casefold(), set()).add(label)
    for label in sorted(counts):
        if label in in_set and explicit:
            continue
        variants = by_fold[label.casefold()] - {label}
        canon = sorted(variants, key=lambda v: (not (explicit and v in in_set), -counts.get(v, 0), v))
        if canon and ((explicit and canon[0] in in_set) or counts.get(canon[0], 0) > counts[label]
                      or (counts.get(canon[0], 0) == counts[label] and canon[0] < label)):
            problems.append(f"label {label!r} ({m.line_list(ids_of[label])}) differs only in case from "
                            f"{canon[0]!r} ({_clips(counts.get(canon[0], 0))})")
            suspect[label] = canon[0]
            continue
        if label in SHARED_VOCABULARY:
            continue
        near = [v for v in set(counts) | in_set
                if v != label and ((explicit and v in in_set) or counts.get(v, 0) > counts[label])]
        match = difflib.get_close_matches(label, near, n=1, cutoff=0.8)
        if match:
            problems.append(f"label {label!r} ({m.line_list(ids_of[label])}) looks like a misspelling of "
                            f"{match[0]!r} ({_clips(counts.get(match[0], 0))})")
            suspect[label] = match[0]
    outside = sorted(lab for lab in counts if lab not in in_set and lab not in suspect)
    unknown = [lab for lab in outside if lab not in SHARED_VOCABULARY]
    if explicit:
        for label in unknown:
            problems.append(f"label {label!r} ({m.line_list(ids_of[label])}) is not in the label set")
    if problems and on_unknown_label != "skip":
        fixes = ",".join([f"{a}={b}" for a, b in sorted(suspect.items())][:4]
                         + [f"{lab}=LABEL" for lab in (unknown if explicit else [])][:2])
        raise CorpusError(
            f"{NAME}: {m.path}: {len(problems)} label problem(s): " + "; ".join(problems[:6])
            + (f"; and {len(problems) - 6} more" if len(problems) > 6 else ""),
            f"correct the manifest, or map the labels with --label-map {fixes} (label_map in YAML), or leave such "
            "clips out with --on-unknown-label skip",
        )
    drop = set(suspect) | set(outside)
    if not drop:
        return clips, None
    kept = [c for c in clips if c.label not in drop]
    left = ", ".join(f"{lab} ({counts[lab]})" for lab in sorted(drop, key=lambda x: (-counts[x], x)))
    why = f"are not in the label set {','.join(chosen)}" if explicit else "look mistaken"
    return kept, f"{NAME}: left out {len(clips) - len(kept)} clip(s) whose labels {why}: {left}"


def _read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        absent = [c for c in REQUIRED if c not in header]
        if absent:
            raise CorpusError(
                f"{NAME}: {path} line 1: missing column(s) {', '.join(absent)} (header: "
                f"{', '.join(header) or 'empty'})",
                f"the header must name {', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)})",
            )
        rows = []
        for row in reader:
            clean = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if any(clean.values()):
                rows.append((reader.line_num, clean))
        return rows


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, str]]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{NAME}: {path} line {line_no}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise CorpusError(f"{NAME}: {path} line {line_no}: expected a JSON object per line")
            absent = [c for c in REQUIRED if c not in obj]
            if absent:
                raise CorpusError(
                    f"{NAME}: {path} line {line_no}: missing key(s) {', '.join(absent)}",
                    f"each line needs {', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)})",
                )
            rows.append((line_no, {k: "" if v is None else str(v).strip() for k, v in obj.items()}))
    return rows


SPEC = CorpusSpec(
    name=NAME,
    description="your own data: a CSV or JSONL manifest with columns path, label, speaker (+ session, gender, id)",
    layout="manifest.csv | manifest.jsonl; paths relative to the manifest's folder",
    raw_labels=(),
    label_sets={"4class": LabelSet.identity("4class", FOUR_CLASS, "neutral, happy, sad, angry"),
                "8class": LabelSet.identity("8class", SHARED_VOCABULARY, "the shared vocabulary of eight emotions")},
    default_label_set="all",
    parse=parse,
)

"""A generic manifest for one's own data: a CSV or JSONL file with one row per clip.

Columns: `path`, `label`, `speaker` (required); `session`, `gender`, `id` (optional). Relative paths are
resolved against the manifest's folder; the clip id is the `id` column when given, else the path relative
to that folder without extension. `gender` accepts female/male/f/m (any case) or empty.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from loralens.data.clips import Clip
from loralens.data.corpora.base import CorpusSpec, check_unique_ids
from loralens.errors import CorpusError

NAME = "manifest"
REQUIRED = ("path", "label", "speaker")
OPTIONAL = ("session", "gender", "id")
DEFAULT_NAMES = ("manifest.csv", "manifest.jsonl")
_GENDERS = {"female": "female", "f": "female", "male": "male", "m": "male", "": None}


def find_manifest(root: str | Path) -> Path:
    """The manifest file: `root` itself, or `manifest.csv` / `manifest.jsonl` inside the folder `root`."""
    path = Path(root).expanduser()
    if path.is_dir():
        found = [path / n for n in DEFAULT_NAMES if (path / n).is_file()]
        if len(found) != 1:
            raise CorpusError(
                f"{NAME}: {'no' if not found else 'more than one'} manifest.csv / manifest.jsonl in {path}",
                "pass the manifest file itself",
            )
        path = found[0]
    if not path.is_file():
        raise CorpusError(f"{NAME}: manifest {path} not found", "pass a .csv or .jsonl file with columns path, label, speaker")
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise CorpusError(f"{NAME}: {path}: unknown manifest format {path.suffix!r}", "use a .csv or .jsonl file")
    return Path(os.path.abspath(path))


def parse(root: Path) -> list[Clip]:
    """Clips listed in the manifest at `root` (a file, or a folder holding manifest.csv / manifest.jsonl)."""
    path = find_manifest(root)
    rows = _read_csv(path) if path.suffix.lower() == ".csv" else _read_jsonl(path)
    if not rows:
        raise CorpusError(f"{NAME}: {path} lists no clips", "add one row per clip: path, label, speaker")
    folder = path.parent
    clips: list[Clip] = []
    missing: list[str] = []
    for line, row in rows:
        where = f"{path} line {line}"
        for col in REQUIRED:
            if not row.get(col):
                raise CorpusError(f"{NAME}: {where}: empty {col!r}", f"every row needs {', '.join(REQUIRED)}")
        audio = Path(row["path"]).expanduser()
        audio = audio if audio.is_absolute() else folder / audio
        if not audio.is_file():
            missing.append(f"{where}: {audio}")
            continue
        gender_text = (row.get("gender") or "").strip().lower()
        if gender_text not in _GENDERS:
            raise CorpusError(
                f"{NAME}: {where}: gender {row['gender']!r} is not female/male/f/m", "leave it empty when unknown"
            )
        clip_id = row.get("id") or Path(os.path.relpath(audio, folder)).with_suffix("").as_posix()
        clips.append(
            Clip(clip_id, audio, row["label"], row["speaker"], row.get("session") or None, _GENDERS[gender_text])
        )
    if missing:
        raise CorpusError(
            f"{NAME}: {len(missing)} audio file(s) not found: {'; '.join(missing[:5])}",
            "relative paths are resolved against the manifest's folder; fix the paths or the files",
        )
    check_unique_ids(clips, NAME)
    return clips


def _read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        absent = [c for c in REQUIRED if c not in header]
        if absent:
            raise CorpusError(
                f"{NAME}: {path} line 1: missing column(s) {', '.join(absent)} (header: {', '.join(header) or 'empty'})",
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
    label_sets={},
    default_label_set="all",
    parse=parse,
)

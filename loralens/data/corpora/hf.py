"""Corpora kept as Hugging Face `datasets`: a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`,
or a folder of `.parquet` or `.arrow` files (searched recursively), one row per clip.

Columns (their names are options): the audio (default `audio`), the label (`label`), the speaker (`speaker`);
optional: the session (`session`), the gender (`gender`, female/male/f/m or empty) and a clip id (`id`), each used
when the dataset has it. The audio column may hold
- a `datasets.Audio` feature (read undecoded: the stored file bytes, or the path of a file),
- a path (string) to an audio file, relative to the dataset folder or absolute,
- decoded audio: `{"array": [...], "sampling_rate": sr}` structs, or a list of samples with a `sampling_rate` column.
Stored bytes and decoded arrays are written once to a content-addressed folder, `$LORALENS_CACHE/hf_audio/`
(default `~/.cache/loralens/hf_audio/`): bytes as they are (the original file), arrays as 32-bit float WAV (exactly
the samples), so that clips are files like every other corpus' and the feature cache keys them by content. Labels of
a `ClassLabel` column are its names. All splits of a `DatasetDict` are read (loralens makes its own folds).

Clip ids: the id column when present, else the audio file's path without extension (when every row has a distinct
one), else `row_000000` .... The label set and the fold checks are those of the manifest (open vocabulary, default
`all` = every label found, sorted; a comma-separated list selects and orders classes).
`datasets` is an optional extra: `pip install "loralens[hf]"`.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from loralens.data.clips import Clip
from loralens.data.corpora.base import CorpusSpec, check_unique_ids, require_dir
from loralens.errors import CorpusError, MissingExtraError
from loralens.io import atomic_write_bytes

NAME = "hf"
COLUMN_OPTIONS = ("audio_column", "label_column", "speaker_column", "session_column", "gender_column", "id_column")
DEFAULTS = {"audio_column": "audio", "label_column": "label", "speaker_column": "speaker",
            "session_column": "session", "gender_column": "gender", "id_column": "id"}
REQUIRED = ("audio_column", "label_column", "speaker_column")
_GENDERS = {"female": "female", "f": "female", "male": "male", "m": "male", "": None}
_FORMAT_SUFFIX = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg"}
_BATCH = 64


def audio_cache_dir() -> Path:
    """`$LORALENS_CACHE/hf_audio` (default `~/.cache/loralens/hf_audio`): audio written out of datasets."""
    return Path(os.environ.get("LORALENS_CACHE", "~/.cache/loralens")).expanduser() / "hf_audio"


def _datasets():
    try:
        import datasets
    except ImportError:
        raise MissingExtraError(
            "the hf corpus reads Hugging Face datasets, and the `datasets` package is not installed",
            'install the extra: pip install "loralens[hf]"',
        ) from None
    return datasets


def load_dataset_folder(root: Path) -> Any:
    """The `datasets.Dataset` of a `save_to_disk` folder (every split of a DatasetDict concatenated) or of the
    `.parquet` / `.arrow` files under `root`."""
    ds_lib = _datasets()
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        loaded = ds_lib.load_from_disk(str(root))
        if isinstance(loaded, ds_lib.DatasetDict):
            return ds_lib.concatenate_datasets([loaded[s] for s in sorted(loaded)])
        return loaded
    parquet = sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))
    arrow = sorted(p for p in root.rglob("*.arrow") if not p.name.startswith(".") and "cache-" not in p.name)
    if parquet and arrow:
        raise CorpusError(f"{NAME}: {root} holds both .parquet and .arrow files",
                          "keep one format per dataset folder")
    if parquet:
        cache = Path(os.environ.get("LORALENS_CACHE", "~/.cache/loralens")).expanduser() / "hf_datasets"
        return ds_lib.Dataset.from_parquet([str(p) for p in parquet], cache_dir=str(cache))
    if arrow:
        return ds_lib.concatenate_datasets([ds_lib.Dataset.from_file(str(p)) for p in arrow])
    raise CorpusError(
        f"{NAME}: {root} is neither a dataset saved with save_to_disk (state.json / dataset_dict.json) nor a folder "
        "of .parquet or .arrow files",
        "pass the folder given to Dataset.save_to_disk, or a folder holding the dataset's parquet files",
    )


def _columns(ds: Any, options: dict[str, str | None], root: Path) -> dict[str, str | None]:
    """Option -> column name actually read (None for an optional column the dataset lacks)."""
    names = list(ds.column_names)
    chosen: dict[str, str | None] = {}
    for opt in COLUMN_OPTIONS:
        given = options.get(opt)
        col = given or DEFAULTS[opt]
        if col in names:
            chosen[opt] = col
        elif opt in REQUIRED or given:
            flag = "--" + opt.replace("_", "-")
            raise CorpusError(
                f"{NAME}: {root}: no column {col!r} for the {opt.split('_')[0]} (columns: {', '.join(names)})",
                f"name the column with {flag} (corpus option {opt})",
            )
        else:
            chosen[opt] = None
    return chosen


def _suffix_of(data: bytes, name: str | None) -> str:
    if name and Path(name).suffix.lower() in _FORMAT_SUFFIX.values():
        return Path(name).suffix.lower()
    import soundfile as sf

    try:
        fmt = sf.info(io.BytesIO(data)).format
    except (sf.SoundFileError, RuntimeError) as e:
        raise CorpusError(f"{NAME}: audio bytes of {name or 'a row'} are not a format libsndfile reads ({e})",
                          "store WAV, FLAC or OGG bytes, or decoded arrays") from None
    return _FORMAT_SUFFIX.get(fmt, ".wav")


def _store(data: bytes, suffix: str) -> Path:
    """Write `data` under its sha256 in the audio cache (once) and return the file."""
    digest = hashlib.sha256(data).hexdigest()
    path = audio_cache_dir() / digest[:2] / f"{digest}{suffix}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    return path


def _array_file(samples: Any, sampling_rate: Any, where: str) -> Path:
    import soundfile as sf

    arr = np.asarray(samples, dtype=np.float32)
    if arr.ndim == 2:  # [channels, samples] as datasets decodes multi-channel audio with mono=False
        arr = arr.T
    if arr.ndim not in (1, 2) or arr.size == 0 or not sampling_rate:
        raise CorpusError(f"{NAME}: {where}: decoded audio of shape {arr.shape} at sampling rate {sampling_rate!r}",
                          "store samples as a list of floats with a positive sampling_rate")
    buf = io.BytesIO()
    sf.write(buf, arr, int(sampling_rate), format="WAV", subtype="FLOAT")
    return _store(buf.getvalue(), ".wav")


def _audio_path(value: Any, row: dict, root: Path, where: str, missing: list[str]) -> tuple[Path | None, str | None]:
    """(audio file, the path name stored in the dataset) for one row's audio value."""
    if isinstance(value, str):
        name = value
        data = None
    elif isinstance(value, dict) and "array" in value:
        return _array_file(value["array"], value.get("sampling_rate"), where), value.get("path")
    elif isinstance(value, dict):
        name, data = value.get("path"), value.get("bytes")
    elif isinstance(value, (list, np.ndarray)):
        return _array_file(value, row.get("sampling_rate"), where), None
    else:
        raise CorpusError(f"{NAME}: {where}: audio value of type {type(value).__name__}",
                          "the audio column must hold an Audio feature, paths, or decoded arrays")
    if data:
        return _store(bytes(data), _suffix_of(bytes(data), name)), name
    if not name:
        raise CorpusError(f"{NAME}: {where}: audio with neither bytes nor a path")
    path = Path(name).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        missing.append(f"{where}: {path}")
        return None, name
    return Path(os.path.abspath(path)), name


def _rows(ds: Any, columns: list[str]) -> Iterator[dict]:
    sub = ds.select_columns(columns)
    for batch in sub.iter(batch_size=_BATCH):
        for i in range(len(batch[columns[0]])):
            yield {c: batch[c][i] for c in columns}


def parse(root: Path, *, audio_column: str | None = None, label_column: str | None = None,
          speaker_column: str | None = None, session_column: str | None = None, gender_column: str | None = None,
          id_column: str | None = None) -> list[Clip]:
    """Clips of the dataset at `root` with raw labels (see the module doc for columns and audio forms)."""
    root = require_dir(root, NAME, "a dataset saved with save_to_disk, or parquet / arrow files")
    ds = load_dataset_folder(root)
    if len(ds) == 0:
        raise CorpusError(f"{NAME}: {root}: the dataset has no rows", "check the folder")
    options = {"audio_column": audio_column, "label_column": label_column, "speaker_column": speaker_column,
               "session_column": session_column, "gender_column": gender_column, "id_column": id_column}
    cols = _columns(ds, options, root)
    audio_col = cols["audio_column"]
    feature = ds.features[audio_col]
    ds_lib = _datasets()
    if isinstance(feature, ds_lib.Audio):
        ds = ds.cast_column(audio_col, ds_lib.Audio(decode=False))
    label_feature = ds.features[cols["label_column"]]
    label_names = label_feature.names if isinstance(label_feature, ds_lib.ClassLabel) else None
    read = [c for c in dict.fromkeys(cols.values()) if c is not None]
    if "sampling_rate" in ds.column_names and "sampling_rate" not in read:
        read.append("sampling_rate")
    raw: list[tuple[str | None, Path | None, str, str, str | None, str | None]] = []
    missing: list[str] = []
    for i, row in enumerate(_rows(ds, read)):
        where = f"{root} row {i}"
        label = row[cols["label_column"]]
        label = label_names[label] if label_names is not None and isinstance(label, int) else label
        speaker = row[cols["speaker_column"]]
        for what, value in (("label", label), ("speaker", speaker)):
            if value is None or str(value).strip() == "":
                raise CorpusError(f"{NAME}: {where}: empty {what}", "every row needs an audio, a label and a speaker")
        path, name = _audio_path(row[audio_col], row, root, where, missing)
        session = row.get(cols["session_column"]) if cols["session_column"] else None
        gender_text = str(row.get(cols["gender_column"]) or "").strip().lower() if cols["gender_column"] else ""
        if gender_text not in _GENDERS:
            raise CorpusError(f"{NAME}: {where}: gender {gender_text!r} is not female/male/f/m",
                              "leave it empty when unknown")
        clip_id = str(row[cols["id_column"]]) if cols["id_column"] else None
        raw.append((clip_id or name, path, str(label).strip(), str(speaker).strip(),
                    None if session in (None, "") else str(session), _GENDERS[gender_text]))
    if missing:
        raise CorpusError(
            f"{NAME}: {len(missing)} audio file(s) not found: {'; '.join(missing[:5])}",
            "relative paths are resolved against the dataset folder; fix the paths or store the audio bytes",
        )
    names = [r[0] for r in raw]
    use_names = cols["id_column"] is not None or (all(names) and len(set(names)) == len(names))
    clips = []
    for i, (name, path, label, speaker, session, gender) in enumerate(raw):
        if cols["id_column"] is not None:
            clip_id = str(name)
        elif use_names:
            clip_id = Path(str(name)).with_suffix("").as_posix()
        else:
            clip_id = f"row_{i:06d}"
        clips.append(Clip(clip_id, path, label, speaker, session, gender))
    check_unique_ids(clips, NAME)
    return clips


SPEC = CorpusSpec(
    name=NAME,
    description="a Hugging Face dataset (save_to_disk folder, or parquet / arrow files) with audio, label and "
                "speaker columns (+ session, gender, id); column names are options",
    layout="a save_to_disk folder (state.json or dataset_dict.json), or a folder of .parquet / .arrow files",
    raw_labels=(),
    label_sets={},
    default_label_set="all",
    parse=parse,
)

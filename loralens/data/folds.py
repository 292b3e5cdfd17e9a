"""Speaker-independent cross-validation folds: schemes, the validation split, the leak check, JSON in/out.

A fold holds clip ids in three splits: `train`, `validation` (whole speakers taken from the training speakers)
and `test`. No speaker is ever in two splits of one fold, the test splits of all folds are disjoint and together
cover the corpus. Folds depend only on the corpus' clips, the scheme and the seed, so they are reproducible; the
JSON file written by `save_folds` can be passed back with `load_folds`, which re-checks all of this.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loralens.data.clips import Corpus
from loralens.errors import FoldError
from loralens.io import atomic_write_json

SPLITS: tuple[str, ...] = ("train", "validation", "test")

#: Scheme names accepted by `make_folds` (plus the aliases in `SCHEME_ALIASES`).
SCHEMES: tuple[str, ...] = (
    "auto",
    "ravdess6",
    "leave-one-speaker-out",
    "leave-one-session-out",
    "speaker-kfold",
)
SCHEME_ALIASES: dict[str, str] = {
    "loso": "leave-one-speaker-out",
    "speaker": "leave-one-speaker-out",
    "session": "leave-one-session-out",
    "kfold": "speaker-kfold",
}

FOLDS_FORMAT = "loralens-folds"
FOLDS_VERSION = 1

#: Default number of folds of `speaker-kfold` when `k` is not given.
DEFAULT_K = 5
#: Default share of the training speakers that goes to validation when no count is given.
DEFAULT_VAL_FRACTION = 0.1


@dataclass
class Fold:
    """One cross-validation fold: clip ids of the training, validation and test splits."""

    name: str
    train: list[str]
    validation: list[str]
    test: list[str]

    def split(self, split: str) -> list[str]:
        """The clip ids of `split` ("train", "validation" or "test")."""
        if split not in SPLITS:
            raise FoldError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
        return getattr(self, split)

    def speakers(self, corpus: Corpus) -> dict[str, list[str]]:
        """Speakers of each split, in natural order (Actor_2 before Actor_10)."""
        return fold_speakers(self, corpus)


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key that orders embedded numbers by value: "Actor_2" < "Actor_10"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def fold_speakers(fold: Fold, corpus: Corpus) -> dict[str, list[str]]:
    """{"train": [...], "validation": [...], "test": [...]}: the speakers of each split of `fold`."""
    by_id = corpus.by_id()
    out: dict[str, list[str]] = {}
    for split in SPLITS:
        speakers = {by_id[i].speaker for i in fold.split(split) if i in by_id}
        out[split] = sorted(speakers, key=natural_key)
    return out


# ----------------------------------------------------------------------------------------------- schemes


def resolve_scheme(corpus: Corpus, scheme: str = "auto", *, k: int | None = None) -> str:
    """The canonical scheme name `scheme` stands for on `corpus` ("auto" picks one, aliases are expanded).

    auto: `ravdess6` for RAVDESS, `speaker-kfold` when `k` is given, `leave-one-session-out` when every clip has a
    session and there are at least 2 sessions, else `leave-one-speaker-out`.
    """
    name = SCHEME_ALIASES.get(scheme.lower(), scheme.lower())
    if name not in SCHEMES:
        raise FoldError(
            f"unknown fold scheme {scheme!r}",
            f"use one of {', '.join(SCHEMES)} (aliases: {', '.join(SCHEME_ALIASES)}), or a folds JSON file",
        )
    if name != "auto":
        return name
    if corpus.name.lower() == "ravdess" and k is None:
        return "ravdess6"
    if k is not None:
        return "speaker-kfold"
    sessions = {c.session for c in corpus.clips}
    if None not in sessions and len(sessions) >= 2:
        return "leave-one-session-out"
    return "leave-one-speaker-out"


def _ravdess_actor(speaker: str) -> int:
    numbers = re.findall(r"\d+", speaker)
    if not numbers:
        raise FoldError(
            f"speaker {speaker!r} has no actor number",
            "the ravdess6 scheme needs RAVDESS actors 1-24 (e.g. 'Actor_01'); use another --folds scheme",
        )
    return int(numbers[-1])


def _test_groups(corpus: Corpus, scheme: str, k: int | None, seed: int) -> list[list[str]]:
    """Speakers of the test split of each fold (for session folds: the speakers of each session)."""
    speakers = sorted(corpus.speakers(), key=natural_key)
    if scheme == "ravdess6":
        groups: list[list[str]] = [[] for _ in range(6)]
        for s in speakers:
            actor = _ravdess_actor(s)
            if not 1 <= actor <= 24:
                raise FoldError(
                    f"speaker {s!r}: actor number {actor} is outside 1-24",
                    "the ravdess6 scheme is for RAVDESS only; use leave-one-speaker-out or speaker-kfold",
                )
            groups[(actor - 1) // 4].append(s)
        return groups
    if scheme == "leave-one-speaker-out":
        return [[s] for s in speakers]
    if scheme == "speaker-kfold":
        k = DEFAULT_K if k is None else k
        if not 2 <= k <= len(speakers):
            raise FoldError(
                f"cannot make {k} speaker folds from {len(speakers)} speakers",
                f"choose k between 2 and {len(speakers)}",
            )
        # Deal speakers round-robin, one gender after the other, so every fold gets a similar gender mix.
        genders = _speaker_genders(corpus)
        rng = random.Random(seed)
        order: list[str] = []
        for g in sorted({genders[s] or "" for s in speakers}):
            members = [s for s in speakers if (genders[s] or "") == g]
            rng.shuffle(members)
            order.extend(members)
        groups = [[] for _ in range(k)]
        for i, s in enumerate(order):
            groups[i % k].append(s)
        return [sorted(g, key=natural_key) for g in groups]
    if scheme == "leave-one-session-out":
        missing = [c.id for c in corpus.clips if c.session is None]
        if missing:
            raise FoldError(
                f"corpus {corpus.name!r}: {len(missing)} clips have no session (e.g. {missing[0]!r})",
                "leave-one-session-out needs a session on every clip; use leave-one-speaker-out",
            )
        by_session: dict[str, set[str]] = {}
        for c in corpus.clips:
            by_session.setdefault(c.session, set()).add(c.speaker)  # type: ignore[arg-type]
        if len(by_session) < 2:
            raise FoldError(f"corpus {corpus.name!r} has only one session", "use leave-one-speaker-out")
        seen: dict[str, str] = {}
        for session in sorted(by_session, key=natural_key):
            for s in by_session[session]:
                if s in seen:
                    raise FoldError(
                        f"speaker {s!r} is in sessions {seen[s]!r} and {session!r}",
                        "leave-one-session-out would leak this speaker; use leave-one-speaker-out",
                    )
                seen[s] = session
        return [sorted(by_session[s], key=natural_key) for s in sorted(by_session, key=natural_key)]
    raise FoldError(f"unknown fold scheme {scheme!r}")  # resolve_scheme has already refused it


def _speaker_genders(corpus: Corpus) -> dict[str, str | None]:
    genders: dict[str, str | None] = {}
    for c in corpus.clips:
        if genders.get(c.speaker) is None:
            genders[c.speaker] = c.gender
    return genders


def default_n_val_speakers(n_train_speakers: int, n_genders: int = 1) -> int:
    """Validation speakers when none is asked for: 10 % of the training speakers, rounded, at least 1 and at
    least one per known gender when there are enough speakers; always leaves at least one training speaker."""
    n = max(1, round(DEFAULT_VAL_FRACTION * n_train_speakers))
    if n_genders >= 2 and n_train_speakers >= 4 * n_genders:
        n = max(n, n_genders)
    return min(n, n_train_speakers - 1)


def pick_validation_speakers(
    speakers: list[str], genders: dict[str, str | None], n: int, rng: random.Random
) -> list[str]:
    """`n` of `speakers`, drawn with `rng` and stratified by gender (each gender gets its share of `n`, largest
    remainders first, ties broken by `rng`). Speakers of unknown gender form their own group."""
    groups: dict[str, list[str]] = {}
    for s in sorted(speakers, key=natural_key):
        groups.setdefault(genders.get(s) or "unknown", []).append(s)
    keys = sorted(groups)
    quotas = {g: n * len(groups[g]) / len(speakers) for g in keys}
    alloc = {g: int(quotas[g]) for g in keys}
    ties = {g: rng.random() for g in keys}
    for g in sorted(keys, key=lambda g: (-(quotas[g] - alloc[g]), ties[g]))[: n - sum(alloc.values())]:
        alloc[g] += 1
    chosen: list[str] = []
    for g in keys:
        chosen.extend(rng.sample(groups[g], alloc[g]))
    return sorted(chosen, key=natural_key)


def make_folds(
    corpus: Corpus,
    scheme: str = "auto",
    *,
    k: int | None = None,
    n_val_speakers: int | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
) -> list[Fold]:
    """Speaker-independent folds of `corpus`, named fold0, fold1, ...

    scheme: "auto", "ravdess6" (6 folds of 4 consecutive actors: fold0 = actors 1-4 ... fold5 = 21-24),
    "leave-one-speaker-out", "leave-one-session-out" or "speaker-kfold" (`k` folds, default 5, speakers shuffled
    with `seed` and dealt by gender). The validation split of each fold is `n_val_speakers` whole speakers (or
    `val_fraction` of them; default `default_n_val_speakers`) drawn from that fold's training speakers with a
    generator seeded by `seed` and the fold index, stratified by gender. Clip ids keep the corpus' order.
    The result passes `check_folds`.
    """
    if not corpus.clips:
        raise FoldError(f"corpus {corpus.name!r} has no clips", "check --root and --label-set")
    if n_val_speakers is not None and val_fraction is not None:
        raise FoldError("give either n_val_speakers or val_fraction, not both")
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise FoldError(f"val_fraction {val_fraction} is not between 0 and 1")
    name = resolve_scheme(corpus, scheme, k=k)
    if k is not None and name != "speaker-kfold":
        raise FoldError(f"k={k} is only used by the speaker-kfold scheme, not {name!r}", "drop k or use speaker-kfold")
    genders = _speaker_genders(corpus)
    all_speakers = sorted(corpus.speakers(), key=natural_key)
    folds: list[Fold] = []
    for i, test_speakers in enumerate(_test_groups(corpus, name, k, seed)):
        test_set = set(test_speakers)
        train_speakers = [s for s in all_speakers if s not in test_set]
        n_genders = len({genders[s] for s in train_speakers if genders[s] is not None})
        if n_val_speakers is not None:
            n_val = n_val_speakers
        elif val_fraction is not None:
            n_val = max(1, round(val_fraction * len(train_speakers)))
        else:
            n_val = default_n_val_speakers(len(train_speakers), n_genders)
        if not 1 <= n_val < len(train_speakers):
            raise FoldError(
                f"fold{i}: cannot take {n_val} validation speakers from {len(train_speakers)} training speakers",
                f"choose between 1 and {len(train_speakers) - 1} validation speakers",
            )
        rng = random.Random(seed * 1_000_003 + i)
        val_set = set(pick_validation_speakers(train_speakers, genders, n_val, rng))
        split_of = {s: "test" for s in test_set}
        split_of.update({s: "validation" for s in val_set})
        ids: dict[str, list[str]] = {s: [] for s in SPLITS}
        for c in corpus.clips:
            ids[split_of.get(c.speaker, "train")].append(c.id)
        folds.append(Fold(f"fold{i}", ids["train"], ids["validation"], ids["test"]))
    check_folds(folds, corpus)
    return folds


# ----------------------------------------------------------------------------------------------- checks


def _examples(items: list[str], n: int = 3) -> str:
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def check_folds(folds: list[Fold], corpus: Corpus, *, require_cover: bool = True) -> None:
    """Raise FoldError when `folds` are not clean speaker-independent folds of `corpus`.

    Checked: at least one fold, unique fold names; every id is a clip of `corpus`; no id twice; no split empty;
    no speaker in two splits of one fold (the error names the speaker, the splits and the clip counts); test
    splits disjoint across folds; with `require_cover`, every clip in some test split.
    """
    if not folds:
        raise FoldError("no folds given")
    names = Counter(f.name for f in folds)
    dupes = sorted(n for n, c in names.items() if c > 1)
    if dupes:
        raise FoldError(f"fold names are not unique: {_examples(dupes)}")
    by_id = corpus.by_id()
    test_owner: dict[str, str] = {}
    for fold in folds:
        where: dict[str, str] = {}
        for split in SPLITS:
            ids = fold.split(split)
            if not ids:
                raise FoldError(
                    f"fold {fold.name!r}: the {split} split is empty",
                    "every fold needs training, validation and test speakers",
                )
            unknown = [i for i in ids if i not in by_id]
            if unknown:
                raise FoldError(
                    f"fold {fold.name!r}: {len(unknown)} {split} ids are not clips of corpus {corpus.name!r}: "
                    f"{_examples(unknown)}",
                    "make the folds from the same corpus copy and label set",
                )
            for i in ids:
                if i in where:
                    raise FoldError(
                        f"fold {fold.name!r}: clip {i!r} is listed in {where[i]} and in {split}"
                        if where[i] != split
                        else f"fold {fold.name!r}: clip {i!r} is listed twice in {split}"
                    )
                where[i] = split
        # Speaker leak: the speakers' clip counts per split.
        per_speaker: dict[str, Counter[str]] = {}
        for i, split in where.items():
            per_speaker.setdefault(by_id[i].speaker, Counter())[split] += 1
        leaks = sorted((s for s, c in per_speaker.items() if len(c) > 1), key=natural_key)
        if leaks:
            details = "; ".join(
                f"speaker {s!r} is in " + " and ".join(f"{sp} ({per_speaker[s][sp]} clips)" for sp in SPLITS
                                                     if per_speaker[s][sp])
                for s in leaks[:3]
            )
            more = f" ({len(leaks)} leaking speakers in all)" if len(leaks) > 3 else ""
            raise FoldError(
                f"fold {fold.name!r} leaks speakers: {details}{more}",
                "each speaker must be in exactly one of train / validation / test; remake the folds",
            )
        for i in fold.test:
            if i in test_owner:
                raise FoldError(
                    f"clip {i!r} (speaker {by_id[i].speaker!r}) is in the test split of both "
                    f"{test_owner[i]!r} and {fold.name!r}",
                    "test splits of different folds must not overlap",
                )
            test_owner[i] = fold.name
    if require_cover:
        uncovered = [c.id for c in corpus.clips if c.id not in test_owner]
        if uncovered:
            speakers = sorted({by_id[i].speaker for i in uncovered}, key=natural_key)
            raise FoldError(
                f"{len(uncovered)} clips of corpus {corpus.name!r} are in no test split "
                f"(speakers {_examples(speakers)}; e.g. clip {uncovered[0]!r})",
                "the test splits of the folds must cover the corpus",
            )


# ----------------------------------------------------------------------------------------------- JSON


def folds_to_json(folds: list[Fold], corpus: Corpus, *, scheme: str, seed: int) -> dict[str, Any]:
    """The JSON document `save_folds` writes."""
    return {
        "format": FOLDS_FORMAT,
        "version": FOLDS_VERSION,
        "corpus": corpus.name,
        "labels": list(corpus.labels),
        "n_clips": len(corpus.clips),
        "scheme": scheme,
        "seed": seed,
        "folds": [
            {
                "name": f.name,
                "speakers": fold_speakers(f, corpus),
                "train": list(f.train),
                "validation": list(f.validation),
                "test": list(f.test),
            }
            for f in folds
        ],
    }


def save_folds(path: str | Path, folds: list[Fold], corpus: Corpus, *, scheme: str, seed: int) -> Path:
    """Check `folds` and write them atomically to `path` as JSON (scheme, seed, corpus, speakers per split)."""
    check_folds(folds, corpus)
    path = Path(path)
    atomic_write_json(path, folds_to_json(folds, corpus, scheme=scheme, seed=seed))
    return path


def read_folds_file(path: str | Path) -> dict[str, Any]:
    """The raw JSON document of a folds file, its layout checked (not its ids: see `load_folds`)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FoldError(f"{path}: folds file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FoldError(f"{path}: not a valid JSON folds file ({e})") from None
    hint = "write folds with `loralens data folds` or `loralens.data.folds.save_folds`"
    if not isinstance(doc, dict) or doc.get("format") != FOLDS_FORMAT:
        raise FoldError(f"{path}: not a loralens folds file (no \"format\": \"{FOLDS_FORMAT}\")", hint)
    if doc.get("version") != FOLDS_VERSION:
        raise FoldError(f"{path}: folds file version {doc.get('version')!r} is not {FOLDS_VERSION}", hint)
    if not isinstance(doc.get("folds"), list):
        raise FoldError(f"{path}: \"folds\" is not a list", hint)
    for n, f in enumerate(doc["folds"]):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise FoldError(f"{path}: fold #{n} has no name", hint)
        for split in SPLITS:
            ids = f.get(split)
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise FoldError(f"{path}: fold {f['name']!r}: {split!r} is not a list of clip ids", hint)
    return doc


def load_folds(path: str | Path, corpus: Corpus) -> list[Fold]:
    """Folds from a JSON file written by `save_folds`, checked against `corpus`.

    Raises FoldError when the file was made for another corpus, names an id that is not a clip of `corpus`,
    records speakers that differ from the clips' speakers, or fails `check_folds` (e.g. a speaker leak).
    """
    path = Path(path)
    doc = read_folds_file(path)
    made_for = doc.get("corpus")
    if isinstance(made_for, str) and made_for.lower() != corpus.name.lower():
        raise FoldError(
            f"{path}: folds were made for corpus {made_for!r}, not {corpus.name!r}",
            "use a folds file of this corpus or a scheme name",
        )
    folds = [Fold(f["name"], list(f["train"]), list(f["validation"]), list(f["test"])) for f in doc["folds"]]
    by_id = corpus.by_id()
    for fold in folds:
        for split in SPLITS:
            unknown = [i for i in fold.split(split) if i not in by_id]
            if unknown:
                raise FoldError(
                    f"{path}: fold {fold.name!r}: {len(unknown)} {split} ids are not clips of corpus "
                    f"{corpus.name!r} at {corpus.root}: {_examples(unknown)}",
                    "the folds were made from another copy or label set; remake them for this corpus",
                )
    try:
        check_folds(folds, corpus)
    except FoldError as e:
        raise FoldError(f"{path}: {e.message}", e.hint) from None
    for fold, raw in zip(folds, doc["folds"]):
        recorded = raw.get("speakers")
        if recorded is None:
            continue
        actual = fold_speakers(fold, corpus)
        for split in SPLITS:
            if sorted(recorded.get(split, []), key=natural_key) != actual[split]:
                raise FoldError(
                    f"{path}: fold {fold.name!r}: the {split} speakers recorded in the file "
                    f"({_examples(recorded.get(split, []))}) are not those of its clips ({_examples(actual[split])})",
                    "the file was edited or made for another copy; remake the folds",
                )
    return folds


def resolve_folds(
    spec: str | Path,
    corpus: Corpus,
    *,
    k: int | None = None,
    n_val_speakers: int | None = None,
    seed: int = 0,
) -> tuple[list[Fold], str]:
    """Folds from a scheme name or a folds JSON file; also returns the scheme (the file's, for a file)."""
    text = str(spec)
    lowered = text.lower()
    is_scheme = lowered in SCHEMES or lowered in SCHEME_ALIASES
    if not is_scheme and (text.endswith(".json") or Path(text).exists()):
        doc = read_folds_file(text)
        return load_folds(text, corpus), str(doc.get("scheme", "file"))
    name = resolve_scheme(corpus, text, k=k)
    return make_folds(corpus, name, k=k, n_val_speakers=n_val_speakers, seed=seed), name

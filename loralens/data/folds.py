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
from collections.abc import Callable
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


def default_k(n_speakers: int) -> int:
    """Folds of speaker-kfold when `k` is not given: 5, fewer for few speakers so that every test split has at
    least two speakers (n // 2), and one speaker per fold below four speakers."""
    return n_speakers if n_speakers <= 3 else min(DEFAULT_K, n_speakers // 2)


def _ravdess6_fits(corpus: Corpus) -> bool:
    # every group of four actors present, so that every fold has test speakers and training speakers to spare
    try:
        groups = {(_ravdess_actor(s) - 1) // 4 for s in corpus.speakers()}
    except FoldError:
        return False
    return groups == set(range(6))


def resolve_scheme(corpus: Corpus, scheme: str = "auto", *, k: int | None = None) -> str:
    """The canonical scheme name `scheme` stands for on `corpus` ("auto" picks one, aliases are expanded).

    auto: `speaker-kfold` when `k` is given; `ravdess6` for RAVDESS with all 24 actors; `leave-one-session-out`
    when every clip has a session and there are at least 2 sessions; `leave-one-speaker-out` for the built-in
    corpora; `speaker-kfold` with `default_k` folds otherwise (a manifest, a RAVDESS subset). `describe_scheme`
    says which rule applied.
    """
    return _resolve(corpus, scheme, k)[0]


def describe_scheme(corpus: Corpus, scheme: str = "auto", *, k: int | None = None) -> str:
    """The scheme `scheme` stands for on `corpus`, with its number of folds and why auto chose it, e.g.
    "speaker-kfold, k=4 (auto: a manifest without sessions, k from its 9 speakers)"."""
    name, why = _resolve(corpus, scheme, k)
    if name == "speaker-kfold":
        name += f", k={k if k is not None else default_k(len(corpus.speakers()))}"
    return f"{name} ({why})" if why else name


def _resolve(corpus: Corpus, scheme: str, k: int | None) -> tuple[str, str]:
    name = SCHEME_ALIASES.get(scheme.lower(), scheme.lower())
    if name not in SCHEMES:
        raise FoldError(
            f"unknown fold scheme {scheme!r}",
            f"use one of {', '.join(SCHEMES)} (aliases: {', '.join(SCHEME_ALIASES)}), or a folds JSON file",
        )
    if name != "auto":
        return name, ""
    n = len(corpus.speakers())
    if k is not None:
        return "speaker-kfold", "auto: --folds-k given"
    if corpus.name.lower() == "ravdess":
        if _ravdess6_fits(corpus):
            return "ravdess6", "auto: RAVDESS with all 24 actors"
        return "speaker-kfold", f"auto: a RAVDESS subset of {n} actors, k from its speakers"
    sessions = {c.session for c in corpus.clips}
    if None not in sessions and len(sessions) >= 2:
        return "leave-one-session-out", f"auto: every clip has a session ({len(sessions)} sessions)"
    if corpus.name.lower() in _BUILT_IN_LOSO:
        return "leave-one-speaker-out", "auto: the corpus' usual protocol"
    return "speaker-kfold", f"auto: no sessions, k from its {n} speakers"


# Built-in corpora whose literature reports leave-one-speaker-out (auto keeps it for them).
_BUILT_IN_LOSO = {"emodb", "tess", "crema-d", "cremad", "iemocap"}


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
        k = default_k(len(speakers)) if k is None else k
        if not 2 <= k <= len(speakers):
            raise FoldError(
                f"cannot make {k} speaker folds from {len(speakers)} speakers",
                f"choose --folds-k between 2 and {len(speakers)}" if len(speakers) >= 3 else
                "speaker-independent folds need at least 3 speakers (training, validation, test)",
            )
        # Deal speakers round-robin, one gender after the other, so every fold gets a similar gender mix.
        genders = _speaker_genders(corpus)
        rng = random.Random(seed)
        rarity = _class_rarity(corpus)
        order: list[str] = []
        for g in sorted({genders[s] or "" for s in speakers}):
            members = [s for s in speakers if (genders[s] or "") == g]
            rng.shuffle(members)
            # speakers of a class few speakers recorded are dealt first, so they land in different folds; when
            # every speaker has every class this is the shuffled order unchanged
            members.sort(key=lambda s: rarity[s])
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


def _class_rarity(corpus: Corpus) -> dict[str, int]:
    """Per speaker: the number of speakers of its rarest class (small = holds a class few speakers have)."""
    speakers_of: dict[str, set[str]] = {}
    labels_of: dict[str, set[str]] = {}
    for c in corpus.clips:
        speakers_of.setdefault(c.label, set()).add(c.speaker)
        labels_of.setdefault(c.speaker, set()).add(c.label)
    return {s: min(len(speakers_of[lab]) for lab in labs) for s, labs in labels_of.items()}


def _classes_of(corpus: Corpus) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for c in corpus.clips:
        out.setdefault(c.speaker, set()).add(c.label)
    return out


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
    classes_of = _classes_of(corpus)
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
        if not test_speakers:
            raise FoldError(f"fold{i} of {name}: no speaker of the corpus falls in its test split",
                            _scheme_hint(corpus, seed, name))
        if len(train_speakers) < 2:
            raise FoldError(f"fold{i} of {name}: {len(train_speakers)} speaker(s) left for training and validation "
                            f"({len(all_speakers)} speakers in all)", _scheme_hint(corpus, seed, name))
        if not 1 <= n_val < len(train_speakers):
            raise FoldError(
                f"fold{i}: cannot take {n_val} validation speakers from {len(train_speakers)} training speakers",
                f"choose between 1 and {len(train_speakers) - 1} validation speakers (--val-speakers)",
            )
        rng = random.Random(seed * 1_000_003 + i)
        val_set = set(pick_validation_speakers(train_speakers, genders, n_val, rng))
        # Redraw (same generator, so still reproducible) when validation took every training speaker of a class;
        # the first draw stands when it leaves every class in training, as it always does when all speakers
        # recorded all classes.
        for _ in range(20):
            kept = set().union(*(classes_of[s] for s in train_speakers if s not in val_set))
            if kept >= set().union(*(classes_of[s] for s in train_speakers)):
                break
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


# ----------------------------------------------------------------------------------------------- sanity


#: A validation split with fewer clips than this per class of the corpus gets a warning (model selection on a
#: handful of clips picks an epoch by chance).
MIN_VALIDATION_PER_CLASS = 3


@dataclass
class FoldCheck:
    """What the folds of a corpus can measure. `counts[fold][split][label]` = clips; `errors` make the folds
    unusable (a test split missing a class training has, a class of one speaker); `warnings` weaken them (a small
    validation split, one missing a class); `suggestion` is the flags of a scheme without errors, when one exists."""

    scheme: str
    counts: dict[str, dict[str, dict[str, int]]]
    errors: list[str]
    warnings: list[str]
    suggestion: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def _class_counts_per_split(folds: list[Fold], corpus: Corpus) -> dict[str, dict[str, dict[str, int]]]:
    by_id = corpus.by_id()
    out = {}
    for f in folds:
        out[f.name] = {}
        for split in SPLITS:
            c = Counter(by_id[i].label for i in f.split(split) if i in by_id)
            out[f.name][split] = {label: c.get(label, 0) for label in corpus.labels}
    return out


def _problems(folds: list[Fold], corpus: Corpus) -> tuple[dict, list[str], list[str]]:
    counts = _class_counts_per_split(folds, corpus)
    errors: list[str] = []
    warns: list[str] = []
    speakers_of: dict[str, set[str]] = {}
    for c in corpus.clips:
        speakers_of.setdefault(c.label, set()).add(c.speaker)
    for label in corpus.labels:
        sp = sorted(speakers_of.get(label, set()), key=natural_key)
        if len(sp) == 1:
            errors.append(f"class {label!r} is recorded by one speaker only ({sp[0]}): the fold that tests "
                          f"{sp[0]} never trains on it, the others never test it")
        elif not sp:
            errors.append(f"class {label!r} has no clips")
    single = {lab for lab in corpus.labels if len(speakers_of.get(lab, set())) <= 1}
    min_val = MIN_VALIDATION_PER_CLASS * len(corpus.labels)
    for f in folds:
        c = counts[f.name]
        trained = [lab for lab in corpus.labels if c["train"][lab] > 0]
        untested = [lab for lab in trained if c["test"][lab] == 0 and lab not in single]
        if untested:
            errors.append(f"{f.name}: the test split ({len(f.test)} clips) has no " +
                          ", ".join(f"{lab!r}" for lab in untested) + " clip, though training has " +
                          ", ".join(str(c["train"][lab]) for lab in untested))
        unseen = [lab for lab in corpus.labels if c["test"][lab] > 0 and c["train"][lab] == 0 and lab not in single]
        if unseen:
            errors.append(f"{f.name}: the test split has " + ", ".join(f"{lab!r}" for lab in unseen)
                          + " clips, training has none")
        no_val = [lab for lab in trained if c["validation"][lab] == 0]
        if no_val:
            warns.append(f"{f.name}: the validation split has no " + ", ".join(f"{lab!r}" for lab in no_val)
                         + " clip: model selection cannot see those classes")
        if len(f.validation) < min_val:
            warns.append(f"{f.name}: the validation split has {len(f.validation)} clips "
                         f"(fewer than {MIN_VALIDATION_PER_CLASS} per class): the selected epoch is noisy")
    return counts, errors, warns


def _candidates(corpus: Corpus) -> list[tuple[str, int | None, str]]:
    n = len(corpus.speakers())
    out: list[tuple[str, int | None, str]] = []
    if _ravdess6_fits(corpus):
        out.append(("ravdess6", None, "--folds ravdess6"))
    sessions = {c.session for c in corpus.clips}
    if None not in sessions and len(sessions) >= 2:
        out.append(("leave-one-session-out", None, "--folds leave-one-session-out"))
    first = default_k(n)
    for k in [first] + [k for k in range(min(10, n), 1, -1) if k != first]:
        if k >= 2:
            out.append(("speaker-kfold", k, f"--folds speaker-kfold --folds-k {k}"))
    return out


def suggest_scheme(corpus: Corpus, seed: int = 0, exclude: str | None = None) -> str | None:
    """Flags of a fold scheme for `corpus` that `check_fold_classes` finds no error in (preferring one without
    warnings, then more folds); None when there is none. `exclude`: a scheme description not to suggest."""
    best_with_warnings = None
    for name, k, flags in _candidates(corpus):
        if exclude is not None and flags == exclude:
            continue
        try:
            folds = make_folds(corpus, name, k=k, seed=seed)
        except FoldError:
            continue
        _, errors, warns = _problems(folds, corpus)
        if not errors and not warns:
            return flags
        if not errors and best_with_warnings is None:
            best_with_warnings = flags
    return best_with_warnings


_suggesting = False  # set while suggest_scheme tries schemes: their failures need no hint of their own


def _scheme_hint(corpus: Corpus, seed: int, failed: str) -> str:
    global _suggesting
    if _suggesting:
        return ""
    _suggesting = True
    try:
        flags = suggest_scheme(corpus, seed)
    finally:
        _suggesting = False
    n = len(corpus.speakers())
    if flags:
        return f"{failed} does not fit these {n} speakers; use {flags}"
    return (f"{failed} does not fit these {n} speakers, and no scheme gives every fold training, validation and "
            "test speakers of every class; add speakers, or leave out rare classes with --label-set")


def check_fold_classes(folds: list[Fold], corpus: Corpus, *, scheme: str = "", seed: int = 0) -> FoldCheck:
    """The fold sanity report: clips per class per split of every fold, errors and warnings (see `FoldCheck`)
    and, when there are errors, the flags of a scheme without them."""
    counts, errors, warns = _problems(folds, corpus)
    suggestion = suggest_scheme(corpus, seed) if errors else None
    return FoldCheck(scheme, counts, errors, warns, suggestion)


def fold_check_hint(check: FoldCheck) -> str:
    """What to do about the errors of `check` (names the flags of a working scheme when there is one)."""
    single = any("recorded by one speaker only" in e or "has no clips" in e for e in check.errors)
    if single:
        return ("no speaker-independent fold can test a class of one speaker: leave it out with --label-set "
                "(list the other labels) or map it onto another with --label-map")
    if check.suggestion:
        return f"use {check.suggestion} (no fold then lacks a class); check with `loralens data folds`"
    return "no scheme gives every test split every class: leave out rare classes with --label-set"


def format_fold_check(check: FoldCheck, labels: tuple[str, ...] | list[str], *, table: bool = True) -> str:
    """The report as text: a table of clips per class (fold x split), then `error:` and `warning:` lines."""
    lines: list[str] = []
    if table:
        short = [lab[:7] for lab in labels]
        head = f"{'fold':<8}{'split':<11}{'clips':>6}" + "".join(f"{s:>9}" for s in short)
        lines += [head, "-" * len(head)]
        for name, per in check.counts.items():
            for split in SPLITS:
                row = per[split]
                lines.append(f"{name:<8}{split:<11}{sum(row.values()):>6}"
                             + "".join(f"{row[lab]:>9}" for lab in labels))
    lines += [f"error: {e}" for e in check.errors]
    lines += [f"warning: {w}" for w in check.warnings]
    return "\n".join(lines)


def require_sane_folds(folds: list[Fold], corpus: Corpus, *, scheme: str, seed: int,
                       echo: Callable[[str], None] | None = None) -> FoldCheck:
    """Run `check_fold_classes`; print warnings with `echo`; raise FoldError listing the errors and the scheme
    that would work. Used at the start of `train` and `run`."""
    check = check_fold_classes(folds, corpus, scheme=scheme, seed=seed)
    if echo is not None:
        for w in check.warnings:
            echo(f"warning: {w}")
    if check.errors:
        raise FoldError(f"the folds ({scheme}) cannot measure every class: " + "; ".join(check.errors[:5])
                        + (f"; and {len(check.errors) - 5} more" if len(check.errors) > 5 else ""),
                        fold_check_hint(check))
    return check

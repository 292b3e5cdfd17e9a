"""Corpus summary: clips per class, per speaker and per fold, and duration statistics from the file headers."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from loralens.data.clips import Clip, Corpus
from loralens.data.folds import SPLITS, Fold, fold_speakers, natural_key


def clip_durations(
    clips: list[Clip], progress: Callable[[Iterable[Clip]], Iterable[Clip]] | None = None
) -> list[float]:
    """Duration (s) of each clip: `clip.duration` when known, else from the file header (`audio_info`, no
    decoding). Raises AudioError naming the file when a header cannot be read."""
    from loralens.data.audio import audio_info

    iterable = progress(clips) if progress is not None else clips
    return [c.duration if c.duration is not None else audio_info(c.path).duration for c in iterable]


def duration_stats(durations: list[float]) -> dict[str, float | int | None]:
    """{n, min_s, median_s, mean_s, max_s, total_s, total_h} of durations in seconds (None values when empty)."""
    if not durations:
        return {"n": 0, "min_s": None, "median_s": None, "mean_s": None, "max_s": None, "total_s": 0.0,
                "total_h": 0.0}
    total = float(sum(durations))
    return {
        "n": len(durations),
        "min_s": float(min(durations)),
        "median_s": float(statistics.median(durations)),
        "mean_s": total / len(durations),
        "max_s": float(max(durations)),
        "total_s": total,
        "total_h": total / 3600.0,
    }


def _class_counts(labels: tuple[str, ...], clips: Iterable[Clip]) -> dict[str, int]:
    counts = Counter(c.label for c in clips)
    return {label: counts.get(label, 0) for label in labels}


def summarize(
    corpus: Corpus,
    folds: list[Fold] | None = None,
    *,
    durations: bool = True,
    progress: Callable[[Iterable[Clip]], Iterable[Clip]] | None = None,
) -> dict[str, Any]:
    """A JSON-ready summary of `corpus` (and of `folds` when given).

    Keys: corpus, root, labels, n_clips, n_speakers, classes {label: clips}, genders {gender: speakers},
    speakers {speaker: {gender, n_clips, classes}}, durations (see `duration_stats`, seconds; absent when
    `durations` is False) and, with folds, folds [{name, n_clips {split: n}, speakers {split: [...]},
    classes {split: {label: n}}}].
    """
    by_speaker: dict[str, list[Clip]] = {}
    for c in corpus.clips:
        by_speaker.setdefault(c.speaker, []).append(c)
    speakers = sorted(by_speaker, key=natural_key)
    gender_of = {s: next((c.gender for c in by_speaker[s] if c.gender), None) for s in speakers}
    genders = Counter(gender_of[s] or "unknown" for s in speakers)
    out: dict[str, Any] = {
        "corpus": corpus.name,
        "root": str(corpus.root),
        "labels": list(corpus.labels),
        "n_clips": len(corpus.clips),
        "n_speakers": len(speakers),
        "classes": _class_counts(corpus.labels, corpus.clips),
        "genders": dict(sorted(genders.items())),
        "speakers": {
            s: {"gender": gender_of[s], "n_clips": len(by_speaker[s]),
                "classes": _class_counts(corpus.labels, by_speaker[s])}
            for s in speakers
        },
    }
    if durations:
        out["durations"] = duration_stats(clip_durations(corpus.clips, progress))
    if folds is not None:
        by_id = corpus.by_id()
        out["folds"] = [
            {
                "name": f.name,
                "n_clips": {split: len(f.split(split)) for split in SPLITS},
                "speakers": fold_speakers(f, corpus),
                "classes": {
                    split: _class_counts(corpus.labels, (by_id[i] for i in f.split(split))) for split in SPLITS
                },
            }
            for f in folds
        ]
    return out


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(x) for x in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(r[i].rstrip("%").replace(".", "", 1).isdigit() for r in cells[1:]) for i in range(len(header))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _speaker_range(speakers: list[str]) -> str:
    return ", ".join(speakers) if len(speakers) <= 6 else f"{', '.join(speakers[:3])}, ... ({len(speakers)})"


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable tables of a `summarize` result."""
    labels = summary["labels"]
    n = summary["n_clips"]
    parts = [
        f"corpus {summary['corpus']} at {summary['root']}: {n} clips, {summary['n_speakers']} speakers "
        f"({', '.join(f'{v} {k}' for k, v in summary['genders'].items())}), {len(labels)} classes"
    ]
    parts.append(
        _table(["class", "clips", "share"],
               [[k, v, f"{100.0 * v / n:.1f}%" if n else "-"] for k, v in summary["classes"].items()])
    )
    parts.append(
        _table(["speaker", "gender", "clips"] + labels,
               [[s, d["gender"] or "?", d["n_clips"]] + [d["classes"][k] for k in labels]
                for s, d in summary["speakers"].items()])
    )
    if "durations" in summary:
        d = summary["durations"]
        if d["n"]:
            parts.append(
                f"durations (s): min {d['min_s']:.2f}  median {d['median_s']:.2f}  mean {d['mean_s']:.2f}  "
                f"max {d['max_s']:.2f}  total {d['total_s']:.1f} ({d['total_h']:.2f} h)"
            )
    if "folds" in summary:
        rows = [
            [f["name"], f["n_clips"]["train"], f["n_clips"]["validation"], f["n_clips"]["test"],
             _speaker_range(f["speakers"]["validation"]), _speaker_range(f["speakers"]["test"])]
            for f in summary["folds"]
        ]
        parts.append(_table(["fold", "train", "validation", "test", "validation speakers", "test speakers"], rows))
    return "\n\n".join(parts) + "\n"

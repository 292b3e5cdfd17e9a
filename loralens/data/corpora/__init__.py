"""Corpus parsers, one module per corpus, read from each corpus' official layout; `load_corpus` is the entry point.

`CORPORA` maps a name to its `CorpusSpec` (description, layout, label sets, default label set). Names are
matched ignoring case, '-' and '_' ("CREMA-D", "cremad" and "crema_d" are the same corpus).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from loralens.data.audio import audio_info
from loralens.data.clips import Clip, Corpus
from loralens.data.corpora import cremad, emodb, hf, iemocap, manifest, ravdess, tess
from loralens.data.corpora.base import (
    CorpusSpec,
    CorpusWarning,
    LabelSet,
    apply_label_set,
    custom_label_set,
)
from loralens.errors import CorpusError

CORPORA: dict[str, CorpusSpec] = {
    spec.name: spec for spec in (ravdess.SPEC, cremad.SPEC, emodb.SPEC, tess.SPEC, iemocap.SPEC, manifest.SPEC, hf.SPEC)
}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def get_spec(name: str) -> CorpusSpec:
    """The registered corpus called `name` (case, '-' and '_' ignored); CorpusError naming the known ones."""
    for spec in CORPORA.values():
        if _key(spec.name) == _key(name):
            return spec
    raise CorpusError(f"unknown corpus {name!r}", f"known corpora: {', '.join(CORPORA)}")


def resolve_label_set(spec: CorpusSpec, label_set: str | None, found: list[Clip] | None = None) -> LabelSet:
    """The label set called `label_set` for `spec` (None = its default), or a custom comma-separated list.

    For the manifest (open vocabulary) "all" means every label found in `found`, sorted by name.
    """
    name = label_set or spec.default_label_set
    if name in spec.label_sets:
        return spec.label_sets[name]
    if "," in name:
        return custom_label_set(name, spec.raw_labels or None, spec.name)
    if not spec.raw_labels and name == "all":
        labels = sorted({c.label for c in found or []})
        return LabelSet.identity("all", labels, "every label in the manifest")
    choices = ", ".join(list(spec.label_sets) or ["all"])
    raise CorpusError(
        f"{spec.name}: unknown label set {name!r}",
        f"choose one of: {choices}, or list labels separated by commas (class order), e.g. 'neutral,happy,sad,angry'",
    )


def load_corpus(
    name: str, root: str | Path, label_set: str | None = None, *, with_durations: bool = False,
    options: Mapping[str, str | None] | None = None,
) -> Corpus:
    """Parse corpus `name` under `root` and label its clips with `label_set` (None = the corpus default).

    Clips whose emotion the label set leaves out are dropped; `Corpus.labels` is the label set's class order.
    Clip ids are paths relative to the corpus root without extension; clips are sorted by id.
    with_durations: read each file's header (no decoding) to fill `Clip.duration` in seconds.
    options: corpus options; the `hf` corpus takes its column names (`audio_column`, `label_column`,
    `speaker_column`, `session_column`, `gender_column`, `id_column`), other corpora none.
    Raises CorpusError for a wrong root, an unexpected file name, or an empty result.
    """
    spec = get_spec(name)
    given = {k: v for k, v in (options or {}).items() if v is not None}
    if given and spec is not hf.SPEC:
        raise CorpusError(f"{spec.name}: corpus option(s) {', '.join(sorted(given))} apply to the hf corpus only",
                          "drop them, or read a Hugging Face dataset with --corpus hf")
    unknown = sorted(set(given) - set(hf.COLUMN_OPTIONS))
    if unknown:
        raise CorpusError(f"{spec.name}: unknown corpus option(s) {', '.join(unknown)}",
                          f"known: {', '.join(hf.COLUMN_OPTIONS)}")
    raw = spec.parse(Path(root), **given)
    labels = resolve_label_set(spec, label_set, raw)
    clips = sorted(apply_label_set(raw, labels), key=lambda c: c.id)
    corpus_root = manifest.find_manifest(root).parent if spec is manifest.SPEC else Path(os.path.abspath(Path(root).expanduser()))
    if not clips:
        raise CorpusError(
            f"{spec.name}: no clips with labels {', '.join(labels.labels)} found under {root}"
            f" ({len(raw)} clip(s) before label selection)",
            f"check the root (expected layout: {spec.layout}) and the label set",
        )
    if with_durations:
        clips = [c.with_duration(audio_info(c.path).duration) for c in clips]
    return Corpus(spec.name, corpus_root, tuple(labels.labels), clips)


__all__ = [
    "CORPORA",
    "CorpusSpec",
    "CorpusWarning",
    "LabelSet",
    "get_spec",
    "load_corpus",
    "resolve_label_set",
]

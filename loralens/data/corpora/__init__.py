"""Corpus parsers, one module per corpus, read from each corpus' official layout; `load_corpus` is the entry point.

`CORPORA` maps a name to its `CorpusSpec` (description, layout, label sets, default label set). Names are
matched ignoring case, '-' and '_' ("CREMA-D", "cremad" and "crema_d" are the same corpus).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
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
        present = {c.label for c in found or []}
        # the shared vocabulary in the built-ins' order first (neutral, calm, happy, ...), other labels by name
        shared = manifest.SHARED_VOCABULARY
        labels = [v for v in shared if v in present] + sorted(present - set(shared))
        return LabelSet.identity("all", labels, "every label in the manifest")
    choices = ", ".join(list(spec.label_sets) + ([] if spec.raw_labels else ["all"]))
    raise CorpusError(
        f"{spec.name}: unknown label set {name!r}",
        f"choose one of: {choices}, or list labels separated by commas (class order), e.g. 'neutral,happy,sad,angry'",
    )


def parse_label_map(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """A label map from "anger=angry,hap=happy" (CLI) or a mapping (YAML); {} for None. CorpusError when malformed."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        pairs = [(str(k).strip(), str(v).strip()) for k, v in spec.items()]
    else:
        pairs = []
        for item in (s.strip() for s in spec.split(",") if s.strip()):
            if item.count("=") != 1:
                raise CorpusError(f"label map {spec!r}: {item!r} is not FROM=TO",
                                  "write e.g. --label-map anger=angry,hap=happy")
            a, b = item.split("=")
            pairs.append((a.strip(), b.strip()))
    bad = [f"{a}={b}" for a, b in pairs if not a or not b]
    if bad:
        raise CorpusError(f"label map: {', '.join(bad)}: both sides need a label", "write e.g. anger=angry")
    return dict(pairs)


def apply_label_map(clips: list[Clip], label_map: Mapping[str, str], corpus: str) -> list[Clip]:
    """Clips with labels renamed by `label_map` (raw label -> label); CorpusError naming keys no clip has."""
    if not label_map:
        return clips
    present = {c.label for c in clips}
    unused = [k for k in label_map if k not in present]
    if unused:
        raise CorpusError(f"{corpus}: --label-map names label(s) the corpus does not have: {', '.join(unused)}",
                          f"its labels are: {', '.join(sorted(present))}")
    return [replace(c, label=label_map[c.label]) if c.label in label_map else c for c in clips]


def load_corpus(
    name: str, root: str | Path, label_set: str | None = None, *, with_durations: bool = False,
    label_map: str | Mapping[str, str] | None = None, on_unknown_label: str = "error",
    warn: Callable[[str], None] | None = None,
    options: Mapping[str, str | None] | None = None,
) -> Corpus:
    """Parse corpus `name` under `root` and label its clips with `label_set` (None = the corpus default).

    label_map: raw label -> label, applied first ("anger=angry,hap=happy" or a mapping). Clips whose emotion the
    label set leaves out are dropped; for a manifest, labels that look like mistakes (case, spelling, outside an
    explicit set) are errors naming the lines unless `on_unknown_label` is "skip" (see `manifest.check_labels`);
    `warn` receives a line counting the clips left out (default: a CorpusWarning).
    `Corpus.labels` is the label set's class order. Clip ids are paths relative to the corpus root without
    extension; clips are sorted by id.
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
    mapping = parse_label_map(label_map)
    if spec is manifest.SPEC:
        m = manifest.read_manifest(root)
        raw = apply_label_map(m.clips, mapping, spec.name)
        labels = resolve_label_set(spec, label_set, raw)
        explicit = (label_set or spec.default_label_set) != "all"
        raw, note = manifest.check_labels(m, raw, labels.labels, explicit, on_unknown_label)
        if not explicit:  # `all` is every label kept: the ones left out as mistakes are no classes
            labels = resolve_label_set(spec, label_set, raw)
        if note:
            (warn or (lambda t: warnings.warn(t, CorpusWarning, stacklevel=3)))(note)
        corpus_root = m.path.parent
    else:
        raw = apply_label_map(spec.parse(Path(root), **given), mapping, spec.name)
        if mapping:
            unknown = sorted({v for v in mapping.values() if spec.raw_labels and v not in spec.raw_labels})
            if unknown:
                raise CorpusError(f"{spec.name}: --label-map maps onto label(s) outside its vocabulary: "
                                  f"{', '.join(unknown)}", f"map onto one of: {', '.join(spec.raw_labels)}")
        labels = resolve_label_set(spec, label_set, raw)
        corpus_root = Path(os.path.abspath(Path(root).expanduser()))
    clips = sorted(apply_label_set(raw, labels), key=lambda c: c.id)
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
    "apply_label_map",
    "load_corpus",
    "parse_label_map",
    "resolve_label_set",
]

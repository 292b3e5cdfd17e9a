"""Read a `loralens run` output folder (JSON, YAML and figure files only) into plain records for the report.

Layout read (`loralens.training.run_layout.RunLayout`; a variant is a `loralens.training.run_folder.RunFolder`):

    <out>/run.yaml, stages.json, environment.json (optional), folds.json, data/summary.json
    <out>/train/<variant>/config.yaml, summary.json, fold_<k>/metrics.json, fold_<k>/figures/*.png
    <out>/analysis/<variant>/fold_<k>/<analysis>/result.json (+ figures), .../fold_<k>/verdicts.json
    <out>/analysis/<variant>/aggregate/<analysis>.json, verdicts.json (over folds; loralens.analysis.aggregate)
    <out>/ensembles/<name>.json (seed ensembles; loralens.training.ensemble)

Anything absent is None or empty here (the report shows it as "not run"); a file that is present but cannot be
parsed raises `RunFolderError` naming it. No tensor or model is ever loaded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loralens.analysis.catalogue import ORDER
from loralens.errors import RunFolderError
from loralens.io import read_json
from loralens.training.run_folder import RunFolder
from loralens.training.run_layout import RunLayout, fold_name

#: Analyses in suite order (the torch-free catalogue, `loralens.analysis.catalogue`).
ANALYSIS_ORDER: tuple[str, ...] = ORDER

#: Files an analysis driver may leave when an analysis fails (read for the message; optional).
ERROR_FILES: tuple[str, ...] = ("error.json", "error.txt")


def natural_key(text: str) -> list[Any]:
    """Sort key that orders 'fold_10' after 'fold_2' and 'lora_r8' before 'lora_r32'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def read_json_object(path: Path, required: bool = False) -> dict[str, Any] | None:
    """The JSON object in `path`; None when absent (unless `required`). Malformed JSON, or JSON that is not an
    object, raises RunFolderError naming the file."""
    if not path.exists():
        if required:
            raise RunFolderError(f"{path}: file not found", "point at the output folder of `loralens run`")
        return None
    try:
        doc = read_json(path)
    except UnicodeDecodeError as e:
        raise RunFolderError(f"{path}: not UTF-8 text ({e})", "delete it and re-run the stage that writes it") from None
    if not isinstance(doc, dict):
        raise RunFolderError(f"{path}: expected a JSON object, found {type(doc).__name__}",
                             "delete it and re-run the stage that writes it")
    return doc


def read_yaml_mapping(path: Path) -> dict[str, Any] | None:
    """The YAML mapping in `path`; None when absent; RunFolderError naming the file when it is not valid YAML or
    not a mapping."""
    if not path.exists():
        return None
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RunFolderError(f"{path}: not valid YAML ({e})", "delete it and re-run `loralens run`") from None
    except UnicodeDecodeError as e:
        raise RunFolderError(f"{path}: not UTF-8 text ({e})", "delete it and re-run `loralens run`") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise RunFolderError(f"{path}: expected a YAML mapping, found {type(doc).__name__}",
                             "delete it and re-run `loralens run`")
    return doc


def _pngs_or_svgs(folder: Path) -> list[Path]:
    """The figures of a folder: each PNG, and an SVG only where no PNG of the same stem exists."""
    if not folder.is_dir():
        return []
    pngs = sorted(folder.glob("*.png"), key=lambda p: natural_key(p.name))
    stems = {p.stem for p in pngs}
    svgs = [p for p in sorted(folder.glob("*.svg"), key=lambda p: natural_key(p.name)) if p.stem not in stems]
    return sorted(pngs + svgs, key=lambda p: natural_key(p.name))


@dataclass
class TrainFold:
    """One training fold of a variant: `metrics` is its metrics.json (None while not complete)."""

    index: int
    root: Path
    metrics: dict[str, Any] | None
    figures: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str((self.metrics or {}).get("name", fold_name(self.index)))


@dataclass
class Variant:
    """A trained variant (`train/<name>/`): its config.yaml, summary.json and fold folders."""

    name: str
    root: Path
    config: dict[str, Any] | None
    summary: dict[str, Any] | None
    folds: list[TrainFold]

    @property
    def method(self) -> str:
        for source in (self.config, self.summary):
            if source and source.get("method"):
                return str(source["method"])
        for f in self.folds:
            if f.metrics and f.metrics.get("method"):
                return str(f.metrics["method"])
        return "lora" if self.name.startswith("lora") else self.name

    @property
    def complete_folds(self) -> list[TrainFold]:
        return [f for f in self.folds if f.metrics is not None]


@dataclass
class AnalysisResult:
    """One analysis of one fold of one variant. `result` is result.json (None when not complete); `error` the
    message of an error file when the analysis failed; `figures` the figure files found, `missing_figures` those
    listed in result.json but absent."""

    name: str
    variant: str
    fold: int
    root: Path
    result: dict[str, Any] | None
    error: str | None = None
    figures: list[Path] = field(default_factory=list)
    missing_figures: list[str] = field(default_factory=list)

    @property
    def meta(self) -> dict[str, Any]:
        meta = (self.result or {}).get("meta")
        return meta if isinstance(meta, dict) else {}


@dataclass
class AnalysedFold:
    """`analysis/<variant>/fold_<k>/`: the analyses found there and verdicts.json."""

    variant: str
    fold: int
    root: Path
    analyses: dict[str, AnalysisResult]
    verdicts: dict[str, Any] | None

    @property
    def label(self) -> str:
        return f"{self.variant}, fold {self.fold}"


@dataclass
class AggregatedVariant:
    """`analysis/<variant>/aggregate/`: analysis name -> its aggregate over folds (`{"analysis", "folds",
    "n_folds", "curves"}`) and the verdicts summary (`{"folds", "n_folds", "claims"}`), as
    `loralens.analysis.aggregate.aggregate_run` writes them."""

    variant: str
    root: Path
    analyses: dict[str, dict[str, Any]]
    verdicts: dict[str, Any] | None

    def n_folds(self, name: str) -> int:
        """Folds aggregated for analysis `name` (0 when absent)."""
        n = (self.analyses.get(name) or {}).get("n_folds")
        return n if isinstance(n, int) else 0


@dataclass
class RunOutput:
    """Everything the report shows, read from an output folder."""

    root: Path
    config: dict[str, Any] | None
    stages: dict[str, Any] | None
    environment: dict[str, Any] | None
    data_summary: dict[str, Any] | None
    folds: dict[str, Any] | None
    variants: list[Variant]
    analysed: list[AnalysedFold]
    aggregates: dict[str, AggregatedVariant] = field(default_factory=dict)
    #: seed ensemble name -> its ensembles/<name>.json (variants differing only in seed, probabilities averaged)
    ensembles: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return bool((self.config or {}).get("synthetic"))

    @property
    def train_config(self) -> dict[str, Any]:
        train = (self.config or {}).get("train")
        return train if isinstance(train, dict) else {}

    def setting(self, key: str) -> Any:
        """A run setting from run.yaml (`train.<key>` or top-level `<key>`), else from a variant's config.yaml."""
        if key in self.train_config:
            return self.train_config[key]
        if key in (self.config or {}):
            return (self.config or {})[key]
        for v in self.variants:
            if v.config and key in v.config:
                return v.config[key]
        return None

    @property
    def labels(self) -> list[str]:
        for source in [self.data_summary, self.folds] + [v.summary for v in self.variants]:
            if source and isinstance(source.get("labels"), list):
                return [str(x) for x in source["labels"]]
        for v in self.variants:
            for f in v.complete_folds:
                if isinstance(f.metrics.get("labels"), list):
                    return [str(x) for x in f.metrics["labels"]]
        return []

    @property
    def seed(self) -> int | None:
        if self.stages and self.stages.get("seed") is not None:
            return self.stages["seed"]
        seed = self.setting("seed")
        return int(seed) if isinstance(seed, int) else None


def _variant_order(name: str) -> tuple[int, list[Any]]:
    rank = 0 if name.startswith("lora") else 1 if name == "full" else 2 if name == "frozen" else 3
    return rank, natural_key(name)


def read_variant(root: Path) -> Variant:
    """A training run folder: config.yaml, summary.json, fold_<k>/metrics.json and fold figures."""
    run = RunFolder(root)
    folds = []
    for k in run.fold_indices():
        fold = run.fold(k)
        folds.append(TrainFold(k, fold.root, read_json_object(fold.metrics), _pngs_or_svgs(fold.figures)))
    return Variant(root.name, root, read_yaml_mapping(run.config), read_json_object(run.summary_json), folds)


def _error_message(folder: Path) -> str | None:
    for name in ERROR_FILES:
        path = folder / name
        if not path.exists():
            continue
        if name.endswith(".json"):
            doc = read_json_object(path)
            if isinstance(doc, dict):
                parts = [str(doc[k]) for k in ("type", "error", "message") if doc.get(k)]
                return ": ".join(parts) or json.dumps(doc)[:500]
            return str(doc)[:500]
        return path.read_text(encoding="utf-8", errors="replace").strip()[:2000] or "failed (empty error file)"
    return None


def read_analysis(folder: Path, variant: str, fold: int) -> AnalysisResult:
    """One analysis folder: result.json, its figures (PNG preferred over SVG of the same stem), error file."""
    result = read_json_object(folder / "result.json")
    figures: list[Path] = []
    missing: list[str] = []
    if result is not None:
        listed = (result.get("meta") or {}).get("figures") if isinstance(result.get("meta"), dict) else None
        if isinstance(listed, list):
            paths = [folder / str(p) for p in listed]
            pngs = {p.with_suffix("") for p in paths if p.suffix.lower() == ".png" and p.exists()}
            for p in paths:
                if p.suffix.lower() == ".svg" and p.with_suffix("") in pngs:
                    continue  # the PNG of the same figure is embedded
                if p.suffix.lower() not in (".png", ".svg"):
                    continue
                (figures if p.exists() else missing).append(p if p.exists() else p.relative_to(folder))
            missing = [str(m) for m in missing]
        else:
            figures = _pngs_or_svgs(folder / "figures")
    return AnalysisResult(folder.name, variant, fold, folder, result, _error_message(folder), figures, missing)


def read_analysed_fold(root: Path, variant: str, fold: int) -> AnalysedFold:
    analyses = {}
    for sub in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
        analyses[sub.name] = read_analysis(sub, variant, fold)
    return AnalysedFold(variant, fold, root, analyses, read_json_object(root / "verdicts.json"))


def read_aggregate(root: Path, variant: str) -> AggregatedVariant | None:
    """`analysis/<variant>/aggregate/` (None when absent): every `<analysis>.json` and `verdicts.json`."""
    if not root.is_dir():
        return None
    analyses = {}
    for path in sorted(root.glob("*.json"), key=lambda p: natural_key(p.name)):
        if path.stem != "verdicts":
            analyses[path.stem] = read_json_object(path)
    return AggregatedVariant(variant, root, analyses, read_json_object(root / "verdicts.json"))


def read_run_output(out_dir: str | Path) -> RunOutput:
    """Read the output folder of `loralens run`. Raises RunFolderError when `out_dir` is not a folder or holds
    none of the run's files, or when a file present is malformed (naming it)."""
    layout = RunLayout(out_dir)
    root = layout.root
    if not root.is_dir():
        raise RunFolderError(f"{root}: not a folder", "point at the output folder of `loralens run` (--out)")
    config = read_yaml_mapping(layout.run_yaml)
    stages = read_json_object(layout.stages)
    if config is None and stages is None and not layout.train_root.is_dir():
        raise RunFolderError(f"{root}: no run.yaml, stages.json or train/ folder: not a `loralens run` output",
                             "point at the folder given to `loralens run --out`")
    environment = read_json_object(layout.environment)
    if environment is None and stages is not None and isinstance(stages.get("environment"), dict):
        environment = stages["environment"]
    variants = [read_variant(layout.variant(n)) for n in sorted(layout.variant_names(), key=_variant_order)]
    analysed = []
    aggregates: dict[str, AggregatedVariant] = {}
    for name in sorted(layout.analysed_variants(), key=_variant_order):
        for k, fold_root in layout.analysed_folds(name):
            analysed.append(read_analysed_fold(fold_root, name, k))
        agg = read_aggregate(layout.aggregate(name), name)
        if agg is not None:
            aggregates[name] = agg
    ensembles = {name: read_json_object(layout.ensemble(name), required=True)
                 for name in sorted(layout.ensemble_names(), key=natural_key)}
    return RunOutput(root, config, stages, environment, read_json_object(layout.data_summary),
                     read_json_object(layout.folds), variants, analysed, aggregates, ensembles)

"""The layout of a `loralens run` output folder (the sibling of `run_folder.RunFolder`, which is one training run),
and the one parser of `fold_<k>` folder names. Every module that writes or reads a run's output folder takes its
paths from here (pipeline, analysis API and aggregation, report, CLI, bench/assemble_run.py).

    <out>/run.yaml                         the run configuration (snapshot)
    <out>/stages.json                      wall time and status (done, skipped, failed) of each stage of the last run
    <out>/environment.json                 versions, git commit and hardware of the last run
    <out>/data/summary.json, bad_files.json
    <out>/folds.json                       the folds every variant trains on
    <out>/train/<variant>/                 a training run folder per variant (`RunFolder`)
    <out>/analysis/<variant>/fold_<k>/     analysis results (see loralens.analysis.suite) and verdicts.json
    <out>/analysis/<variant>/aggregate/    results and verdicts aggregated over the complete folds
                                           (see loralens.analysis.aggregate)
    <out>/ensembles/<name>.json            seed ensembles: variants that differ only in seed, their test class
                                           probabilities averaged per fold (loralens.training.ensemble)
    <out>/report.html                      the self-contained report

Nothing is created here: the objects only name paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Folder name of fold k: `fold_<k>` (training folds, analysed folds).
FOLD_PREFIX = "fold_"
#: Folder of a variant's analyses aggregated over folds, beside its `fold_<k>/` folders.
AGGREGATE_DIR = "aggregate"
#: File name of the report inside the output folder.
REPORT_NAME = "report.html"


def fold_name(index: int) -> str:
    """`fold_<index>`: the folder name of fold `index` (0-based)."""
    return f"{FOLD_PREFIX}{index}"


def fold_index(name: str) -> int | None:
    """The fold index of a folder name `fold_<k>` (k decimal digits), None for any other name."""
    suffix = name[len(FOLD_PREFIX):] if name.startswith(FOLD_PREFIX) else ""
    return int(suffix) if suffix.isdigit() else None


def fold_dirs(root: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(index, folder) of every `fold_<k>` folder directly in `root`, by index; [] when `root` is not a folder."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.glob(f"{FOLD_PREFIX}*"):
        k = fold_index(p.name)
        if k is not None and p.is_dir():
            out.append((k, p))
    return sorted(out)


@dataclass(frozen=True)
class RunLayout:
    """Paths of a `loralens run` output folder (see the module docstring); nothing is created until written."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    # ------------------------------------------------------------------ files of the whole run
    @property
    def run_yaml(self) -> Path:
        """`run.yaml`: the run configuration (snapshot)."""
        return self.root / "run.yaml"

    @property
    def stages(self) -> Path:
        """`stages.json`: the stages of the last run (name, status, wall time)."""
        return self.root / "stages.json"

    @property
    def environment(self) -> Path:
        """`environment.json`: versions, git commit and hardware of the last run."""
        return self.root / "environment.json"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def data_summary(self) -> Path:
        """`data/summary.json`: the corpus and its folds summarised."""
        return self.data_dir / "summary.json"

    @property
    def bad_files(self) -> Path:
        """`data/bad_files.json`: clips left out by the bad-audio screen (shared by every variant)."""
        return self.data_dir / "bad_files.json"

    @property
    def folds(self) -> Path:
        """`folds.json`: the folds every variant trains on."""
        return self.root / "folds.json"

    @property
    def report(self) -> Path:
        """`report.html`: the self-contained report."""
        return self.root / REPORT_NAME

    # ------------------------------------------------------------------ training variants
    @property
    def train_root(self) -> Path:
        """`train/`: one training run folder per variant."""
        return self.root / "train"

    def variant(self, name: str) -> Path:
        """`train/<name>/`: the training run folder of variant `name` (a `RunFolder`)."""
        return self.train_root / name

    def variant_names(self) -> list[str]:
        """Names of the variant folders present under `train/` (unordered: callers choose the order)."""
        root = self.train_root
        return [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []

    # ------------------------------------------------------------------ seed ensembles
    @property
    def ensembles_dir(self) -> Path:
        """`ensembles/`: one JSON per group of variants that differ only in their seed."""
        return self.root / "ensembles"

    def ensemble(self, name: str) -> Path:
        """`ensembles/<name>.json`: the seed ensemble `name` (`loralens.training.ensemble.seed_ensemble`)."""
        return self.ensembles_dir / f"{name}.json"

    def ensemble_names(self) -> list[str]:
        """Names of the seed ensembles present (unordered)."""
        root = self.ensembles_dir
        return [p.stem for p in root.glob("*.json") if p.is_file()] if root.is_dir() else []

    # ------------------------------------------------------------------ analyses
    @property
    def analysis_root(self) -> Path:
        """`analysis/`: one folder per analysed variant."""
        return self.root / "analysis"

    def analysis(self, variant: str) -> Path:
        """`analysis/<variant>/`: the analysed folds of a variant and their aggregate."""
        return self.analysis_root / variant

    def analysis_fold(self, variant: str, fold: int) -> Path:
        """`analysis/<variant>/fold_<fold>/`: one folder per analysis and `verdicts.json`."""
        return self.analysis(variant) / fold_name(fold)

    def analysed_folds(self, variant: str) -> list[tuple[int, Path]]:
        """(index, folder) of the analysed folds of `variant` present, by index."""
        return fold_dirs(self.analysis(variant))

    def aggregate(self, variant: str) -> Path:
        """`analysis/<variant>/aggregate/`: the analyses and verdicts of `variant` aggregated over folds."""
        return self.analysis(variant) / AGGREGATE_DIR

    def analysed_variants(self) -> list[str]:
        """Names of the variant folders present under `analysis/` (unordered)."""
        root = self.analysis_root
        return [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []

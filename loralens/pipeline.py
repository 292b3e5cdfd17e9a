"""`loralens run`: data → training (each variant and the frozen baseline, same folds) → analyses → report.

Output folder:

    <out>/run.yaml                         the run configuration (snapshot)
    <out>/stages.json                      wall time and status of each stage
    <out>/data/summary.json, bad_files.json
    <out>/folds.json                       the folds every variant trains on
    <out>/train/<variant>/                 a training run folder per variant (see loralens.training.run_folder)
    <out>/analysis/<variant>/fold_<k>/     analysis results (see loralens.analysis.suite) and verdicts.json
    <out>/report.html                      the self-contained report

Every stage is skipped when its results are complete (training folds by config hash, analyses by their key), so
re-running after a crash or a config change redoes only what is needed.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loralens.errors import ConfigError
from loralens.io import atomic_write_json, atomic_write_text, read_json
from loralens.training.config import TrainConfig, make_config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AnalysisSettings(_Strict):
    """Which analyses run, on which folds of each adapted variant, on how many clips."""

    enabled: bool = True
    names: list[str] | None = Field(None, description="analyses to run (None = all)")
    folds: list[int] | Literal["all"] = Field(default_factory=lambda: [0])
    batch_size: int = Field(16, ge=1)
    test_per_class: int | None = Field(None, ge=1, description="class-balanced cap on test clips (None = all)")
    train_per_class: int | None = Field(None, ge=1, description="cap on training clips for lenses/probes")
    n_boot: int = Field(1000, ge=10)
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)


class RunConfig(_Strict):
    """A whole run. `train` holds TrainConfig fields shared by every variant (corpus, model, window, epochs, ...);
    `ranks`, `target_modules` and `seeds` list the LoRA variants (their product); the frozen baseline is trained on
    the same folds when `baseline`, and full fine-tuning too when `full`."""

    out: Path = Path("runs/loralens")
    train: dict[str, Any] = Field(default_factory=dict)
    method: Literal["lora", "full"] = "lora"
    ranks: list[int] | None = None
    target_modules: list[list[str]] | None = None
    seeds: list[int] | None = None
    baseline: bool = True
    full: bool = False
    analysis: AnalysisSettings = Field(default_factory=AnalysisSettings)
    report: bool = True
    synthetic: bool = Field(False, description="the corpus is the synthetic demo corpus (the report says so)")


def load_run_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a run YAML (or the defaults) and apply `overrides` (dotted keys such as `train.epochs`; None = not given)."""
    from loralens.training.config import _set_dotted

    base: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            base = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})", "check indentation and quoting") from None
        if not isinstance(base, dict):
            raise ConfigError(f"{path}: the top level must be a mapping", "see docs/pipeline.md for an example")
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(base, key, value)
    try:
        return RunConfig.model_validate(base)
    except ValidationError as e:
        lines = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"{path or 'run configuration'}: invalid run configuration:\n  " + "\n  ".join(lines),
                          "see docs/pipeline.md for the fields") from None


def variant_configs(cfg: RunConfig) -> dict[str, TrainConfig]:
    """Variant name -> its TrainConfig: the adapted variants (LoRA product of ranks x target sets x seeds, or
    full), then `full` when asked besides LoRA, then the `frozen` baseline. When the rank varies, alpha = 2 r
    (the paper's ratio, r=32 / alpha=64), so the update scale stays comparable across ranks."""
    out = cfg.out
    folds_file = out / "folds.json"
    base = dict(cfg.train)
    lora_base = dict(base.get("lora", {}))
    default_seed = int(base.get("seed", 0))

    def make(name: str, overrides: dict[str, Any]) -> TrainConfig:
        return make_config(base, {**overrides, "run_dir": str(out / "train" / name), "folds_file": str(folds_file)},
                           source=f"variant {name}")

    variants: dict[str, TrainConfig] = {}
    if cfg.method == "lora":
        ranks = cfg.ranks or [lora_base.get("r", 32)]
        targets = cfg.target_modules or [list(lora_base.get("target_modules", ["v_proj"]))]
        seeds = cfg.seeds or [default_seed]
        for r, t, s in itertools.product(ranks, targets, seeds):
            parts = ["lora"]
            if cfg.ranks and len(cfg.ranks) > 1:
                parts.append(f"r{r}")
            if cfg.target_modules and len(cfg.target_modules) > 1:
                parts.append("+".join(t))
            if cfg.seeds and len(cfg.seeds) > 1:
                parts.append(f"s{s}")
            o: dict[str, Any] = {"method": "lora", "lora.r": r, "lora.target_modules": list(t), "seed": s}
            if cfg.ranks and len(cfg.ranks) > 1:
                o["lora.alpha"] = 2 * r
            variants["_".join(parts)] = make("_".join(parts), o)
    if cfg.method == "full" or cfg.full:
        variants["full"] = make("full", {"method": "full"})
    if cfg.baseline:
        variants["frozen"] = make("frozen", {"method": "frozen"})
    return variants


class StageLog:
    """`stages.json`: what each stage took; rewritten atomically after each stage."""

    def __init__(self, path: Path, seed: int) -> None:
        self.path = path
        self.seed = seed
        self.stages: list[dict[str, Any]] = []

    def record(self, name: str, wall: float, status: str) -> None:
        self.stages = [s for s in self.stages if s["name"] != name]
        self.stages.append({"name": name, "wall_time_s": round(wall, 2), "status": status})
        atomic_write_json(self.path, {"stages": self.stages, "seed": self.seed})


def prepare_data(cfg: RunConfig, tcfg: TrainConfig, echo: Callable[[str], None]) -> dict:
    """Load and screen the corpus, make (or reuse) the folds, write the data summary. Returns the summary."""
    from loralens.data.audio import screen_clips
    from loralens.data.clips import Corpus
    from loralens.data.corpora import load_corpus
    from loralens.data.folds import load_folds, resolve_folds, save_folds
    from loralens.data.summary import summarize

    out = cfg.out
    if tcfg.corpus_root is None:
        raise ConfigError("no corpus root given", "pass --corpus-root (the corpus folder) or train.corpus_root in the config")
    corpus = load_corpus(tcfg.corpus, tcfg.corpus_root, tcfg.label_set)
    bad_path = out / "data" / "bad_files.json"
    if bad_path.exists():
        drop = {b["id"] for b in read_json(bad_path).get("files", [])}
        good = [c for c in corpus.clips if c.id not in drop]
    else:
        good, _bad = screen_clips(corpus.clips, tcfg.on_bad_audio, bad_list_path=bad_path)
    corpus = Corpus(corpus.name, corpus.root, corpus.labels, good)
    folds_path = out / "folds.json"
    if folds_path.exists():
        folds = load_folds(folds_path, corpus)
    else:
        folds, scheme = resolve_folds(tcfg.folds, corpus, k=tcfg.folds_k, seed=tcfg.seed)
        save_folds(folds_path, folds, corpus, scheme=scheme, seed=tcfg.seed)
    summary_path = out / "data" / "summary.json"
    if summary_path.exists():
        return read_json(summary_path)
    summary = summarize(corpus, folds)
    atomic_write_json(summary_path, summary)
    echo(f"data: {len(corpus.clips)} clips, {len(corpus.speakers())} speakers, {len(folds)} folds -> {folds_path}")
    return summary


def run_pipeline(cfg: RunConfig, *, echo: Callable[[str], None] = print, dry_run: bool = False) -> Path:
    """Run every stage of `cfg` into `cfg.out`; return the report path (or the output folder without a report)."""
    from loralens.training.crossval import train

    out = cfg.out
    variants = variant_configs(cfg)
    if dry_run:
        for name, tcfg in variants.items():
            echo(f"== variant {name}")
            train(tcfg, dry_run=True, echo=echo)
        return out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "run.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    log = StageLog(out / "stages.json", int(cfg.train.get("seed", 0)))
    first = next(iter(variants.values()))

    t0 = time.perf_counter()
    prepare_data(cfg, first, echo)
    log.record("data", time.perf_counter() - t0, "done")

    for name, tcfg in variants.items():
        t0 = time.perf_counter()
        echo(f"== training {name} -> {tcfg.run_dir}")
        train(tcfg, echo=echo)
        log.record(f"train:{name}", time.perf_counter() - t0, "done")

    if cfg.analysis.enabled:
        from loralens.analysis.api import analyze_run

        a = cfg.analysis
        baseline = variants.get("frozen")
        for name, tcfg in variants.items():
            if name == "frozen":
                continue
            n_folds = len(read_json(out / "folds.json")["folds"])
            folds = range(n_folds) if a.folds == "all" else [k for k in a.folds if k < n_folds]
            if tcfg.fold is not None:
                folds = [k for k in folds if k == tcfg.fold]
            for k in folds:
                t0 = time.perf_counter()
                echo(f"== analysing {name}, fold {k}")
                analyze_run(tcfg.run_dir, fold=k, baseline_dir=baseline.run_dir if baseline else None,
                            names=a.names, out_dir=out / "analysis" / name / f"fold_{k}", batch_size=a.batch_size,
                            test_per_class=a.test_per_class, train_per_class=a.train_per_class, n_boot=a.n_boot,
                            seed=tcfg.seed, options=a.options, echo=echo)
                log.record(f"analysis:{name}:fold_{k}", time.perf_counter() - t0, "done")

    if not cfg.report:
        return out
    from loralens.report.build import build_report

    t0 = time.perf_counter()
    log.record("report", 0.0, "running")
    path = build_report(out)
    log.record("report", time.perf_counter() - t0, "done")
    # The report shows stages.json as it was when it was built; rebuild once so it includes its own time.
    path = build_report(out)
    echo(f"report: {path}")
    return path

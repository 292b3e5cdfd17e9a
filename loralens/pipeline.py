"""`loralens run`: data → training (each variant and the frozen baseline, same folds) → analyses → report.

Output folder: `loralens.training.run_layout.RunLayout` names every path (run.yaml, stages.json, environment.json,
data/, folds.json, train/<variant>/, ensembles/<name>.json, analysis/<variant>/fold_<k>/ and aggregate/, report.html).
With several `seeds`, the variants that differ only in their seed are also scored together: their test class
probabilities averaged per fold (a seed ensemble, `loralens.training.ensemble`).

Every stage is skipped when its results are complete (training folds by config hash, analyses by their key), so
re-running after a crash or a config change redoes only what is needed.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loralens.errors import ConfigError, RunFolderError
from loralens.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from loralens.training.config import TrainConfig, config_hash, frozen_section, make_config, seedless_settings
from loralens.training.run_layout import RunLayout


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _distinct(v: list | None) -> list | None:
    if v is not None:
        if not v:
            raise ValueError("give at least one value, or leave it unset")
        if len({json.dumps(x) for x in v}) != len(v):
            raise ValueError(f"values repeat: {v}")
    return v


class AnalysisSettings(_Strict):
    """Which analyses run, on which folds of each adapted variant, on how many clips."""

    enabled: bool = True
    names: list[str] | None = Field(None, description="analyses to run (comma-separated on the command line; see "
                                    "`loralens analyze --list`); None = all")
    folds: list[Annotated[int, Field(ge=0)]] | Literal["all"] = Field(
        default_factory=lambda: [0], description="folds to analyse (e.g. 0 or 0,1), or 'all'; default [0], or the fold "
        "of train.fold when set")
    batch_size: int = Field(16, ge=1)
    test_per_class: int | None = Field(None, ge=1, description="class-balanced cap on test clips (None = all)")
    train_per_class: int | None = Field(None, ge=1, description="cap on training clips for lenses/probes")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where analyses run (auto: CUDA if available)")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="fp32, or bf16 autocast for the analyses' forward passes (faster where the hardware has "
        "bf16 units; docs/performance.md gives its deviation from fp32)")
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("folds")
    @classmethod
    def _distinct_folds(cls, v: list[int] | str) -> list[int] | str:
        return v if v == "all" else _distinct(v)  # type: ignore[arg-type]


# TrainConfig fields the pipeline sets per variant; giving them under `train:` would be silently overridden.
_PIPELINE_FIELDS = {"run_dir": "set by the pipeline: <out>/train/<variant>",
                    "folds_file": "set by the pipeline: <out>/folds.json",
                    "method": "use the top-level `method` (lora or full); the frozen baseline is `baseline`"}


class RunConfig(_Strict):
    """A whole run. `train` holds TrainConfig fields shared by every variant (corpus, model, window, epochs, ...);
    `ranks`, `target_modules` and `seeds` list the LoRA variants (their product); the frozen baseline is trained on
    the same folds when `baseline`, and full fine-tuning too when `full`."""

    out: Path = Field(Path("runs/loralens"), description="output folder")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields shared by every variant")
    method: Literal["lora", "full"] = Field("lora", description="the adapted model's method")
    ranks: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, description="LoRA ranks to compare, e.g. 8,32,64 (alpha = 2 r); None = train.lora.r")
    target_modules: list[list[str]] | None = Field(
        None, description="LoRA target module sets to compare (on the command line ';' separates sets, e.g. "
        "'v_proj;q_proj,v_proj'); None = train.lora.target_modules")
    seeds: list[int] | None = Field(
        None, description="seeds to compare, e.g. 0,1,2 (two or more are also scored as one ensemble, their test "
        "probabilities averaged); None = train.seed")
    baseline: bool = Field(True, description="train the frozen baseline")
    full: bool = Field(False, description="also train full fine-tuning")
    analysis: AnalysisSettings = Field(default_factory=AnalysisSettings)
    report: bool = Field(True, description="build report.html")
    synthetic: bool = Field(False, description="the corpus is the synthetic demo corpus (the report says so)")

    @field_validator("ranks", "target_modules", "seeds")
    @classmethod
    def _distinct_values(cls, v: list | None) -> list | None:
        return _distinct(v)

    @field_validator("target_modules")
    @classmethod
    def _non_empty_sets(cls, v: list[list[str]] | None) -> list[list[str]] | None:
        if v is not None and not all(v):
            raise ValueError("each target set names at least one module, e.g. [v_proj]")
        return v


def _format(e: ValidationError, prefix: str = "") -> list[str]:
    out = []
    for err in e.errors():
        loc = prefix + ".".join(str(p) for p in err["loc"])
        out.append(f"{loc}: unknown field" if err["type"] == "extra_forbidden"
                   else f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return out


def check_run_config(cfg: RunConfig, source: str = "run configuration") -> dict[str, TrainConfig]:
    """Validate what the RunConfig model alone cannot, before anything runs: the `train` fields (as TrainConfig
    fields, named `train.<field>`), every variant's configuration and the analysis names. Returns the variants."""
    problems = [f"train.{k}: {why}" for k, why in _PIPELINE_FIELDS.items() if k in cfg.train]
    try:
        TrainConfig.model_validate(json.loads(json.dumps(cfg.train, default=str)))
    except ValidationError as e:
        problems += _format(e, "train.")
    if problems:
        raise ConfigError(f"{source}: invalid run configuration field(s):\n  " + "\n  ".join(problems),
                          "see docs/pipeline.md and docs/training.md for the fields")
    variants = variant_configs(cfg, source)
    if cfg.analysis.enabled:
        from loralens.analysis.api import why_not_applicable
        from loralens.analysis.suite import resolve

        try:
            named = resolve(cfg.analysis.names)
        except ConfigError as e:
            raise ConfigError(f"{source}: analysis.names: {e.message}", e.hint) from None
        if cfg.analysis.names is not None:
            methods = {t.method for n, t in variants.items() if n != "frozen"}
            for a in named:
                reasons = [why_not_applicable(a, m, cfg.baseline) for m in methods]
                if all(reasons):
                    raise ConfigError(f"{source}: analysis.names: {a.name!r} cannot run on any variant: "
                                      f"{'; '.join(sorted(set(filter(None, reasons))))}",
                                      "leave it out, or set baseline: true / train a LoRA variant")
    return variants


def variant_analyses(cfg: RunConfig, tcfg: TrainConfig) -> list[str] | None:
    """The analyses `analysis.names` asks for that apply to the variant of `tcfg` (None = all that apply)."""
    if cfg.analysis.names is None:
        return None
    from loralens.analysis.api import why_not_applicable
    from loralens.analysis.suite import resolve

    return [a.name for a in resolve(cfg.analysis.names) if why_not_applicable(a, tcfg.method, cfg.baseline) is None]


def load_run_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a run YAML (or the defaults) and apply `overrides` (dotted keys such as `train.epochs`; None = not given).
    Raises ConfigError naming every invalid field (`train.epochs`, `ranks.0`, ...) and the file."""
    from loralens.io import read_yaml_mapping
    from loralens.training.config import _set_dotted

    base: dict[str, Any] = {} if path is None else read_yaml_mapping(path, "docs/pipeline.md")
    source = str(path) if path is not None else "run configuration"
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(base, key, value)
    try:
        cfg = RunConfig.model_validate(base)
    except ValidationError as e:
        raise ConfigError(f"{source}: invalid run configuration field(s):\n  " + "\n  ".join(_format(e)),
                          "see docs/pipeline.md for the fields") from None
    check_run_config(cfg, source)
    return cfg


def variant_configs(cfg: RunConfig, source: str = "run configuration") -> dict[str, TrainConfig]:
    """Variant name -> its TrainConfig: the adapted variants (LoRA product of ranks x target sets x seeds, or
    full), then `full` when asked besides LoRA, then the `frozen` baseline.

    A list that is given (`ranks`, `target_modules`, `seeds`) always appears in the names (`lora_r8`,
    `lora_q_proj+v_proj`, `lora_s1`), even with one value, so adding a value later leaves the existing variants'
    folders (and their completed training) as they are; with none given the variant is `lora`. When `ranks` is
    given, alpha = 2 r (the paper's ratio, r=32 / alpha=64), so the update scale stays comparable across ranks."""
    layout = RunLayout(cfg.out)
    base = dict(cfg.train)
    lora_base = dict(base.get("lora") or {})
    default_seed = base.get("seed", 0)

    def make(name: str, overrides: dict[str, Any], section: dict[str, Any] = base) -> TrainConfig:
        return make_config(section, {**overrides, "run_dir": str(layout.variant(name)),
                                     "folds_file": str(layout.folds)}, source=f"{source}: variant {name}")

    variants: dict[str, TrainConfig] = {}
    if cfg.method == "lora":
        ranks = cfg.ranks or [lora_base.get("r", 32)]
        targets = cfg.target_modules or [list(lora_base.get("target_modules", ["v_proj"]))]
        seeds = cfg.seeds or [default_seed]
        for r, t, s in itertools.product(ranks, targets, seeds):
            parts = ["lora"]
            o: dict[str, Any] = {"method": "lora", "lora.r": r, "lora.target_modules": list(t), "seed": s}
            if cfg.ranks is not None:
                parts.append(f"r{r}")
                o["lora.alpha"] = 2 * r
            if cfg.target_modules is not None:
                parts.append("+".join(t))
            if cfg.seeds is not None:
                parts.append(f"s{s}")
            variants["_".join(parts)] = make("_".join(parts), o)
    if cfg.method == "full" or cfg.full:
        variants["full"] = make("full", {"method": "full"})
    if cfg.baseline:
        # without LP-FT and audio / spectrogram augmentation, which a head on cached encoder outputs cannot take
        variants["frozen"] = make("frozen", {"method": "frozen"}, frozen_section(base))
    return variants


class StageLog:
    """`stages.json`: name, status (done / skipped: complete from an earlier run / failed, with the error) and
    wall time of each stage of this run; rewritten atomically after each stage."""

    def __init__(self, path: Path, seed: int) -> None:
        self.path = path
        self.seed = seed
        self.stages: list[dict[str, Any]] = []

    def record(self, name: str, wall: float, status: str, error: str | None = None) -> None:
        self.stages = [s for s in self.stages if s["name"] != name]
        entry: dict[str, Any] = {"name": name, "wall_time_s": round(wall, 2), "status": status}
        if error:
            entry["error"] = error
        self.stages.append(entry)
        atomic_write_json(self.path, {"stages": self.stages, "seed": self.seed})

    @contextmanager
    def stage(self, name: str, complete: bool = False) -> Iterator[dict[str, str]]:
        """Time the body as stage `name`: `skipped` when `complete` (results there already), `done` when it
        returns, `failed` with the error when it raises or sets `error` in the dict it is given."""
        t0 = time.perf_counter()
        box: dict[str, str] = {}
        try:
            yield box
        except BaseException as e:
            self.record(name, time.perf_counter() - t0, "failed", f"{type(e).__name__}: {e}".splitlines()[0])
            raise
        status = "failed" if box.get("error") else "skipped" if complete else "done"
        self.record(name, time.perf_counter() - t0, status, box.get("error"))


def prepare_data(cfg: RunConfig, tcfg: TrainConfig, echo: Callable[[str], None]) -> dict:
    """Load and screen the corpus, make (or reuse) the folds, write the data summary. Returns the summary.
    The corpus preparation of `loralens train` (`loralens.training.corpus_prep`), into `<out>/data/` and
    `<out>/folds.json`, which every variant then reads."""
    from loralens.data.folds import require_sane_folds, save_folds
    from loralens.data.summary import summarize
    from loralens.training.corpus_prep import load_configured_corpus, run_folds, screen_corpus

    layout = RunLayout(cfg.out)
    corpus = load_configured_corpus(tcfg, warn=lambda t: echo(f"warning: {t}"))
    corpus, skipped = screen_corpus(corpus, tcfg, layout.bad_files, write=True)
    if skipped:
        echo(f"warning: left out {len(skipped)} bad audio file(s) (on_bad_audio: skip), listed in "
             f"{layout.bad_files}: " + "; ".join(f"{b['path']}: {b['reason']}" for b in skipped[:3])
             + ("; ..." if len(skipped) > 3 else ""))
    fresh = not layout.folds.exists()
    # the variants' folds_file is this stage's output: the folds are made from the scheme
    folds, scheme, note = run_folds(corpus, tcfg.model_copy(update={"folds_file": None}), layout.folds)
    if fresh:
        require_sane_folds(folds, corpus, scheme=scheme, seed=tcfg.seed, echo=echo)
        echo(f"folds: {len(folds)}, {note}")
        save_folds(layout.folds, folds, corpus, scheme=scheme, seed=tcfg.seed)
    if layout.data_summary.exists():
        return read_json(layout.data_summary)
    summary = summarize(corpus, folds)
    summary["skipped"] = [{k: b.get(k) for k in ("id", "path", "reason")} for b in skipped]
    atomic_write_json(layout.data_summary, summary)
    echo(f"data: {len(corpus.clips)} clips, {len(corpus.speakers())} speakers, {len(folds)} folds -> {layout.folds}")
    return summary


def _data_complete(out: Path) -> bool:
    layout = RunLayout(out)
    return layout.folds.exists() and layout.data_summary.exists()


def _fold_indices(tcfg: TrainConfig, n_folds: int) -> list[int]:
    return [tcfg.fold] if tcfg.fold is not None else list(range(n_folds))


def training_complete(tcfg: TrainConfig, n_folds: int) -> bool:
    """True when every fold `tcfg` trains has its metrics.json under this configuration, and the summary exists."""
    from loralens.training.run_folder import RunFolder

    run = RunFolder(tcfg.run_dir)
    h = config_hash(tcfg)
    return run.summary_json.exists() and all(run.fold(k).completed(h) is not None for k in _fold_indices(tcfg, n_folds))


def analysis_folds(cfg: RunConfig, n_folds: int) -> list[int]:
    """The folds to analyse: `analysis.folds` (default [0]; the trained fold when `train.fold` is set and
    `analysis.folds` is not). Raises ConfigError naming `analysis.folds` for a fold that is not trained."""
    a = cfg.analysis
    fold = cfg.train.get("fold")
    trained = [fold] if fold is not None else list(range(n_folds))
    if a.folds == "all":
        return trained
    if fold is not None and "folds" not in a.model_fields_set:
        return trained
    missing = [k for k in a.folds if k not in trained]
    if missing:
        what = f"only fold {fold} is trained (train.fold)" if fold is not None else f"the run has {n_folds} folds"
        raise ConfigError(f"analysis.folds: fold(s) {missing} are not trained: {what}",
                          f"choose among {trained}, or 'all'")
    return list(a.folds)


def check_variant_folders(variants: dict[str, TrainConfig]) -> None:
    """Raise RunFolderError, before anything runs, when a variant's folder holds a run of other results-changing
    settings (its config.yaml), naming the differences."""
    from loralens.analysis.loading import read_run_config
    from loralens.training.run_folder import RunFolder, _differences

    clashes = []
    for name, tcfg in variants.items():
        if RunFolder(tcfg.run_dir).config.exists():
            saved = read_run_config(tcfg.run_dir)
            if config_hash(saved) != config_hash(tcfg):
                clashes.append(f"{name} ({_differences(saved, tcfg)})")
    if clashes:
        raise RunFolderError(
            f"{next(iter(variants.values())).run_dir.parent}: variant(s) trained with other settings: "
            + "; ".join(clashes),
            "use a new output folder (--out) for these settings, or the settings of run.yaml to resume this run")


def _share_screen(out: Path, tcfg: TrainConfig) -> None:
    # The data stage screened every clip already: the variant reuses its list instead of decoding the corpus again.
    from loralens.training.run_folder import RunFolder

    run = RunFolder(tcfg.run_dir)
    if not run.bad_files.exists():
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run.bad_files, RunLayout(out).bad_files.read_bytes())


def _share_encoder_outputs(variants: dict[str, TrainConfig], name: str) -> None:
    # The frozen encoder's outputs that LP-FT and the frozen baseline read are the same files (content-keyed): a
    # variant links those another variant computed instead of running the encoder over the corpus again.
    from loralens.training.frozen_cache import share_encoder_cache
    from loralens.training.run_folder import RunFolder

    share_encoder_cache([RunFolder(t.run_dir).encoder_cache for n, t in variants.items() if n != name],
                        RunFolder(variants[name].run_dir).encoder_cache)


def _write_environment(out: Path) -> None:
    from loralens.report.html import collect_environment

    atomic_write_json(RunLayout(out).environment, collect_environment())


def run_pipeline(cfg: RunConfig, *, echo: Callable[[str], None] = print, dry_run: bool = False) -> Path:
    """Run every stage of `cfg` into `cfg.out`; return the report path (or the output folder without a report).
    dry_run: print each variant's training plan; nothing is trained or written."""
    from loralens.training.crossval import train

    out = cfg.out
    variants = check_run_config(cfg)
    if dry_run:
        check_variant_folders(variants)  # the real run would refuse these folders: so does the plan
        for name, tcfg in variants.items():
            echo(f"== variant {name}")
            if not RunLayout(out).folds.exists():  # not made yet: plan with the folds the data stage would make
                tcfg = tcfg.model_copy(update={"folds_file": None})
            train(tcfg, dry_run=True, echo=echo)
        return out
    from loralens.training.run_folder import RunLock

    with RunLock(out, echo=echo):  # one command at a time in <out>, for the whole run
        return _run_stages(cfg, variants, echo)


def seed_groups(variants: dict[str, TrainConfig]) -> dict[str, list[str]]:
    """Ensemble name -> the names of the variants that differ only in their seed (groups of two or more, in
    variant order). The name is the first member's without its `_s<seed>` part, plus `_seeds` (`lora_s0`,
    `lora_s1` -> `lora_seeds`; `lora_r8_s0`, `lora_r8_s1` -> `lora_r8_seeds`)."""
    groups: dict[str, list[str]] = {}
    for name, tcfg in variants.items():
        groups.setdefault(json.dumps(seedless_settings(tcfg), sort_keys=True), []).append(name)
    out = {}
    for members in groups.values():
        if len(members) > 1:
            out[re.sub(r"_s-?\d+$", "", members[0]) + "_seeds"] = members
    return out


def write_seed_ensembles(variants: dict[str, TrainConfig], out: Path, log: StageLog,
                         echo: Callable[[str], None]) -> None:
    """Score every group of `seed_groups(variants)` on the folds complete in all its members and write
    `ensembles/<name>.json`, one stage `ensemble:<name>` each (cheap: JSON only, so always recomputed)."""
    from loralens.training.ensemble import seed_ensemble

    layout = RunLayout(out)
    for name, members in seed_groups(variants).items():
        with log.stage(f"ensemble:{name}"):
            summary = {"name": name, "variants": members, **seed_ensemble([variants[m].run_dir for m in members])}
            if not summary["folds"]:
                echo(f"== {name}: no fold complete in every one of {', '.join(members)}; no seed ensemble yet")
                continue
            atomic_write_json(layout.ensemble(name), summary)
            ms, gain = summary["mean_std"]["uar"], summary["gain"]
            echo(f"== seed ensemble {name} ({', '.join(members)}): test UAR {ms['mean']:.4f} over {ms['n']} folds, "
                 f"{gain['mean']:+.4f} over the mean single seed (better on {gain['better']}, worse on "
                 f"{gain['worse']})")


def _run_stages(cfg: RunConfig, variants: dict[str, TrainConfig], echo: Callable[[str], None]) -> Path:
    from loralens.training.crossval import train

    out = cfg.out
    layout = RunLayout(out)
    check_variant_folders(variants)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(layout.run_yaml, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    _write_environment(out)
    log = StageLog(layout.stages, int(cfg.train.get("seed", 0)))
    first = next(iter(variants.values()))

    with log.stage("data", complete=_data_complete(out)):
        prepare_data(cfg, first, echo)
    n_folds = len(read_json(layout.folds)["folds"])
    to_analyse = analysis_folds(cfg, n_folds) if cfg.analysis.enabled else []

    for name, tcfg in variants.items():
        done = training_complete(tcfg, n_folds)
        with log.stage(f"train:{name}", complete=done):
            if done:
                echo(f"== {name}: training complete ({tcfg.run_dir}), skipped")
            else:
                echo(f"== training {name} -> {tcfg.run_dir}")
                _share_screen(out, tcfg)
                _share_encoder_outputs(variants, name)
                train(tcfg, echo=echo)
    write_seed_ensembles(variants, out, log, echo)

    if to_analyse:
        from loralens.analysis.aggregate import aggregate_run
        from loralens.analysis.api import analysis_complete, analysis_errors, analyze_run
        from loralens.analysis.suite import available

        a = cfg.analysis
        baseline = variants.get("frozen")
        for name, tcfg in variants.items():
            if name == "frozen":
                continue
            names = variant_analyses(cfg, tcfg)
            if names == []:
                continue
            for k in to_analyse:
                kw: dict[str, Any] = dict(
                    fold=k, baseline_dir=baseline.run_dir if baseline else None, names=names,
                    out_dir=layout.analysis_fold(name, k), batch_size=a.batch_size,
                    test_per_class=a.test_per_class, train_per_class=a.train_per_class, n_boot=a.n_boot,
                    seed=tcfg.seed, options=a.options, precision=a.precision)
                with log.stage(f"analysis:{name}:fold_{k}", complete=analysis_complete(tcfg.run_dir, **kw)) as st:
                    echo(f"== analysing {name}, fold {k}")
                    results = analyze_run(tcfg.run_dir, device=a.device, echo=echo, **kw)
                    # A failed analysis is recorded (error.json) and the others go on; the report shows it.
                    errors = analysis_errors(kw["out_dir"], (n for n in names or available() if n not in results))
                    if errors:
                        st["error"] = "; ".join(f"{n}: {e}" for n, e in errors.items())
            # Cheap (JSON only), so always recomputed: every complete fold of the variant, also earlier runs' folds.
            if any(layout.analysis_fold(name, k).is_dir() for k in to_analyse):
                aggregate_run(out, name)

    if not cfg.report:
        return out
    from loralens.report.build import build_report

    t0 = time.perf_counter()
    log.record("report", 0.0, "running")
    try:
        build_report(out)
    except BaseException as e:
        log.record("report", time.perf_counter() - t0, "failed", f"{type(e).__name__}: {e}".splitlines()[0])
        raise
    log.record("report", time.perf_counter() - t0, "done")
    # The report shows stages.json as it was when it was built; rebuild once so it includes its own time.
    return build_report(out)


def results_table(out: str | Path) -> str:
    """A short text table of every trained variant in `out` and of its seed ensembles (`<name>_seeds`: the seeds'
    test class probabilities averaged): test UAR, WAR and macro-F1 in percent, mean ± sample std over the complete
    folds (from train/<variant>/summary.json and ensembles/<name>.json)."""
    from loralens.training.run_folder import RunFolder

    layout = RunLayout(out)
    rows = []
    summaries = [(name, RunFolder(layout.variant(name)).summary_json) for name in sorted(layout.variant_names())]
    summaries += [(name, layout.ensemble(name)) for name in sorted(layout.ensemble_names())]
    for name, summary_path in summaries:
        if not summary_path.exists():
            continue
        s = read_json(summary_path)
        ms = s.get("mean_std") or {}

        def pm(key: str, ms: dict = ms) -> str:
            d = ms.get(key) or {}
            if d.get("mean") is None:
                return "-"
            return f"{100 * d['mean']:.1f}" + (f" ± {100 * d['std']:.1f}" if d.get("std") is not None else "")

        n = (ms.get("uar") or {}).get("n", 0)
        rows.append([name, pm("uar"), pm("war"), pm("macro_f1"), str(n)])
    if not rows:
        return "no trained variant yet"
    header = ["variant", "test UAR %", "WAR %", "macro-F1 %", "folds"]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join(lines)


def failed_stages(out: str | Path) -> list[dict[str, Any]]:
    """The stages that failed in the last run into `out` (from its stages.json)."""
    path = RunLayout(out).stages
    return [s for s in read_json(path).get("stages", []) if s.get("status") == "failed"] if path.exists() else []

"""The registry of analyses and the driver that runs them into `analysis/<name>/` of a run folder.

Each analysis module registers one `Analysis`. The driver times each, records peak memory, writes
`result.json` atomically (with a `meta` block) and the figures; a complete result is not recomputed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loralens.analysis.catalogue import BY_NAME, CATALOGUE
from loralens.analysis.context import AnalysisContext
from loralens.errors import ConfigError
from loralens.io import atomic_write_json, read_json


@dataclass(frozen=True)
class Analysis:
    """name: CLI / folder name. title: for the report. run: context -> JSON-serialisable dict.
    plot: (result, out_dir) -> written figure paths (PNG + SVG). reading: result -> a short plain-language reading.
    needs_frozen / needs_train: uses the frozen baseline / the training split. needs_lora: only applies to a
    LoRA-adapted model. needs_grad: runs with autograd enabled (gradients of hook points); others run under no_grad.
    observes: the observers of the shared passes it reads, as `name` (test split) or `name@train`
    (`loralens.analysis.passes`): the suite runs them together, one pass per model and split for all analyses."""

    name: str
    title: str
    run: Callable[[AnalysisContext], dict[str, Any]]
    plot: Callable[[dict[str, Any], Path], list[Path]]
    reading: Callable[[dict[str, Any]], str]
    needs_frozen: bool = False
    needs_train: bool = False
    needs_lora: bool = False
    needs_grad: bool = False
    observes: tuple[str, ...] = ()


ANALYSES: dict[str, Analysis] = {}

# Modules that register analyses, in the order the suite runs them (and the report shows them): the catalogue's.
ANALYSIS_MODULES: tuple[str, ...] = tuple(e.module_name for e in CATALOGUE)


def register(analysis: Analysis) -> Analysis:
    """Add an analysis to the registry (called at import by each analysis module). What a catalogued analysis
    needs (frozen baseline, training split, LoRA, gradients) is its catalogue entry's."""
    if analysis.name in BY_NAME:
        analysis = dataclasses.replace(analysis, **BY_NAME[analysis.name].needs)
    ANALYSES[analysis.name] = analysis
    return analysis


def _suite_position(analysis: Analysis) -> int:
    module = getattr(analysis.run, "__module__", "")
    return ANALYSIS_MODULES.index(module) if module in ANALYSIS_MODULES else len(ANALYSIS_MODULES)


def available() -> dict[str, Analysis]:
    """All registered analyses in suite order (that of ANALYSIS_MODULES, whatever the import order was)."""
    for module in ANALYSIS_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # a module that exists but fails to import is a real error
                raise
    return dict(sorted(ANALYSES.items(), key=lambda item: _suite_position(item[1])))


def resolve(names: Iterable[str] | None) -> list[Analysis]:
    """The analyses named (all when None), in suite order; unknown names raise ConfigError listing valid ones."""
    registry = available()
    if names is None:
        return list(registry.values())
    names = list(names)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ConfigError(f"unknown analysis {unknown}", hint=f"choose among {sorted(registry)}")
    return [registry[n] for n in registry if n in names]


def _process_peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PeakRSS:
    """Peak resident memory of this process (MiB) while the `with` block runs, sampled every `interval` s by a
    background thread (the process-wide high-water mark cannot be reset, so it cannot tell one analysis' peak)."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak_mib = 0.0
        self.samples = 0  # how many readings were taken so far (lets a caller wait for the sampler)

    def _sample(self) -> None:
        self.peak_mib = max(self.peak_mib, self._process.memory_info().rss / 2**20)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> PeakRSS:
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run_analysis(analysis: Analysis, ctx: AnalysisContext, out_dir: Path, *, key: str = "",
                 force: bool = False) -> dict:
    """Run one analysis into `out_dir` (result.json + figures) unless a complete result with the same `key`
    (a hash of what the result depends on) is there. Returns the result dict (with its `meta`)."""
    out_dir = Path(out_dir)
    result_path = out_dir / "result.json"
    if not force and (old := complete_result(out_dir, key)) is not None:
        return old
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    passes = getattr(ctx, "passes", None)
    passes_before = len(passes.passes_run) if passes is not None else 0
    autocast = ctx.autocast() if hasattr(ctx, "autocast") else contextlib.nullcontext()
    with PeakRSS() as rss, torch.enable_grad() if analysis.needs_grad else torch.no_grad(), autocast:
        result = analysis.run(ctx)
    # a shared pass is computed inside the first analysis that reads it: its time and memory count there
    shared = [{"model": m, "split": s, "observers": list(o)}
              for m, s, o in (passes.passes_run[passes_before:] if passes is not None else [])]
    wall = time.perf_counter() - t0
    meta = {
        "analysis": analysis.name,
        "title": analysis.title,
        "fold": ctx.fold,
        "key": key,
        "wall_time_s": round(wall, 3),
        "peak_rss_mib": round(rss.peak_mib, 1),  # this analysis' own peak (sampled)
        "process_peak_rss_mib": round(_process_peak_rss_mib(), 1),  # high-water mark since the process started
        "n_test_clips": ctx.test.n_clips,
        "seed": ctx.seed,
        "n_boot": ctx.n_boot,
        "precision": getattr(ctx, "precision", "fp32"),
        "shared_passes_run": shared,
    }
    if torch.cuda.is_available():
        meta["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    result = {**result, "meta": meta}
    figures = analysis.plot(result, out_dir / "figures")
    result["meta"]["figures"] = [str(Path(p).relative_to(out_dir)) for p in figures]
    result["reading"] = analysis.reading(result)
    # result.json last: its presence marks the analysis complete.
    atomic_write_json(result_path, result)
    return result


def run_suite(
    ctx: AnalysisContext,
    out_root: Path,
    names: Iterable[str] | None = None,
    *,
    key: str = "",
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    keep_going: bool = True,
) -> dict[str, dict]:
    """Run the named analyses (all by default) into `out_root/<name>/`; returns name -> result.

    keep_going: when an analysis fails, write `<name>/error.json` (type, message, traceback), report it through
    `progress` and go on with the others (the report shows it as failed); False re-raises at once.
    """
    results = {}
    chosen = resolve(names)
    passes = getattr(ctx, "passes", None)  # a bare context (tests, custom drivers) may have no shared passes
    if passes is not None:
        # the shared passes run the observers of every analysis still to compute, once per (model, split)
        pending = [a for a in chosen if force or complete_result(Path(out_root) / a.name, key) is None]
        passes.wanted = tuple(dict.fromkeys(o for a in pending for o in a.observes))
    try:
        _run_each(ctx, chosen, out_root, results, key=key, force=force, progress=progress, keep_going=keep_going)
    finally:
        if passes is not None:
            passes.clear()  # the pooled activations are not kept past the suite
    return results


def complete_result(folder: Path, key: str) -> dict | None:
    """The result in `folder/result.json` when it is complete under `key` (a hash of what it depends on); else None."""
    path = Path(folder) / "result.json"
    if not path.exists():
        return None
    result = read_json(path)
    return result if result.get("meta", {}).get("key") == key else None


def _run_each(ctx: AnalysisContext, chosen: list[Analysis], out_root: Path, results: dict[str, dict], *, key: str,
              force: bool, progress: Callable[[str], None] | None, keep_going: bool) -> None:
    for analysis in chosen:
        if analysis.needs_frozen:
            ctx.require_frozen(analysis.name)
        if analysis.needs_train:
            ctx.require_train(analysis.name)
        if progress:
            progress(analysis.name)
        folder = Path(out_root) / analysis.name
        error_path = folder / "error.json"
        try:
            results[analysis.name] = run_analysis(analysis, ctx, folder, key=key, force=force)
        except Exception as e:  # one failed analysis must not lose the others; it is recorded, not hidden
            if not keep_going:
                raise
            atomic_write_json(error_path, {"type": type(e).__name__, "error": str(e),
                                           "traceback": traceback.format_exc()})
            if progress:
                progress(f"{analysis.name} FAILED: {type(e).__name__}: {e} (details in {error_path})")
            continue
        if error_path.exists():
            error_path.unlink()

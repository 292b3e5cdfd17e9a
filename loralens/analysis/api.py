"""`analyze_run`: the Python API behind `loralens analyze`."""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from loralens.analysis.loading import context_from_runs, read_run_config
from loralens.analysis.suite import Analysis, complete_result, resolve, run_suite
from loralens.errors import ConfigError
from loralens.io import atomic_write_json, read_json
from loralens.training.config import config_hash
from loralens.training.run_folder import RunFolder


def _fold_fingerprint(run_dir: Path, fold: int) -> str | None:
    # metrics.json is rewritten whenever the fold is trained (it records times): retraining the fold under the same
    # configuration gives other weights, and so a new key.
    m = RunFolder(run_dir).fold(fold).metrics
    return hashlib.sha256(m.read_bytes()).hexdigest()[:16] if m.exists() else None


def analysis_key(run_dir: Path, baseline_dir: Path | None, fold: int, settings: dict) -> str:
    """Hash of what analysis results depend on: both runs' configurations and trained folds, the fold and the
    analysis settings."""
    parts = {
        "run": config_hash(read_run_config(run_dir)),
        "run_fold": _fold_fingerprint(run_dir, fold),
        "baseline": config_hash(read_run_config(baseline_dir)) if baseline_dir else None,
        "baseline_fold": _fold_fingerprint(baseline_dir, fold) if baseline_dir else None,
        "fold": fold,
        **settings,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _settings(batch_size: int, test_per_class: int | None, train_per_class: int | None, n_boot: int, seed: int,
              options: dict | None, precision: str = "fp32") -> dict[str, Any]:
    out = {"batch_size": batch_size, "test_per_class": test_per_class, "train_per_class": train_per_class,
           "n_boot": n_boot, "seed": seed, "options": options or {}}
    if precision != "fp32":  # in the key only when set, so results computed before the option keep their keys
        out["precision"] = precision
    return out


# Analyses of the LoRA factors themselves, which a full fine-tune or frozen model does not have.


def why_not_applicable(a: Analysis, method: str, has_baseline: bool) -> str | None:
    """Why analysis `a` cannot run on a run of `method` (lora, full, frozen) with or without a frozen baseline;
    None when it can."""
    if a.needs_frozen and not has_baseline:
        return "compare with the frozen baseline, and none was given"
    if a.needs_lora and method != "lora":
        return f"need LoRA adapters, and the run is method {method!r}"
    return None


def _select(names: Iterable[str] | None, baseline_dir: Path | None, method: str) -> tuple[list[Analysis], list[str]]:
    """The analyses to run, and (when all were asked for) those left out: needing the baseline when none is
    given, needing LoRA factors when the run is not LoRA. Named analyses that cannot run raise ConfigError."""
    selected = resolve(names)
    lacking = {a.name: why for a in selected if (why := why_not_applicable(a, method, baseline_dir is not None))}
    if names is not None and lacking:
        raise ConfigError("; ".join(f"analysis {n!r}: {why}" for n, why in lacking.items()),
                          "pass --baseline <the frozen run folder trained on the same folds>, or leave it out")
    return [a for a in selected if a.name not in lacking], list(lacking)


def analysis_errors(out_dir: str | Path, names: Iterable[str]) -> dict[str, str]:
    """Analysis name -> "Type: message" of the analyses among `names` whose last run failed (their `error.json`)."""
    out = {}
    for n in names:
        path = Path(out_dir) / n / "error.json"
        if path.exists():
            e = read_json(path)
            out[n] = f"{e.get('type', 'Error')}: {e.get('error', '')}".splitlines()[0]
    return out


def _complete(out_dir: Path, name: str, key: str) -> dict | None:
    return complete_result(out_dir / name, key)


def analysis_complete(
    run_dir: str | Path, *, fold: int = 0, baseline_dir: str | Path | None = None,
    names: Iterable[str] | None = None, out_dir: str | Path | None = None, batch_size: int = 16,
    test_per_class: int | None = None, train_per_class: int | None = None, n_boot: int = 1000, seed: int = 0,
    options: dict | None = None, precision: str = "fp32",
) -> bool:
    """True when `analyze_run` with these arguments has nothing to compute (every result there, same key)."""
    run_dir = Path(run_dir)
    baseline_dir = Path(baseline_dir) if baseline_dir else None
    out_dir = Path(out_dir) if out_dir else RunFolder(run_dir).analysis(fold)
    selected, _ = _select(names, baseline_dir, read_run_config(run_dir).method)
    key = analysis_key(run_dir, baseline_dir, fold,
                       _settings(batch_size, test_per_class, train_per_class, n_boot, seed, options, precision))
    return all(_complete(out_dir, a.name, key) is not None for a in selected)


def _verdicts_module():
    try:
        return importlib.import_module("loralens.analysis.verdicts")
    except ModuleNotFoundError as e:
        if e.name != "loralens.analysis.verdicts":  # the module exists but fails to import: a real error
            raise
        return None


def analyze_run(
    run_dir: str | Path,
    *,
    fold: int = 0,
    baseline_dir: str | Path | None = None,
    names: Iterable[str] | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 16,
    test_per_class: int | None = None,
    train_per_class: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    force: bool = False,
    options: dict | None = None,
    device: str | None = None,
    precision: str = "fp32",
    echo: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Run the analyses `names` (all that apply when None) on fold `fold` of `run_dir` against `baseline_dir`.

    Writes `<out_dir>/<analysis>/result.json` + figures and `<out_dir>/verdicts.json`; default out_dir is
    `run_dir/analysis/fold_<fold>`. Analyses needing the frozen baseline are left out when none is given.
    Results already there under the same key are reused (not recomputed; the models are not even loaded when
    all are there) unless `force`. An analysis that fails is recorded in `<out_dir>/<analysis>/error.json` (see
    `analysis_errors`) and left out of the returned results; the others go on. device: where the models run
    (None = CUDA when available; results do not depend on it, beyond float rounding, and it is not in the key).
    precision: "fp32" (default) or "bf16" (forward passes under bf16 autocast; docs/performance.md has the
    deviation from fp32 on the curves the verdicts read); part of the key when bf16.
    Returns analysis name -> result (and "verdicts").
    """
    run_dir = Path(run_dir)
    baseline_dir = Path(baseline_dir) if baseline_dir else None
    out_dir = Path(out_dir) if out_dir else RunFolder(run_dir).analysis(fold)
    selected, skipped = _select(names, baseline_dir, read_run_config(run_dir).method)
    if skipped:
        echo(f"left out (no baseline, or not LoRA): {', '.join(skipped)}")
    key = analysis_key(run_dir, baseline_dir, fold,
                       _settings(batch_size, test_per_class, train_per_class, n_boot, seed, options, precision))
    done = {} if force else {a.name: r for a in selected if (r := _complete(out_dir, a.name, key)) is not None}
    pending = [a.name for a in selected if a.name not in done]
    if done:
        echo(f"complete, reused: {', '.join(done)}")
    if pending:
        ctx = context_from_runs(run_dir, fold, baseline_dir, batch_size=batch_size, test_per_class=test_per_class,
                                train_per_class=train_per_class, seed=seed, n_boot=n_boot, options=options,
                                device=device)
        ctx.precision = precision
        done.update(run_suite(ctx, out_dir, pending, key=key, force=force,
                              progress=lambda n: echo(f"analysis {n} ...")))
    results = {a.name: done[a.name] for a in selected if a.name in done}
    module = _verdicts_module()
    if module is None:
        return results
    # Verdicts draw on every complete result of this fold under the same key, not only those run now: running
    # one analysis again (e.g. --analyses lora_internals --force) must not lose the others' evidence.
    from loralens.analysis.suite import available

    evidence = {n: r for n in available() if (r := _complete(out_dir, n, key)) is not None}
    v = module.verdicts({**evidence, **results})
    atomic_write_json(out_dir / "verdicts.json", v)
    results["verdicts"] = v
    return results

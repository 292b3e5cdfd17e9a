"""`analyze_run`: the Python API behind `loralens analyze`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from loralens.analysis.loading import context_from_runs, read_run_config
from loralens.analysis.suite import resolve, run_suite
from loralens.io import atomic_write_json
from loralens.training.config import config_hash


def analysis_key(run_dir: Path, baseline_dir: Path | None, fold: int, settings: dict) -> str:
    """Hash of what analysis results depend on: both runs' configurations, the fold and the analysis settings."""
    parts = {
        "run": config_hash(read_run_config(run_dir)),
        "baseline": config_hash(read_run_config(baseline_dir)) if baseline_dir else None,
        "fold": fold,
        **settings,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


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
    echo: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Run the analyses `names` (all that apply when None) on fold `fold` of `run_dir` against `baseline_dir`.

    Writes `<out_dir>/<analysis>/result.json` + figures and `<out_dir>/verdicts.json`; default out_dir is
    `run_dir/analysis/fold_<fold>`. Analyses needing the frozen baseline are left out when none is given.
    Returns analysis name -> result (and "verdicts").
    """
    run_dir = Path(run_dir)
    baseline_dir = Path(baseline_dir) if baseline_dir else None
    out_dir = Path(out_dir) if out_dir else run_dir / "analysis" / f"fold_{fold}"
    selected = resolve(names)
    if baseline_dir is None:
        skipped = [a.name for a in selected if a.needs_frozen]
        if skipped and names is None:
            echo(f"no --baseline: skipping {', '.join(skipped)}")
            selected = [a for a in selected if not a.needs_frozen]
    settings = {"batch_size": batch_size, "test_per_class": test_per_class, "train_per_class": train_per_class,
                "n_boot": n_boot, "seed": seed, "options": options or {}}
    key = analysis_key(run_dir, baseline_dir, fold, settings)
    ctx = context_from_runs(run_dir, fold, baseline_dir, batch_size=batch_size, test_per_class=test_per_class,
                            train_per_class=train_per_class, seed=seed, n_boot=n_boot, options=options)
    results = run_suite(ctx, out_dir, [a.name for a in selected], key=key, force=force,
                        progress=lambda n: echo(f"analysis {n} ..."))
    try:
        from loralens.analysis.verdicts import verdicts
    except ModuleNotFoundError:
        return results
    v = verdicts(results)
    atomic_write_json(out_dir / "verdicts.json", v)
    results["verdicts"] = v
    return results

"""Analysis results aggregated over folds: per-layer curves and scalar numbers as mean, sample std and per fold.

Each analysis writes one result per fold (`<out>/analysis/<variant>/fold_<k>/<analysis>/result.json`). Here:

- `aggregate_results(results)` walks the per-fold results of one analysis and keeps, in the same nested structure,
  every per-layer curve (a dict with a `value` list; its `low`/`high` bootstrap bounds are per-fold intervals and
  are not aggregated) present in all folds with the same length, as
  `{"mean": [...], "std": [...], "n_folds": k, "per_fold": [[...], ...]}`, and every scalar number present in all
  folds as `{"mean", "std", "n", "per_fold"}`. Means ignore nulls (NaN-aware; null when every fold is null); std
  is the sample std (ddof=1) over the non-null folds, null when fewer than two. `meta`, `reading`, strings,
  booleans, plain lists and matrices are left out.
- `aggregate_run(out_dir, variant)` writes `<out>/analysis/<variant>/aggregate/<analysis>.json` for every analysis
  with at least one complete fold, and `aggregate/verdicts.json`: per claim, the outcome per fold and how many
  folds support it, do not support it, are inconclusive, lack data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loralens.analysis.verdicts import INCONCLUSIVE, NOT_ENOUGH, NOT_SUPPORTED, OUTCOMES, SUPPORTED
from loralens.io import atomic_write_json, read_json
from loralens.training.metrics import mean_std as metrics_mean_std
from loralens.training.run_layout import RunLayout

#: Keys never aggregated: run facts and prose.
SKIPPED_KEYS: frozenset[str] = frozenset({"meta", "reading"})

VERDICTS_NAME = "verdicts"


def _number(v: Any) -> float | None:
    """A float for a real number (NaN -> None), None for null; raises TypeError for anything else."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(type(v).__name__)
    v = float(v)
    return None if math.isnan(v) else v


def _is_number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _is_curve(d: Any) -> bool:
    if not isinstance(d, Mapping):
        return False
    value = d.get("value")
    return isinstance(value, Sequence) and not isinstance(value, str) and all(_is_number(v) for v in value)


def mean_std(values: Sequence[float | int | None]) -> tuple[float | None, float | None, int]:
    """Mean over the non-null values (None when all are null), their sample std (ddof=1; None with fewer than two)
    and their count: `loralens.training.metrics.mean_std` as a tuple, after checking every value is a number."""
    m = metrics_mean_std([_number(v) for v in values])
    return m["mean"], m["std"], m["n"]


def _curve(curves: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    per_fold = [[_number(v) for v in c["value"]] for c in curves]
    if len({len(p) for p in per_fold}) != 1:
        return None  # lengths differ between folds: no layer-wise aggregate
    stats = [mean_std([p[i] for p in per_fold]) for i in range(len(per_fold[0]))]
    return {"mean": [m for m, _, _ in stats], "std": [s for _, s, _ in stats], "n_folds": len(curves),
            "per_fold": per_fold}


def _walk(items: Sequence[Any]) -> dict[str, Any] | None:
    first = items[0]
    if not all(isinstance(x, Mapping) for x in items):
        return None
    out: dict[str, Any] = {}
    for key in first:
        if key in SKIPPED_KEYS or not all(key in x for x in items):
            continue
        values = [x[key] for x in items]
        if all(_is_curve(v) for v in values):
            agg = _curve(values)
        elif all(isinstance(v, Mapping) for v in values):
            agg = _walk(values)
        elif all(_is_number(v) for v in values) and any(v is not None for v in values):
            mean, std, n = mean_std(values)
            agg = {"mean": mean, "std": std, "n": n, "per_fold": [_number(v) for v in values]}
        else:
            agg = None  # strings, booleans, lists, matrices, or a type that differs between folds
        if agg:
            out[str(key)] = agg
    return out


def aggregate_results(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The per-fold `results` of one analysis (one result dict per fold, in fold order) aggregated over folds.

    Returns the nested structure of the results with, in place of each per-layer curve present in every fold with
    the same length, `{"mean": [...], "std": [...], "n_folds": k, "per_fold": [[...], ...]}` (per layer: mean over
    the folds' non-null values, sample std with ddof=1, null with fewer than two non-null values), and in place of
    each scalar number present in every fold `{"mean", "std", "n" (folds with a number), "per_fold"}`. Branches with
    nothing to aggregate are left out; an empty list gives {}."""
    if not results:
        return {}
    return _walk(list(results)) or {}


def _claims(verdicts: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Claim name -> verdict dict (those with `supported`), from verdicts.py's `{claim: {...}, "thresholds": ...}`."""
    source = verdicts.get("claims") if isinstance(verdicts.get("claims"), Mapping) else verdicts
    return {str(k): v for k, v in source.items() if isinstance(v, Mapping) and "supported" in v}


def _outcome(v: Mapping[str, Any] | None) -> str | None:
    """A fold's outcome for a claim: its `outcome` (verdicts.py), else derived from `supported` (older files:
    True / False / None = not enough data); None when the fold has no verdict for the claim."""
    if v is None:
        return None
    outcome = v.get("outcome")
    if isinstance(outcome, str) and outcome in OUTCOMES:
        return outcome
    s = v.get("supported")
    return SUPPORTED if s is True else NOT_SUPPORTED if s is False else NOT_ENOUGH


def aggregate_verdicts(per_fold: Sequence[tuple[int, Mapping[str, Any]]]) -> dict[str, Any]:
    """Summary of per-fold verdicts ((fold, verdicts.json) pairs): per claim, `outcome` per fold ("supported",
    "not supported", "inconclusive", "not enough data"; None where the fold has no verdict for the claim),
    `supported` per fold (True / False / None), `statements` per fold, and the counts `n_supported`,
    `n_not_supported`, `n_inconclusive`, `n_undecided` (not enough data or no verdict) out of `n_folds`."""
    folds = [k for k, _ in per_fold]
    claims: dict[str, Any] = {}
    names: list[str] = []
    for _, v in per_fold:
        names += [c for c in _claims(v) if c not in names]
    for claim in names:
        got = [_claims(v).get(claim) for _, v in per_fold]
        outcomes = [_outcome(g) for g in got]
        claims[claim] = {
            "outcome": outcomes,
            "supported": [True if o == SUPPORTED else False if o == NOT_SUPPORTED else None for o in outcomes],
            "statements": [None if g is None else g.get("statement") for g in got],
            "n_supported": outcomes.count(SUPPORTED),
            "n_not_supported": outcomes.count(NOT_SUPPORTED),
            "n_inconclusive": outcomes.count(INCONCLUSIVE),
            "n_undecided": sum(o in (NOT_ENOUGH, None) for o in outcomes),
            "n_folds": len(folds),
        }
    return {"folds": folds, "n_folds": len(folds), "claims": claims}


def aggregate_run(out_dir: str | Path, variant: str) -> dict[str, Path]:
    """Aggregate every analysis of `<out_dir>/analysis/<variant>/` over its folds with a complete result
    (`fold_<k>/<analysis>/result.json`) into `aggregate/<analysis>.json`
    (`{"analysis", "folds", "n_folds", "curves": aggregate_results(...)}`), and the folds' verdicts.json files into
    `aggregate/verdicts.json` (see `aggregate_verdicts`). Always recomputed; aggregate files of analyses with no
    complete fold left are removed. Returns analysis name (and "verdicts") -> path written.

    Raises RunFolderError naming a result or verdicts file that is not valid JSON."""
    layout = RunLayout(out_dir)
    folds = layout.analysed_folds(variant)
    by_analysis: dict[str, list[tuple[int, dict]]] = {}
    verdicts: list[tuple[int, dict]] = []
    for k, fold_root in folds:
        for sub in sorted(p for p in fold_root.iterdir() if p.is_dir()):
            path = sub / "result.json"
            if path.is_file():
                result = read_json(path)
                if isinstance(result, dict):
                    by_analysis.setdefault(sub.name, []).append((k, result))
        vpath = fold_root / "verdicts.json"
        if vpath.is_file():
            v = read_json(vpath)
            if isinstance(v, dict):
                verdicts.append((k, v))
    agg_dir = layout.aggregate(variant)
    written: dict[str, Path] = {}
    for name, items in sorted(by_analysis.items()):
        path = agg_dir / f"{name}.json"
        atomic_write_json(path, {"analysis": name, "folds": [k for k, _ in items], "n_folds": len(items),
                                 "curves": aggregate_results([r for _, r in items])})
        written[name] = path
    if verdicts:
        path = agg_dir / f"{VERDICTS_NAME}.json"
        atomic_write_json(path, aggregate_verdicts(verdicts))
        written[VERDICTS_NAME] = path
    if agg_dir.is_dir():
        for stale in agg_dir.glob("*.json"):
            if stale.stem not in written:
                stale.unlink()
    return written

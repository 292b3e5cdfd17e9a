"""Per-layer curves and single numbers with their bootstrap bands, in the form the results JSON holds them.

A curve is `{"value": [...], "low": [...], "high": [...]}` (one entry per layer, plain floats, None where not
finite); a point is `{"value", "low", "high"}` floats (with `"std"`, the bootstrap standard error, where asked).
Bands are 95 % percentile-bootstrap intervals over clips (`bootstrap.percentile_band`); all resamples come from
`bootstrap.resample_indices(n, n_boot, seed)`, so every curve and point of one analysis with the same (n, n_boot,
seed) shares them (paired differences, comparable layers). UAR is `loralens.numerics.uar`'s kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from loralens.numerics.bootstrap import bootstrap_ci, percentile_band, resample_counts, resample_indices
from loralens.numerics.uar import uar_boot, uar_weighted

#: Default error rate of the bands: 95 % intervals.
ALPHA = 0.05


def curve(value: Sequence[float] | np.ndarray, low: Sequence[float] | np.ndarray,
          high: Sequence[float] | np.ndarray) -> dict[str, list[float]]:
    """The results-JSON form of a per-layer curve: `{"value": [...], "low": [...], "high": [...]}` (plain floats;
    NaN becomes None so the JSON stays valid)."""

    def floats(x: Any) -> list[float | None]:
        return [None if not np.isfinite(v) else float(v) for v in np.asarray(x, dtype=np.float64).reshape(-1)]

    return {"value": floats(value), "low": floats(low), "high": floats(high)}


def curve_from_boot(estimate: np.ndarray, boot: np.ndarray, alpha: float = ALPHA) -> dict[str, list[float]]:
    """A curve from its full-sample estimate `[L]` and bootstrap values `[n_boot, L]` (percentile band; resamples
    where the statistic is undefined, NaN, are left out; a layer without a defined resample has no band)."""
    low, high = percentile_band(np.asarray(boot, dtype=np.float64), alpha)
    return curve(estimate, low, high)


def mean_curve(values: np.ndarray, n_boot: int, seed: int) -> dict[str, list[float]]:
    """Mean over clips of per-clip curves `[n_clips, L]` with a 95 % percentile bootstrap CI over clips."""
    ci = bootstrap_ci(np.asarray(values, dtype=np.float64), "mean", n_boot=n_boot, seed=seed)
    return curve(ci.estimate, ci.low, ci.high)


def mean_point(values: np.ndarray, n_boot: int, seed: int) -> dict[str, float | None]:
    """Mean over clips of per-clip numbers `[n_clips]` with its 95 % percentile bootstrap CI: `{"value", "low",
    "high"}` (`mean_curve` of a one-layer curve)."""
    c = mean_curve(np.asarray(values, dtype=np.float64)[:, None], n_boot, seed)
    return {k: v[0] for k, v in c.items()}


def uar_curve(pred: np.ndarray, labels: np.ndarray, n_classes: int, n_boot: int, seed: int,
              baseline: np.ndarray | None = None) -> dict[str, list[float]]:
    """UAR per column of `pred [n, L]` with a bootstrap CI over clips; with `baseline [n]`, the change
    UAR(pred) - UAR(baseline), both on the same resamples."""
    idx = resample_indices(len(labels), n_boot, seed)
    est = uar_boot(pred, labels, None, n_classes)
    boot = uar_boot(pred, labels, idx, n_classes)
    if baseline is not None:
        est = est - uar_boot(baseline, labels, None, n_classes)
        boot = boot - uar_boot(baseline, labels, idx, n_classes)[:, None]
    return curve_from_boot(est, boot)


def bootstrap_uar(y: np.ndarray, pred: np.ndarray, n_classes: int, n_boot: int, seed: int, alpha: float = ALPHA,
                  *, std: bool = True) -> dict[str, float]:
    """UAR of predictions `pred [n]` against labels `y [n]` with its percentile-bootstrap interval over examples
    (`{"value", "low", "high"}`) and, with `std`, the bootstrap standard error (`"std"`, ddof 0). The same
    resamples for a given (n, n_boot, seed), so curves over layers share them."""
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    n = y.size
    est = float(uar_weighted(pred, y, np.ones((1, n)), n_classes)[0])
    boot = uar_weighted(pred, y, resample_counts(resample_indices(n, n_boot, seed), n), n_classes)
    low, high = percentile_band(boot, alpha)
    point = {"value": est, "low": float(low), "high": float(high)}
    if std:
        point["std"] = float(boot.std())
    return point


def paired_uar_gap(
    y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int, n_boot: int, seed: int, alpha: float = ALPHA
) -> dict[str, float]:
    """UAR(pred_a) - UAR(pred_b) on the same examples with a paired percentile-bootstrap interval (both UARs on the
    same resamples, those of `bootstrap_uar` for (n, n_boot, seed)) and its bootstrap standard error. Identical
    predictions give exactly 0 with a zero-width interval."""
    y = np.asarray(y, dtype=np.int64)
    n = y.size
    counts = resample_counts(resample_indices(n, n_boot, seed), n)
    ones = np.ones((1, n))
    pred_a, pred_b = np.asarray(pred_a), np.asarray(pred_b)
    est = float(uar_weighted(pred_a, y, ones, n_classes)[0] - uar_weighted(pred_b, y, ones, n_classes)[0])
    boot = uar_weighted(pred_a, y, counts, n_classes) - uar_weighted(pred_b, y, counts, n_classes)
    low, high = percentile_band(boot, alpha)
    return {"value": est, "low": float(low), "high": float(high), "std": float(boot.std())}


def stack_curve(points: list[dict[str, float]]) -> dict[str, list[float]]:
    """Per-layer points `{value, low, high, ...}` -> one curve dict of lists."""
    return {k: [float(p[k]) for p in points] for k in points[0]}


def depth_fraction(layer: int, n_layers: int) -> float:
    """Depth of the output of layer `layer` (0-based) as a fraction of the encoder: (layer + 1) / n_layers."""
    return (layer + 1) / n_layers

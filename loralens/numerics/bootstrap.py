"""Confidence intervals over clips: percentile bootstrap (Efron & Tibshirani 1993, ch. 13) and the
delete-a-group jackknife (ch. 11; Shao & Tu 1995, sec. 2.3).

Bootstrap: resampling is of examples (clips) with replacement, all resamples drawn at once as an index matrix
`[n_boot, n]` from `numpy.random.default_rng(seed)`, so results are deterministic for a seed.
The CI is the (alpha/2, 1 - alpha/2) percentiles of the bootstrap distribution; the estimate is the
statistic of the full sample. Right for statistics that are averages of per-clip terms (means, UAR).

Jackknife (`jackknife_ci`): for statistics over PAIRS of clips (kernel statistics: HSIC, CKA). A bootstrap
resample repeats clips, and a repeated clip pairs with its own copy, which is identical in both
representations: every kernel estimator is pulled towards 1, the debiased one most (the band then misses its
own estimate). The jackknife only ever evaluates the statistic on distinct clips (the sample minus one group),
so no clip meets its own copy. Interval: estimate +- t_{G-1, 1-alpha/2} * se with the jackknife standard error
se^2 = (G - 1) / G * sum_g (theta_(g) - mean theta_(.))^2 over G groups.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from loralens.numerics.inputs import AnalysisInputError

Estimate = float | np.ndarray

#: Bytes of resampled values materialised at once by reductions other than the mean.
_CHUNK_BYTES = 64 * 2**20


class BootstrapCI(NamedTuple):
    """A bootstrap estimate with its percentile interval; floats for a scalar statistic, arrays `[L]` for a curve."""

    estimate: Estimate
    low: Estimate
    high: Estimate


class JackknifeCI(NamedTuple):
    """A jackknife estimate with its t interval and standard error; floats for a scalar, arrays `[L]` for a curve.
    `groups` is the number of groups deleted in turn (n for delete-one)."""

    estimate: Estimate
    low: Estimate
    high: Estimate
    se: Estimate
    groups: int


def resample_indices(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Index matrix `[n_boot, n]` of resamples with replacement of range(n)."""
    if n < 1 or n_boot < 1:
        raise AnalysisInputError(f"bootstrap needs n >= 1 and n_boot >= 1, got n={n}, n_boot={n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of n examples is in each resample: `[n_boot, n]` float64 counts from an index matrix
    `idx [n_boot, n]` (`resample_indices`); statistics that are sums over examples then come as `counts @ values`."""
    idx = np.asarray(idx)
    counts = np.zeros((idx.shape[0], n))
    np.add.at(counts, (np.arange(idx.shape[0])[:, None], idx), 1.0)
    return counts


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise AnalysisInputError(f"alpha={alpha} must be in (0, 1)", hint="alpha=0.05 gives a 95% interval")


def percentile_band(boot: np.ndarray, alpha: float = 0.05) -> tuple[Estimate, Estimate]:
    """The percentile interval (alpha/2 and 1 - alpha/2 quantiles, numpy's linear interpolation) of bootstrap values
    `[n_boot]` (-> two floats) or `[n_boot, L]` (-> two arrays `[L]`, pointwise per column).

    Resamples where the statistic is undefined (NaN, e.g. a ratio with a zero denominator) are left out, per
    column; a column without a defined resample has a NaN band. The one percentile step of every bootstrap band
    in the package."""
    _check_alpha(alpha)
    boot = np.asarray(boot, dtype=np.float64)
    q = [alpha / 2, 1 - alpha / 2]
    if not np.isnan(boot).any():
        low, high = np.quantile(boot, q, axis=0)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": that column's band is NaN
            low, high = np.nanquantile(boot, q, axis=0)
    if np.ndim(low) == 0:
        return float(low), float(high)
    return low, high


def bootstrap_ci(
    values: np.ndarray,
    stat: Callable[..., np.ndarray] | str = "mean",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap CI of a statistic of per-example values `[n]` or per-example curves `[n, L]`.

    `stat` is "mean" (computed as counts @ values / n, no resampled copy), "median", or a numpy-style
    reduction called as `stat(samples, axis=0)` on `[n, ...]` and `stat(samples, axis=1)` on the stacked
    resamples `[chunk, n, ...]` (e.g. `np.std`). For L > 1 the interval is pointwise per column.
    """
    _check_alpha(alpha)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim not in (1, 2) or v.shape[0] == 0:
        raise AnalysisInputError(f"values has shape {v.shape}, expected [n] or [n, L] with n >= 1")
    if not np.isfinite(v).all():
        raise AnalysisInputError("values hold NaN or infinite entries", hint="drop or fix those examples first")
    n = v.shape[0]
    idx = resample_indices(n, n_boot, seed)
    if stat == "mean":
        boot = resample_counts(idx, n) @ v / n
        estimate = v.mean(axis=0)
    else:
        fn = np.median if stat == "median" else stat
        if isinstance(fn, str):
            raise AnalysisInputError(f"unknown statistic {stat!r}", hint="use 'mean', 'median' or a reduction function")
        per_row = v[0].nbytes * n
        chunk = max(1, _CHUNK_BYTES // max(per_row, 1))
        boot = np.concatenate([np.asarray(fn(v[idx[s : s + chunk]], axis=1)) for s in range(0, n_boot, chunk)])
        estimate = np.asarray(fn(v, axis=0))
    low, high = percentile_band(boot, alpha)
    est: Estimate = float(estimate) if np.ndim(estimate) == 0 else estimate
    return BootstrapCI(est, low, high)


def bootstrap_ci_indices(
    fn: Callable[[np.ndarray], float | np.ndarray],
    n: int,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap CI of any metric of a set of examples, given as `fn(indices [n]) -> float or [L]`.

    For metrics that are not means of per-example values, e.g. UAR from per-clip predictions:
    `bootstrap_ci_indices(lambda i: balanced_accuracy_score(y[i], pred[i]), len(y))`. The estimate is
    `fn(arange(n))`. Resamples missing a class make some metrics warn or be undefined; that is the
    metric's business (sklearn's balanced accuracy averages over the classes present).
    """
    _check_alpha(alpha)
    idx = resample_indices(n, n_boot, seed)
    boot = np.stack([np.asarray(fn(row), dtype=np.float64) for row in idx])
    if not np.isfinite(boot).all():
        raise AnalysisInputError("the metric returned NaN or infinite values on some resamples")
    estimate = np.asarray(fn(np.arange(n)), dtype=np.float64)
    low, high = percentile_band(boot, alpha)
    est: Estimate = float(estimate) if estimate.ndim == 0 else estimate
    return BootstrapCI(est, low, high)


def jackknife_groups(n: int, groups: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """A seeded random partition of range(n) into min(groups, n) near-equal groups (delete-one when groups is None
    or >= n); each group sorted."""
    if n < 2:
        raise AnalysisInputError(f"the jackknife needs n >= 2 examples, got {n}")
    g = n if groups is None else max(2, min(int(groups), n))
    if g == n:
        return [np.array([i]) for i in range(n)]
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, g)]


def jackknife_ci(
    fn: Callable[[np.ndarray], float | np.ndarray],
    n: int,
    groups: int | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    estimate: float | np.ndarray | None = None,
) -> JackknifeCI:
    """Delete-a-group jackknife t interval of any statistic of a set of n examples, `fn(indices) -> float or [L]`.

    The n examples are split at random (seeded) into `groups` near-equal groups (all n, i.e. delete-one, when
    None); `fn` is evaluated on the sample minus each group in turn (always distinct examples, never a
    duplicate). The interval is centred on `estimate` (default `fn(arange(n))`): estimate +- t * se, t the
    (1 - alpha/2) quantile of Student's t with G - 1 degrees of freedom. Leave-outs where `fn` is not finite are
    dropped (per column); with fewer than two finite ones the interval is NaN."""
    from scipy.stats import t as student_t

    _check_alpha(alpha)
    parts = jackknife_groups(n, groups, seed)
    everything = np.arange(n)
    leave = np.stack([np.asarray(fn(np.setdiff1d(everything, part, assume_unique=True)), dtype=np.float64)
                      for part in parts])  # [G] or [G, L]
    est = np.asarray(fn(everything) if estimate is None else estimate, dtype=np.float64)
    finite = np.isfinite(leave)
    g = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(g > 0, np.where(finite, leave, 0.0).sum(axis=0) / np.maximum(g, 1), np.nan)
        dev = np.where(finite, leave - mean, 0.0)
        se = np.where(g >= 2, np.sqrt((g - 1) / np.maximum(g, 1) * (dev**2).sum(axis=0)), np.nan)
        q = np.where(g >= 2, student_t.ppf(1 - alpha / 2, np.maximum(g - 1, 1)), np.nan)
    low, high = est - q * se, est + q * se
    if est.ndim == 0:
        return JackknifeCI(float(est), float(low), float(high), float(se), len(parts))
    return JackknifeCI(est, low, high, se, len(parts))

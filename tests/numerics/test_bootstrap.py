"""Known answers for percentile bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from loralens.numerics.bootstrap import BootstrapCI, bootstrap_ci, bootstrap_ci_indices, resample_indices
from loralens.numerics.inputs import AnalysisInputError


def test_ci_of_a_constant_is_degenerate() -> None:
    est, low, high = bootstrap_ci(np.full(30, 2.5))
    assert est == low == high == pytest.approx(2.5)
    curve = bootstrap_ci(np.tile([1.0, -3.0, 0.0], (12, 1)), stat="median")
    np.testing.assert_allclose([curve.estimate, curve.low, curve.high], [[1.0, -3.0, 0.0]] * 3)


def test_mean_ci_equals_the_explicit_resample_loop_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    v = rng.exponential(size=40)
    res = bootstrap_ci(v, n_boot=500, alpha=0.1, seed=7)
    idx = resample_indices(40, 500, seed=7)
    boot = np.array([v[i].mean() for i in idx])
    assert isinstance(res, BootstrapCI)
    assert res.estimate == pytest.approx(v.mean())
    assert res.low == pytest.approx(np.quantile(boot, 0.05), abs=1e-12)
    assert res.high == pytest.approx(np.quantile(boot, 0.95), abs=1e-12)
    assert bootstrap_ci(v, n_boot=500, alpha=0.1, seed=7) == res
    assert bootstrap_ci(v, n_boot=500, alpha=0.1, seed=8) != res
    med = bootstrap_ci(v, stat="median", n_boot=500, alpha=0.1, seed=7)
    assert med.low == pytest.approx(np.quantile([np.median(v[i]) for i in idx], 0.05))
    sd = bootstrap_ci(v, stat=np.std, n_boot=500, alpha=0.1, seed=7)
    assert sd.high == pytest.approx(np.quantile([np.std(v[i]) for i in idx], 0.95))


def test_curves_get_pointwise_intervals_from_the_same_resamples() -> None:
    rng = np.random.default_rng(1)
    curves = rng.normal(size=(25, 4)) + np.arange(4)
    res = bootstrap_ci(curves, n_boot=300, seed=3)
    assert res.low.shape == (4,)
    for col in range(4):
        one = bootstrap_ci(curves[:, col], n_boot=300, seed=3)
        assert res.low[col] == pytest.approx(one.low) and res.high[col] == pytest.approx(one.high)
    assert np.all(res.low < res.estimate) and np.all(res.estimate < res.high)


def test_coverage_on_normal_samples_is_near_nominal() -> None:
    # 300 samples of n = 50 from N(1, 2^2); a 90% percentile interval should hold the true mean ~90% of the
    # time (the percentile bootstrap under-covers slightly at this n: measured 0.87 here).
    rng = np.random.default_rng(2)
    hits = 0
    for t in range(300):
        sample = rng.normal(1.0, 2.0, size=50)
        _, low, high = bootstrap_ci(sample, n_boot=400, alpha=0.1, seed=t)
        hits += low <= 1.0 <= high
    assert 0.82 <= hits / 300 <= 0.96


def test_metric_of_indices_uar_from_per_clip_predictions() -> None:
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), 15)
    pred = np.where(rng.random(60) < 0.7, y, rng.integers(0, 4, 60))
    res = bootstrap_ci_indices(lambda i: balanced_accuracy_score(y[i], pred[i]), len(y), n_boot=200, seed=0)
    assert res.estimate == pytest.approx(balanced_accuracy_score(y, pred))
    assert res.low < res.estimate < res.high
    perfect = bootstrap_ci_indices(lambda i: balanced_accuracy_score(y[i], y[i]), len(y), n_boot=50)
    assert perfect == (1.0, 1.0, 1.0)
    curve = bootstrap_ci_indices(lambda i: np.array([y[i].mean(), 2 * y[i].mean()]), len(y), n_boot=100)
    np.testing.assert_allclose(curve.high, [curve.high[0], 2 * curve.high[0]])


def test_bad_inputs() -> None:
    with pytest.raises(AnalysisInputError, match="alpha"):
        bootstrap_ci(np.ones(3), alpha=1.5)
    with pytest.raises(AnalysisInputError, match="NaN"):
        bootstrap_ci(np.array([1.0, np.nan]))
    with pytest.raises(AnalysisInputError, match="unknown statistic"):
        bootstrap_ci(np.ones(3), stat="mode")


def test_jackknife_of_the_mean_is_the_t_interval() -> None:
    """Delete-one jackknife of a mean: se = s / sqrt(n) exactly, interval mean +- t_{n-1} se."""
    from scipy.stats import t as student_t

    from loralens.numerics.bootstrap import jackknife_ci

    rng = np.random.default_rng(3)
    v = rng.normal(2.0, 1.5, size=30)
    ci = jackknife_ci(lambda i: v[i].mean(), 30)
    se = v.std(ddof=1) / np.sqrt(30)
    assert ci.groups == 30 and ci.se == pytest.approx(se, rel=1e-10)
    q = student_t.ppf(0.975, 29)
    assert (ci.low, ci.high) == pytest.approx((v.mean() - q * se, v.mean() + q * se), rel=1e-10)


def test_jackknife_groups_partition_and_curves() -> None:
    from loralens.numerics.bootstrap import jackknife_ci, jackknife_groups

    parts = jackknife_groups(103, 10, seed=1)
    assert len(parts) == 10 and sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert {p.size for p in parts} <= {10, 11}
    assert [p.tolist() for p in jackknife_groups(103, 10, seed=1)] == [p.tolist() for p in parts]
    assert len(jackknife_groups(5, 10)) == 5  # delete-one when fewer examples than groups
    rng = np.random.default_rng(4)
    curves = rng.normal(size=(40, 3))
    seen = []

    def fn(i):
        seen.append(np.unique(i).size == i.size)  # never a duplicate
        return curves[i].mean(axis=0)

    ci = jackknife_ci(fn, 40, groups=8, seed=2)
    assert all(seen) and ci.low.shape == (3,) and np.all(ci.low < ci.estimate) and np.all(ci.estimate < ci.high)
    const = jackknife_ci(lambda i: 1.5, 12)
    assert const.low == const.high == 1.5 and const.se == 0.0
    with pytest.raises(AnalysisInputError):
        jackknife_ci(lambda i: 0.0, 1)


def test_percentile_band_leaves_undefined_resamples_out_per_column() -> None:
    from loralens.numerics.bootstrap import percentile_band

    boot = np.column_stack([np.arange(101.0), np.arange(101.0), np.full(101, np.nan)])
    boot[::2, 1] = np.nan  # column 1: only the odd values are defined
    low, high = percentile_band(boot, alpha=0.1)
    assert low[0] == pytest.approx(5.0) and high[0] == pytest.approx(95.0)
    odd = np.arange(1.0, 101.0, 2.0)
    assert low[1] == pytest.approx(np.quantile(odd, 0.05)) and high[1] == pytest.approx(np.quantile(odd, 0.95))
    assert np.isnan(low[2]) and np.isnan(high[2])  # no defined resample: no band
    scalar = percentile_band(np.arange(101.0), alpha=0.1)
    assert scalar == (pytest.approx(5.0), pytest.approx(95.0)) and isinstance(scalar[0], float)


def test_resample_counts_count_each_example() -> None:
    from loralens.numerics.bootstrap import resample_counts

    counts = resample_counts(np.array([[0, 0, 2], [1, 2, 2]]), 4)
    assert counts.tolist() == [[2.0, 0.0, 1.0, 0.0], [0.0, 1.0, 2.0, 0.0]]

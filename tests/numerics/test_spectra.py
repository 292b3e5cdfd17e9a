"""Known answers for spectra on matrices built with a chosen spectrum."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loralens.numerics.inputs import AnalysisInputError
from loralens.numerics.spectra import (
    components_for_energy,
    effective_rank,
    energy,
    feature_spectrum,
    singular_values,
    singular_values_from_gram,
    spectrum_summary,
    stable_rank,
)
from loralens.numerics.streaming import CovarianceAccumulator


def _with_spectrum(sigma: list[float], m: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(m, len(sigma))))
    v, _ = np.linalg.qr(rng.normal(size=(n, len(sigma))))
    return u @ np.diag(sigma) @ v.T


def test_singular_values_of_a_constructed_matrix() -> None:
    a = _with_spectrum([5.0, 3.0, 1.0, 0.5], 20, 12)
    s = singular_values(a)
    assert s.shape == (12,)
    np.testing.assert_allclose(s[:4], [5.0, 3.0, 1.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(s[4:], 0.0, atol=1e-12)


def test_energy_and_components_for_energy() -> None:
    # sigma^2 = 16, 9, 4, 1, 0 -> cumulative 16/30, 25/30, 29/30, 1, 1
    sigma = [3.0, 4.0, 0.0, 2.0, 1.0]  # unsorted on purpose
    np.testing.assert_allclose(energy(sigma), [16 / 30, 25 / 30, 29 / 30, 1.0, 1.0])
    assert components_for_energy(sigma, 0.5) == 1
    assert components_for_energy(sigma, 0.9) == 3
    assert components_for_energy(sigma, 25 / 30) == 2  # reaching the fraction exactly counts
    assert components_for_energy(sigma, 1.0) == 4
    with pytest.raises(AnalysisInputError):
        components_for_energy(sigma, 0.0)


def test_stable_and_effective_rank_known_values() -> None:
    assert stable_rank(np.ones(7)) == pytest.approx(7.0)
    assert effective_rank(np.ones(7)) == pytest.approx(7.0)
    assert stable_rank([2.0, 1.0, 1.0]) == pytest.approx(6 / 4)
    # p = (1/2, 1/4, 1/4): H = 1.5 ln 2 -> exp(H) = 2^1.5
    assert effective_rank([2.0, 1.0, 1.0]) == pytest.approx(2**1.5)
    assert effective_rank([3.0, 0.0, 0.0]) == pytest.approx(1.0)
    a = _with_spectrum([4.0, 2.0, 2.0, 1.0], 9, 9, seed=1)  # a matrix argument: its singular values are used
    assert stable_rank(a) == pytest.approx((16 + 4 + 4 + 1) / 16)
    assert effective_rank(a) == pytest.approx(math.exp(-sum(p * math.log(p) for p in [4 / 9, 2 / 9, 2 / 9, 1 / 9])))
    with pytest.raises(AnalysisInputError, match="all zeros"):
        stable_rank(np.zeros(3))


def test_spectrum_from_streamed_features_equals_svd_of_centered_features() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 4)) @ np.diag([10.0, 3.0, 1.0, 0.1]) @ np.linalg.qr(rng.normal(size=(4, 4)))[0] + 50
    acc = CovarianceAccumulator(4)
    for lo in range(0, 300, 64):
        acc.update(x[lo : lo + 64])
    direct = singular_values(x - x.mean(0))
    np.testing.assert_allclose(feature_spectrum(acc), direct, rtol=1e-8)
    np.testing.assert_allclose(singular_values_from_gram((x.T @ x)), singular_values(x), rtol=1e-8)


def test_spectrum_summary_keys() -> None:
    s = spectrum_summary([3.0, 4.0, 0.0, 2.0, 1.0])
    assert s["sigma_max"] == 4.0 and s["frobenius"] == pytest.approx(math.sqrt(30))
    assert (s["components_50pct"], s["components_90pct"], s["components_99pct"]) == (1, 3, 4)

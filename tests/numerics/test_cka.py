"""Known answers for CKA: invariances, a hand-computed case, estimator definitions, debiasing, streaming."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from loralens.numerics.cka import (
    LinearCKAAccumulator,
    LinearCKAMatrixAccumulator,
    MinibatchCKA,
    biased_hsic,
    cka_matrix,
    debiased_hsic,
    kernel_matrix,
    linear_cka,
    median_bandwidth,
    rbf_cka,
    rbf_kernel,
)
from loralens.numerics.inputs import AnalysisInputError


def _orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q


def _related(rng: np.random.Generator, n: int = 60, dx: int = 12, dy: int = 9) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, dx))
    y = np.tanh(x @ rng.normal(size=(dx, dy))) + 0.5 * rng.normal(size=(n, dy))
    return x, y


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_is_one_for_orthogonal_transform_and_scaling(debiased: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 16))
    y = 3.7 * x @ _orthogonal(16, rng)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_cka_with_median_bandwidth_is_one_for_orthogonal_transform_and_scaling(debiased: bool) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 10))
    y = 0.25 * x @ _orthogonal(10, rng) + 5.0
    assert rbf_cka(x, y, debiased=debiased) == pytest.approx(1.0, abs=1e-10)


def test_hand_computed_linear_cka_of_one_dimensional_features() -> None:
    # For 1-d features biased linear CKA is the squared Pearson correlation:
    # xc = [-1.5, -.5, .5, 1.5], yc = [-.5, .5, -.5, .5]: (xc.yc)^2 / (|xc|^2 |yc|^2) = 1^2 / (5 * 1) = 0.2.
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([[0.0], [1.0], [0.0], [1.0]])
    assert linear_cka(x, y) == pytest.approx(0.2, abs=1e-15)
    # Biased HSIC by hand: tr(K H L H) / (n-1)^2 = (xc.yc)^2 / 9 = 1/9.
    assert biased_hsic(x @ x.T, y @ y.T) == pytest.approx(1.0 / 9.0, abs=1e-15)


def test_biased_hsic_matches_the_centering_matrix_definition() -> None:
    rng = np.random.default_rng(2)
    x, y = _related(rng, n=9)
    k, l = x @ x.T, np.exp(-np.square(y[:, None] - y[None]).sum(-1) / 10)
    h = np.eye(9) - np.ones((9, 9)) / 9
    assert biased_hsic(k, l) == pytest.approx(np.trace(k @ h @ l @ h) / 64, rel=1e-12)


def test_debiased_hsic_equals_the_u_statistic_over_distinct_index_tuples() -> None:
    # Song et al. 2012: HSIC_1 is the U-statistic of
    # E[k_ij l_ij] + E[k_ij] E[l_qr] - 2 E[k_ij l_iq] over distinct indices; brute force for n = 7.
    rng = np.random.default_rng(3)
    n = 7
    x, y = _related(rng, n=n, dx=3, dy=2)
    k = x @ x.T
    l = np.exp(-np.square(y[:, None] - y[None]).sum(-1))
    t1 = np.mean([k[i, j] * l[i, j] for i, j in itertools.permutations(range(n), 2)])
    t2 = np.mean([k[i, j] * l[q, r] for i, j, q, r in itertools.permutations(range(n), 4)])
    t3 = np.mean([k[i, j] * l[i, q] for i, j, q in itertools.permutations(range(n), 3)])
    assert debiased_hsic(k, l) == pytest.approx(t1 + t2 - 2 * t3, rel=1e-10)


def test_debiased_cka_of_independent_features_is_near_zero_where_biased_is_not() -> None:
    # n = 40 examples, d = 512 features as in the paper's setting. Measured over 200 draws: biased linear CKA
    # 0.928 +/- 0.004 (its O(d/n) bias), debiased 0.002 +/- 0.038 (centred on the true value, 0).
    rng = np.random.default_rng(4)
    biased, debiased = [], []
    for _ in range(20):
        x, y = rng.normal(size=(40, 512)), rng.normal(size=(40, 512))
        biased.append(linear_cka(x, y))
        debiased.append(linear_cka(x, y, debiased=True))
    assert min(biased) > 0.9
    assert abs(np.mean(debiased)) < 0.03
    assert max(abs(v) for v in debiased) < 0.2


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_is_symmetric_and_invariant_to_isotropic_scaling_and_translation(kernel: str, debiased: bool) -> None:
    rng = np.random.default_rng(5)
    x, y = _related(rng)
    f = linear_cka if kernel == "linear" else rbf_cka
    base = f(x, y, debiased=debiased)
    assert 0.1 < abs(base) < 0.99
    assert f(y, x, debiased=debiased) == pytest.approx(base, abs=1e-12)
    shift = rng.normal(size=x.shape[1]) * 50
    assert f(4.0 * x + shift, y, debiased=debiased) == pytest.approx(base, abs=1e-10)
    assert f(x, 0.01 * y - 3.0, debiased=debiased) == pytest.approx(base, abs=1e-10)


def test_cka_matrix_matches_pairwise_calls_and_is_symmetric_with_unit_diagonal() -> None:
    rng = np.random.default_rng(6)
    x, y = _related(rng)
    layers = [x, y, x[:, :5], torch.from_numpy(y * 2)]
    for debiased in (False, True):
        for kernel, f in (("linear", linear_cka), ("rbf", rbf_cka)):
            m = cka_matrix(layers, kernel=kernel, debiased=debiased)  # type: ignore[arg-type]
            assert m.shape == (4, 4)
            np.testing.assert_allclose(m, m.T, atol=0)
            np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-12)
            for i, j in itertools.product(range(4), range(4)):
                assert m[i, j] == pytest.approx(f(layers[i], layers[j], debiased=debiased), abs=1e-12)
    rect = cka_matrix([x, y], [y, x, x[:, :3]])
    assert rect.shape == (2, 3)
    assert rect[0, 1] == pytest.approx(1.0) and rect[0, 0] == pytest.approx(linear_cka(x, y))


def test_median_bandwidth_and_rbf_kernel() -> None:
    x = np.array([[0.0], [1.0], [3.0]])  # squared distances 1, 9, 4 -> median 4 -> sigma 2
    assert median_bandwidth(x) == pytest.approx(2.0)
    assert median_bandwidth(x, scale=0.5) == pytest.approx(1.0)
    k = rbf_kernel(x).numpy()
    assert k[0, 1] == pytest.approx(np.exp(-1 / 8)) and k[0, 2] == pytest.approx(np.exp(-9 / 8))
    assert rbf_cka(x, x, sigma=(1.0, 3.0)) < 1.0
    lin = kernel_matrix(x, "linear").numpy()
    np.testing.assert_allclose(lin, np.outer(x[:, 0] - 4 / 3, x[:, 0] - 4 / 3))


@pytest.mark.parametrize("debiased", [False, True])
def test_streamed_linear_cka_equals_in_memory(debiased: bool) -> None:
    rng = np.random.default_rng(7)
    x, y = _related(rng, n=203, dx=24, dy=16)
    x = x * 3 + 100.0  # a large common offset, like real hidden states
    acc = LinearCKAAccumulator(24, 16)
    for lo, hi in [(0, 1), (1, 50), (50, 51), (51, 140), (140, 203)]:
        acc.update(x[lo:hi], torch.from_numpy(y[lo:hi]))
    assert acc.n == 203
    assert acc.compute(debiased) == pytest.approx(linear_cka(x, y, debiased=debiased), abs=1e-10)


def test_streamed_cka_matrix_equals_in_memory_for_one_model_and_two_models() -> None:
    rng = np.random.default_rng(8)
    n = 150
    a = rng.normal(size=(n, 10))
    layers_x = [a, np.tanh(a @ rng.normal(size=(10, 8))), a[:, :4] + 0.1 * rng.normal(size=(n, 4))]
    layers_y = [layers_x[1] + 0.3 * rng.normal(size=(n, 8)), rng.normal(size=(n, 6))]
    one = LinearCKAMatrixAccumulator([10, 8, 4])
    two = LinearCKAMatrixAccumulator([10, 8, 4], [8, 6])
    for lo in range(0, n, 32):
        one.update([m[lo : lo + 32] for m in layers_x])
        two.update([m[lo : lo + 32] for m in layers_x], [m[lo : lo + 32] for m in layers_y])
    for debiased in (False, True):
        np.testing.assert_allclose(one.compute(debiased), cka_matrix(layers_x, debiased=debiased), atol=1e-10)
        np.testing.assert_allclose(
            two.compute(debiased), cka_matrix(layers_x, layers_y, debiased=debiased), atol=1e-10
        )


def test_minibatch_cka_averages_unbiased_hsic_over_batches() -> None:
    rng = np.random.default_rng(9)
    x, y = _related(rng, n=96)
    mb = MinibatchCKA(1, 1)
    single = MinibatchCKA(1, 1)
    single.update([x], [y])
    assert single.compute()[0, 0] == pytest.approx(linear_cka(x, y, debiased=True), abs=1e-12)
    hxy = hxx = hyy = 0.0
    for lo in range(0, 96, 32):
        xb, yb = x[lo : lo + 32], y[lo : lo + 32]
        mb.update([xb], [yb])
        kb, lb = kernel_matrix(xb), kernel_matrix(yb)
        hxy, hxx, hyy = hxy + debiased_hsic(kb, lb), hxx + debiased_hsic(kb, kb), hyy + debiased_hsic(lb, lb)
    assert mb.n_batches == 3
    assert mb.compute()[0, 0] == pytest.approx(hxy / np.sqrt(hxx * hyy), abs=1e-12)
    rbf = MinibatchCKA(2, kernel="rbf")
    q = _orthogonal(12, rng)
    for lo in range(0, 96, 32):
        rbf.update([x[lo : lo + 32], 2 * x[lo : lo + 32] @ q])
    m = rbf.compute()
    assert m[0, 1] == pytest.approx(1.0, abs=1e-10) and m[1, 0] == m[0, 1]


def test_bad_inputs_raise_analysis_errors() -> None:
    x = np.zeros((5, 3))
    with pytest.raises(AnalysisInputError, match="examples"):
        linear_cka(x, np.zeros((6, 3)))
    with pytest.raises(AnalysisInputError, match="at least 4"):
        linear_cka(np.eye(3), np.eye(3), debiased=True)
    with pytest.raises(AnalysisInputError, match="NaN"):
        linear_cka(np.full((5, 3), np.nan), x)
    with pytest.raises(AnalysisInputError, match="dimensions"):
        linear_cka(np.zeros(5), x)
    acc = LinearCKAAccumulator(3, 3)
    with pytest.raises(AnalysisInputError, match="dim"):
        acc.update(np.zeros((4, 2)), np.zeros((4, 3)))
    assert np.isnan(linear_cka(np.ones((5, 3)), np.random.default_rng(0).normal(size=(5, 3))))


def test_cka_matrix_with_many_examples_uses_feature_space_sums_with_the_same_values(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import loralens.numerics.cka as cka

    rng = np.random.default_rng(10)
    x, y = _related(rng, n=80)
    small = {d: cka_matrix([x, y, x[:, :4]], debiased=d) for d in (False, True)}
    rect = cka_matrix([x], [y, x], debiased=True)
    monkeypatch.setattr(cka, "LINEAR_FEATURE_SPACE_MIN_N", 10)
    for d in (False, True):
        np.testing.assert_allclose(cka_matrix([x, y, x[:, :4]], debiased=d), small[d], atol=1e-12)
    np.testing.assert_allclose(cka_matrix([x], [y, x], debiased=True), rect, atol=1e-12)

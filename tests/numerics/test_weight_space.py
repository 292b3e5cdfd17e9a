"""Known answers for the LoRA weight-space analyses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loralens.numerics.inputs import AnalysisInputError
from loralens.numerics.weight_space import (
    amplification_factor,
    delta_spectrum,
    intruder_dimensions,
    lora_delta,
    lora_svd,
    lora_weight_summary,
    relative_update_norm,
    subspace_overlap,
    subspace_overlap_grid,
)


def _orth(d: int, rng: np.random.Generator) -> np.ndarray:
    return np.linalg.qr(rng.normal(size=(d, d)))[0]


def _weight(rng: np.random.Generator, d: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """W = U diag(s) V^T with distinct, decaying singular values s_i = 10 / i."""
    u, v = _orth(d, rng), _orth(d, rng)
    s = 10.0 / np.arange(1, d + 1)
    return u @ np.diag(s) @ v.T, u, s, v


def test_lora_delta_and_its_spectrum_follow_the_peft_convention() -> None:
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(size=(4, 20)))  # lora_A.weight [r, d_in]
    b = torch.from_numpy(rng.normal(size=(30, 4)))  # lora_B.weight [d_out, r]
    dw = lora_delta(a, b, scale=2.0)
    assert dw.shape == (30, 20)
    torch.testing.assert_close(dw, 2.0 * b @ a)
    np.testing.assert_allclose(delta_spectrum(a, b, 2.0), np.linalg.svd(dw.numpy(), compute_uv=False)[:4], rtol=1e-12)
    u, s, vh = lora_svd(a, b, 2.0)
    torch.testing.assert_close(u @ torch.diag(s) @ vh, dw)
    torch.testing.assert_close(u.T @ u, torch.eye(4, dtype=torch.float64))
    with pytest.raises(AnalysisInputError, match="do not chain"):
        lora_delta(b, a)


def test_relative_update_norm() -> None:
    w = np.eye(4) * 2.0  # ||W||_F = 4
    assert relative_update_norm(np.full((4, 4), 0.25), w) == pytest.approx(1.0 / 4.0)


def test_subspace_overlap_of_a_subspace_with_itself_and_with_an_orthogonal_one() -> None:
    rng = np.random.default_rng(1)
    q = _orth(32, rng)
    a1 = rng.normal(size=(8, 8)) @ q[:, :8].T  # rows span the first 8 basis directions
    a2 = rng.normal(size=(8, 8)) @ q[:, 8:16].T  # an orthogonal 8-dim subspace
    assert subspace_overlap(a1, a1, 8, 8) == pytest.approx(1.0, abs=1e-12)
    assert subspace_overlap(a1, 3.0 * a1, 3, 3) == pytest.approx(1.0, abs=1e-12)
    assert subspace_overlap(a1, a2, 8, 8) == pytest.approx(0.0, abs=1e-12)
    grid = subspace_overlap_grid(a1, a1)
    np.testing.assert_allclose(np.diag(grid), 1.0, atol=1e-12)
    # nested: the top-i subspace is inside the top-j one, so phi(i, j) = 1 for every pair
    np.testing.assert_allclose(grid, 1.0, atol=1e-12)
    np.testing.assert_allclose(subspace_overlap_grid(a1, a2), 0.0, atol=1e-12)


def test_subspace_overlap_partial_known_value() -> None:
    # A1 spans e1..e4, A2 spans e3..e6 with singular values ordering e3, e4 first: phi(4, 4) = 2/4,
    # phi(4, 2) = 2/2 (A2's top-2 directions e3, e4 lie inside A1's span).
    a1 = np.zeros((4, 10))
    a1[np.arange(4), np.arange(4)] = [4.0, 3.0, 2.0, 1.0]
    a2 = np.zeros((4, 10))
    a2[np.arange(4), [2, 3, 4, 5]] = [4.0, 3.0, 2.0, 1.0]
    assert subspace_overlap(a1, a2, 4, 4) == pytest.approx(0.5)
    assert subspace_overlap(a1, a2, 4, 2) == pytest.approx(1.0)
    assert subspace_overlap(a1, a2, 2, 2) == pytest.approx(0.0)
    grid = subspace_overlap_grid(a1, a2)
    assert grid.shape == (4, 4)
    for i in range(1, 5):
        for j in range(1, 5):
            assert grid[i - 1, j - 1] == pytest.approx(subspace_overlap(a1, a2, i, j), abs=1e-12)


def test_amplification_factor_aligned_and_unaligned_updates() -> None:
    rng = np.random.default_rng(2)
    w, u, s, v = _weight(rng)
    # dW along W's top direction with norm c: U^T W V^T = s_1, amplification = c / s_1 = 0.3 / 10.
    aligned = 0.3 * np.outer(u[:, 0], v[:, 0])
    assert amplification_factor(aligned, w) == pytest.approx(0.3 / 10.0, rel=1e-10)
    # along the weakest direction (s_48 = 10/48): amplification = 0.3 * 48 / 10
    weak = 0.3 * np.outer(u[:, -1], v[:, -1])
    assert amplification_factor(weak, w) == pytest.approx(0.3 * 48 / 10.0, rel=1e-10)
    # rank-2 update along directions 1 and 2: ||dW||_F / ||diag(s1, s2)||_F
    two = np.outer(u[:, 0], v[:, 0]) + np.outer(u[:, 1], v[:, 1])
    assert amplification_factor(two, w) == pytest.approx(np.sqrt(2) / np.sqrt(100 + 25), rel=1e-10)
    with pytest.raises(AnalysisInputError, match="zero"):
        amplification_factor(np.zeros_like(w), w)


def test_no_intruders_when_the_update_is_zero() -> None:
    rng = np.random.default_rng(3)
    w, *_ = _weight(rng)
    res = intruder_dimensions(w, w.copy())
    assert res.count == 0 and res.indices == []
    np.testing.assert_allclose(res.max_cosine, 1.0, atol=1e-10)
    assert intruder_dimensions(w, w.copy(), side="right").count == 0


def test_a_large_orthogonal_rank_one_spike_is_one_intruder() -> None:
    rng = np.random.default_rng(4)
    w, u, s, v = _weight(rng)
    d = w.shape[0]
    # y has |cos| = 1/sqrt(48) ~ 0.14 with every pre-trained left singular vector: far from all of them.
    y, z = u.sum(axis=1) / np.sqrt(d), v.sum(axis=1) / np.sqrt(d)
    res = intruder_dimensions(w, w + 100.0 * np.outer(y, z))
    assert res.count == 1 and res.indices == [0]
    assert res.max_cosine[0] < 0.2 and res.max_cosine[1:].min() > 0.9
    assert intruder_dimensions(w, w + 100.0 * np.outer(y, z), side="right").count == 1
    # a spike along an existing singular direction is no intruder, however large
    assert intruder_dimensions(w, w + 100.0 * np.outer(u[:, 5], v[:, 5])).count == 0


def test_lora_weight_summary() -> None:
    rng = np.random.default_rng(5)
    w, u, s, v = _weight(rng)
    a = (v[:, :2] * [1.0, 0.5]).T  # [2, 48]
    b = u[:, :2]  # [48, 2]
    out = lora_weight_summary(w, a, b, scale=2.0)
    np.testing.assert_allclose(out["delta_singular_values"], [2.0, 1.0], rtol=1e-12)
    assert out["rank"] == 2 and out["intruders"] == 0
    assert out["delta_stable_rank"] == pytest.approx(5 / 4)
    assert out["amplification_factor"] == pytest.approx(np.sqrt(5) / np.sqrt(100 + 25))
    zero = lora_weight_summary(w, a, np.zeros_like(b), scale=2.0)
    assert zero["intruders"] == 0 and zero["amplification_factor"] is None and zero["relative_update_norm"] == 0.0

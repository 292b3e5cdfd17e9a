"""Known answers for valid-frame masking and the streamed statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loralens.numerics.inputs import AnalysisInputError
from loralens.numerics.masking import valid_frames
from loralens.numerics.streaming import (
    CovarianceAccumulator,
    MeanCosineAccumulator,
    RunningMoments,
    RunningMomentsByLayer,
)


def _padded(rng: np.random.Generator, lengths: list[int], t: int = 7, d: int = 5) -> torch.Tensor:
    x = torch.from_numpy(rng.normal(size=(len(lengths), t, d)) + 3.0)
    for b, n in enumerate(lengths):
        x[b, n:] = 1e6  # padding garbage must never leak into a statistic
    return x


def test_running_moments_equal_numpy_on_the_valid_frames() -> None:
    rng = np.random.default_rng(0)
    batches = [([7, 3, 1], _padded(rng, [7, 3, 1])), ([2, 6], _padded(rng, [2, 6]))]
    frames = np.concatenate([valid_frames(x, torch.tensor(l)).numpy() for l, x in batches])
    m = RunningMoments(5)
    for lengths, x in batches:
        m.update(x, lengths)
    m.update(frames[:0])  # an empty batch is a no-op
    assert m.count == len(frames) == 19
    np.testing.assert_allclose(m.mean, frames.mean(0), atol=1e-12)
    np.testing.assert_allclose(m.var(), frames.var(0), atol=1e-12)
    np.testing.assert_allclose(m.std(ddof=1), frames.std(0, ddof=1), atol=1e-12)
    norms = np.linalg.norm(frames, axis=1)
    assert m.mean_norm == pytest.approx(norms.mean(), abs=1e-12)
    assert m.rms_norm == pytest.approx(np.sqrt((norms**2).mean()), abs=1e-12)
    u = frames / norms[:, None]
    cos = u @ u.T
    off = cos[~np.eye(len(u), dtype=bool)].mean()
    assert m.mean_pairwise_cosine == pytest.approx(off, abs=1e-12)
    assert m.summary()["count"] == 19


def test_running_moments_are_stable_with_a_large_offset_and_known_variance() -> None:
    m = RunningMoments(1)
    for _ in range(1000):  # values 1e9 + {-1, +1}: mean 1e9, variance exactly 1
        m.update(np.array([[1e9 - 1.0], [1e9 + 1.0]]))
    assert m.mean[0] == 1e9
    assert m.var()[0] == pytest.approx(1.0, abs=1e-9)


def test_mean_pairwise_cosine_known_values() -> None:
    m = RunningMoments(2)
    m.update(np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))
    # pairs: (e1, 2e2) -> 0, zero vector -> 0: mean 0 over 6 ordered pairs
    assert m.mean_pairwise_cosine == pytest.approx(0.0)
    same = RunningMoments(3)
    same.update(np.tile([[1.0, 2.0, 2.0]], (4, 1)) * np.array([[1.0], [2.0], [3.0], [0.5]]))
    assert same.mean_pairwise_cosine == pytest.approx(1.0)


def test_running_moments_by_layer() -> None:
    rng = np.random.default_rng(1)
    layers = RunningMomentsByLayer()
    x = _padded(rng, [3, 5])
    layers.update_many({"blocks.0.hook_resid_post": x, "blocks.1.hook_resid_post": 2 * x}, [3, 5])
    s = layers.summary()
    assert s["blocks.0.hook_resid_post"]["count"] == 8
    assert s["blocks.1.hook_resid_post"]["mean_norm"] == pytest.approx(2 * s["blocks.0.hook_resid_post"]["mean_norm"])


def test_mean_cosine_accumulator() -> None:
    rng = np.random.default_rng(2)
    a, b = _padded(rng, [4, 2]), _padded(rng, [4, 2])
    acc = MeanCosineAccumulator()
    acc.update(a, b, [4, 2])
    acc.update(a[0, :4], -a[0, :4])  # cosine -1 on four more pairs
    va, vb = valid_frames(a, [4, 2]), valid_frames(b, [4, 2])
    expected = torch.cat([torch.nn.functional.cosine_similarity(va, vb, dim=1), -torch.ones(4)]).double()
    assert acc.count == 10
    assert acc.mean == pytest.approx(float(expected.mean()), abs=1e-12)
    assert acc.std == pytest.approx(float(expected.std(unbiased=False)), abs=1e-7)
    with pytest.raises(AnalysisInputError, match="differ in shape"):
        acc.update(np.zeros((3, 2)), np.zeros((3, 3)))


def test_covariance_accumulator_equals_numpy() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(101, 6)) @ rng.normal(size=(6, 6)) + 1e4
    acc = CovarianceAccumulator(6)
    for lo in range(0, 101, 17):
        acc.update(x[lo : lo + 17])
    np.testing.assert_allclose(acc.covariance().numpy(), np.cov(x.T), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(acc.mean.numpy(), x.mean(0), rtol=1e-12)
    xc = x - x.mean(0)
    np.testing.assert_allclose(acc.centered_gram().numpy(), xc.T @ xc, rtol=1e-9, atol=1e-7)

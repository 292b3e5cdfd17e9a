"""Streamed statistics whose memory does not grow with the number of examples.

Accumulators keep float64 sums on the device of the first update and take either a features matrix `[n, d]` or
a padded batch `[b, t, d]` with `lengths [b]` (encoder frames; padding frames never enter a statistic, see
`loralens.numerics.masking`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from loralens.numerics.arrays import ArrayLike, as_f64
from loralens.numerics.inputs import AnalysisInputError
from loralens.numerics.masking import valid_frames


def _rows(x: ArrayLike, lengths: ArrayLike | None, name: str = "x") -> torch.Tensor:
    """Features matrix `[n, d]` in float64: `x` itself, or the valid frames of `x [b, t, d]`."""
    t = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
    if lengths is not None:
        t = valid_frames(t, lengths)
    return as_f64(t, name, 2)


class RunningMoments:
    """Per-dimension mean and variance (Chan et al. parallel merge, float64) and vector-norm statistics.

    Also keeps the sum of unit vectors, which gives the mean pairwise cosine similarity between distinct
    examples (anisotropy): (||sum u_i||^2 - n) / (n (n - 1)), exact and streamed.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.count = 0
        self._mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None
        self._sum_norm = 0.0
        self._sum_sq_norm = 0.0
        self._sum_unit: torch.Tensor | None = None
        self._n_nonzero = 0

    def update(self, x: ArrayLike, lengths: ArrayLike | None = None) -> None:
        """Add examples: `x [n, dim]`, or `x [b, t, dim]` with `lengths [b]` (only valid frames count)."""
        xt = _rows(x, lengths)
        if xt.shape[1] != self.dim:
            raise AnalysisInputError(f"RunningMoments({self.dim}) got vectors of dim {xt.shape[1]}")
        n_b = xt.shape[0]
        if n_b == 0:
            return
        mean_b = xt.mean(dim=0)
        m2_b = ((xt - mean_b) ** 2).sum(dim=0)
        norms = torch.linalg.vector_norm(xt, dim=1)
        unit = (xt / norms.clamp_min(torch.finfo(torch.float64).tiny)[:, None]).sum(dim=0)
        if self._mean is None:
            self._mean, self._m2, self._sum_unit = mean_b, m2_b, unit
        else:
            n_a = self.count
            delta = mean_b.to(self._mean.device) - self._mean
            total = n_a + n_b
            self._mean = self._mean + delta * (n_b / total)
            self._m2 = self._m2 + m2_b.to(self._m2.device) + delta**2 * (n_a * n_b / total)
            self._sum_unit = self._sum_unit + unit.to(self._sum_unit.device)
        self.count += n_b
        self._sum_norm += float(norms.sum())
        self._sum_sq_norm += float((norms**2).sum())
        self._n_nonzero += int((norms > 0).sum())

    def _need(self, k: int = 1) -> None:
        if self.count < k:
            raise AnalysisInputError(f"RunningMoments has {self.count} examples, needs at least {k}")

    @property
    def mean(self) -> np.ndarray:
        """Per-dimension mean `[dim]`."""
        self._need()
        return self._mean.cpu().numpy()  # type: ignore[union-attr]

    def var(self, ddof: int = 0) -> np.ndarray:
        """Per-dimension variance `[dim]`, sum of squared deviations / (n - ddof)."""
        self._need(ddof + 1)
        return (self._m2 / (self.count - ddof)).cpu().numpy()  # type: ignore[operator]

    def std(self, ddof: int = 0) -> np.ndarray:
        return np.sqrt(self.var(ddof))

    @property
    def mean_norm(self) -> float:
        """Mean Euclidean norm of the examples, mean ||x_i||."""
        self._need()
        return self._sum_norm / self.count

    @property
    def rms_norm(self) -> float:
        """Root mean squared norm, sqrt(mean ||x_i||^2)."""
        self._need()
        return math.sqrt(self._sum_sq_norm / self.count)

    @property
    def mean_pairwise_cosine(self) -> float:
        """Mean cosine similarity over ordered pairs of distinct examples (zero vectors count as cosine 0)."""
        self._need(2)
        s = float((self._sum_unit**2).sum())  # type: ignore[operator]
        # ||sum u_i||^2 = sum_{i != j} cos(x_i, x_j) + sum_i ||u_i||^2, and ||u_i||^2 is 1 unless x_i = 0.
        return (s - self._n_nonzero) / (self.count * (self.count - 1))

    def summary(self) -> dict[str, float | int | None]:
        """JSON-ready scalars: count, mean_norm, rms_norm, mean_var (mean over dims of the variance),
        mean_pairwise_cosine (None below 2 examples)."""
        return {
            "count": self.count,
            "mean_norm": self.mean_norm,
            "rms_norm": self.rms_norm,
            "mean_var": float(self.var().mean()),
            "mean_pairwise_cosine": self.mean_pairwise_cosine if self.count >= 2 else None,
        }


class RunningMomentsByLayer:
    """One `RunningMoments` per layer name, created on first use."""

    def __init__(self) -> None:
        self.layers: dict[str, RunningMoments] = {}

    def update(self, layer: str, x: ArrayLike, lengths: ArrayLike | None = None) -> None:
        t = torch.as_tensor(x)
        if layer not in self.layers:
            self.layers[layer] = RunningMoments(t.shape[-1])
        self.layers[layer].update(t, lengths)

    def update_many(self, xs: Mapping[str, ArrayLike], lengths: ArrayLike | None = None) -> None:
        for name, x in xs.items():
            self.update(name, x, lengths)

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        return {name: m.summary() for name, m in self.layers.items()}


class MeanCosineAccumulator:
    """Mean cosine similarity between paired vectors, e.g. the same frame in the base and adapted model.

    cos(a_i, b_i) = a_i . b_i / max(||a_i|| ||b_i||, eps); the mean is over all examples seen.
    """

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = eps
        self.count = 0
        self._sum = 0.0
        self._sum_sq = 0.0

    def update(self, a: ArrayLike, b: ArrayLike, lengths: ArrayLike | None = None) -> None:
        """Add pairs: `a, b [n, d]`, or `[batch, frames, d]` with `lengths [batch]`."""
        at, bt = _rows(a, lengths, "a"), _rows(b, lengths, "b")
        if at.shape != bt.shape:
            raise AnalysisInputError(f"paired vectors differ in shape: {tuple(at.shape)} vs {tuple(bt.shape)}")
        bt = bt.to(at.device)
        denom = (torch.linalg.vector_norm(at, dim=1) * torch.linalg.vector_norm(bt, dim=1)).clamp_min(self.eps)
        cos = (at * bt).sum(dim=1) / denom
        self.count += at.shape[0]
        self._sum += float(cos.sum())
        self._sum_sq += float((cos**2).sum())

    @property
    def mean(self) -> float:
        if self.count == 0:
            raise AnalysisInputError("MeanCosineAccumulator has no examples yet")
        return self._sum / self.count

    @property
    def std(self) -> float:
        """Population standard deviation of the per-example cosines."""
        m = self.mean
        return math.sqrt(max(self._sum_sq / self.count - m * m, 0.0))


class CovarianceAccumulator:
    """Streamed first and second moments of `[n, dim]` examples for covariance spectra.

    Sums are of x - c, with c the first batch's mean (exact algebra, better rounding than raw sums).
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.count = 0
        self._shift: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._gram: torch.Tensor | None = None

    def update(self, x: ArrayLike, lengths: ArrayLike | None = None) -> None:
        xt = _rows(x, lengths)
        if xt.shape[1] != self.dim:
            raise AnalysisInputError(f"CovarianceAccumulator({self.dim}) got vectors of dim {xt.shape[1]}")
        if xt.shape[0] == 0:
            return
        if self._shift is None:
            self._shift = xt.mean(dim=0)
            self._sum = torch.zeros_like(self._shift)
            self._gram = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=xt.device)
        xs = xt.to(self._shift.device) - self._shift
        self._sum += xs.sum(dim=0)
        self._gram += xs.T @ xs
        self.count += xt.shape[0]

    def centered_gram(self) -> torch.Tensor:
        """Xc^T Xc `[dim, dim]` with Xc the column-centered examples; its eigenvalues are the squared singular
        values of Xc."""
        if self.count == 0:
            raise AnalysisInputError("CovarianceAccumulator has no examples yet")
        s = self._sum
        return self._gram - torch.outer(s, s) / self.count  # type: ignore[operator]

    def covariance(self, ddof: int = 1) -> torch.Tensor:
        """Sample covariance `[dim, dim]`, centered Gram / (n - ddof)."""
        if self.count <= ddof:
            raise AnalysisInputError(f"covariance with ddof={ddof} needs more than {ddof} examples, has {self.count}")
        return self.centered_gram() / (self.count - ddof)

    @property
    def mean(self) -> torch.Tensor:
        if self.count == 0:
            raise AnalysisInputError("CovarianceAccumulator has no examples yet")
        return self._shift + self._sum / self.count  # type: ignore[operator]

"""Singular spectra and the rank measures derived from them.

Functions taking `sigma` accept singular values `[k]` (any order; sorted descending inside) or a matrix
`[m, n]`, whose singular values are then computed. All computation is float64; results are numpy arrays
or Python floats.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from loralens.numerics.arrays import ArrayLike, as_f64
from loralens.numerics.inputs import AnalysisInputError
from loralens.numerics.streaming import CovarianceAccumulator


def singular_values(a: ArrayLike) -> np.ndarray:
    """Singular values of a matrix `[m, n]`, descending, `[min(m, n)]`."""
    t = as_f64(a, "matrix", 2)
    return torch.linalg.svdvals(t).cpu().numpy()


def singular_values_from_gram(gram: ArrayLike) -> np.ndarray:
    """Singular values of X from its Gram matrix G = X^T X `[d, d]`: sqrt of G's eigenvalues, descending.

    Tiny negative eigenvalues from rounding are clipped to 0. Precision: sigma_i is accurate to about
    sqrt(eps * sigma_max^2), so spectra from streamed Grams resolve values down to ~1e-8 sigma_max.
    """
    g = as_f64(gram, "gram", 2)
    if g.shape[0] != g.shape[1]:
        raise AnalysisInputError(f"gram has shape {tuple(g.shape)}, expected a square [d, d] matrix")
    ev = torch.linalg.eigvalsh((g + g.T) / 2).clamp_min(0.0)
    return torch.sqrt(ev).flip(0).cpu().numpy()


def feature_spectrum(acc: CovarianceAccumulator) -> np.ndarray:
    """Singular values of the column-centered streamed features Xc (sqrt of the eigenvalues of Xc^T Xc)."""
    return singular_values_from_gram(acc.centered_gram())


def _sigma(sigma: ArrayLike) -> np.ndarray:
    t = torch.as_tensor(np.ascontiguousarray(sigma) if isinstance(sigma, np.ndarray) else sigma)
    if t.ndim == 2:
        return singular_values(t)
    s = as_f64(t, "sigma", 1).cpu().numpy()
    if s.size == 0:
        raise AnalysisInputError("empty spectrum", hint="pass at least one singular value")
    if (s < 0).any():
        raise AnalysisInputError(f"singular values must be >= 0, got min {s.min()}")
    return np.ascontiguousarray(np.sort(s)[::-1])


def energy(sigma: ArrayLike) -> np.ndarray:
    """Cumulative energy `[k]`: E_j = sum_{i<=j} sigma_i^2 / sum_i sigma_i^2 (descending sigma); E_k = 1."""
    s2 = _sigma(sigma) ** 2
    total = s2.sum()
    if total <= 0:
        raise AnalysisInputError("the spectrum is all zeros: energy is undefined")
    return np.cumsum(s2) / total


def components_for_energy(sigma: ArrayLike, fraction: float = 0.9) -> int:
    """Smallest k with E_k >= fraction (E as in `energy`); fraction in (0, 1]."""
    if not 0.0 < fraction <= 1.0:
        raise AnalysisInputError(f"energy fraction {fraction} must be in (0, 1]")
    e = energy(sigma)
    # A relative tolerance so that exactly reaching the fraction counts despite rounding in the cumulative sum.
    return int(np.searchsorted(e, fraction - 1e-12, side="left") + 1)


def stable_rank(sigma: ArrayLike) -> float:
    """Stable rank ||A||_F^2 / ||A||_2^2 = sum sigma_i^2 / sigma_max^2 (between 1 and rank)."""
    s = _sigma(sigma)
    if s[0] <= 0:
        raise AnalysisInputError("the spectrum is all zeros: stable rank is undefined")
    return float((s**2).sum() / s[0] ** 2)


def effective_rank(sigma: ArrayLike) -> float:
    """Effective rank of Roy & Vetterli 2007: exp(H(p)), p_i = sigma_i / sum_j sigma_j, H the Shannon entropy (nats)."""
    s = _sigma(sigma)
    total = s.sum()
    if total <= 0:
        raise AnalysisInputError("the spectrum is all zeros: effective rank is undefined")
    p = s[s > 0] / total
    return float(math.exp(-(p * np.log(p)).sum()))


def spectrum_summary(sigma: ArrayLike, fractions: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, float | int]:
    """JSON-ready summary: sigma_max, frobenius norm, stable and effective rank, components for each energy fraction."""
    s = _sigma(sigma)
    out: dict[str, float | int] = {
        "sigma_max": float(s[0]),
        "frobenius": float(np.sqrt((s**2).sum())),
        "stable_rank": stable_rank(s),
        "effective_rank": effective_rank(s),
    }
    for f in fractions:
        out[f"components_{round(f * 100)}pct"] = components_for_energy(s, f)
    return out

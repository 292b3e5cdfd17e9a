"""Coverage of CKA confidence bands in a simulation with known population CKA.

Data: a shared Gaussian signal z `[n, k]` seen through two random linear maps plus independent Gaussian noise,
x = z W_x^T + sigma_x e_x, y = z W_y^T + sigma_y e_y (rows i.i.d.). The population covariances are
Sigma_xy = W_x W_y^T, Sigma_xx = W_x W_x^T + sigma_x^2 I, Sigma_yy = W_y W_y^T + sigma_y^2 I, and the population
linear CKA (what the debiased estimator targets: HSIC of linear kernels = ||Sigma_xy||_F^2) is

    CKA = ||Sigma_xy||_F^2 / (||Sigma_xx||_F ||Sigma_yy||_F).

`band_coverage` draws `reps` samples and counts how often a 1 - alpha band of the debiased (and the biased) linear
CKA holds that value, for the jackknife used by the similarity analysis and, for comparison, the percentile
bootstrap over resampled kernels it replaced. `python -m loralens.numerics.cka_bands` prints the table quoted in
docs/analyses.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from loralens.numerics.bootstrap import jackknife_ci, percentile_band, resample_indices
from loralens.numerics.cka import biased_hsic, debiased_hsic, kernel_matrix


@dataclass(frozen=True)
class Design:
    """One simulated setting: n clips, dimensions d of both representations, k shared signal dimensions, noise
    standard deviations (0 signal dims: independent representations, CKA 0)."""

    n: int
    d: int
    k: int
    sigma_x: float
    sigma_y: float


def draw_maps(design: Design, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed linear maps W_x, W_y `[d, k]` of a design (drawn once per seed, N(0, 1/k))."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(design.d, design.k)) / math.sqrt(max(design.k, 1)),
            rng.normal(size=(design.d, design.k)) / math.sqrt(max(design.k, 1)))


def population_cka(design: Design, wx: np.ndarray, wy: np.ndarray) -> float:
    """||Sigma_xy||_F^2 / (||Sigma_xx||_F ||Sigma_yy||_F) of the model above."""
    sxy = wx @ wy.T
    sxx = wx @ wx.T + design.sigma_x**2 * np.eye(design.d)
    syy = wy @ wy.T + design.sigma_y**2 * np.eye(design.d)
    return float(np.sum(sxy**2) / (np.linalg.norm(sxx) * np.linalg.norm(syy)))


def sample(design: Design, wx: np.ndarray, wy: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One sample (x `[n, d]`, y `[n, d]`)."""
    z = rng.normal(size=(design.n, design.k))
    x = z @ wx.T + design.sigma_x * rng.normal(size=(design.n, design.d))
    y = z @ wy.T + design.sigma_y * rng.normal(size=(design.n, design.d))
    return x, y


def _cka(k: torch.Tensor, l: torch.Tensor, debiased: bool) -> float:
    hsic = debiased_hsic if debiased else biased_hsic
    xx, yy = hsic(k, k), hsic(l, l)
    return math.nan if xx <= 0 or yy <= 0 else hsic(k, l) / math.sqrt(xx * yy)


def bands(x: np.ndarray, y: np.ndarray, method: str, alpha: float = 0.05, seed: int = 0, n_boot: int = 200,
          groups: int | None = None) -> dict[str, tuple[float, float, float]]:
    """(estimate, low, high) of linear CKA, biased and debiased, with a `jackknife` band (as the similarity
    analysis) or the old `bootstrap` band (percentile over resampled kernels, duplicates included)."""
    kx, ky = kernel_matrix(x), kernel_matrix(y)
    n = x.shape[0]

    def both(idx: np.ndarray) -> np.ndarray:
        i = torch.as_tensor(idx)
        a, b = kx[i][:, i], ky[i][:, i]
        return np.array([_cka(a, b, False), _cka(a, b, True)])

    est = both(np.arange(n))
    if method == "jackknife":
        ci = jackknife_ci(both, n, groups=groups, alpha=alpha, seed=seed, estimate=est)
        low, high = ci.low, ci.high
    elif method == "bootstrap":
        boot = np.stack([both(row) for row in resample_indices(n, n_boot, seed)])
        low, high = percentile_band(boot, alpha)
    else:
        raise ValueError(f"unknown band method {method!r}")
    return {"linear_biased": (float(est[0]), float(low[0]), float(high[0])),
            "linear_debiased": (float(est[1]), float(low[1]), float(high[1]))}


def band_coverage(design: Design, method: str, reps: int, alpha: float = 0.05, seed: int = 0,
                  n_boot: int = 200, groups: int | None = None) -> dict[str, float]:
    """Share of `reps` simulated samples whose band holds the population CKA, per estimator, plus `truth`, the
    mean estimate per estimator (`mean_<est>`) and how often the band holds its own estimate (`self_<est>`)."""
    wx, wy = draw_maps(design, seed)
    truth = population_cka(design, wx, wy)
    rng = np.random.default_rng(seed + 1)
    hits = {"linear_biased": 0, "linear_debiased": 0}
    own = dict.fromkeys(hits, 0)
    means = dict.fromkeys(hits, 0.0)
    for r in range(reps):
        x, y = sample(design, wx, wy, rng)
        for est, (value, low, high) in bands(x, y, method, alpha, seed=r, n_boot=n_boot, groups=groups).items():
            hits[est] += low <= truth <= high
            own[est] += low <= value <= high
            means[est] += value / reps
    out = {"truth": truth}
    for est in hits:
        out[est] = hits[est] / reps
        out[f"self_{est}"] = own[est] / reps
        out[f"mean_{est}"] = means[est]
    return out


DESIGNS: tuple[Design, ...] = (
    Design(n=50, d=500, k=0, sigma_x=1.0, sigma_y=1.0),   # independent, high-dimensional (the case)
    Design(n=60, d=20, k=3, sigma_x=0.5, sigma_y=0.5),    # strong shared signal
    Design(n=120, d=64, k=4, sigma_x=1.0, sigma_y=0.7),   # moderate
    Design(n=240, d=128, k=8, sigma_x=1.5, sigma_y=1.5),  # RAVDESS-sized test fold, weak signal
)


def main(reps: int = 200) -> None:  # pragma: no cover - prints the measurement quoted in the docs
    torch.set_num_threads(1)
    print("design | truth | method | coverage biased | coverage debiased | band holds own debiased estimate")
    for design in DESIGNS:
        for method in ("jackknife", "bootstrap"):
            r = band_coverage(design, method, reps if method == "jackknife" else max(20, reps // 4), n_boot=100,
                              groups=None if design.n <= 100 else 100)
            print(f"{design} | {r['truth']:.3f} | {method} | {r['linear_biased']:.3f} | {r['linear_debiased']:.3f} | "
                  f"{r['self_linear_debiased']:.3f} (mean debiased {r['mean_linear_debiased']:.3f})", flush=True)


if __name__ == "__main__":  # pragma: no cover
    main()

"""Centered kernel alignment (CKA) between two representations of the same examples.

Inputs are feature matrices `[n_examples, dim]` (an example is a clip's pooled vector or one valid
frame; masking is the caller's, see `loralens.numerics.masking.valid_frames`). Arrays may be numpy
or torch; everything is computed in float64 torch on the input's device. Scalars come back as Python
floats, matrices as numpy float64 arrays.

- `biased_hsic` is the standard estimator tr(K H L H) / (n - 1)^2 (Gretton et al. 2005), used by
  Kornblith et al. 2019.
- `debiased_hsic` is the unbiased U-statistic of Song et al. 2012, used for debiased CKA by
  Nguyen et al. 2021 and Murphy et al. 2024; it needs n >= 4.
- CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)).

Linear CKA streams exactly over minibatches with d x d sums (`LinearCKAAccumulator`,
`LinearCKAMatrixAccumulator`: memory independent of n); the minibatch estimator of Nguyen et al. 2021,
for kernels that cannot stream exactly, is `MinibatchCKA`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from loralens.numerics.arrays import ArrayLike, as_f64
from loralens.numerics.inputs import AnalysisInputError

Kernel = Literal["linear", "rbf"]

#: Above this many examples `cka_matrix` computes linear CKA from d x d sums instead of n x n kernel matrices.
LINEAR_FEATURE_SPACE_MIN_N = 4096


def _paired(x: ArrayLike, y: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    xt, yt = as_f64(x, "x", 2), as_f64(y, "y", 2)
    if xt.shape[0] != yt.shape[0]:
        raise AnalysisInputError(
            f"x has {xt.shape[0]} examples but y has {yt.shape[0]}",
            hint="both representations must hold the same examples in the same order",
        )
    if yt.device != xt.device:
        yt = yt.to(xt.device)
    return xt, yt


def _check_square(k: torch.Tensor, name: str) -> None:
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise AnalysisInputError(f"{name} has shape {tuple(k.shape)}, expected a square kernel matrix [n, n]")


def center_gram(k: torch.Tensor) -> torch.Tensor:
    """H K H with H = I - 11^T / n: the doubly centered kernel matrix `[n, n]`."""
    k = k - k.mean(dim=0, keepdim=True)
    return k - k.mean(dim=1, keepdim=True)


def biased_hsic(k: ArrayLike, l: ArrayLike) -> float:
    """Biased HSIC tr(K H L H) / (n - 1)^2 of two kernel matrices `[n, n]` (Gretton et al. 2005)."""
    kt, lt = as_f64(k, "K"), as_f64(l, "L")
    _check_square(kt, "K")
    _check_square(lt, "L")
    return _biased_hsic(kt, lt.to(kt.device))


def _biased_hsic(k: torch.Tensor, l: torch.Tensor) -> float:
    n = k.shape[0]
    return float((center_gram(k) * center_gram(l)).sum() / (n - 1) ** 2)


def debiased_hsic(k: ArrayLike, l: ArrayLike) -> float:
    """Unbiased HSIC of Song et al. 2012 from kernel matrices `[n, n]`, n >= 4.

    With K~, L~ the kernel matrices with zeroed diagonals and 1 the all-ones vector:
    HSIC_1 = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3)).
    """
    kt, lt = as_f64(k, "K"), as_f64(l, "L")
    _check_square(kt, "K")
    _check_square(lt, "L")
    return _debiased_hsic(kt, lt.to(kt.device))


def _debiased_hsic(k: torch.Tensor, l: torch.Tensor) -> float:
    n = k.shape[0]
    if n < 4:
        raise AnalysisInputError(f"debiased HSIC needs at least 4 examples, got {n}", hint="pass more examples")
    k = k - torch.diag(torch.diagonal(k))
    l = l - torch.diag(torch.diagonal(l))
    k1, l1 = k.sum(dim=1), l.sum(dim=1)
    value = (k * l).sum() + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k1 @ l1)
    return float(value / (n * (n - 3)))


def _cka_from_hsic(xy: float, xx: float, yy: float) -> float:
    """HSIC_xy / sqrt(HSIC_xx HSIC_yy); NaN when a self-HSIC is not positive (constant features, or tiny n debiased)."""
    if xx <= 0.0 or yy <= 0.0:
        return math.nan
    return xy / math.sqrt(xx * yy)


def _hsic(k: torch.Tensor, l: torch.Tensor, debiased: bool) -> float:
    return _debiased_hsic(k, l) if debiased else _biased_hsic(k, l)


def linear_cka(x: ArrayLike, y: ArrayLike, debiased: bool = False) -> float:
    """Linear CKA between features `x [n, d_x]` and `y [n, d_y]` of the same n examples.

    Biased: ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centered Xc, Yc (Kornblith et al. 2019).
    Debiased: the same ratio with `debiased_hsic` of the linear kernels X X^T, Y Y^T (n >= 4).
    """
    xt, yt = _paired(x, y)
    if not debiased:
        xc = xt - xt.mean(dim=0, keepdim=True)
        yc = yt - yt.mean(dim=0, keepdim=True)
        # Feature-space form: no n x n matrix, exact same value as the kernel form.
        xy = float(torch.linalg.matrix_norm(xc.T @ yc) ** 2)
        xx = float(torch.linalg.matrix_norm(xc.T @ xc) ** 2)
        yy = float(torch.linalg.matrix_norm(yc.T @ yc) ** 2)
        return _cka_from_hsic(xy, xx, yy)
    # Centering first changes nothing mathematically (the estimator is translation invariant) but improves rounding.
    xt = xt - xt.mean(dim=0, keepdim=True)
    yt = yt - yt.mean(dim=0, keepdim=True)
    k, l = xt @ xt.T, yt @ yt.T
    return _cka_from_hsic(_debiased_hsic(k, l), _debiased_hsic(k, k), _debiased_hsic(l, l))


def median_bandwidth(x: ArrayLike, scale: float = 1.0) -> float:
    """Median heuristic sigma = scale * sqrt(median_{i<j} ||x_i - x_j||^2) for `x [n, d]`.

    The median is over distinct pairs (the zero diagonal is left out; Kornblith et al.'s code includes it,
    which lowers the median slightly). Raises when all examples coincide.
    """
    xt = as_f64(x, "x", 2)
    d2 = _sq_distances(xt)
    n = xt.shape[0]
    if n < 2:
        raise AnalysisInputError("the median heuristic needs at least 2 examples", hint="pass more examples")
    iu = torch.triu_indices(n, n, offset=1, device=xt.device)
    pairs = d2[iu[0], iu[1]]
    # torch.quantile refuses inputs above 2^24 elements; numpy's median (mean of the two middles) is the same.
    med = float(torch.quantile(pairs, 0.5)) if pairs.numel() <= 2**24 else float(np.median(pairs.cpu().numpy()))
    if med <= 0.0:
        raise AnalysisInputError("all examples are identical: the median distance is 0", hint="pass distinct examples")
    return scale * math.sqrt(med)


def _sq_distances(x: torch.Tensor) -> torch.Tensor:
    sq = (x * x).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    return d2.clamp_min_(0.0)


def rbf_kernel(x: ArrayLike, sigma: float | None = None, scale: float = 1.0) -> torch.Tensor:
    """RBF kernel matrix exp(-||x_i - x_j||^2 / (2 sigma^2)) `[n, n]`; sigma defaults to
    `median_bandwidth(x, scale)`."""
    xt = as_f64(x, "x", 2)
    xt = xt - xt.mean(dim=0, keepdim=True)  # distances are unchanged; rounding of the expansion improves
    if sigma is None:
        sigma = median_bandwidth(xt, scale)
    if not sigma > 0:
        raise AnalysisInputError(f"RBF bandwidth sigma={sigma} must be positive")
    return torch.exp(-_sq_distances(xt) / (2.0 * sigma * sigma))


def rbf_cka(
    x: ArrayLike,
    y: ArrayLike,
    sigma: float | tuple[float, float] | None = None,
    debiased: bool = False,
    scale: float = 1.0,
) -> float:
    """RBF-kernel CKA between `x [n, d_x]` and `y [n, d_y]`.

    `sigma`: one bandwidth for both, a pair (sigma_x, sigma_y), or None for the median heuristic
    computed on each representation separately (`median_bandwidth`, times `scale`), which makes the
    value invariant to isotropic scaling of either representation.
    """
    xt, yt = _paired(x, y)
    sx, sy = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    k, l = rbf_kernel(xt, sx, scale), rbf_kernel(yt, sy, scale)
    return _cka_from_hsic(_hsic(k, l, debiased), _hsic(k, k, debiased), _hsic(l, l, debiased))


def kernel_matrix(x: ArrayLike, kernel: Kernel = "linear", sigma: float | None = None,
                  scale: float = 1.0) -> torch.Tensor:
    """Kernel matrix `[n, n]` of `x [n, d]`: linear (of the column-centered x) or RBF."""
    xt = as_f64(x, "x", 2)
    if kernel == "linear":
        xt = xt - xt.mean(dim=0, keepdim=True)
        return xt @ xt.T
    if kernel == "rbf":
        return rbf_kernel(xt, sigma, scale)
    raise AnalysisInputError(f"unknown kernel {kernel!r}", hint="use 'linear' or 'rbf'")


def cka_matrix(
    xs: Sequence[ArrayLike],
    ys: Sequence[ArrayLike] | None = None,
    kernel: Kernel = "linear",
    debiased: bool = False,
    sigma: float | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """CKA for every pair of layers: `out[i, j] = CKA(xs[i], ys[j])`, `[len(xs), len(ys)]` float64.

    Each element is a features matrix `[n, d_layer]` of the same n examples. `ys=None` compares `xs`
    with itself (a symmetric matrix with ones on the diagonal). Each layer's kernel matrix is built once.
    """
    if len(xs) == 0:
        raise AnalysisInputError("cka_matrix got no layers", hint="pass a list of features matrices")
    same = ys is None
    if kernel == "linear" and int(torch.as_tensor(xs[0]).shape[0]) > LINEAR_FEATURE_SPACE_MIN_N:
        # Many examples (e.g. frames): d x d sums instead of n x n kernel matrices; same values.
        xt = [as_f64(x, f"xs[{i}]", 2) for i, x in enumerate(xs)]
        yt = None if same else [as_f64(y, f"ys[{j}]", 2) for j, y in enumerate(ys)]  # type: ignore[arg-type]
        acc = LinearCKAMatrixAccumulator([x.shape[1] for x in xt], None if yt is None else [y.shape[1] for y in yt])
        acc.update(xt, yt)
        return acc.compute(debiased)
    ys_ = xs if same else ys
    kx = [_prepared_kernel(x, kernel, sigma, scale, debiased) for x in xs]
    ky = kx if same else [_prepared_kernel(y, kernel, sigma, scale, debiased) for y in ys_]
    n = {k.shape[0] for k in kx + ky}
    if len(n) != 1:
        raise AnalysisInputError(f"layers hold different numbers of examples: {sorted(n)}",
                                 hint="capture the same examples")
    dev = kx[0].device
    hxx = [_pair_hsic(k, k, debiased) for k in kx]
    hyy = hxx if same else [_pair_hsic(k, k, debiased) for k in ky]
    out = np.empty((len(kx), len(ky)))
    for i, ki in enumerate(kx):
        for j, lj in enumerate(ky):
            if same and j < i:
                out[i, j] = out[j, i]
                continue
            out[i, j] = _cka_from_hsic(_pair_hsic(ki, lj.to(dev), debiased), hxx[i], hyy[j])
    return out


def _prepared_kernel(x: ArrayLike, kernel: Kernel, sigma: float | None, scale: float, debiased: bool) -> torch.Tensor:
    """Kernel matrix ready for `_pair_hsic`: centered for the biased estimator, diagonal zeroed for the debiased one."""
    k = kernel_matrix(x, kernel, sigma, scale)
    if debiased:
        return k - torch.diag(torch.diagonal(k))
    return center_gram(k)


def _pair_hsic(k: torch.Tensor, l: torch.Tensor, debiased: bool) -> float:
    n = k.shape[0]
    if not debiased:
        return float((k * l).sum() / (n - 1) ** 2)
    return _debiased_hsic(k, l)


class MinibatchCKA:
    """Minibatch CKA of Nguyen et al. 2021 for every pair of layers, for kernels that cannot stream exactly.

    For each minibatch (same examples in every layer) the unbiased HSIC (Song et al. 2012) of every
    pair is computed and summed; CKA = mean HSIC_xy / sqrt(mean HSIC_xx * mean HSIC_yy), averaged over
    minibatches. Use a fixed minibatch size (>= 4; Nguyen et al. use 256) and a fixed `sigma` for RBF when
    comparing runs: with `sigma=None` each minibatch uses its own median heuristic. Memory: O(b^2) per layer.
    """

    def __init__(
        self,
        n_x: int,
        n_y: int | None = None,
        kernel: Kernel = "linear",
        sigma: float | None = None,
        scale: float = 1.0,
    ) -> None:
        if kernel not in ("linear", "rbf"):
            raise AnalysisInputError(f"unknown kernel {kernel!r}", hint="use 'linear' or 'rbf'")
        self.kernel: Kernel = kernel
        self.sigma = sigma
        self.scale = scale
        self.same = n_y is None
        self.n_x = n_x
        self.n_y = n_x if n_y is None else n_y
        self.hxy = np.zeros((self.n_x, self.n_y))
        self.hxx = np.zeros(self.n_x)
        self.hyy = np.zeros(self.n_y)
        self.n_batches = 0

    def update(self, xs: Sequence[ArrayLike], ys: Sequence[ArrayLike] | None = None) -> None:
        """Add one minibatch: `xs[i]` is `[b, d_i]`; `ys` (omit when comparing `xs` with itself) likewise."""
        if len(xs) != self.n_x or (not self.same and (ys is None or len(ys) != self.n_y)):
            raise AnalysisInputError(
                f"MinibatchCKA expects {self.n_x} x-layers and {self.n_y} y-layers per update",
                hint="pass one features matrix per layer, in the order given at construction",
            )
        kx = [_prepared_kernel(x, self.kernel, self.sigma, self.scale, True) for x in xs]
        ky = kx if self.same else [_prepared_kernel(y, self.kernel, self.sigma, self.scale, True)
                                   for y in ys]  # type: ignore[union-attr]
        for i, k in enumerate(kx):
            self.hxx[i] += _debiased_hsic(k, k)
        if self.same:
            self.hyy = self.hxx
        else:
            for j, l in enumerate(ky):
                self.hyy[j] += _debiased_hsic(l, l)
        for i, k in enumerate(kx):
            for j, l in enumerate(ky):
                if self.same and j < i:
                    continue
                self.hxy[i, j] += _debiased_hsic(k, l.to(k.device))
        self.n_batches += 1

    def compute(self) -> np.ndarray:
        """CKA matrix `[n_x, n_y]` from the minibatches seen so far."""
        if self.n_batches == 0:
            raise AnalysisInputError("MinibatchCKA.compute() before any update",
                                     hint="call update() on minibatches first")
        out = np.empty((self.n_x, self.n_y))
        for i in range(self.n_x):
            for j in range(self.n_y):
                hxy = self.hxy[min(i, j), max(i, j)] if self.same else self.hxy[i, j]
                out[i, j] = _cka_from_hsic(hxy, self.hxx[i], self.hyy[j])
        return out


class _LayerSums:
    """Per-layer sums of streamed linear CKA, over x_i - c (c = first batch mean; CKA is translation invariant).

    n, s = sum x_i, G = X^T X, sum a_i, sum a_i^2 and sum x_i a_i, with a_i = ||x_i||^2.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.s = self.g = self.xa = None  # type: ignore[assignment]
        self.sa = 0.0
        self.saa = 0.0

    def prepare(self, x: ArrayLike, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Shifted rows `[b, dim]` and their squared norms `[b]` (sets the shift on the first call)."""
        xt = as_f64(x, name, 2)
        if xt.shape[1] != self.dim:
            raise AnalysisInputError(f"{name} has dim {xt.shape[1]}, the accumulator was built for {self.dim}")
        if self.shift is None:
            self.shift = xt.mean(dim=0)
            self.s = torch.zeros_like(self.shift)
            self.g = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=xt.device)
            self.xa = torch.zeros_like(self.shift)
        xs = xt.to(self.shift.device) - self.shift
        return xs, (xs * xs).sum(dim=1)

    def add(self, xs: torch.Tensor, a: torch.Tensor) -> None:
        self.n += xs.shape[0]
        self.s += xs.sum(dim=0)
        self.g += xs.T @ xs
        self.sa += float(a.sum())
        self.saa += float((a * a).sum())
        self.xa += xs.T @ a


class _CrossSums:
    """Cross sums of a layer pair: C = X^T Y, sum a_i b_i, sum x_i b_i, sum y_i a_i."""

    def __init__(self, dx: int, dy: int, device: torch.device) -> None:
        self.c = torch.zeros(dx, dy, dtype=torch.float64, device=device)
        self.sab = 0.0
        self.xb = torch.zeros(dx, dtype=torch.float64, device=device)
        self.ya = torch.zeros(dy, dtype=torch.float64, device=device)

    def add(self, xs: torch.Tensor, a: torch.Tensor, ys: torch.Tensor, b: torch.Tensor) -> None:
        dev = self.c.device
        xs, a, ys, b = xs.to(dev), a.to(dev), ys.to(dev), b.to(dev)
        self.c += xs.T @ ys
        self.sab += float((a * b).sum())
        self.xb += xs.T @ b
        self.ya += ys.T @ a


def _streamed_hsic(
    n: int, sx: torch.Tensor, sy: torch.Tensor, c: torch.Tensor, sa: float, sb: float, sab: float,
    xb: torch.Tensor, ya: torch.Tensor, debiased: bool,
) -> float:
    """HSIC of linear kernels from sums (common factors that cancel in CKA are kept, so values are true HSICs).

    Biased: ||X^T Y - s_x s_y^T / n||_F^2 / (n-1)^2.
    Debiased, with K~ = XX^T - diag(a), L~ = YY^T - diag(b):
      tr(K~ L~)      = ||X^T Y||_F^2 - sum a_i b_i
      1^T K~ 1       = ||s_x||^2 - sum a_i,   1^T L~ 1 = ||s_y||^2 - sum b_i
      1^T K~ L~ 1    = s_x^T X^T Y s_y - s_x^T (sum x_i b_i) - s_y^T (sum y_i a_i) + sum a_i b_i.
    """
    if not debiased:
        return float(torch.linalg.matrix_norm(c - torch.outer(sx, sy) / n) ** 2) / (n - 1) ** 2
    if n < 4:
        raise AnalysisInputError(f"debiased HSIC needs at least 4 examples, got {n}", hint="stream more examples")
    tr = float((c * c).sum()) - sab
    ok = float(sx @ sx) - sa
    ol = float(sy @ sy) - sb
    okl = float(sx @ (c @ sy)) - float(sx @ xb) - float(sy @ ya) + sab
    return (tr + ok * ol / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * okl) / (n * (n - 3))


def _self_hsic(t: _LayerSums, debiased: bool) -> float:
    return _streamed_hsic(t.n, t.s, t.s, t.g, t.sa, t.sa, t.saa, t.xa, t.xa, debiased)


class LinearCKAMatrixAccumulator:
    """Exact streamed linear CKA (biased and debiased) for every pair of layers; memory independent of n.

    Keeps per layer the sums of `_LayerSums` (d_l x d_l Gram X^T X and vectors), and per compared pair
    the cross sums X_i^T Y_j, sum a b, sum x b, sum y a (d_i x d_j). With `dims_y=None` the layers of one
    model are compared with each other (pairs i < j share the per-layer sums). Results equal
    `cka_matrix(..., kernel="linear")` on the concatenated examples up to float64 rounding.
    """

    def __init__(self, dims_x: Sequence[int], dims_y: Sequence[int] | None = None) -> None:
        self.same = dims_y is None
        self.x = [_LayerSums(d) for d in dims_x]
        self.y = self.x if self.same else [_LayerSums(d) for d in dims_y]  # type: ignore[union-attr]
        self.cross: dict[tuple[int, int], _CrossSums] = {}

    @property
    def n(self) -> int:
        return self.x[0].n if self.x else 0

    def update(self, xs: Sequence[ArrayLike], ys: Sequence[ArrayLike] | None = None) -> None:
        """Add a minibatch: `xs[i]` is `[b, d_i]` (the same b examples in every layer), `ys` likewise."""
        if len(xs) != len(self.x) or (not self.same and (ys is None or len(ys) != len(self.y))):
            raise AnalysisInputError(
                f"expected {len(self.x)} x-layers" + ("" if self.same else f" and {len(self.y)} y-layers"),
                hint="pass one features matrix per layer, in the order given at construction",
            )
        px = [t.prepare(x, f"xs[{i}]") for i, (t, x) in enumerate(zip(self.x, xs))]
        py = px if self.same else [t.prepare(y, f"ys[{j}]")
                                   for j, (t, y) in enumerate(zip(self.y, ys))]  # type: ignore[arg-type]
        sizes = {p[0].shape[0] for p in px + py}
        if len(sizes) != 1:
            raise AnalysisInputError(f"layers of one minibatch hold different numbers of examples: {sorted(sizes)}")
        for i, (xsi, ai) in enumerate(px):
            for j, (ysj, bj) in enumerate(py):
                if self.same and j <= i:
                    continue
                if (i, j) not in self.cross:
                    self.cross[(i, j)] = _CrossSums(xsi.shape[1], ysj.shape[1], xsi.device)
                self.cross[(i, j)].add(xsi, ai, ysj, bj)
        for t, (xsi, ai) in zip(self.x, px):
            t.add(xsi, ai)
        if not self.same:
            for t, (ysj, bj) in zip(self.y, py):
                t.add(ysj, bj)

    def hsic(self, i: int, j: int, debiased: bool = False) -> float:
        """HSIC between x-layer i and y-layer j from the streamed sums."""
        n = self.n
        if n < 2:
            raise AnalysisInputError(f"streamed CKA needs at least 2 examples, has {n}")
        if self.same and i == j:
            return _self_hsic(self.x[i], debiased)
        if self.same and j < i:
            i, j = j, i
        tx, ty, cr = self.x[i], self.y[j], self.cross[(i, j)]
        return _streamed_hsic(n, tx.s, ty.s.to(tx.s.device), cr.c, tx.sa, ty.sa, cr.sab, cr.xb, cr.ya, debiased)

    def compute(self, debiased: bool = False) -> np.ndarray:
        """CKA matrix `[len(dims_x), len(dims_y)]` (float64) of the examples streamed so far."""
        hx = [_self_hsic(t, debiased) for t in self.x] if self.n >= 2 else []
        if not hx:
            raise AnalysisInputError(f"streamed CKA needs at least 2 examples, has {self.n}")
        hy = hx if self.same else [_self_hsic(t, debiased) for t in self.y]
        out = np.empty((len(self.x), len(self.y)))
        for i in range(len(self.x)):
            for j in range(len(self.y)):
                if self.same and j < i:
                    out[i, j] = out[j, i]
                elif self.same and i == j:
                    out[i, j] = 1.0 if hx[i] > 0 else math.nan
                else:
                    out[i, j] = _cka_from_hsic(self.hsic(i, j, debiased), hx[i], hy[j])
        return out


class LinearCKAAccumulator:
    """Exact streamed linear CKA between two representations `[b, dim_x]`, `[b, dim_y]` of the same examples."""

    def __init__(self, dim_x: int, dim_y: int) -> None:
        self._m = LinearCKAMatrixAccumulator([dim_x], [dim_y])

    @property
    def n(self) -> int:
        return self._m.n

    def update(self, x: ArrayLike, y: ArrayLike) -> None:
        """Add a minibatch of paired rows `x [b, dim_x]`, `y [b, dim_y]`."""
        self._m.update([x], [y])

    def compute(self, debiased: bool = False) -> float:
        """Linear CKA of everything streamed so far (biased as Kornblith et al. 2019, or debiased)."""
        return float(self._m.compute(debiased)[0, 0])

"""Weight-space analyses of LoRA updates.

Conventions (peft): `lora_a` is `lora_A.weight` `[r, d_in]`, `lora_b` is `lora_B.weight` `[d_out, r]`, and
the update of a frozen weight `W [d_out, d_in]` is dW = scale * B A (scale = lora_alpha / r, or
lora_alpha / sqrt(r) with rsLoRA; the caller passes it). Computation is float64; results are numpy
arrays or Python floats.

- Subspace overlap (Hu et al. 2021, section 7.2): phi(A1, A2, i, j) = ||U1_i^T U2_j||_F^2 / min(i, j), with
  U_i the top-i right singular vectors of A (columns in R^{d_in}); 1 for nested subspaces, 0 for orthogonal ones.
- Amplification factor (Hu et al. 2021, section 7.3): ||dW||_F / ||U^T W V^T||_F, with U, V^T the top-r left and
  right singular vectors of dW.
- Intruder dimensions (Shuttleworth et al. 2024, "LoRA vs full fine-tuning: an illusion of equivalence"): among
  the top-k singular vectors of the fine-tuned W + dW, those whose largest |cosine| with every pre-trained
  singular vector of W is below eps.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch

from loralens.numerics.arrays import ArrayLike, as_f64
from loralens.numerics.inputs import AnalysisInputError
from loralens.numerics.spectra import effective_rank, singular_values, stable_rank


def _pair(lora_a: ArrayLike, lora_b: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = as_f64(lora_a, "lora_a", 2), as_f64(lora_b, "lora_b", 2)
    if b.shape[1] != a.shape[0]:
        raise AnalysisInputError(
            f"lora_b {tuple(b.shape)} and lora_a {tuple(a.shape)} do not chain: expected B [d_out, r], A [r, d_in]",
            hint="pass lora_A.weight as lora_a and lora_B.weight as lora_b (peft layout)",
        )
    return a, b.to(a.device)


def lora_delta(lora_a: ArrayLike, lora_b: ArrayLike, scale: float = 1.0) -> torch.Tensor:
    """dW = scale * B A, `[d_out, d_in]` float64."""
    a, b = _pair(lora_a, lora_b)
    return scale * (b @ a)


def lora_svd(lora_a: ArrayLike, lora_b: ArrayLike,
             scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of dW = scale * B A without forming dW: (U `[d_out, r]`, S `[r]` descending, Vh `[r, d_in]`).

    B = Q_b R_b and A^T = Q_a R_a give dW = Q_b (scale R_b R_a^T) Q_a^T, so only an r x r SVD is needed.
    """
    a, b = _pair(lora_a, lora_b)
    qb, rb = torch.linalg.qr(b)
    qa, ra = torch.linalg.qr(a.T)
    uc, s, vhc = torch.linalg.svd(scale * (rb @ ra.T))
    return qb @ uc, s, vhc @ qa.T


def delta_spectrum(lora_a: ArrayLike, lora_b: ArrayLike, scale: float = 1.0) -> np.ndarray:
    """Singular values of dW = scale * B A, descending, `[r]`."""
    return lora_svd(lora_a, lora_b, scale)[1].cpu().numpy()


def relative_update_norm(delta_w: ArrayLike, w: ArrayLike) -> float:
    """||dW||_F / ||W||_F."""
    d, wt = as_f64(delta_w, "delta_w", 2), as_f64(w, "w", 2)
    if d.shape != wt.shape:
        raise AnalysisInputError(f"delta_w {tuple(d.shape)} and w {tuple(wt.shape)} differ in shape")
    return float(torch.linalg.matrix_norm(d) / torch.linalg.matrix_norm(wt))


def right_singular_basis(a: ArrayLike, i: int | None = None) -> torch.Tensor:
    """Top-i right singular vectors of `a [r, d_in]` as columns, `[d_in, i]` (all min(r, d_in) when i is None)."""
    t = as_f64(a, "A", 2)
    _, _, vh = torch.linalg.svd(t, full_matrices=False)
    k = vh.shape[0] if i is None else i
    if not 1 <= k <= vh.shape[0]:
        raise AnalysisInputError(f"i={i} must be between 1 and {vh.shape[0]} (rank of A {tuple(t.shape)})")
    return vh[:k].T


def subspace_overlap(a1: ArrayLike, a2: ArrayLike, i: int, j: int) -> float:
    """phi(A1, A2, i, j) = ||U1_i^T U2_j||_F^2 / min(i, j) for LoRA A matrices `[r1, d_in]`, `[r2, d_in]`, in [0, 1]."""
    u1, u2 = right_singular_basis(a1, i), right_singular_basis(a2, j)
    if u1.shape[0] != u2.shape[0]:
        raise AnalysisInputError(f"A1 and A2 act on different input sizes: {u1.shape[0]} vs {u2.shape[0]}")
    return float(torch.linalg.matrix_norm(u1.T @ u2.to(u1.device)) ** 2 / min(i, j))


def subspace_overlap_grid(a1: ArrayLike, a2: ArrayLike) -> np.ndarray:
    """phi(A1, A2, i, j) for all i = 1..r1, j = 1..r2: `out[i-1, j-1]`, `[r1, r2]` (the heat maps of Hu et al.
    fig. 3)."""
    u1, u2 = right_singular_basis(a1), right_singular_basis(a2)
    if u1.shape[0] != u2.shape[0]:
        raise AnalysisInputError(f"A1 and A2 act on different input sizes: {u1.shape[0]} vs {u2.shape[0]}")
    m2 = ((u1.T @ u2.to(u1.device)) ** 2).cpu().numpy()
    cum = m2.cumsum(axis=0).cumsum(axis=1)  # cum[i-1, j-1] = ||U1_i^T U2_j||_F^2
    i = np.arange(1, m2.shape[0] + 1)[:, None]
    j = np.arange(1, m2.shape[1] + 1)[None, :]
    return cum / np.minimum(i, j)


def amplification_factor(delta_w: ArrayLike, w: ArrayLike, rank: int | None = None) -> float:
    """||dW||_F / ||U^T W V^T||_F with U, V^T the top-`rank` singular vectors of dW (Hu et al. 2021, 7.3).

    `rank` defaults to the numerical rank of dW (singular values above max(shape) * eps * sigma_max).
    Large values mean dW amplifies directions that W does not emphasise.
    """
    d, wt = as_f64(delta_w, "delta_w", 2), as_f64(w, "w", 2)
    if d.shape != wt.shape:
        raise AnalysisInputError(f"delta_w {tuple(d.shape)} and w {tuple(wt.shape)} differ in shape")
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    if float(s[0]) == 0.0:
        raise AnalysisInputError("delta_w is zero: the amplification factor is undefined")
    if rank is None:
        rank = int((s > s[0] * max(d.shape) * torch.finfo(torch.float64).eps).sum())
    proj = u[:, :rank].T @ wt.to(d.device) @ vh[:rank].T
    return float(torch.linalg.matrix_norm(d) / torch.linalg.matrix_norm(proj))


class IntruderResult(NamedTuple):
    """Intruder dimensions of one matrix: how many, which ranks (0-based, among the top k), each vector's max |cos|."""

    count: int
    indices: list[int]
    max_cosine: np.ndarray


def intruder_dimensions(
    w: ArrayLike,
    w_tuned: ArrayLike,
    k: int = 10,
    eps: float = 0.5,
    side: Literal["left", "right"] = "left",
) -> IntruderResult:
    """Intruder dimensions of `w_tuned` relative to `w` (both `[d_out, d_in]`; Shuttleworth et al. 2024).

    For each of the top-k singular vectors y_j of the fine-tuned matrix, max_i |cos(y_j, x_i)| over all
    min(d_out, d_in) singular vectors x_i of the pre-trained matrix; y_j is an intruder when that is below
    `eps`. `side="left"` compares left singular vectors (columns of U, in R^{d_out}), "right" the rows of V^T.
    Defaults k = 10, eps = 0.5. The absolute value removes the sign ambiguity of singular vectors.
    """
    w0, w1 = as_f64(w, "w", 2), as_f64(w_tuned, "w_tuned", 2)
    if w0.shape != w1.shape:
        raise AnalysisInputError(f"w {tuple(w0.shape)} and w_tuned {tuple(w1.shape)} differ in shape")
    if side not in ("left", "right"):
        raise AnalysisInputError(f"side={side!r} must be 'left' or 'right'")
    if not 0.0 < eps <= 1.0:
        raise AnalysisInputError(f"eps={eps} must be in (0, 1]")
    u0, _, vh0 = torch.linalg.svd(w0, full_matrices=False)
    u1, _, vh1 = torch.linalg.svd(w1.to(w0.device), full_matrices=False)
    k = min(k, u1.shape[1])
    if side == "left":
        pre, tuned = u0, u1[:, :k]
    else:
        pre, tuned = vh0.T, vh1[:k].T
    max_cos = (tuned.T @ pre).abs().amax(dim=1).cpu().numpy()
    idx = [int(i) for i in np.flatnonzero(max_cos < eps)]
    return IntruderResult(len(idx), idx, max_cos)


def lora_weight_summary(
    w: ArrayLike,
    lora_a: ArrayLike,
    lora_b: ArrayLike,
    scale: float,
    k: int = 10,
    eps: float = 0.5,
) -> dict[str, object]:
    """JSON-ready weight-space summary of one adapted matrix: dW spectrum, stable and effective rank,
    ||dW||_F / ||W||_F, amplification factor (rank r) and intruder dimensions of W + dW."""
    dw = lora_delta(lora_a, lora_b, scale)
    wt = as_f64(w, "w", 2).to(dw.device)
    if wt.shape != dw.shape:
        raise AnalysisInputError(f"w {tuple(wt.shape)} does not match B A {tuple(dw.shape)}")
    s = delta_spectrum(lora_a, lora_b, scale)
    intr = intruder_dimensions(wt, wt + dw, k=k, eps=eps)
    nonzero = bool(s[0] > 0)
    return {
        "rank": int(torch.as_tensor(lora_a).shape[0]),
        "delta_singular_values": s.tolist(),
        "delta_stable_rank": stable_rank(s) if nonzero else None,
        "delta_effective_rank": effective_rank(s) if nonzero else None,
        "relative_update_norm": relative_update_norm(dw, wt),
        "amplification_factor": amplification_factor(dw, wt) if nonzero else None,
        "weight_singular_values_top": singular_values(wt)[:k].tolist(),
        "intruders": intr.count,
        "intruder_indices": intr.indices,
        "intruder_max_cosine": intr.max_cosine.tolist(),
    }

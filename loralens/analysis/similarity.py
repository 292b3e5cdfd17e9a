"""Representational similarity of the adapted and the frozen encoder: CKA for every pair of hidden states.

Each clip is represented at hidden state h = 0..L (0 = embeddings, L = final-normed output) by the mean of its valid
frames. For every pair (adapted hidden state i, frozen hidden state j) the analysis gives

- linear CKA, standard (biased HSIC, Kornblith et al. 2019) and debiased (Song et al. 2012 U-statistic), exactly,
  from the streamed sums of `LinearCKAMatrixAccumulator` (memory independent of the number of clips);
- RBF CKA (median-heuristic bandwidth per representation): debiased by minibatch CKA (Nguyen et al. 2021,
  `MinibatchCKA`; the pooled clips in a seeded random order, split in near-equal minibatches of at most
  `rbf_minibatch` = 256, each with its own median bandwidth) and standard (biased) on the full sample of pooled
  vectors (an n x n kernel per hidden state; n = test clips);
- optionally (`frames_per_clip` = k > 0) linear CKA over valid frames: k frames drawn per clip at random (seeded,
  the same frames in both models, all frames of shorter clips), streamed exactly;
- 95 % bands over clips for the diagonal (same hidden state in both models): a delete-a-group jackknife t
  interval (`jackknife_groups` = 100 random groups of clips, delete-one with fewer clips; `diagonal.<est>.se`
  is the standard error). Not a bootstrap: a bootstrap resample repeats clips, a repeated clip pairs with its own
  copy (identical in both models) and every kernel estimator is pulled up, the debiased one most (bands that
  missed their own point estimate). Measured coverage of the true CKA in a simulation with known population CKA:
  see docs/analyses.md;
- singular values of the column-centred pooled representations per hidden state, for both models.

Known answers (tests): with B = 0 the adapted encoder is the frozen one and the diagonal is 1 for every estimator;
streamed linear CKA equals the in-memory `cka_matrix`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loralens.analysis.context import AnalysisContext
from loralens.analysis.passes import batches_with_progress
from loralens.analysis.suite import Analysis, register
from loralens.numerics.bootstrap import jackknife_ci
from loralens.numerics.cka import (
    LinearCKAMatrixAccumulator,
    MinibatchCKA,
    biased_hsic,
    cka_matrix,
    debiased_hsic,
    kernel_matrix,
)
from loralens.numerics.inputs import AnalysisInputError
from loralens.numerics.masking import masked_mean
from loralens.numerics.spectra import components_for_energy, effective_rank, feature_spectrum
from loralens.numerics.streaming import CovarianceAccumulator

NAME = "similarity"
ESTIMATORS = ("linear_biased", "linear_debiased", "rbf_biased", "rbf_debiased")
ALPHA = 0.05
#: Groups of the delete-a-group jackknife of the diagonal bands (delete-one when there are fewer clips).
JACKKNIFE_GROUPS = 100


def _json_matrix(m: np.ndarray) -> list[list[float | None]]:
    return [[None if not math.isfinite(float(v)) else float(v) for v in row] for row in np.asarray(m)]


def _sample_frames(h: torch.Tensor, lengths: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Row indices into the valid frames of `[batch, frames, d]`: up to k per clip -> (batch_idx, frame_idx)."""
    rows, cols = [], []
    for b, n in enumerate(lengths.tolist()):
        pick = torch.randperm(int(n), generator=gen)[:k] if n > k else torch.arange(int(n))
        rows.append(torch.full_like(pick, b))
        cols.append(pick)
    return torch.cat(rows), torch.cat(cols)


def _kernel_cka(k: torch.Tensor, l: torch.Tensor, debiased: bool) -> float:
    hsic = debiased_hsic if debiased else biased_hsic
    xx, yy = hsic(k, k), hsic(l, l)
    if xx <= 0 or yy <= 0:
        return math.nan
    return hsic(k, l) / math.sqrt(xx * yy)


def _diagonal_bands(
    pooled_a: list[np.ndarray], pooled_f: list[np.ndarray], values: dict[str, list[float]], groups: int, seed: int
) -> dict[str, dict[str, list[float]]]:
    """Delete-a-group jackknife (low, high, se) of the diagonal CKA per estimator (`bootstrap.jackknife_ci`):
    the statistic is recomputed on the clips minus each of `groups` random groups, so a clip never meets its own
    copy (a bootstrap resample's duplicates pull kernel estimators up). The interval is centred on the
    estimator's reported value (`values`); for `rbf_debiased` (minibatch CKA) the standard error is that of the
    full-sample debiased RBF CKA. RBF bandwidths are held at their full-sample values."""
    n = pooled_a[0].shape[0]
    out: dict[str, dict[str, list[float]]] = {est: {"low": [], "high": [], "se": []} for est in ESTIMATORS}
    for kernel in ("linear", "rbf"):
        for h, (xa, xf) in enumerate(zip(pooled_a, pooled_f)):
            ka, kf = kernel_matrix(xa, kernel), kernel_matrix(xf, kernel)

            def both(idx: np.ndarray, ka: torch.Tensor = ka, kf: torch.Tensor = kf) -> np.ndarray:
                i = torch.as_tensor(idx)
                a, f = ka[i][:, i], kf[i][:, i]
                return np.array([_kernel_cka(a, f, False), _kernel_cka(a, f, True)])

            keys = (f"{kernel}_biased", f"{kernel}_debiased")
            ci = jackknife_ci(both, n, groups=groups, alpha=ALPHA, seed=seed,
                              estimate=np.array([values[k][h] for k in keys]))
            for j, key in enumerate(keys):
                out[key]["low"].append(float(ci.low[j]))
                out[key]["high"].append(float(ci.high[j]))
                out[key]["se"].append(float(ci.se[j]))
    return out


@torch.no_grad()
def run(ctx: AnalysisContext) -> dict[str, Any]:
    """CKA matrices adapted (rows) vs frozen (columns) over hidden states 0..L, diagonal bands, spectra."""
    frozen = ctx.require_frozen(NAME)
    k_frames = int(ctx.option(NAME, "frames_per_clip", 0))
    mb_size = int(ctx.option(NAME, "rbf_minibatch", 256))
    jk_groups = int(ctx.option(NAME, "jackknife_groups", JACKKNIFE_GROUPS))
    n_hidden = ctx.n_layers + 1
    d_a, d_f = ctx.adapted.runner.d_model, frozen.runner.d_model
    lin = LinearCKAMatrixAccumulator([d_a] * n_hidden, [d_f] * n_hidden)
    lin_frames = LinearCKAMatrixAccumulator([d_a] * n_hidden, [d_f] * n_hidden) if k_frames > 0 else None
    cov = {"adapted": [CovarianceAccumulator(d_a) for _ in range(n_hidden)],
           "frozen": [CovarianceAccumulator(d_f) for _ in range(n_hidden)]}
    pooled: dict[str, list[list[np.ndarray]]] = {"adapted": [[] for _ in range(n_hidden)],
                                                  "frozen": [[] for _ in range(n_hidden)]}
    gen = torch.Generator().manual_seed(ctx.seed)
    n_frames = 0

    def feed(pa: list[torch.Tensor], pf: list[torch.Tensor]) -> None:
        lin.update(pa, pf)
        for l in range(n_hidden):
            cov["adapted"][l].update(pa[l])
            cov["frozen"][l].update(pf[l])
            pooled["adapted"][l].append(pa[l].cpu().numpy())
            pooled["frozen"][l].append(pf[l].cpu().numpy())

    if lin_frames is None:
        # pooled hidden states only: read them from the shared pass, batch by batch as the pass saw them
        shared_a = ctx.observed("pooled_hidden", "adapted", "test", NAME)
        shared_f = ctx.observed("pooled_hidden", "frozen", "test", NAME)
        for xa_b, xf_b in zip(shared_a.batches(), shared_f.batches()):
            feed([torch.from_numpy(x).to(ctx.device).double() for x in xa_b],
                 [torch.from_numpy(x).to(ctx.device).double() for x in xf_b])
    else:
        # frame-level CKA samples frames of the full hidden states: a pass of its own
        for batch in batches_with_progress(ctx.test, ctx.test.n_clips, "similarity: frames"):
            b = batch.to(ctx.device)
            out_a = ctx.adapted.runner(b.features, b.mel_lengths)
            out_f = frozen.runner(b.features, b.mel_lengths)
            feed([masked_mean(h, out_a.lengths, batched=True).double() for h in out_a.hidden_states],
                 [masked_mean(h, out_f.lengths, batched=True).double() for h in out_f.hidden_states])
            rows, cols = _sample_frames(out_a.hidden_states[0], out_a.lengths.cpu(), k_frames, gen)
            rows, cols = rows.to(ctx.device), cols.to(ctx.device)
            lin_frames.update([h[rows, cols].double() for h in out_a.hidden_states],
                              [h[rows, cols].double() for h in out_f.hidden_states])
            n_frames += int(rows.numel())
    xa = [np.concatenate(c) for c in pooled["adapted"]]
    xf = [np.concatenate(c) for c in pooled["frozen"]]
    n = xa[0].shape[0]
    if n < 4:
        raise AnalysisInputError(f"similarity needs at least 4 test clips (debiased HSIC), has {n}")

    matrices = {"linear_biased": lin.compute(debiased=False), "linear_debiased": lin.compute(debiased=True)}
    order = np.random.default_rng(ctx.seed).permutation(n)
    n_mb = max(1, math.ceil(n / mb_size))
    if n // n_mb < 4:
        n_mb = max(1, n // 4)
    mb = MinibatchCKA(n_hidden, n_hidden, kernel="rbf")
    for chunk in np.array_split(order, n_mb):
        mb.update([x[chunk] for x in xa], [x[chunk] for x in xf])
    matrices["rbf_debiased"] = mb.compute()
    matrices["rbf_biased"] = cka_matrix(xa, xf, kernel="rbf", debiased=False)

    values = {est: [float(matrices[est][i, i]) for i in range(n_hidden)] for est in ESTIMATORS}
    bands = _diagonal_bands(xa, xf, values, jk_groups, ctx.seed)
    result: dict[str, Any] = {
        "n_layers": ctx.n_layers,
        "layers": list(range(ctx.n_layers)),
        "hidden_states": list(range(n_hidden)),
        "n_clips": n,
        "rbf_minibatches": n_mb,
        "rbf_minibatch_size": int(math.ceil(n / n_mb)),
        "diagonal_band": {"method": "delete-a-group jackknife t interval over clips", "alpha": ALPHA,
                          "groups": min(jk_groups, n)},
        "diagonal": {},
    }
    for est in ESTIMATORS:
        m = matrices[est]
        result[est] = _json_matrix(m)
        result["diagonal"][est] = {"value": values[est], **bands[est]}
    if lin_frames is not None:
        result["frames_per_clip"] = k_frames
        result["n_frames"] = n_frames
        result["frames_linear_biased"] = _json_matrix(lin_frames.compute(debiased=False))
        result["frames_linear_debiased"] = _json_matrix(lin_frames.compute(debiased=True))
    spectra: dict[str, list[list[float]]] = {}
    spectra_summary: dict[str, dict[str, list[float]]] = {}
    for model in ("adapted", "frozen"):
        svs = [feature_spectrum(acc) for acc in cov[model]]
        svs = [s[: min(n - 1, s.size)] for s in svs]  # centred: at most n - 1 nonzero, drop the structural zeros
        spectra[model] = [[float(v) for v in s] for s in svs]
        ok = [bool(s[0] > 0) for s in svs]
        spectra_summary[model] = {
            "components_90pct": [components_for_energy(s, 0.9) if o else 0 for s, o in zip(svs, ok)],
            "effective_rank": [effective_rank(s) if o else 0.0 for s, o in zip(svs, ok)],
        }
    result["spectra"] = spectra
    result["spectra_summary"] = spectra_summary
    return result


# ----------------------------------------------------------------------------- plot and reading
def _matrix(values: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Four CKA heat maps (rows: adapted hidden state, columns: frozen hidden state), the diagonals with their
    jackknife bands and the verdict's departure threshold, and the singular spectra of the pooled representations."""
    from loralens.plots.figures import new_figure, report_style, save_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hs = result["hidden_states"]
    titles = {"linear_biased": "linear CKA (standard)", "linear_debiased": "linear CKA (debiased)",
              "rbf_biased": "RBF CKA (standard)", "rbf_debiased": "RBF CKA (debiased, minibatch)"}
    paths: list[Path] = []
    fig, axes = new_figure(8.0, 7.0, 2, 2)
    with report_style():
        for ax, est in zip(np.ravel(axes), ESTIMATORS):
            m = _matrix(result[est])
            im = ax.imshow(m, origin="lower", vmin=min(0.0, np.nanmin(m)), vmax=1.0, cmap="viridis")
            ax.set_xlabel("frozen encoder: hidden state")
            ax.set_ylabel("adapted encoder: hidden state")
            ax.set_xticks(hs)
            ax.set_yticks(hs)
            ax.grid(False)
            ax.set_title(titles[est])
            if len(hs) <= 14:
                for i in range(len(hs)):
                    for j in range(len(hs)):
                        if np.isfinite(m[i, j]):
                            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                                    color="w" if m[i, j] < 0.6 else "k")
            fig.colorbar(im, ax=ax, label="CKA", shrink=0.8)
    paths += save_figure(fig, out_dir / "similarity_heatmaps")

    fig, ax = new_figure(5.5, 3.4)
    with report_style():
        for k, est in enumerate(ESTIMATORS):
            cur = result["diagonal"][est]
            ax.plot(hs, cur["value"], marker="o", ms=3, color=f"C{k}", label=titles[est])
            ax.fill_between(hs, cur["low"], cur["high"], color=f"C{k}", alpha=0.15, lw=0)
        ax.axhline(0.9, color="0.5", lw=0.8, ls="--", label="departure threshold of the verdict (debiased linear)")
        ax.set_xlabel("hidden state (0 = embeddings, L = encoder output)")
        ax.set_ylabel("CKA(adapted, frozen), same hidden state")
        ax.set_xticks(hs)
        ax.set_title("Similarity of the adapted and the frozen encoder")
        ax.legend()
    paths += save_figure(fig, out_dir / "similarity_diagonal")

    fig, axes = new_figure(9.0, 3.4, 1, 2, sharey=True)
    with report_style():
        cmap = __import__("matplotlib").colormaps["viridis"]
        for ax, model in zip(axes, ("adapted", "frozen")):
            for l, s in enumerate(result["spectra"][model]):
                s = np.asarray(s)
                if s.size and s[0] > 0:
                    ax.semilogy(np.arange(1, s.size + 1), s / s[0], color=cmap(l / max(1, len(hs) - 1)),
                                label=str(l))
            ax.set_xlabel("singular value index")
            ax.set_title(f"{model} encoder, pooled clips (centred)")
        axes[0].set_ylabel("singular value / largest")
        axes[1].legend(ncol=2, fontsize=7, title="hidden state", title_fontsize=7)
    paths += save_figure(fig, out_dir / "similarity_spectra")
    return paths


def reading(result: dict[str, Any]) -> str:
    diag = result["diagonal"]
    lb = np.asarray(diag["linear_biased"]["value"])
    ld = np.asarray(diag["linear_debiased"]["value"])
    rd = np.asarray(diag["rbf_debiased"]["value"])
    L = len(lb) - 1
    first = int(np.argmax(lb < 0.9)) if (lb < 0.9).any() else None
    low = int(lb.argmin())
    text = (
        f"Linear CKA between the adapted and the frozen encoder at the same hidden state is {lb[0]:.2f} at the "
        f"embeddings and {lb[-1]:.2f} at the output, lowest {lb[low]:.2f} at hidden state {low} of {L} "
        f"(debiased: {ld[0]:.2f} and {ld[-1]:.2f}; RBF debiased: {rd[0]:.2f} and {rd[-1]:.2f}), "
        f"over {result['n_clips']} test clips."
    )
    if first is not None:
        text += f" It first drops below 0.9 at hidden state {first} of {L} ({first / max(L, 1):.2f} of depth)."
    else:
        text += " It stays above 0.9 throughout: the adapter changes the representations little in CKA terms."
    return text


register(Analysis(NAME, "Representational similarity (CKA) of adapted and frozen", run, plot, reading,
                  observes=("pooled_hidden",)))

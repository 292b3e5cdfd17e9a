"""Weight space of the LoRA updates: for each adapted matrix W (`blocks.{l}.attn.v_proj`, ...), dW = scale * B A.

Per module (no data needed; `loralens.numerics.weight_space` numerics, float64):
- `singular_values`: the r singular values of dW (from the r x r core, `delta_spectrum`); `stable_rank`,
  `effective_rank` (null when dW = 0);
- `rel_norm` = ||dW||_F / ||W||_F, with dW taken from peft's `get_delta_weight` (`loralens.models.lora.delta_weight`;
  `delta_check` = max |peft's dW - scale B A|, a consistency check);
- `amplification` = ||dW||_F / ||U^T W V^T||_F, U, V the top singular vectors of dW up to its numerical rank
  (Hu et al. 2021, 7.3; null when dW = 0);
- `intruders`: intruder dimensions of W + dW relative to W (Shuttleworth et al. 2024): among the top `intruder_k`
  (10) left singular vectors of W + dW, those with max |cos| < `intruder_eps` (0.5) to every singular vector of W;
  `intruders_right` the same for right singular vectors when option `intruders_right` is true (else null).
- `overlap` (when `options["weight_analysis"]["others"]` maps names to other LoRA-adapted classifiers, e.g. other
  ranks or seeds on the same fold): per module present in both, Hu et al.'s (2021, 7.2) normalised subspace
  similarity phi(i, j) = ||U_i^T U'_j||_F^2 / min(i, j) of the top right singular vectors of A (and of the top left
  singular vectors of B) for i, j = 1..m, m = min(r, r'), with summaries `phi_11`, `mean_diagonal` and the expected
  value for random subspaces, `random_diagonal` = [i / d] for phi(i, i).

Known answers (tests): at initialisation (B = 0) dW = 0 exactly, rel_norm 0, no intruders.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loralens.analysis.context import AnalysisContext
from loralens.analysis.suite import Analysis, register
from loralens.errors import ConfigError
from loralens.models.lora import ADAPTER, delta_weight, lora_modules
from loralens.models.runner import hook_layer
from loralens.numerics.spectra import effective_rank, singular_values, stable_rank
from loralens.numerics.weight_space import (
    amplification_factor,
    delta_spectrum,
    intruder_dimensions,
    lora_delta,
    relative_update_norm,
    subspace_overlap_grid,
)

NAME = "weight_analysis"


def _f(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _mats(module: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(W, A, B, scale) of a peft LoRA module, float64 on the CPU."""
    w = module.get_base_layer().weight.detach().double().cpu()
    a = module.lora_A[ADAPTER].weight.detach().double().cpu()
    b = module.lora_B[ADAPTER].weight.detach().double().cpu()
    return w, a, b, float(module.scaling[ADAPTER])


def module_summary(module: Any, k: int = 10, eps: float = 0.5, both_sides: bool = False) -> dict[str, Any]:
    """Weight-space summary of one peft LoRA module (see the module docstring for the keys)."""
    w, a, b, scale = _mats(module)
    # float64 product: peft's float32 dW has rounding noise that would give dW full numerical rank
    dw = lora_delta(a, b, scale)
    # peft's dW in the weights' own precision: `loralens analyze --precision bf16` runs analyses under autocast,
    # which would compute it in bf16 and fail the check below
    device = module.lora_A[ADAPTER].weight.device.type
    with torch.autocast(device_type=device, enabled=False):
        peft_dw = delta_weight(module).detach().double().cpu()
    if peft_dw.shape != w.shape:
        raise ConfigError(f"peft's delta weight {tuple(peft_dw.shape)} does not match W {tuple(w.shape)}")
    check = float((peft_dw - dw).abs().max())
    if check > 1e-4 * max(float(dw.abs().max()), 1e-12):
        raise ConfigError(
            f"peft's delta weight differs from scale * B A by {check:.3g}",
            hint="this adapter is not plain LoRA (DoRA, fan_in_fan_out, ...): weight_analysis assumes dW = scale B A",
        )
    s = delta_spectrum(a, b, scale)
    nonzero = bool(s[0] > 0)
    rank_dw = int((s > s[0] * 1e-10).sum()) if nonzero else 0
    left = intruder_dimensions(w, w + dw, k=k, eps=eps, side="left")
    # each side costs two full SVDs of d_out x d_in matrices: the right side only on request
    right = intruder_dimensions(w, w + dw, k=k, eps=eps, side="right") if both_sides else None
    return {
        "rank": int(a.shape[0]),
        "scale": scale,
        "shape": list(w.shape),
        "singular_values": [float(v) for v in s],
        "stable_rank": stable_rank(s) if nonzero else None,
        "effective_rank": effective_rank(s) if nonzero else None,
        "frobenius": float(torch.linalg.matrix_norm(dw)),
        "weight_frobenius": float(torch.linalg.matrix_norm(w)),
        "rel_norm": relative_update_norm(dw, w),
        "amplification": _f(amplification_factor(dw, w, rank=rank_dw)) if nonzero else None,
        "numerical_rank": rank_dw,
        "intruders": left.count,
        "intruder_indices": left.indices,
        "intruder_max_cosine": [float(v) for v in left.max_cosine],
        "intruders_right": None if right is None else right.count,
        "weight_singular_values_top": [float(v) for v in singular_values(w)[:k]],
        "a_norm": float(torch.linalg.matrix_norm(a)),
        "b_norm": float(torch.linalg.matrix_norm(b)),
        "delta_check": check,
    }


def overlap_summary(mod_1: Any, mod_2: Any) -> dict[str, Any]:
    """Subspace similarity of two LoRA modules adapting the same matrix: grids `[m, m]` for A (right singular
    vectors, R^{d_in}) and B (left singular vectors, R^{d_out}), m = min of the ranks, and their summaries."""
    _, a1, b1, _ = _mats(mod_1)
    _, a2, b2, _ = _mats(mod_2)
    m = min(a1.shape[0], a2.shape[0])
    out: dict[str, Any] = {"ranks": [int(a1.shape[0]), int(a2.shape[0])], "m": m}
    for side, x1, x2 in (("A", a1, a2), ("B", b1.T, b2.T)):
        if float(torch.linalg.matrix_norm(x1)) == 0.0 or float(torch.linalg.matrix_norm(x2)) == 0.0:
            out[side] = None  # B = 0 (an untrained adapter) has no subspace
            continue
        grid = subspace_overlap_grid(x1, x2)[:m, :m]
        d = x1.shape[1]
        out[side] = {
            "grid": [[float(v) for v in row] for row in grid],
            "phi_11": float(grid[0, 0]),
            "diagonal": [float(grid[i, i]) for i in range(m)],
            "mean_diagonal": float(np.mean(np.diag(grid))),
            "random_diagonal": [(i + 1) / d for i in range(m)],
        }
    return out


def _others(option: Any) -> dict[str, Any]:
    if option is None:
        return {}
    if isinstance(option, Mapping):
        return dict(option)
    return {f"other_{i}": o for i, o in enumerate(option)}


def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Weight-space summary of every adapted module, and subspace overlaps with `others` when given."""
    mods = lora_modules(ctx.adapted.encoder)
    if not mods:
        raise ConfigError("weight_analysis needs a LoRA-adapted classifier, this one has no adapters",
                          hint="run it on a LoRA run (not frozen / full fine-tuning)")
    k = int(ctx.option(NAME, "intruder_k", 10))
    eps = float(ctx.option(NAME, "intruder_eps", 0.5))
    both = bool(ctx.option(NAME, "intruders_right", False))
    result: dict[str, Any] = {
        "n_layers": ctx.n_layers,
        "layers": list(range(ctx.n_layers)),
        "module_order": list(mods),
        "module_layers": [hook_layer(p) for p in mods],
        "intruder_k": k,
        "intruder_eps": eps,
        "modules": {p: module_summary(m, k, eps, both) for p, m in mods.items()},
    }
    others = _others(ctx.option(NAME, "others", None))
    if others:
        overlap: dict[str, Any] = {}
        for name, other in others.items():
            omods = lora_modules(getattr(other, "encoder", other))
            common = [p for p in mods if p in omods]
            if not common:
                raise ConfigError(f"weight_analysis: {name!r} adapts none of the modules {list(mods)}",
                                  hint="compare runs that adapt the same matrices")
            per = {p: overlap_summary(mods[p], omods[p]) for p in common}
            diag_a = [v["A"]["mean_diagonal"] for v in per.values() if v["A"] is not None]
            overlap[name] = {
                "modules": per,
                "mean_diagonal_A": float(np.mean(diag_a)) if diag_a else None,
                "phi_11_A": [v["A"]["phi_11"] if v["A"] else None for v in per.values()],
            }
        result["overlap"] = overlap
    return result


# ----------------------------------------------------------------------------- plot and reading
def _ticks(order: list[str]) -> list[str]:
    return [p.replace("blocks.", "").replace(".attn.", " ").replace(".mlp.", " ") for p in order]


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Per-module measures, the dW spectra, and the overlap heat maps (when others were given)."""
    from matplotlib.ticker import MaxNLocator

    from loralens.plots.figures import new_figure, report_style, save_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    order = result["module_order"]
    x = np.arange(len(order))
    mods = result["modules"]
    paths: list[Path] = []
    panels = [
        ("rel_norm", "||dW||_F / ||W||_F"),
        ("stable_rank", "stable rank of dW"),
        ("amplification", "amplification factor"),
        ("intruders", f"intruder dimensions (top {result['intruder_k']})"),
    ]
    fig, axes = new_figure(9.0, 6.0, 2, 2, sharex=True)
    with report_style():
        for ax, (key, label) in zip(np.ravel(axes), panels):
            y = [np.nan if mods[p][key] is None else mods[p][key] for p in order]
            ax.plot(x, y, marker="o", ms=3, color="C0")
            if key == "intruders":
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            if key == "stable_rank":
                ax.axhline(max(mods[p]["rank"] for p in order), color="0.5", ls=":", lw=0.8, label="rank r")
                ax.legend()
            ax.set_ylabel(label)
            ax.set_xticks(x, _ticks(order), rotation=45, fontsize=7)
        for ax in np.ravel(axes)[2:]:
            ax.set_xlabel("adapted module (layer, projection)")
    paths += save_figure(fig, out_dir / "weight_measures")

    fig, ax = new_figure(5.5, 3.4)
    with report_style():
        import matplotlib

        cmap = matplotlib.colormaps["viridis"]
        for i, p in enumerate(order):
            s = np.asarray(mods[p]["singular_values"])
            if s.size and s[0] > 0:
                ax.semilogy(np.arange(1, s.size + 1), s / s[0], color=cmap(i / max(1, len(order) - 1)),
                            label=_ticks([p])[0])
        ax.set_xlabel("singular value index of dW")
        ax.set_ylabel("singular value / largest")
        ax.set_title("Spectra of the LoRA updates dW = scale B A")
        if len(order) <= 12:
            ax.legend(ncol=2, fontsize=7)
    paths += save_figure(fig, out_dir / "weight_spectra")

    for name, entry in result.get("overlap", {}).items():
        grids = [np.asarray(v["A"]["grid"]) for v in entry["modules"].values() if v["A"] is not None]
        if not grids:
            continue
        m = min(g.shape[0] for g in grids)
        mean = np.mean([g[:m, :m] for g in grids], axis=0)
        fig, ax = new_figure(4.2, 3.6)
        with report_style():
            im = ax.imshow(mean, origin="lower", vmin=0, vmax=1, cmap="viridis",
                           extent=(0.5, m + 0.5, 0.5, m + 0.5))
            ax.grid(False)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(f"j: top-j right singular vectors of A ({name})")
            ax.set_ylabel("i: top-i right singular vectors of A (this run)")
            ax.set_title(f"Subspace similarity phi(i, j)\nmean over {len(grids)} modules", fontsize=9)
            fig.colorbar(im, ax=ax, label="phi(i, j)")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        paths += save_figure(fig, out_dir / f"weight_overlap_{safe}")
    return paths


def reading(result: dict[str, Any]) -> str:
    order = result["module_order"]
    mods = result["modules"]
    rel = np.array([mods[p]["rel_norm"] for p in order])
    sr = [mods[p]["stable_rank"] for p in order if mods[p]["stable_rank"] is not None]
    intr = sum(mods[p]["intruders"] for p in order)
    i = int(rel.argmax())
    text = (
        f"The LoRA updates are {rel.mean():.3f} of the adapted weights' Frobenius norm on average "
        f"(largest {rel[i]:.3f} at {order[i]});"
    )
    if sr:
        text += f" their stable rank averages {np.mean(sr):.2f} of rank {mods[order[0]]['rank']};"
    else:
        text += " every update is exactly zero (untrained adapter);"
    text += f" {intr} intruder dimensions in total over {len(order)} modules."
    for name, entry in result.get("overlap", {}).items():
        if entry["mean_diagonal_A"] is not None:
            text += f" Subspace overlap with {name}: mean phi(i, i) of A = {entry['mean_diagonal_A']:.2f}."
    return text


register(Analysis(NAME, "Weight space of the LoRA updates", run, plot, reading))

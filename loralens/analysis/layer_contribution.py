"""Layer contribution: how large each layer's attention and MLP updates are relative to the residual stream they
are added to, and how aligned they are with it, in the adapted and the frozen model.

For layer l and a valid frame t of a clip, with `r = resid_pre[l, t]`, `a = attn_out[l, t]`, `m = mlp_out[l, t]`
(`resid_post = r + a + m`):

    attn_rel  = ||a|| / ||r||,   mlp_rel = ||m|| / ||r||,   total_rel = ||a + m|| / ||r||
    attn_cos  = cos(a, r),       mlp_cos = cos(m, r),       total_cos = cos(a + m, r)

Each is averaged over the clip's valid frames (padding never enters), then over clips; curves carry percentile
bootstrap CIs over clips. `difference` is adapted minus frozen, paired per clip (same clip, same frames).
Note that the MLP reads `resid_mid = r + a`, but its update is compared with `resid_pre` like the attention's, so the
three ratios share one denominator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from loralens.analysis.context import AnalysisContext, SplitData
from loralens.analysis.passes import register_observer, run_pass, valid_mask
from loralens.analysis.suite import Analysis, register
from loralens.data.batching import Batch
from loralens.models.classifier import EmotionClassifier
from loralens.models.runner import ATTN_OUT, MLP_OUT, RESID_PRE
from loralens.numerics.curves import mean_curve

NAME = "layer_contribution"
QUANTITIES: tuple[str, ...] = ("attn_rel", "mlp_rel", "total_rel", "attn_cos", "mlp_cos", "total_cos")
_EPS = 1e-12


# ----------------------------------------------------------------------------- the analysis
class ContributionObserver:
    """Observer "contribution" of a shared pass: per-clip means over valid frames of each quantity of `QUANTITIES`,
    plus `resid_norm`; result name -> `[n_clips, n_layers]` float64.

    Statistics are taken while the encoder runs (pass-through edits observe resid_pre, attn_out and mlp_out and
    return them unchanged), so only one layer's activations are held at a time."""

    def __init__(self, clf: EmotionClassifier) -> None:
        self.n_layers = clf.runner.n_layers
        self.per_batch: dict[str, list[np.ndarray]] = {q: [] for q in (*QUANTITIES, "resid_norm")}
        self._values: dict[str, np.ndarray] = {}

    def edits(self, batch: Batch) -> dict[str, Any]:
        mel = batch.mel_lengths
        values = self._values = {q: np.zeros((len(batch.ids), self.n_layers)) for q in self.per_batch}
        stash: dict[str, Tensor] = {}

        def keep(key: str):
            def observe(t: Tensor) -> Tensor:
                stash[key] = t
                return t

            return observe

        def reduce(l: int):
            def observe(m: Tensor) -> Tensor:
                r, a = stash.pop("r"), stash.pop("a")
                valid, lengths = valid_mask(mel, m.shape[0], m.shape[1], m.device)
                for q, v in frame_stats(r.double(), a.double(), m.double()).items():
                    # torch.where, not a product: padded frames never enter, whatever their values
                    values[q][:, l] = (torch.where(valid, v, 0.0).sum(dim=1) / lengths).cpu().numpy()
                return m

            return observe

        edits = {}
        for l in range(self.n_layers):
            edits[f"blocks.{l}.{RESID_PRE}"] = keep("r")
            edits[f"blocks.{l}.{ATTN_OUT}"] = keep("a")
            edits[f"blocks.{l}.{MLP_OUT}"] = reduce(l)
        return edits

    def update(self, batch: Batch, out: Any) -> None:
        for q, v in self._values.items():
            self.per_batch[q].append(v)

    def result(self) -> dict[str, np.ndarray]:
        return {q: np.concatenate(v) for q, v in self.per_batch.items()}


register_observer("contribution", ContributionObserver)


def contribution_per_clip(clf: EmotionClassifier, split: SplitData,
                          device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Per-clip means over valid frames of each quantity of `QUANTITIES`, plus `resid_norm` (||resid_pre||):
    name -> `[n_clips, n_layers]` float64 (a pass with `ContributionObserver` alone)."""
    return run_pass(clf, split.batches, {"contribution": ContributionObserver(clf)}, device)["contribution"]


def frame_stats(r: Tensor, a: Tensor, m: Tensor) -> dict[str, Tensor]:
    """Per-frame `resid_norm` and the ratios / cosines of `QUANTITIES` from resid_pre `r`, attn_out `a` and
    mlp_out `m` (each `[..., d]`) -> each `[...]`."""
    rn = r.norm(dim=-1)
    rn_safe = rn.clamp_min(_EPS)
    out = {"resid_norm": rn}
    for name, u in (("attn", a), ("mlp", m), ("total", a + m)):
        un = u.norm(dim=-1)
        out[f"{name}_rel"] = un / rn_safe
        out[f"{name}_cos"] = (u * r).sum(-1) / (un * rn_safe).clamp_min(_EPS)
    return out


def run(ctx: AnalysisContext) -> dict[str, Any]:
    n_layers = ctx.n_layers
    result: dict[str, Any] = {"layers": list(range(n_layers)), "n_layers": n_layers, "n_clips": ctx.test.n_clips}
    per_clip = {"adapted": ctx.observed("contribution", "adapted", "test", NAME)}
    if ctx.frozen is not None:
        per_clip["frozen"] = ctx.observed("contribution", "frozen", "test", NAME)
        per_clip["difference"] = {q: per_clip["adapted"][q] - per_clip["frozen"][q] for q in per_clip["adapted"]}
    for model, values in per_clip.items():
        result[model] = {q: mean_curve(v, ctx.n_boot, ctx.seed) for q, v in values.items()}
    return result


def _peak(c: dict[str, list[float]]) -> tuple[int, float]:
    v = np.array(c["value"], dtype=float)
    i = int(np.nanargmax(np.abs(v)))
    return i, float(v[i])


def reading(result: dict[str, Any]) -> str:
    n = result["n_layers"]
    la, va = _peak(result["adapted"]["total_rel"])
    text = (
        f"In the adapted model the combined attention + MLP update is largest relative to the residual stream at "
        f"layer {la} of 0..{n - 1} (||update|| / ||resid_pre|| = {va:.3g})."
    )
    if "difference" in result:
        lf, vf = _peak(result["frozen"]["total_rel"])
        ld, vd = _peak(result["difference"]["total_rel"])
        d = result["difference"]["total_rel"]
        text += (
            f" In the frozen model it peaks at layer {lf} ({vf:.3g})."
            f" The adapted-minus-frozen difference is largest at layer {ld} ({vd:+.3g}, 95 % CI "
            f"[{d['low'][ld]:+.3g}, {d['high'][ld]:+.3g}]); the total cosine with resid_pre there is "
            f"{result['adapted']['total_cos']['value'][ld]:.2f} (adapted) vs "
            f"{result['frozen']['total_cos']['value'][ld]:.2f} (frozen)."
        )
    return text


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from loralens.plots.curves import layer_ticks, plot_curves
    from loralens.plots.figures import new_figure, report_style, save_figure

    out_dir = Path(out_dir)
    n = result["n_layers"]
    # frozen first, wide and dashed with open markers; adapted on top, thin and solid: where the curves coincide
    # (layers LoRA barely changes) both stay visible instead of the adapted one hiding under the frozen one
    models = [m for m in ("frozen", "adapted") if m in result]
    colors = {"adapted": "C0", "frozen": "C1"}
    styles = {"frozen": {"ls": "--", "lw": 2.6, "marker": "o", "ms": 7, "mfc": "none", "alpha": 0.8},
              "adapted": {"ls": "-", "lw": 1.2, "marker": "o", "ms": 3, "zorder": 3}}
    paths: list[Path] = []
    titles = {"attn": "attention update", "mlp": "MLP update", "total": "attention + MLP"}
    with report_style():
        fig, axes = new_figure(9.6, 3.2, 1, 3, sharey=True)
        for i, (ax, part) in enumerate(zip(axes, ("attn", "mlp", "total"))):
            plot_curves(ax, {m: result[m][f"{part}_rel"] for m in models}, legend=i == 0, colors=colors, styles=styles)
            ax.set_title(titles[part])
            ax.set_xlabel("encoder layer")
            layer_ticks(ax, n)
        axes[0].set_ylabel("‖update‖ / ‖resid_pre‖ (mean over frames, clips)")
        paths += save_figure(fig, out_dir / "relative_norm")

        fig, axes = new_figure(9.6, 3.2, 1, 3, sharey=True)
        for i, (ax, part) in enumerate(zip(axes, ("attn", "mlp", "total"))):
            plot_curves(ax, {m: result[m][f"{part}_cos"] for m in models}, legend=i == 0, colors=colors, styles=styles)
            ax.axhline(0.0, color="0.5", lw=0.8)
            ax.set_title(titles[part])
            ax.set_xlabel("encoder layer")
            layer_ticks(ax, n)
        axes[0].set_ylabel("cosine(update, resid_pre) (mean over frames, clips)")
        paths += save_figure(fig, out_dir / "cosine")

        if "difference" in result:
            fig, ax = new_figure(6.4, 3.4)
            plot_curves(ax, {titles[p]: result["difference"][f"{p}_rel"] for p in ("attn", "mlp", "total")})
            ax.axhline(0.0, color="0.5", lw=0.8)
            ax.set_xlabel("encoder layer")
            ax.set_ylabel("Δ ‖update‖ / ‖resid_pre‖ (adapted − frozen)")
            ax.set_title("Relative update norm, adapted minus frozen (95 % CI over clips)")
            layer_ticks(ax, n)
            paths += save_figure(fig, out_dir / "relative_norm_difference")
    return [Path(p) for p in paths]


register(
    Analysis(
        name=NAME,
        title="Layer contribution: attention and MLP update norms relative to the residual stream",
        run=run,
        plot=plot,
        reading=reading,
        observes=("contribution",),
    )
)

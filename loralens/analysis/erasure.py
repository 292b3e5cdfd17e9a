"""Layer erasure: how much the classifier depends on each layer, by skipping it (its output is its input, i.e.
`resid_post = resid_pre`) and, progressively, by skipping the first k layers (k = 1..L; the input of layer k is then
the embeddings).

For each configuration and clip: the cross-entropy loss against the label (nats), the confidence (softmax probability
of the predicted class) and the prediction. Reported as changes from the intact model, per clip paired (same clip),
averaged over clips with bootstrap CIs: `delta_loss`, `delta_confidence`; `delta_uar` = UAR(erased) - UAR(intact) on
the same bootstrap resamples. The absolute `uar`, `loss`, `confidence` curves are reported as well.

Cost: the intact run captures every layer's resid_pre once per batch; erasing layer l restarts from it
(`start_at=(l, resid_pre_l)` with layer l skipped), so each configuration recomputes only the layers after the erased
one, and the prefix erasure of k layers restarts at layer k - 1 from the embeddings. This gives the same logits as a
from-scratch run with `skip_layers` (tested). A weighted-layer-sum head needs every hidden state, so it is run from
scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from loralens.analysis.context import AnalysisContext, SplitData
from loralens.analysis.passes import batches_with_progress
from loralens.analysis.suite import Analysis, register
from loralens.models.classifier import EmotionClassifier
from loralens.models.runner import RESID_PRE
from loralens.numerics.bootstrap import bootstrap_ci
from loralens.numerics.curves import bootstrap_uar, mean_curve, uar_curve
from loralens.plots.curves import layer_ticks, plot_curves

NAME = "erasure"
METRICS: tuple[str, ...] = ("uar", "loss", "confidence")


@dataclass
class ErasureLogits:
    """Logits of one model on one split: intact `[n, C]`, single-layer erasures `[n, L, C]` (column l: layer l
    skipped), prefix erasures `[n, L, C]` (column k - 1: layers 0..k-1 skipped); labels `[n]`."""

    base: Tensor
    single: Tensor
    prefix: Tensor
    labels: Tensor


@torch.no_grad()
def erasure_logits(clf: EmotionClassifier, split: SplitData, device: torch.device | str = "cpu", *,
                   cached: bool | None = None, desc: str | None = None) -> ErasureLogits:
    """Logits of the intact model and of every single / prefix erasure. cached: restart from the captured residual
    stream (default, unless the head reads every layer); False runs each configuration from scratch. desc: name of
    a progress bar over clips (None: no bar)."""
    n_layers = clf.runner.n_layers
    if cached is None:
        cached = not clf.head.use_weighted_layer_sum
    names = [f"blocks.{l}.{RESID_PRE}" for l in range(n_layers)]
    base, single, prefix, labels = [], [], [], []
    for batch in batches_with_progress(split, split.n_clips, desc):
        feats, mel = batch.features.to(device), batch.mel_lengths.to(device)
        clf.select_clips(batch.ids)
        out = clf.run(feats, mel, capture=names if cached else ())
        s, p = [], []
        for l in range(n_layers):
            if cached:
                resid = out.encoder.captured[names[l]]
                s.append(clf.run(None, mel, start_at=(l, resid), skip_layers=[l]).logits)
                emb = out.encoder.captured[names[0]]
                p.append(clf.run(None, mel, start_at=(l, emb), skip_layers=[l]).logits)
            else:
                s.append(clf.run(feats, mel, skip_layers=[l]).logits)
                p.append(clf.run(feats, mel, skip_layers=range(l + 1)).logits)
        base.append(out.logits.float().cpu())
        single.append(torch.stack(s, dim=1).float().cpu())
        prefix.append(torch.stack(p, dim=1).float().cpu())
        labels.append(batch.labels.long().cpu())
    return ErasureLogits(torch.cat(base), torch.cat(single), torch.cat(prefix), torch.cat(labels))


def per_clip_metrics(logits: Tensor, labels: Tensor) -> dict[str, np.ndarray]:
    """Per clip (and configuration): `loss` (cross-entropy vs label, nats), `confidence` (probability of the
    predicted class), `pred` (argmax). logits `[n, C]` or `[n, L, C]` -> arrays `[n]` or `[n, L]`."""
    x = logits.double()
    log_p = torch.log_softmax(x, dim=-1)
    y = labels.long().view(-1, *([1] * (x.dim() - 2)), 1).expand(*x.shape[:-1], 1)
    loss = -log_p.gather(-1, y).squeeze(-1)
    return {
        "loss": loss.numpy(),
        "confidence": log_p.max(dim=-1).values.exp().numpy(),
        "pred": x.argmax(dim=-1).numpy(),
    }


def erasure_curves(logits: ErasureLogits, n_classes: int, n_boot: int, seed: int) -> dict[str, Any]:
    """The `baseline`, `single` and `prefix` blocks of the result from the logits."""
    y = logits.labels.numpy()
    base = per_clip_metrics(logits.base, logits.labels)
    base_uar = bootstrap_uar(y, base["pred"], n_classes, n_boot, seed, std=False)
    loss_ci = bootstrap_ci(base["loss"], n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {
        "baseline": {
            "uar": base_uar["value"],
            "uar_ci": [base_uar["low"], base_uar["high"]],
            "loss": float(base["loss"].mean()),
            "loss_ci": [float(loss_ci.low), float(loss_ci.high)],
            "confidence": float(base["confidence"].mean()),
        }
    }
    for kind, erased in (("single", logits.single), ("prefix", logits.prefix)):
        m = per_clip_metrics(erased, logits.labels)
        out[kind] = {
            "delta_uar": uar_curve(m["pred"], y, n_classes, n_boot, seed, baseline=base["pred"]),
            "delta_loss": mean_curve(m["loss"] - base["loss"][:, None], n_boot, seed),
            "delta_confidence": mean_curve(m["confidence"] - base["confidence"][:, None], n_boot, seed),
            "uar": uar_curve(m["pred"], y, n_classes, n_boot, seed),
            "loss": mean_curve(m["loss"], n_boot, seed),
            "confidence": mean_curve(m["confidence"], n_boot, seed),
        }
    return out


def run(ctx: AnalysisContext) -> dict[str, Any]:
    n_layers, n_classes = ctx.n_layers, len(ctx.label_names)
    result: dict[str, Any] = {
        "layers": list(range(n_layers)),
        "n_layers": n_layers,
        "prefix_k": list(range(1, n_layers + 1)),
        "n_clips": ctx.test.n_clips,
        "chance_uar": 1.0 / n_classes,
        "definition": "single[l]: layer l skipped (resid_post = resid_pre); prefix[k-1]: layers 0..k-1 skipped; "
        "deltas are erased minus intact, paired per clip",
    }
    result.update(erasure_curves(erasure_logits(ctx.adapted, ctx.test, ctx.device, desc="erasure: adapted"), n_classes,
                                 ctx.n_boot, ctx.seed))
    if ctx.frozen is not None and ctx.option(NAME, "include_frozen", True):
        result["frozen"] = erasure_curves(erasure_logits(ctx.frozen, ctx.test, ctx.device, desc="erasure: frozen"),
                                          n_classes, ctx.n_boot, ctx.seed)
    return result


def _argmax(values: list[float | None], sign: float = 1.0) -> int:
    v = np.array([np.nan if x is None else sign * x for x in values], dtype=float)
    return int(np.nanargmax(v))


def reading(result: dict[str, Any]) -> str:
    n = result["n_layers"]
    single, prefix, base = result["single"], result["prefix"], result["baseline"]
    worst = _argmax(single["delta_loss"]["value"])
    worst_uar = _argmax(single["delta_uar"]["value"], -1.0)
    rise = single["delta_loss"]["value"][worst]
    loss_part = (
        f"raises the loss most at layer {worst} of 0..{n - 1} ({rise:+.3g} nats)" if rise is not None and rise > 0
        else "raises the loss at no layer"
    )
    drop = single["delta_uar"]["value"][worst_uar]
    uar_part = (
        f"lowers UAR most at layer {worst_uar} ({drop:+.2f})" if drop is not None and drop < 0
        else "lowers UAR at no layer"
    )
    half = max(1, n // 2)
    text = (
        f"Intact, the adapted model has UAR {base['uar']:.2f} and mean loss {base['loss']:.3g} nats. Erasing a single "
        f"layer {loss_part} and {uar_part}. Erasing the first "
        f"{half} layers changes UAR by {prefix['delta_uar']['value'][half - 1]:+.2f}, all {n} by "
        f"{prefix['delta_uar']['value'][-1]:+.2f} (chance {result['chance_uar']:.2f})."
    )
    if "frozen" in result:
        fr = result["frozen"]
        fw = _argmax(fr["single"]["delta_loss"]["value"])
        text += (f" In the frozen model the largest loss increase from a single erasure is at layer {fw} "
                 f"({fr['single']['delta_loss']['value'][fw]:+.3g} nats).")
    return text


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from loralens.plots.figures import new_figure, report_style, save_figure

    n = result["n_layers"]
    models = {"adapted": result}
    if "frozen" in result:
        models["frozen"] = result["frozen"]
    ylabels = {
        "delta_uar": "Δ UAR (erased − intact)",
        "delta_loss": "Δ cross-entropy (nats)",
        "delta_confidence": "Δ confidence (p of predicted class)",
    }
    with report_style():
        fig, axes = new_figure(10.5, 6.0, 2, 3)
        for row, (kind, xlabel) in enumerate(
            (("single", "erased layer (skipped: output = input)"), ("prefix", "k: layers 0..k−1 erased"))
        ):
            xs = list(range(n)) if kind == "single" else list(range(1, n + 1))
            for col, metric in enumerate(ylabels):
                ax = axes[row][col]
                plot_curves(ax, {m: r[kind][metric] for m, r in models.items()}, x=xs, legend=row == 0 and col == 0)
                ax.axhline(0.0, color="0.5", lw=0.8)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(ylabels[metric])
                layer_ticks(ax, n, offset=0 if kind == "single" else 1)
        axes[0][0].set_title("single-layer erasure")
        axes[1][0].set_title("prefix erasure")
        paths = save_figure(fig, Path(out_dir) / "erasure")
    return [Path(p) for p in paths]


register(
    Analysis(
        name=NAME,
        title="Layer erasure: skipping single layers and the first k layers",
        run=run,
        plot=plot,
        reading=reading,
    )
)

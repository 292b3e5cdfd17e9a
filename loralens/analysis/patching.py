"""Activation patching between the adapted and the frozen model: where does the task information the adapted model
uses enter the residual stream?

Direction `adapted_to_frozen` (source = adapted, destination = frozen), per clip and per layer l:
1. run the source on the clip and take its residual stream after layer l (`blocks.{l}.hook_resid_post`, every frame);
2. run the DESTINATION encoder's layers l+1..L-1 and final layer norm from it (same clip, same frames, same mask);
3. read the result out with the SOURCE model's head (masked mean pooling, projector, classifier), because the question
   is how much of what the source's head reads is already in the residual at layer l.

The references are the clean source run (source encoder + source head) and the corrupted run (destination encoder
from the start + source head). With the correct-class logit difference of a clip

    LD(z, y) = z_y - mean_{c != y} z_c

the recovered fraction at layer l is a ratio of means over clips (not a mean of per-clip ratios, which explode
when a clip's clean and corrupted LD are close):

    recovered(l) = (mean LD_patched(l) - mean LD_corrupt) / (mean LD_clean - mean LD_corrupt)

0 = none of the source's logit difference over the corrupted run is recovered, 1 = all of it. A value that rises
only at late l means the task information the adapted head reads is written late. Patching the last layer gives the
clean run exactly (fraction 1) when both encoders share the final layer norm (LoRA leaves it untouched; a full
fine-tune changes it); patching every layer's resid_post at once likewise reproduces the source. CIs: percentile
bootstrap over clips of the ratio (resamples with a zero denominator are left out). `uar` is the UAR of the patched
read-out per layer; `frozen_to_adapted` is the same with the roles swapped (source = frozen, its head, the adapted
encoder's later layers).

A weighted-layer-sum head reads every hidden state, not only the last. The patched run's hidden states are then the
source's up to the patch (embeddings .. resid_post of layer l, which is what was patched in) and the destination's
continuation after it, so that patching at l asks the same question: how much of what the source's head reads is
fixed once the source's residual stream up to layer l is. Patching the last layer is again the clean run exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from loralens.analysis.capture import patch_from
from loralens.analysis.context import AnalysisContext, SplitData
from loralens.analysis.passes import batches_with_progress
from loralens.analysis.suite import Analysis, register
from loralens.errors import ConfigError
from loralens.models.classifier import EmotionClassifier
from loralens.models.runner import RESID_POST
from loralens.numerics.bootstrap import resample_counts, resample_indices
from loralens.numerics.curves import bootstrap_uar, curve_from_boot, depth_fraction, mean_curve, mean_point, uar_curve
from loralens.plots.curves import layer_ticks, plot_curves

NAME = "patching"
DIRECTIONS: dict[str, tuple[str, str]] = {"adapted_to_frozen": ("adapted", "frozen"),
                                          "frozen_to_adapted": ("frozen", "adapted")}
DEFAULT_RECOVERY_THRESHOLD = 0.5


@dataclass
class PatchLogits:
    """Logits read by the source head: clean `[n, C]` (source run), corrupt `[n, C]` (destination encoder),
    patched `[n, L, C]` (source resid_post of layer l, destination layers after it); labels `[n]`."""

    clean: Tensor
    corrupt: Tensor
    patched: Tensor
    labels: Tensor


def _check_heads(*clfs: EmotionClassifier) -> None:
    n = {c.runner.n_layers for c in clfs}
    if len(n) != 1:
        raise ConfigError(f"source and destination encoders have different depths {sorted(n)}")


def _read(head_clf: EmotionClassifier, hidden_states: list[Tensor], lengths: Tensor) -> Tensor:
    """The logits of `head_clf`'s head on a run's hidden states (it pools the last one, or all of them with the
    weighted layer sum)."""
    return head_clf.head.classify(head_clf.head.pool(hidden_states, lengths))


class _Collected:
    """Per-batch logits of one direction, concatenated into a `PatchLogits` at the end."""

    def __init__(self) -> None:
        self.clean: list[Tensor] = []
        self.corrupt: list[Tensor] = []
        self.patched: list[Tensor] = []
        self.labels: list[Tensor] = []

    def add(self, source: EmotionClassifier, dest: EmotionClassifier, src: Any, dst_encoder: Any, mel: Tensor,
            labels: Tensor, names: list[str]) -> None:
        """One batch: `src` the source's `ClassifierOutput` with every resid_post captured, `dst_encoder` the
        destination's `RunnerOutput` on the same batch; the destination restarts from each patched residual."""
        lengths = src.encoder.lengths
        per_layer = []
        for l, name in enumerate(names):
            out = dest.runner(None, mel, start_at=(l, src.encoder.captured[name]), skip_layers=[l])
            # out.hidden_states: resid_pre of layers l..L-1 (the first is the patched residual itself, layer l being
            # skipped), then the final-normed output; before them the source's hidden states 0..l
            per_layer.append(_read(source, src.encoder.hidden_states[: l + 1] + out.hidden_states[1:], lengths))
        self.clean.append(src.logits.float().cpu())
        self.corrupt.append(_read(source, dst_encoder.hidden_states, dst_encoder.lengths).float().cpu())
        self.patched.append(torch.stack(per_layer, dim=1).float().cpu())
        self.labels.append(labels.long().cpu())

    def result(self) -> PatchLogits:
        return PatchLogits(torch.cat(self.clean), torch.cat(self.corrupt), torch.cat(self.patched),
                           torch.cat(self.labels))


@torch.no_grad()
def patching_logits(source: EmotionClassifier, dest: EmotionClassifier, split: SplitData,
                    device: torch.device | str = "cpu", desc: str | None = None) -> PatchLogits:
    """Clean, corrupted and per-layer patched logits (see the module docstring); the destination restarts from the
    patched residual (`start_at=(l, resid)` with layer l skipped), so each layer costs only the layers after it."""
    return patching_logits_directions({"source": source, "dest": dest}, {"only": ("source", "dest")}, split, device,
                                      desc)["only"]


@torch.no_grad()
def patching_logits_directions(models: dict[str, EmotionClassifier], directions: dict[str, tuple[str, str]],
                               split: SplitData, device: torch.device | str = "cpu",
                               desc: str | None = None) -> dict[str, PatchLogits]:
    """`patching_logits` of several directions (name -> (source key, destination key) of `models`) at once: each
    model's full run (with every resid_post captured) is done once per batch and serves every direction it is the
    source or the destination of (both directions between two models: 2 full runs a batch instead of 4)."""
    for src_key, dst_key in directions.values():
        _check_heads(models[src_key], models[dst_key])
    used = sorted({k for pair in directions.values() for k in pair})
    n_layers = models[used[0]].runner.n_layers
    names = [f"blocks.{l}.{RESID_POST}" for l in range(n_layers)]
    collected = {key: _Collected() for key in directions}
    for batch in batches_with_progress(split, split.n_clips, desc):
        feats, mel = batch.features.to(device), batch.mel_lengths.to(device)
        for k in used:
            models[k].select_clips(batch.ids)
        runs = {k: models[k].run(feats, mel, capture=names) for k in used}
        for key, (src_key, dst_key) in directions.items():
            collected[key].add(models[src_key], models[dst_key], runs[src_key], runs[dst_key].encoder, mel,
                               batch.labels, names)
    return {key: c.result() for key, c in collected.items()}


@torch.no_grad()
def patch_run(source: EmotionClassifier, dest: EmotionClassifier, features: Tensor, mel_lengths: Tensor,
              layers: Iterable[int]) -> Tensor:
    """From scratch: the destination encoder with its resid_post of every layer in `layers` replaced by the
    source's (same clip, all frames), read by the source head -> logits `[batch, C]`. No layers: the corrupted run.
    A weighted-layer-sum head reads the source's hidden states 0..m (m the highest patched layer) and the patched
    run's after them (the module docstring)."""
    _check_heads(source, dest)
    layers = sorted({int(l) for l in layers})
    names = [f"blocks.{l}.{RESID_POST}" for l in layers]
    src = source.runner(features, mel_lengths, capture=names)
    out = dest.runner(features, mel_lengths, edits={n: patch_from(src.captured[n]) for n in names})
    states = out.hidden_states
    if layers:
        states = src.hidden_states[: layers[-1] + 1] + states[layers[-1] + 1:]
    return _read(source, states, out.lengths)


def logit_diff(logits: Tensor, labels: Tensor) -> np.ndarray:
    """Correct-class logit difference z_y - mean_{c != y} z_c per clip: logits `[n, C]` or `[n, L, C]` -> `[n]` or
    `[n, L]` (float64)."""
    z = logits.double()
    n_classes = z.shape[-1]
    y = labels.long().view(-1, *([1] * (z.dim() - 2)), 1).expand(*z.shape[:-1], 1)
    correct = z.gather(-1, y).squeeze(-1)
    others = (z.sum(dim=-1) - correct) / (n_classes - 1)
    return (correct - others).numpy()


def recovered_fraction(patched_ld: np.ndarray, clean_ld: np.ndarray, corrupt_ld: np.ndarray, n_boot: int, seed: int
                       ) -> dict[str, list[float]]:
    """(mean patched - mean corrupt) / (mean clean - mean corrupt) per column of `patched_ld [n, L]`, with a
    percentile bootstrap CI over clips (ratio recomputed on each resample; zero denominators give NaN, left out)."""
    patched_ld = np.asarray(patched_ld, dtype=np.float64)
    n = patched_ld.shape[0]
    counts = np.vstack([np.ones((1, n)), resample_counts(resample_indices(n, n_boot, seed), n)])  # row 0: full sample
    counts /= n
    num = counts @ patched_ld - (counts @ corrupt_ld)[:, None]
    den = (counts @ clean_ld - counts @ corrupt_ld)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(np.abs(den) > 1e-12, num / np.where(np.abs(den) > 1e-12, den, 1.0), np.nan)
    return curve_from_boot(frac[0], frac[1:])


def direction_result(logits: PatchLogits, n_classes: int, n_boot: int, seed: int) -> dict[str, Any]:
    """Curves of one direction: `recovered_logit_diff`, `uar`, `logit_diff` over layers, and the clean / corrupted
    references."""
    y = logits.labels
    clean_ld, corrupt_ld = logit_diff(logits.clean, y), logit_diff(logits.corrupt, y)
    patched_ld = logit_diff(logits.patched, y)
    yn = y.numpy()

    def uar_scalar(pred: np.ndarray) -> dict[str, float]:
        return bootstrap_uar(yn, pred, n_classes, n_boot, seed, std=False)

    return {
        "recovered_logit_diff": recovered_fraction(patched_ld, clean_ld, corrupt_ld, n_boot, seed),
        "uar": uar_curve(logits.patched.argmax(-1).numpy(), yn, n_classes, n_boot, seed),
        "logit_diff": mean_curve(patched_ld, n_boot, seed),
        "clean_logit_diff": mean_point(clean_ld, n_boot, seed),
        "corrupt_logit_diff": mean_point(corrupt_ld, n_boot, seed),
        "clean_uar": uar_scalar(logits.clean.argmax(-1).numpy()),
        "corrupt_uar": uar_scalar(logits.corrupt.argmax(-1).numpy()),
        "last_layer_max_abs_logit_diff": float((logits.patched[:, -1] - logits.clean).abs().max()),
    }


def run(ctx: AnalysisContext) -> dict[str, Any]:
    frozen = ctx.require_frozen(NAME)
    models = {"adapted": ctx.adapted, "frozen": frozen}
    n_layers, n_classes = ctx.n_layers, len(ctx.label_names)
    result: dict[str, Any] = {
        "layers": list(range(n_layers)),
        "n_layers": n_layers,
        "n_clips": ctx.test.n_clips,
        "recovery_threshold": float(ctx.option(NAME, "recovery_threshold", DEFAULT_RECOVERY_THRESHOLD)),
        "definition": "X_to_Y: X's resid_post at layer l into Y's encoder (layers l+1.., final norm), read by X's "
                      "head; "
        "recovered = (mean LD_patched - mean LD(Y encoder, X head)) / (mean LD(X) - mean LD(Y encoder, X head)), "
        "LD = logit of the true class minus the mean of the others",
    }
    both = patching_logits_directions(models, DIRECTIONS, ctx.test, ctx.device, desc="patching: both directions")
    for key in DIRECTIONS:
        result[key] = direction_result(both[key], n_classes, ctx.n_boot, ctx.seed)
    return result


def first_at_least(values: list[float | None], threshold: float) -> int | None:
    for i, v in enumerate(values):
        if v is not None and v >= threshold:
            return i
    return None


def reading(result: dict[str, Any]) -> str:
    n = result["n_layers"]
    thr = result.get("recovery_threshold", DEFAULT_RECOVERY_THRESHOLD)
    r = result["adapted_to_frozen"]
    l = first_at_least(r["recovered_logit_diff"]["value"], thr)
    where = f"from layer {l} of 0..{n - 1} (depth {depth_fraction(l, n):.2f})" if l is not None else "at no layer"
    text = (
        f"Patching the adapted model's residual stream into the frozen encoder recovers at least {thr:.0%} of the "
        f"adapted model's correct-class logit difference {where}: the clean adapted run has LD "
        f"{r['clean_logit_diff']['value']:.3g}, the frozen encoder with the adapted head "
        f"{r['corrupt_logit_diff']['value']:.3g}. "
        f"UAR of the patched read-out goes from {r['uar']['value'][0]:.2f} (layer 0) to {r['uar']['value'][-1]:.2f} "
        f"(last layer; clean {r['clean_uar']['value']:.2f})."
    )
    rf = result.get("frozen_to_adapted")
    if rf:
        lf = first_at_least(rf["recovered_logit_diff"]["value"], thr)
        wf = f"layer {lf}" if lf is not None else "no layer"
        text += (" In the reverse direction (frozen residual into the adapted encoder, frozen head) the threshold is "
                 f"reached at {wf}.")
    return text


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from loralens.plots.figures import new_figure, report_style, save_figure

    n = result["n_layers"]
    labels = {"adapted_to_frozen": "adapted → frozen encoder (adapted head)",
              "frozen_to_adapted": "frozen → adapted encoder (frozen head)"}
    series = {labels[k]: result[k] for k in DIRECTIONS if result.get(k)}
    with report_style():
        fig, axes = new_figure(9.0, 3.4, 1, 2)
        plot_curves(axes[0], {k: v["recovered_logit_diff"] for k, v in series.items()})
        axes[0].axhline(0.0, color="0.5", lw=0.8)
        axes[0].axhline(1.0, color="0.5", lw=0.8, ls="--")
        axes[0].set_ylabel("recovered fraction of correct-class logit diff.")
        # a ratio's CI can be very wide where the clean and corrupted runs are close: keep the values in view
        vals = [v for c in series.values() for v in c["recovered_logit_diff"]["value"] if v is not None]
        axes[0].set_ylim(min([-0.25, *[v - 0.1 for v in vals]]), max([1.25, *[v + 0.1 for v in vals]]))
        plot_curves(axes[1], {k: v["uar"] for k, v in series.items()}, legend=False)
        axes[1].set_ylabel("UAR of the patched read-out")
        for ax in axes:
            ax.set_xlabel("patched layer l (its output, resid_post)")
            layer_ticks(ax, n)
        paths = save_figure(fig, Path(out_dir) / "patching")
    return [Path(p) for p in paths]


register(
    Analysis(
        name=NAME,
        title="Activation patching between the adapted and the frozen model",
        run=run,
        plot=plot,
        reading=reading,
    )
)

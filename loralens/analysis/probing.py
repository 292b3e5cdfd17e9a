"""Linear probing of every hidden state (embeddings + each layer's output) for emotion and, as a control, speaker.

For hidden state h = 0..L (transformers' `hidden_states`: 0 = embeddings, L = final-normed output) each clip is
pooled over its valid frames and a linear probe (`loralens.numerics.probes`: standardise + multinomial logistic
regression) is fitted, for the adapted and the frozen encoder:

- emotion: fitted on the fold's training clips (`ctx.train`), scored by UAR on the fold's test clips (`ctx.test`,
  other speakers); percentile-bootstrap CI over test clips. With `options["probing"]["inner_folds"] = k`, also a
  k-fold speaker-grouped CV inside the training split (`cv_uar`: mean and std over the inner folds).
- `emotion_gap.uar`: adapted - frozen test UAR per hidden state with a paired bootstrap interval (both UARs on the
  same resamples; the verdict on delayed specialization reads it).
- shuffled-label control (adapted): the same probe fitted on permuted training labels; must sit at chance.
- speaker identity (general information retained): speakers of the training split, each speaker's clips split over
  the folds (`within_speaker_folds`), scored by balanced accuracy of the out-of-fold predictions.

Options (`options["probing"]`): c (float or grid, default 1.0), inner_folds (None), speaker_folds (5),
shuffled_control (True), max_iter (2000).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import GroupKFold

from loralens.analysis.context import AnalysisContext, SplitData
from loralens.analysis.passes import PooledHiddenObserver, run_pass
from loralens.analysis.suite import Analysis, register
from loralens.models.classifier import EmotionClassifier
from loralens.numerics.curves import bootstrap_uar, paired_uar_gap, stack_curve
from loralens.numerics.inputs import AnalysisInputError
from loralens.numerics.probes import fit_probe, within_speaker_folds
from loralens.numerics.uar import uar_weighted

NAME = "probing"


# ----------------------------------------------------------------------------- shared helpers
def pooled_hidden_states(model: EmotionClassifier, split: SplitData, device: torch.device) -> list[np.ndarray]:
    """Each hidden state pooled over each clip's valid frames: L + 1 arrays `[n_clips, d_model]` float32 (clip
    order of `split`). Index 0 is the embeddings, L the final-normed encoder output."""
    observers = {"pooled_hidden": PooledHiddenObserver(model)}
    return run_pass(model, split.batches, observers, device)["pooled_hidden"].per_layer


# ----------------------------------------------------------------------------- probes
def _emotion_probe(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, groups: np.ndarray | None,
    c: Any, n_classes: int, n_boot: int, seed: int, max_iter: int, inner: int,
) -> tuple[dict[str, float], float, np.ndarray]:
    probe, c_used = fit_probe(x_tr, y_tr, c, groups=groups, inner_folds=inner, max_iter=max_iter, seed=seed)
    pred = probe.predict(x_te)
    point = bootstrap_uar(y_te, pred, n_classes, n_boot, seed)
    return point, c_used, pred


def _cv_oof(
    x: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], c: Any, n_classes: int,
    n_boot: int, seed: int, max_iter: int,
) -> dict[str, float]:
    """Cross-validated probe: out-of-fold predictions of every example -> balanced accuracy with a bootstrap CI,
    plus mean and std (ddof 0) of the per-fold scores (`fold_mean`, `fold_std`)."""
    pred = np.full(y.size, -1, dtype=np.int64)
    scores = []
    c_fixed = c if isinstance(c, (int, float)) else float(np.median(c))
    for tr, te in folds:
        probe, _ = fit_probe(x[tr], y[tr], c_fixed, max_iter=max_iter, seed=seed)
        pred[te] = probe.predict(x[te])
        scores.append(float(uar_weighted(pred[te], y[te], np.ones((1, te.size)), n_classes)[0]))
    done = pred >= 0
    point = bootstrap_uar(y[done], pred[done], n_classes, n_boot, seed)
    point["fold_mean"] = float(np.mean(scores))
    point["fold_std"] = float(np.std(scores))
    return point


def _speaker_codes(speakers: list[str], n_folds: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Indices of the clips whose speaker has >= n_folds clips, their speaker codes, and the kept speaker names."""
    s = np.asarray(speakers)
    names, counts = np.unique(s, return_counts=True)
    keep_names = [str(n) for n, k in zip(names, counts) if k >= n_folds]
    keep = np.flatnonzero(np.isin(s, keep_names))
    codes = np.searchsorted(np.asarray(keep_names), s[keep])
    return keep, codes, keep_names


def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Probe every hidden state of the adapted and the frozen encoder; see the module docstring."""
    frozen = ctx.require_frozen(NAME)
    train = ctx.require_train(NAME)
    c = ctx.option(NAME, "c", 1.0)
    inner = ctx.option(NAME, "inner_folds", None)
    speaker_folds = int(ctx.option(NAME, "speaker_folds", 5))
    shuffled = bool(ctx.option(NAME, "shuffled_control", True))
    max_iter = int(ctx.option(NAME, "max_iter", 2000))
    n_classes = len(ctx.label_names)
    y_tr, y_te = train.labels.numpy(), ctx.test.labels.numpy()
    if np.unique(y_tr).size < 2:
        raise AnalysisInputError("probing: the training split holds a single class")
    spk_tr = list(train.speakers)
    has_speakers = len(spk_tr) == train.n_clips
    groups = np.asarray(spk_tr) if has_speakers else None
    grid = not isinstance(c, (int, float))
    if grid and groups is not None and np.unique(groups).size < int(inner or 3):
        groups = None  # GroupKFold needs as many speakers as inner folds: fall back to stratified folds

    result: dict[str, Any] = {
        "n_layers": ctx.n_layers,
        "layers": list(range(ctx.n_layers)),
        "hidden_states": list(range(ctx.n_layers + 1)),
        "label_names": list(ctx.label_names),
        "n_train_clips": int(train.n_clips),
        "n_test_clips": int(ctx.test.n_clips),
        "chance": {"emotion": 1.0 / n_classes, "speaker": None},
        "emotion": {},
        "speaker": {},
        "options": {"c": c, "inner_folds": inner, "speaker_folds": speaker_folds, "shuffled_control": shuffled},
    }
    feats = {}
    preds: dict[str, list[np.ndarray]] = {}
    for label, _model in (("adapted", ctx.adapted), ("frozen", frozen)):
        x_tr = ctx.observed("pooled_hidden", label, "train", NAME).per_layer
        x_te = ctx.observed("pooled_hidden", label, "test", NAME).per_layer
        feats[label] = x_tr, x_te
        points, cs = [], []
        preds[label] = []
        for l in range(len(x_tr)):
            p, c_used, pred = _emotion_probe(
                x_tr[l], y_tr, x_te[l], y_te, groups, c, n_classes, ctx.n_boot, ctx.seed, max_iter,
                int(inner or 3),
            )
            points.append(p)
            cs.append(c_used)
            preds[label].append(pred)
        entry: dict[str, Any] = {"uar": stack_curve(points), "c": cs}
        if inner:
            if not has_speakers:
                raise AnalysisInputError("probing: inner_folds needs the speakers of the training split")
            n_spk = np.unique(spk_tr).size
            k = min(int(inner), n_spk)
            if k < 2:
                raise AnalysisInputError(f"probing: inner_folds={inner} needs >= 2 training speakers, has {n_spk}")
            folds = list(GroupKFold(n_splits=k).split(x_tr[0], y_tr, np.asarray(spk_tr)))
            cv = [_cv_oof(x, y_tr, folds, c, n_classes, ctx.n_boot, ctx.seed, max_iter) for x in x_tr]
            entry["cv_uar"] = stack_curve(cv)
            entry["cv_folds"] = k
        result["emotion"][label] = entry
    result["emotion_gap"] = {"uar": stack_curve([
        paired_uar_gap(y_te, pa, pf, n_classes, ctx.n_boot, ctx.seed)
        for pa, pf in zip(preds["adapted"], preds["frozen"])
    ])}

    if shuffled:
        perm_y = np.random.default_rng(ctx.seed).permutation(y_tr)
        x_tr, x_te = feats["adapted"]
        pts = [
            _emotion_probe(x_tr[l], perm_y, x_te[l], y_te, groups, c, n_classes, ctx.n_boot, ctx.seed, max_iter,
                           int(inner or 3))[0]
            for l in range(len(x_tr))
        ]
        result["emotion"]["shuffled_adapted"] = {"uar": stack_curve(pts)}

    if has_speakers:
        keep, codes, names = _speaker_codes(spk_tr, speaker_folds)
        if len(names) >= 2:
            folds = within_speaker_folds(codes, speaker_folds, ctx.seed)
            for label in ("adapted", "frozen"):
                x_tr = feats[label][0]
                pts = [_cv_oof(x[keep], codes, folds, 1.0, len(names), ctx.n_boot, ctx.seed, max_iter) for x in x_tr]
                result["speaker"][label] = {"accuracy": stack_curve(pts)}
            result["chance"]["speaker"] = 1.0 / len(names)
            result["speaker"]["n_speakers"] = len(names)
            result["speaker"]["n_clips"] = int(keep.size)
        else:
            result["speaker"]["skipped"] = f"fewer than 2 training speakers with >= {speaker_folds} clips"
    else:
        result["speaker"]["skipped"] = "the training split has no speaker labels"
    return result


# ----------------------------------------------------------------------------- plot and reading
def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Emotion UAR and speaker accuracy per hidden state, adapted vs frozen, with 95 % bootstrap bands."""
    from loralens.plots.figures import new_figure, report_style, save_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hs = result["hidden_states"]
    has_spk = "adapted" in result["speaker"]
    fig, axes = new_figure(9.0 if has_spk else 5.0, 3.4, 1, 2 if has_spk else 1)
    axes = list(np.atleast_1d(axes))
    colors = {"adapted": "C0", "frozen": "C1", "shuffled_adapted": "0.5"}
    names = {"adapted": "LoRA-adapted", "frozen": "frozen", "shuffled_adapted": "adapted, shuffled labels"}
    with report_style():
        ax = axes[0]
        for key, entry in result["emotion"].items():
            cur = entry["uar"]
            ax.plot(hs, cur["value"], marker="o", ms=3, color=colors[key], label=names[key],
                    ls="--" if key.startswith("shuffled") else "-")
            ax.fill_between(hs, cur["low"], cur["high"], color=colors[key], alpha=0.2, lw=0)
        ax.axhline(result["chance"]["emotion"], color="k", lw=0.8, ls=":", label="chance")
        ax.set_xlabel("hidden state (0 = embeddings, L = encoder output)")
        ax.set_ylabel("emotion probe UAR on test speakers")
        ax.set_title("Emotion probe")
        ax.set_xticks(hs)
        ax.legend()
        if has_spk:
            ax = axes[1]
            for key in ("adapted", "frozen"):
                cur = result["speaker"][key]["accuracy"]
                ax.plot(hs, cur["value"], marker="o", ms=3, color=colors[key], label=names[key])
                ax.fill_between(hs, cur["low"], cur["high"], color=colors[key], alpha=0.2, lw=0)
            ax.axhline(result["chance"]["speaker"], color="k", lw=0.8, ls=":", label="chance")
            ax.set_xlabel("hidden state (0 = embeddings, L = encoder output)")
            ax.set_ylabel("speaker probe balanced accuracy")
            ax.set_title(f"Speaker identity ({result['speaker']['n_speakers']} training speakers)")
            ax.set_xticks(hs)
            ax.legend()
    return list(save_figure(fig, out_dir / "probing"))


def reading(result: dict[str, Any]) -> str:
    hs = result["hidden_states"]
    L = len(hs) - 1
    ad = np.asarray(result["emotion"]["adapted"]["uar"]["value"])
    fr = np.asarray(result["emotion"]["frozen"]["uar"]["value"])
    ia, ifr = int(ad.argmax()), int(fr.argmax())
    text = (
        f"Emotion is linearly decodable best at hidden state {ia} of {L} in the adapted encoder "
        f"(UAR {ad[ia]:.2f}) and at {ifr} of {L} in the frozen one (UAR {fr[ifr]:.2f}); "
        f"at the encoder output the adapted probe reaches {ad[-1]:.2f} vs {fr[-1]:.2f} "
        f"(chance {result['chance']['emotion']:.2f})."
    )
    sh = result["emotion"].get("shuffled_adapted")
    if sh:
        text += f" With shuffled training labels the probe stays at {np.mean(sh['uar']['value']):.2f} on average."
    if "adapted" in result["speaker"]:
        sa = result["speaker"]["adapted"]["accuracy"]["value"]
        sf = result["speaker"]["frozen"]["accuracy"]["value"]
        text += (
            f" Speaker identity at the output: {sa[-1]:.2f} adapted vs {sf[-1]:.2f} frozen "
            f"(chance {result['chance']['speaker']:.2f})."
        )
    return text


register(Analysis(NAME, "Linear probes per hidden state", run, plot, reading,
                  observes=("pooled_hidden", "pooled_hidden@train")))

"""Logit lens and tuned lens: read every layer's residual stream out through the model's own final layer norm,
pooling and trained head, and compare with the model's final prediction.

Logit lens (nostalgebraist 2020), for layer l of a clip with valid frames t = 1..T:

    u_l = (1/T) sum_t LN_final(resid_post[l, t])         (encoder.layer_norm, then masked mean pooling)
    logits_l = head(u_l) = classifier(projector(u_l))

The final layer norm is applied per frame before pooling, exactly as the model does (the paper's lens omitted it).
At the last layer this IS the model's forward pass, so its logits equal the model's bit for bit
(`last_layer_max_abs_logit_diff`, 0).

With a weighted-layer-sum head the head reads every hidden state h_0 (embeddings) .. h_L (final-normed output),
each pooled, turned into its vector v_j (z-scored and normalised as the head does) and weighted, w = softmax of the
layer weights: logits = head(sum_j w_j v_j), and since the head is affine each hidden state's direct contribution
to the logits is W w_j v_j. The lens of layer l is then the head's read-out of what has been written by that layer,
hidden states 0..l+1, the layers above contributing nothing (the weights are not renormalised):

    u_l = sum_{j <= l+1} w_j v_j,        logits_l = head(u_l)

so that, as with a last-layer head, the last layer's lens is the model's own forward pass, bit for bit, and the
lens shows at which depth the head's final decision has been accumulated. (`readout` in the result names which of
the two read-outs a model had.)

Per layer: KL(p_final || p_l) (nats, mean over clips), top-1 agreement with the model's final prediction, and the
UAR of argmax logits_l against the labels; bootstrap CIs over clips.

Tuned lens (Belrose et al. 2023, "Eliciting latent predictions from transformers with the tuned lens"): a per-layer
affine translator `u -> u + D_l u + b_l` (d x d, the identity at D = 0, b = 0) before the head, fitted on the
TRAINING split with the model frozen, then evaluated on the test fold. Because everything after pooling is affine
(head logits = W u + c, W = classifier.weight @ projector.weight, `[C, d]`), the translated logits are
`logits_l + G_l u + g_l` with `G_l = W D_l`, `g_l = W b_l`: only the C x d matrix G_l matters, and the smallest
translator giving it is `D_l = W^+ G_l`, with `||D_l||_F^2 = tr(G_l^T (W W^T)^+ G_l)`. The penalty
`lam ||D_l||_F^2` (ridge towards the identity translator) is therefore `lam tr(G_l^T M G_l)`, M = (W W^T)^+.
Two fitting objectives, both on the pooled normed residuals u_l of the training clips:

- `lsq` (default): closed-form least squares. The logit gap `final - logit_lens_l`, centred per clip over classes
  (softmax ignores a per-clip constant), is regressed on u_l with that ridge penalty: exactly a linear regression,
  solved through eigendecompositions (no epochs, no learning rate, deterministic).
- `kl`: Belrose et al.'s objective, mean KL(p_final || p_translated) + penalty, a convex multinomial logistic
  regression with the logit-lens logits as offsets and the final probabilities as soft targets, L-BFGS from the
  identity in float64.

`lam` is chosen per layer from a grid by the KL on a held-out 20 % of the training clips; the layer is then refitted
on all of them.

Why pooled *post*-LN vectors: the final LN is applied per frame, so it does not commute with pooling; a translator
on pooled pre-LN residuals would have to absorb a per-frame non-linearity and could not be exact at the last layer,
whereas here D = 0 gives back the logit lens, and at the last layer the gap is 0, so both objectives give exactly
D = 0 there and the tuned lens reproduces the final logits exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from loralens.analysis.context import AnalysisContext, SplitData
from loralens.analysis.passes import register_observer, run_pass, valid_mask
from loralens.analysis.suite import Analysis, register
from loralens.data.batching import Batch
from loralens.errors import ConfigError
from loralens.models.classifier import EmotionClassifier
from loralens.models.runner import RESID_POST
from loralens.numerics.curves import bootstrap_uar, depth_fraction, mean_curve, uar_curve
from loralens.numerics.divergence import kl_divergence, top1_agreement
from loralens.numerics.masking import masked_mean
from loralens.plots.curves import layer_ticks, plot_curves

NAME = "logit_lens"
DEFAULT_L2_GRID: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_AGREEMENT_THRESHOLD = 0.8
OBJECTIVES: tuple[str, ...] = ("lsq", "kl")


@dataclass
class LensReadout:
    """Logit-lens read-outs of one model on one split (clip order of the split).

    final_logits: the model's own logits `[n, C]`. lens_logits: `[n, L, C]`, layer l read out through the final LN,
    pooling and head (with a weighted-layer-sum head: its read-out of hidden states 0..l+1). pooled: the head's inputs
    u_l `[n, L, d]` (pooled normed residuals, or the partial weighted sums). labels `[n]`.
    last_layer_max_abs_diff: max |lens_logits[:, L-1] - final_logits| (0 when the lens is exact).
    """

    final_logits: Tensor
    lens_logits: Tensor
    pooled: Tensor
    labels: Tensor
    last_layer_max_abs_diff: float


READOUT_LAST = "resid_post of layer l -> encoder.layer_norm per frame -> masked mean over valid frames -> head"
READOUT_SUM = ("hidden states 0..l+1 (embeddings, outputs of layers 0..l; the last final-normed) -> masked mean -> "
               "the head's per-layer z-score / normalisation -> their terms of the head's weighted sum (the layers "
               "above contributing nothing) -> head")


def readout_description(clf: EmotionClassifier) -> str:
    """What the lens of `clf` reads at layer l (the module docstring's two cases)."""
    return READOUT_SUM if clf.head.use_weighted_layer_sum else READOUT_LAST


class LensObserver:
    """Observer "lens" of a shared pass: each layer's read-out through the head (`LensReadout`; the module
    docstring's two read-outs). With a last-layer head it is taken while the encoder runs (a pass-through edit at
    each resid_post), so one layer's activations are held at a time, the last layer's computed from the very tensor
    the model then normalises; a weighted-layer-sum head's from the hidden states the run keeps for the head."""

    def __init__(self, clf: EmotionClassifier) -> None:
        self.clf = clf
        self.finals: list[Tensor] = []
        self.lenses: list[Tensor] = []
        self.pooleds: list[Tensor] = []
        self.labels: list[Tensor] = []
        self.max_diff = 0.0
        self._layer_pooled: list[Tensor] = []

    def edits(self, batch: Batch) -> dict[str, Any]:
        clf, mel = self.clf, batch.mel_lengths
        layer_pooled = self._layer_pooled = []
        if clf.head.use_weighted_layer_sum:
            return {}  # it reads the hidden states the run keeps for the head (`update`)

        def observe(t: Tensor) -> Tensor:
            _, lengths = valid_mask(mel, t.shape[0], t.shape[1], t.device)
            # the same operations as the forward pass (final LN per frame, masked mean, head) on the same shapes,
            # so the last layer reproduces the model's logits bit for bit
            layer_pooled.append(clf.head.pool(clf.encoder.layer_norm(t), lengths))
            return t

        return {f"blocks.{l}.{RESID_POST}": observe for l in range(clf.runner.n_layers)}

    def update(self, batch: Batch, out: Any) -> None:
        head = self.clf.head
        if head.use_weighted_layer_sum:
            # the same pooling, stacking and weighting as head.pool, so that the last partial sum is its own input
            enc = out.encoder
            vectors = head.layer_vectors(torch.stack([masked_mean(h, enc.lengths) for h in enc.hidden_states], dim=1))
            self._layer_pooled[:] = [head.weighted_sum(vectors, upto=l + 2) for l in range(vectors.shape[1] - 1)]
        layer_logits = [head.classify(p) for p in self._layer_pooled]
        self.max_diff = max(self.max_diff, float((layer_logits[-1] - out.logits).abs().max()))
        self.finals.append(out.logits.float().cpu())
        self.lenses.append(torch.stack(layer_logits, dim=1).float().cpu())
        self.pooleds.append(torch.stack(self._layer_pooled, dim=1).float().cpu())
        if batch.labels is not None:
            self.labels.append(batch.labels.long().cpu())

    def result(self) -> LensReadout:
        return LensReadout(
            final_logits=torch.cat(self.finals),
            lens_logits=torch.cat(self.lenses),
            pooled=torch.cat(self.pooleds),
            labels=torch.cat(self.labels) if len(self.labels) == len(self.finals) else torch.empty(0, dtype=torch.long),
            last_layer_max_abs_diff=self.max_diff,
        )


register_observer("lens", LensObserver)


def lens_readout(clf: EmotionClassifier, split: SplitData, device: torch.device | str = "cpu") -> LensReadout:
    """Run `clf` on every batch of `split`, reading each layer's resid_post out through the final LN and head
    (a pass with `LensObserver` alone)."""
    return run_pass(clf, split.batches, {"lens": LensObserver(clf)}, device)["lens"]


# ----------------------------------------------------------------------------- tuned lens
def head_matrix(clf: EmotionClassifier) -> Tensor:
    """W `[C, d]` float64: the head's logits are `W u + c` for a pooled vector u (projector and classifier are
    affine)."""
    return (clf.head.classifier.weight.double() @ clf.head.projector.weight.double()).detach().cpu()


def translator_metric(w: Tensor) -> Tensor:
    """M = (W W^T)^+ `[C, C]`: ||D||_F^2 of the smallest translator D with W D = G is tr(G^T M G)."""
    return torch.linalg.pinv(w @ w.T, hermitian=True)


def fit_tuned_layer(
    u: Tensor, offset: Tensor, target_logits: Tensor, metric: Tensor, l2: float, max_iter: int = 200
) -> tuple[Tensor, Tensor]:
    """Fit one layer's tuned-lens correction: G `[C, d]`, g `[C]` minimising
    mean_i KL(softmax(target_i) || softmax(offset_i + G u_i + g)) + l2 tr(G^T M G).

    u: pooled normed residuals `[n, d]`; offset: their logit-lens logits `[n, C]`; target_logits: the final logits
    `[n, C]`; metric: M `[C, C]` (see `translator_metric`). Convex; L-BFGS from G = 0, g = 0 (the identity
    translator) in float64. When the offset already equals the target the gradient at the start is 0 and the
    result is exactly G = 0, g = 0.
    """
    u, offset, target = u.double(), offset.double(), target_logits.double()
    metric = metric.double()
    log_p = torch.log_softmax(target, dim=-1)
    p = log_p.exp()
    n_classes, d = target.shape[1], u.shape[1]
    g_mat = torch.zeros(n_classes, d, dtype=torch.float64, requires_grad=True)
    g_vec = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [g_mat, g_vec], lr=1.0, max_iter=max_iter, tolerance_grad=1e-8, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def objective() -> Tensor:
        opt.zero_grad()
        logits = offset + u @ g_mat.T + g_vec
        kl = (p * (log_p - torch.log_softmax(logits, dim=-1))).sum(-1).mean()
        loss = kl + l2 * torch.einsum("cd,ce,ed->", g_mat, metric, g_mat)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(objective)
    return g_mat.detach(), g_vec.detach()


def lsq_solver(u: Tensor, offset: Tensor, target_logits: Tensor, metric: Tensor):
    """Closed-form tuned-lens correction for any ridge weight: returns `solve(l2) -> (G [C, d], g [C])` minimising
    (1/n) sum_i ||centre(target_i - offset_i) - G u_i - g||^2 + l2 tr(G^T M G),
    `centre` removing each clip's mean over classes (softmax ignores a constant per clip; so does the KL).

    A ridge regression of the logit gap on the pooled vectors: with M = V diag(m_k) V^T, each rotated class k is an
    independent ridge problem with weight l2 * m_k, solved through the eigendecomposition of the clips' centred
    covariance (computed once, shared by all k and all l2). g is free (not penalised). When the offset equals the
    target the gap is 0 and so are G and g, exactly.
    """
    u = u.double()
    y = target_logits.double() - offset.double()
    y = y - y.mean(dim=1, keepdim=True)
    n = u.shape[0]
    u_mean, y_mean = u.mean(dim=0), y.mean(dim=0)
    uc, yc = u - u_mean, y - y_mean
    s, q = torch.linalg.eigh(uc.T @ uc / n)  # [d], [d, d]
    m_vals, v = torch.linalg.eigh(metric.double())
    rhs = q.T @ (uc.T @ (yc @ v)) / n  # [d, C] in the eigenbases
    tiny = 1e-12 * max(float(s.abs().max()), 1e-300)

    def solve(l2: float) -> tuple[Tensor, Tensor]:
        denom = s[:, None] + l2 * m_vals.clamp_min(0.0)[None, :]
        coef = torch.where(denom > tiny, rhs / torch.where(denom > tiny, denom, 1.0), torch.zeros_like(rhs))
        g_mat = v @ (q @ coef).T  # column k of q @ coef is the rotated class k -> [C, d]
        return g_mat, y_mean - g_mat @ u_mean

    return solve


def fit_tuned_layer_lsq(u: Tensor, offset: Tensor, target_logits: Tensor, metric: Tensor,
                        l2: float) -> tuple[Tensor, Tensor]:
    """`lsq_solver(u, offset, target_logits, metric)(l2)`: the closed-form correction for one ridge weight."""
    return lsq_solver(u, offset, target_logits, metric)(l2)


@dataclass
class TunedLens:
    """Per-layer corrections G `[L, C, d]`, g `[L, C]`, the chosen ridge weights `[L]`, the translator norms
    ||D_l||_F (smallest translator giving G_l) `[L]`."""

    g_mat: Tensor
    g_vec: Tensor
    l2: list[float]
    translator_norm: list[float]

    def logits(self, readout: LensReadout) -> Tensor:
        """Tuned-lens logits `[n, L, C]` of a read-out."""
        u = readout.pooled.double()
        return readout.lens_logits.double() + torch.einsum("nld,lcd->nlc", u, self.g_mat) + self.g_vec[None]


def fit_tuned_lens(
    clf: EmotionClassifier, train: LensReadout, grid: tuple[float, ...] = DEFAULT_L2_GRID, seed: int = 0,
    holdout: float = 0.2, objective: str = "lsq",
) -> TunedLens:
    """Fit the tuned lens of every layer on a training read-out; the ridge weight of each layer is the grid value
    with the smallest KL on a random `holdout` share of the training clips, then the layer is refitted on all.
    objective: "lsq" (closed-form least squares on centred logits, `fit_tuned_layer_lsq`) or "kl" (the KL itself,
    L-BFGS, `fit_tuned_layer`)."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"tuned-lens objective {objective!r} unknown", hint=f"choose among {list(OBJECTIVES)}")

    def solvers(u: Tensor, offset: Tensor, target: Tensor):
        if objective == "lsq":
            return lsq_solver(u, offset, target, metric)  # one eigendecomposition for the whole grid
        return lambda lam: fit_tuned_layer(u, offset, target, metric, lam)

    w = head_matrix(clf)
    metric = translator_metric(w)
    n, n_layers = train.pooled.shape[0], train.pooled.shape[1]
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(holdout * n))) if n >= 5 else 0
    val, fit = perm[:n_val], perm[n_val:]
    target = train.final_logits.double()
    g_mats, g_vecs, chosen, norms = [], [], [], []
    for l in range(n_layers):
        u, offset = train.pooled[:, l].double(), train.lens_logits[:, l].double()
        best = grid[0]
        if len(grid) > 1 and n_val:
            solve = solvers(u[fit], offset[fit], target[fit])
            scores = []
            for lam in grid:
                gm, gv = solve(lam)
                logits = offset[val] + u[val] @ gm.T + gv
                scores.append(float(kl_divergence(target[val], logits).mean()))
            best = grid[int(np.argmin(scores))]
        gm, gv = solvers(u, offset, target)(best)
        g_mats.append(gm)
        g_vecs.append(gv)
        chosen.append(float(best))
        norms.append(float(torch.sqrt(torch.einsum("cd,ce,ed->", gm, metric, gm).clamp_min(0.0))))
    return TunedLens(torch.stack(g_mats), torch.stack(g_vecs), chosen, norms)


# ----------------------------------------------------------------------------- curves
def lens_curves(final_logits: Tensor, layer_logits: Tensor, labels: Tensor, n_classes: int, n_boot: int,
                seed: int) -> dict[str, Any]:
    """`kl`, `agreement`, `uar` curves over layers from final logits `[n, C]` and per-layer logits `[n, L, C]`."""
    n_layers = layer_logits.shape[1]
    final = final_logits.double()[:, None, :].expand(-1, n_layers, -1)
    kl = kl_divergence(final, layer_logits.double()).numpy()  # [n, L]
    agree = top1_agreement(final, layer_logits.double()).double().numpy()
    pred = layer_logits.argmax(dim=-1).numpy()
    y = labels.numpy()
    return {
        "kl": mean_curve(kl, n_boot, seed),
        "agreement": mean_curve(agree, n_boot, seed),
        "uar": uar_curve(pred, y, n_classes, n_boot, seed),
    }


def _final_uar(readout: LensReadout, n_classes: int, n_boot: int, seed: int) -> dict[str, float]:
    pred, y = readout.final_logits.argmax(-1).numpy(), readout.labels.numpy()
    return bootstrap_uar(y, pred, n_classes, n_boot, seed, std=False)


def first_layer_at_least(values: list[float | None], threshold: float) -> int | None:
    """First index whose value is >= threshold (None if none)."""
    for i, v in enumerate(values):
        if v is not None and v >= threshold:
            return i
    return None


def run(ctx: AnalysisContext) -> dict[str, Any]:
    n_layers, n_classes = ctx.n_layers, len(ctx.label_names)
    grid = tuple(float(x) for x in ctx.option(NAME, "l2_grid", DEFAULT_L2_GRID))
    objective = str(ctx.option(NAME, "tuned_objective", "lsq"))
    result: dict[str, Any] = {
        "layers": list(range(n_layers)),
        "n_layers": n_layers,
        "n_clips": ctx.test.n_clips,
        "agreement_threshold": float(ctx.option(NAME, "agreement_threshold", DEFAULT_AGREEMENT_THRESHOLD)),
        "readout": readout_description(ctx.adapted),
    }
    models = {"adapted": ctx.adapted}
    if ctx.frozen is not None:
        models["frozen"] = ctx.frozen
    diffs = {}
    for key, clf in models.items():
        test = ctx.observed("lens", key, "test", NAME)
        diffs[key] = test.last_layer_max_abs_diff
        result[key] = lens_curves(test.final_logits, test.lens_logits, test.labels, n_classes, ctx.n_boot, ctx.seed)
        result[key]["final_uar"] = _final_uar(test, n_classes, ctx.n_boot, ctx.seed)
        tuned_key = "tuned" if key == "adapted" else f"tuned_{key}"
        if ctx.train is None:
            result[tuned_key] = None
            result["tuned_skipped"] = "no training split in the context: the tuned lens is fitted on it"
            continue
        lens = fit_tuned_lens(clf, ctx.observed("lens", key, "train", NAME), grid, ctx.seed, objective=objective)
        tuned_logits = lens.logits(test)
        result[tuned_key] = lens_curves(test.final_logits, tuned_logits, test.labels, n_classes, ctx.n_boot, ctx.seed)
        result[tuned_key]["l2"] = lens.l2
        result[tuned_key]["translator_norm"] = lens.translator_norm
        result[tuned_key]["last_layer_max_abs_logit_diff"] = float(
            (tuned_logits[:, -1] - test.final_logits.double()).abs().max()
        )
    result["last_layer_max_abs_logit_diff"] = max(diffs.values())
    result["last_layer_max_abs_logit_diff_by_model"] = diffs
    if ctx.train is not None:
        result["tuned_fit"] = {
            "objective": objective,
            "method": {
                "lsq": "closed-form ridge regression of the centred logit gap (final - logit lens) on pooled post-LN "
                "residuals, ridge towards the identity translator",
                "kl": "KL(final || tuned) on pooled post-LN residuals (multinomial logistic regression with logit-lens "
                "offsets and soft targets), ridge towards the identity translator, L-BFGS from the identity",
            }[objective],
            "split": "train",
            "n_train_clips": ctx.train.n_clips,
            "l2_grid": list(grid),
            "holdout": 0.2,
        }
    return result


def reading(result: dict[str, Any]) -> str:
    n = result["n_layers"]
    thr = result.get("agreement_threshold", DEFAULT_AGREEMENT_THRESHOLD)
    parts = []
    for key, label in (("adapted", "adapted"), ("frozen", "frozen")):
        if key not in result:
            continue
        r = result[key]
        l = first_layer_at_least(r["agreement"]["value"], thr)
        kl0 = r["kl"]["value"][0]
        parts.append(
            f"In the {label} model the logit lens agrees with the final prediction on at least {thr:.0%} of clips "
            f"from layer {l} of 0..{n - 1} (depth {depth_fraction(l, n):.2f}); KL(final || layer) falls from "
            f"{kl0:.3g} nats at layer 0 to {r['kl']['value'][-1]:.3g} at the last layer, and the read-out's UAR "
            f"goes from {r['uar']['value'][0]:.2f} to {r['uar']['value'][-1]:.2f}."
        )
    tuned = result.get("tuned")
    if tuned:
        l = first_layer_at_least(tuned["agreement"]["value"], thr)
        where = f"layer {l} (depth {depth_fraction(l, n):.2f})" if l is not None else "no layer"
        parts.append(f"The tuned lens (fitted on the training split) reaches that agreement at {where}.")
    parts.append("The last-layer lens reproduces the model's logits (max |diff| = "
                 f"{result['last_layer_max_abs_logit_diff']:.3g}).")
    return " ".join(parts)


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from loralens.plots.figures import new_figure, report_style, save_figure

    n = result["n_layers"]
    series = {}
    for key, label in (("adapted", "logit lens, adapted"), ("frozen", "logit lens, frozen"),
                       ("tuned", "tuned lens, adapted"), ("tuned_frozen", "tuned lens, frozen")):
        if result.get(key):
            series[label] = result[key]
    colors = {"logit lens, adapted": "C0", "logit lens, frozen": "C1", "tuned lens, adapted": "C2",
              "tuned lens, frozen": "C3"}
    with report_style():
        fig, axes = new_figure(10.5, 3.3, 1, 3)
        for ax, metric, ylabel in (
            (axes[0], "kl", "KL(p_final ‖ p_layer) (nats)"),
            (axes[1], "agreement", "top-1 agreement with final prediction"),
            (axes[2], "uar", "UAR of the read-out vs labels"),
        ):
            plot_curves(ax, {k: v[metric] for k, v in series.items()}, colors=colors, legend=metric == "kl")
            ax.set_xlabel("encoder layer (read-out of its output)")
            ax.set_ylabel(ylabel)
            layer_ticks(ax, n)
        axes[1].axhline(result.get("agreement_threshold", DEFAULT_AGREEMENT_THRESHOLD), color="0.5", lw=0.8, ls="--")
        axes[1].set_ylim(-0.02, 1.02)
        if "adapted" in result:
            axes[2].axhline(result["adapted"]["final_uar"]["value"], color="C0", lw=0.8, ls=":")
        paths = save_figure(fig, Path(out_dir) / "logit_lens")
    return [Path(p) for p in paths]


register(
    Analysis(
        name=NAME,
        title="Logit lens and tuned lens: each layer read out through the final norm and the trained head",
        run=run,
        plot=plot,
        reading=reading,
        observes=("lens", "lens@train"),
    )
)

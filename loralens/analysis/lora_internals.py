"""Inside the LoRA adapters: what the rank space carries forward (A outputs), what B writes back, and the loss
gradients reaching both, for the trained adapter and two references.

Sample: a class-balanced sample of the fold's test clips, up to `per_class` (default 40) clips of each emotion drawn
without replacement with `ctx.seed` (fewer where a class has fewer clips); the sample depends only on the test
labels and the seed, so runs of different ranks on the same fold see the same clips.

For every adapted module (`blocks.{l}.attn.v_proj`, ...) and on every valid frame of the sample:
- `a_out`: output of lora_A, the rank space `[frames, r]`; `b_out`: output of lora_B, scale included,
  `[frames, d_out]` (the adapter's additive contribution); `a_grad`, `b_grad`: gradients of the summed
  cross-entropy loss of the sample (vs the labels) with respect to a_out and b_out (`grad_capture`).
- singular-value energy of each frame-level matrix (uncentred, i.e. the matrix itself, as an SVD of the output
  matrix; centred values also given): `*_k90` = components for 90 % energy, and the cumulative energy curve.
  An all-zero matrix has no energy: its k90 is 0 and its energy curve empty.
- `cka_ab_forward` = linear CKA(a_out, b_out) over frames and `cka_ab_backward` = CKA(a_grad, b_grad), debiased
  (and `*_biased`); NaN (null in JSON) when one side is identically zero.
- `b_null`: the null distribution of the B side given these A outputs: for `null_draws` (199) seeded Gaussian B
  matrices, the k90 of a_out B^T and the biased linear CKA(a_out, a_out B^T), computed exactly from the Gram of
  a_out (`b_out_from_a`; no extra forward pass). The verdict on claim (ii) ranks the trained B among them.
- t-SNE (sklearn, exact method up to 1000 clips, `random_state=seed`, PCA init, perplexity min(`perplexity`=30,
  (n-1)/3)) of the clip-pooled rank
  space (mean of a_out over valid frames) for chosen layers (`tsne_layers`, default first, middle and last adapted
  layer), with the silhouette score of the emotions in the rank space itself (euclidean).

Variants, built by temporarily swapping lora_A / lora_B weights of the adapted model (restored in a finally):
- `trained`: the adapter as trained;
- `init`: peft's real initialisation: the A the fold started from (kaiming-uniform, a = sqrt(5)) and B = 0, taken
  from `ctx.initial_adapter` (the run loader rebuilds it from the run's seed, exactly as training built it). Without
  it (contexts not built from a run folder) the fallback keeps the trained A with B = 0. `init_a_source` says which:
  "reconstructed peft initialisation" or "trained A (initial weights unavailable)". Either way b_out is exactly 0
  (k90 = 0, CKA null), and so is a_grad (the gradient reaches a_out through B); b_grad still exists.
- `random`: the "untrained" control of Ma et al. 2025: A and B both i.i.d. Gaussian, rescaled to the Frobenius
  norms of the trained A and B (seeded with `ctx.seed`).
t-SNE is given for `trained`, `random`, and `init` when its A is the reconstructed one (the fallback's rank space is
the trained one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from loralens.analysis.context import AnalysisContext
from loralens.analysis.passes import batches_with_progress
from loralens.analysis.suite import Analysis, register
from loralens.data.batching import Batch
from loralens.errors import ConfigError
from loralens.models.lora import ADAPTER, lora_modules
from loralens.models.runner import LORA_A, LORA_B, hook_layer
from loralens.numerics.cka import LinearCKAAccumulator
from loralens.numerics.inputs import AnalysisInputError
from loralens.numerics.masking import masked_mean, valid_frames
from loralens.numerics.spectra import components_for_energy, energy, singular_values_from_gram
from loralens.numerics.streaming import CovarianceAccumulator

NAME = "lora_internals"
KINDS = ("a_out", "b_out", "a_grad", "b_grad")
# clips per backward pass: peak memory is the autograd graph of one pass (about 60 MB per clip and layer for
# `base` on 4-s clips); 4 keeps the suite's peak near the other analyses' at little cost in speed
GRAD_BATCH = 4
VARIANTS = ("trained", "init", "random")
INIT_RECONSTRUCTED = "reconstructed peft initialisation"
INIT_FALLBACK = "trained A (initial weights unavailable)"
#: Random B matrices drawn per module for the null distribution of the B side (`b_null`).
NULL_DRAWS = 199


def balanced_sample(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of up to `per_class` examples of each class, drawn without replacement with `seed`."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picks.append(rng.choice(idx, size=min(per_class, idx.size), replace=False))
    return np.sort(np.concatenate(picks))


def _sample_batches(batches: list[Batch], chosen: np.ndarray) -> Iterator[Batch]:
    """The chosen clips (indices in split order) as sub-batches of the original batches."""
    wanted = set(int(i) for i in chosen)
    start = 0
    for b in batches:
        rows = [r for r in range(len(b.ids)) if start + r in wanted]
        start += len(b.ids)
        if rows:
            sel = torch.tensor(rows)
            yield Batch(b.features[sel], b.mel_lengths[sel], b.labels[sel], [b.ids[r] for r in rows])


def _spectrum_stats(acc: CovarianceAccumulator) -> dict[str, Any]:
    """k90 and cumulative energy of the uncentred and the centred frame matrix streamed into `acc`."""
    gc = acc.centered_gram()
    mu = acc.mean
    graw = gc + acc.count * torch.outer(mu, mu)
    out: dict[str, Any] = {}
    for tag, g in (("", graw), ("_centered", gc)):
        s = singular_values_from_gram(g)
        if s.size == 0 or s[0] <= 0:
            out[f"k90{tag}"], out[f"energy{tag}"] = 0, []
        else:
            out[f"k90{tag}"] = components_for_energy(s, 0.9)
            out[f"energy{tag}"] = [float(v) for v in energy(s)]
    out["frobenius"] = float(math.sqrt(max(float(torch.trace(graw)), 0.0)))
    return out


def b_out_from_a(gram: torch.Tensor, centered: torch.Tensor, b: torch.Tensor) -> tuple[int, float | None]:
    """k90 of the uncentred frame matrix b_out = a B^T and the biased linear CKA(a_out, b_out) over frames, from
    the Gram matrices of the A outputs alone: `gram` = A^T A-style uncentred `[r, r]`, `centered` its column-centred
    version, `b` a B matrix `[d_out, r]` (any scale: both numbers are scale-invariant).

    With M = B^T B: the squared singular values of a B^T are the eigenvalues of G^1/2 M G^1/2, and with C the
    centred Gram, CKA = tr(C^2 M) / sqrt(tr(C^2) tr(C M C M)). Equals what lora_internals measures on the b_out
    it captures when `b` is the module's own (scaled) B; (k90, None) when a side has no variance."""
    m = b.T.double() @ b.double()
    ev, vec = torch.linalg.eigh((gram.double() + gram.double().T) / 2)
    root = vec @ torch.diag(ev.clamp_min(0.0).sqrt()) @ vec.T
    s = singular_values_from_gram(root @ m @ root)
    k90 = components_for_energy(s, 0.9) if s.size and s[0] > 0 else 0
    c = centered.double()
    c2 = c @ c
    xx, yy = float(torch.trace(c2)), float(torch.trace(c @ m @ c @ m))
    cka = float(torch.trace(c2 @ m)) / math.sqrt(xx * yy) if xx > 0 and yy > 0 else None
    return int(k90), cka


def random_b_null(acc_a: CovarianceAccumulator, d_out: int, draws: int, seed: int) -> dict[str, Any]:
    """Null distribution of the B side given the A outputs seen: for `draws` Gaussian B `[d_out, r]` (seeded), the
    k90 of b_out = a B^T and the biased linear CKA(a_out, b_out) (`b_out_from_a`): what an untrained B of any norm
    would give on the same rank-space outputs. The verdict on claim (ii) ranks the trained adapter among them."""
    gc = acc_a.centered_gram()
    gram = gc + acc_a.count * torch.outer(acc_a.mean, acc_a.mean)
    gen = torch.Generator().manual_seed(seed)
    k90s, ckas = [], []
    for _ in range(draws):
        k, c = b_out_from_a(gram, gc, torch.randn(d_out, gram.shape[0], generator=gen, dtype=torch.float64))
        k90s.append(k)
        ckas.append(c)
    return {"draws": draws, "b_out_k90": k90s, "cka_ab_forward_biased": ckas}


def _nan_to_none(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


def _initial_weights(ctx: AnalysisContext, saved: dict[str, tuple[torch.Tensor, torch.Tensor]]
                     ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], str]:
    """(A, B) of the `init` variant per module, and where A came from: `ctx.initial_adapter` when given (checked
    against the adapter's modules and shapes), else the trained A; B is the initial one (peft: 0) or 0."""
    initial = ctx.initial_adapter
    if initial is None:
        return {p: (a, torch.zeros_like(b)) for p, (a, b) in saved.items()}, INIT_FALLBACK
    if set(initial) != set(saved):
        raise ConfigError(f"initial adapter modules {sorted(initial)} differ from the adapted model's {sorted(saved)}",
                          hint="rebuild the initial adapter from the same run configuration")
    out = {}
    for p, (a, b) in saved.items():
        ia, ib = initial[p]["A"], initial[p]["B"]
        if ia.shape != a.shape or ib.shape != b.shape:
            raise ConfigError(f"initial adapter of {p}: A {tuple(ia.shape)}, B {tuple(ib.shape)}; the adapted model "
                              f"has A {tuple(a.shape)}, B {tuple(b.shape)}",
                              hint="rebuild the initial adapter from the same run configuration")
        out[p] = (ia.to(a.device, a.dtype), ib.to(b.device, b.dtype))
    return out, INIT_RECONSTRUCTED


def _split_batches(batches: list[Batch], size: int) -> list[Batch]:
    """Each batch cut into sub-batches of at most `size` clips (same padded frames, so each clip sees the same
    input): the autograd graph of a backward pass grows with the batch, and this analysis keeps one alive."""
    if size < 1:
        raise AnalysisInputError(f"lora_internals: grad_batch must be >= 1, got {size}")
    out = []
    for b in batches:
        for s in range(0, len(b.ids), size):
            sel = slice(s, s + size)
            out.append(Batch(b.features[sel], b.mel_lengths[sel], b.labels[sel], b.ids[sel]))
    return out


def _collect(ctx: AnalysisContext, batches: list[Batch], prefixes: list[str], ranks: dict[str, int],
             d_outs: dict[str, int]) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray], float]:
    """Run the sample with gradients; per-module statistics, pooled rank-space vectors `[n, r]`, summed loss."""
    names = [f"{p}.{k}" for p in prefixes for k in (LORA_A, LORA_B)]
    acc = {p: {"a_out": CovarianceAccumulator(ranks[p]), "b_out": CovarianceAccumulator(d_outs[p]),
               "a_grad": CovarianceAccumulator(ranks[p]), "b_grad": CovarianceAccumulator(d_outs[p])}
           for p in prefixes}
    cka = {p: {"forward": LinearCKAAccumulator(ranks[p], d_outs[p]),
               "backward": LinearCKAAccumulator(ranks[p], d_outs[p])} for p in prefixes}
    pooled: dict[str, list[np.ndarray]] = {p: [] for p in prefixes}
    total_loss = 0.0
    for batch in batches_with_progress(batches, sum(len(b.ids) for b in batches), "lora_internals: gradients"):
        b = batch.to(ctx.device)
        ctx.adapted.select_clips(b.ids)
        out = ctx.adapted.run(b.features, b.mel_lengths, grad_capture=names)
        loss = F.cross_entropy(out.logits.float(), b.labels, reduction="sum")
        caps = [out.encoder.captured[n] for n in names]
        grads = torch.autograd.grad(loss, caps, allow_unused=True)
        total_loss += float(loss.detach())
        lengths = out.encoder.lengths
        for k, p in enumerate(prefixes):
            a, bo = caps[2 * k].detach(), caps[2 * k + 1].detach()
            ga, gb = grads[2 * k], grads[2 * k + 1]
            ga = torch.zeros_like(a) if ga is None else ga.detach()
            gb = torch.zeros_like(bo) if gb is None else gb.detach()
            fa, fb, fga, fgb = (valid_frames(t.double(), lengths) for t in (a, bo, ga, gb))
            for kind, t in zip(KINDS, (fa, fb, fga, fgb)):
                acc[p][kind].update(t)
            cka[p]["forward"].update(fa, fb)
            cka[p]["backward"].update(fga, fgb)
            pooled[p].append(masked_mean(a.float(), lengths, batched=True).cpu().numpy())
    stats: dict[str, dict[str, Any]] = {}
    for p in prefixes:
        entry: dict[str, Any] = {}
        for kind in KINDS:
            s = _spectrum_stats(acc[p][kind])
            entry[f"{kind}_k90"] = s["k90"]
            entry[f"{kind}_k90_centered"] = s["k90_centered"]
            entry[f"{kind}_energy"] = s["energy"]
            entry[f"{kind}_energy_centered"] = s["energy_centered"]
            entry[f"{kind}_frobenius"] = s["frobenius"]
        for direction in ("forward", "backward"):
            c = cka[p][direction]
            entry[f"cka_ab_{direction}"] = _nan_to_none(c.compute(debiased=True))
            entry[f"cka_ab_{direction}_biased"] = _nan_to_none(c.compute(debiased=False))
        if acc[p]["a_out"].count > 1:
            entry["b_null"] = random_b_null(acc[p]["a_out"], d_outs[p], int(ctx.option(NAME, "null_draws", NULL_DRAWS)),
                                            ctx.seed)
        stats[p] = entry
    return stats, {p: np.concatenate(v) for p, v in pooled.items()}, total_loss


def _tsne(x: np.ndarray, labels: np.ndarray, perplexity: float, seed: int) -> dict[str, Any]:
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    n = x.shape[0]
    p = float(min(perplexity, (n - 1) / 3.0))
    # exact gradients: the sample is small (per_class x classes), and Barnes-Hut was ~10x slower here
    method = "exact" if n <= 1000 else "barnes_hut"
    emb = TSNE(n_components=2, perplexity=p, init="pca", learning_rate="auto", random_state=seed,
               method=method).fit_transform(x.astype(np.float64))
    n_lab = np.unique(labels).size
    sil = float(silhouette_score(x, labels)) if 2 <= n_lab <= n - 1 and np.ptp(x, axis=0).max() > 0 else None
    sil2 = float(silhouette_score(emb, labels)) if 2 <= n_lab <= n - 1 else None
    return {"coords": [[float(a), float(b)] for a, b in emb], "perplexity": p, "silhouette_rank_space": sil,
            "silhouette_tsne": sil2}


def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Adapter internals on a class-balanced sample of test clips; see the module docstring."""
    modules = lora_modules(ctx.adapted.encoder)
    if not modules:
        raise ConfigError("lora_internals needs a LoRA-adapted classifier, this one has no adapters",
                          hint="run it on a LoRA run (not frozen / full fine-tuning)")
    prefixes = list(modules)
    per_class = int(ctx.option(NAME, "per_class", 40))
    perplexity = float(ctx.option(NAME, "perplexity", 30.0))
    labels_all = ctx.test.labels.numpy()
    chosen = balanced_sample(labels_all, per_class, ctx.seed)
    if chosen.size < 5:
        raise AnalysisInputError(f"lora_internals needs at least 5 sampled clips, got {chosen.size}")
    labels = labels_all[chosen]
    ids = ctx.test.ids
    grad_batch = int(ctx.option(NAME, "grad_batch", GRAD_BATCH))
    batches = _split_batches(list(_sample_batches(ctx.test.batches, chosen)), grad_batch)
    adapted_layers = sorted({hook_layer(p) for p in prefixes})
    tsne_layers = ctx.option(NAME, "tsne_layers", None)
    if tsne_layers is None:
        tsne_layers = sorted({adapted_layers[0], adapted_layers[len(adapted_layers) // 2], adapted_layers[-1]})
    tsne_prefixes = [p for p in prefixes if hook_layer(p) in set(int(l) for l in tsne_layers)]

    weights = {p: (m.lora_A[ADAPTER].weight, m.lora_B[ADAPTER].weight) for p, m in modules.items()}
    saved = {p: (a.detach().clone(), b.detach().clone()) for p, (a, b) in weights.items()}
    ranks = {p: int(a.shape[0]) for p, (a, _) in weights.items()}
    d_outs = {p: int(b.shape[0]) for p, (_, b) in weights.items()}
    init_w, init_source = _initial_weights(ctx, saved)
    gen = torch.Generator().manual_seed(ctx.seed)
    random_w = {}
    for p, (a, b) in saved.items():
        ra = torch.randn(a.shape, generator=gen, dtype=torch.float64)
        rb = torch.randn(b.shape, generator=gen, dtype=torch.float64)
        na, nb = float(torch.linalg.norm(a.double())), float(torch.linalg.norm(b.double()))
        random_w[p] = ((ra * na / torch.linalg.norm(ra)).to(a.dtype), (rb * nb / torch.linalg.norm(rb)).to(b.dtype))

    result: dict[str, Any] = {
        "n_layers": ctx.n_layers,
        "layers": list(range(ctx.n_layers)),
        "module_order": prefixes,
        "module_layers": [hook_layer(p) for p in prefixes],
        "rank": {p: ranks[p] for p in prefixes},
        "label_names": list(ctx.label_names),
        "sample": {"n_clips": int(chosen.size), "per_class": per_class, "ids": [ids[i] for i in chosen],
                   "labels": [int(v) for v in labels]},
        "energy_of": "valid frames of the sample, uncentred (k90_centered: column-centred)",
        "init_a_source": init_source,
        "modules": {p: {} for p in prefixes},
        "loss": {},
        "tsne": {"layers": [int(l) for l in tsne_layers], "modules": tsne_prefixes},
    }
    try:
        with torch.enable_grad():
            for variant in VARIANTS:
                with torch.no_grad():
                    for p, (a, b) in weights.items():
                        if variant == "trained":
                            a.copy_(saved[p][0]), b.copy_(saved[p][1])
                        elif variant == "init":
                            a.copy_(init_w[p][0]), b.copy_(init_w[p][1])
                        else:
                            a.copy_(random_w[p][0]), b.copy_(random_w[p][1])
                stats, pooled, loss = _collect(ctx, batches, prefixes, ranks, d_outs)
                result["loss"][variant] = loss / chosen.size
                for p in prefixes:
                    a, b = weights[p]
                    stats[p]["a_norm"] = float(torch.linalg.norm(a.detach().double()))
                    stats[p]["b_norm"] = float(torch.linalg.norm(b.detach().double()))
                    result["modules"][p][variant] = stats[p]
                if variant != "init" or init_source == INIT_RECONSTRUCTED:
                    result["tsne"][variant] = {p: _tsne(pooled[p], labels, perplexity, ctx.seed) for p in tsne_prefixes}
    finally:
        with torch.no_grad():
            for p, (a, b) in weights.items():
                a.copy_(saved[p][0])
                b.copy_(saved[p][1])
    return result


# ----------------------------------------------------------------------------- plot and reading
_LABELS = {"a_out": "A output (rank space)", "b_out": "B output (update)", "a_grad": "gradient at A output",
           "b_grad": "gradient at B output"}
_VAR = {"trained": "trained", "init": "peft init (B = 0)", "random": "random Gaussian (matched norms)"}


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """k90 per module and kind; A-B CKA per module; t-SNE of the rank space by emotion."""
    from matplotlib.ticker import MaxNLocator

    from loralens.plots.figures import new_figure, report_style, save_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    order = result["module_order"]
    x = np.arange(len(order))
    ticks = [p.replace("blocks.", "").replace(".attn.", " ").replace(".mlp.", " ") for p in order]
    rank = max(result["rank"].values())
    paths: list[Path] = []
    fig, axes = new_figure(9.0, 6.0, 2, 2, sharex=True)
    with report_style():
        for ax, kind in zip(np.ravel(axes), KINDS):
            top = rank
            for k, variant in enumerate(VARIANTS):
                y = [result["modules"][p][variant][f"{kind}_k90"] for p in order]
                top = max([top, *(v for v in y if v is not None)])
                ax.plot(x, y, marker="osD"[k], ms=6 - 1.5 * k, color=f"C{k}", label=_VAR[variant], alpha=0.85)
            ax.set_title(_LABELS[kind])
            ax.set_ylabel("components for 90 % energy")
            # A outputs live in r dimensions; B outputs and their gradients in d_out, so their k90 can exceed r.
            ax.set_ylim(-0.3, top * 1.05 + 0.3)
            if top > rank:
                ax.axhline(rank, color="0.6", lw=0.8, ls=":", label=f"rank r = {rank}")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xticks(x, ticks, rotation=45, fontsize=7)
        for ax in np.ravel(axes)[2:]:
            ax.set_xlabel("adapted module (layer, projection)")
        np.ravel(axes)[0].legend(fontsize=7)
        fig.suptitle(f"Singular-value energy over valid frames (rank r = {rank})")
    paths += save_figure(fig, out_dir / "lora_internals_k90")

    fig, axes = new_figure(9.0, 3.4, 1, 2, sharey=True)
    with report_style():
        for ax, direction in zip(axes, ("forward", "backward")):
            for k, variant in enumerate(VARIANTS):
                y = [result["modules"][p][variant][f"cka_ab_{direction}"] for p in order]
                y = [np.nan if v is None else v for v in y]
                ax.plot(x, y, marker="osD"[k], ms=6 - 1.5 * k, color=f"C{k}", label=_VAR[variant], alpha=0.85)
            ax.set_xticks(x, ticks, rotation=45, fontsize=7)
            ax.set_xlabel("adapted module (layer, projection)")
            ax.set_title("A output vs B output" if direction == "forward" else "gradient at A vs gradient at B")
        axes[0].set_ylabel("linear CKA (debiased)")
        axes[0].legend(fontsize=7, title="init (B = 0): undefined", title_fontsize=7)
    paths += save_figure(fig, out_dir / "lora_internals_cka")

    mods = result["tsne"]["modules"]
    variants = [v for v in VARIANTS if v in result["tsne"]]
    if mods and variants:
        fig, axes = new_figure(3.0 * len(mods), 2.9 * len(variants), len(variants), len(mods), squeeze=False)
        labels = np.asarray(result["sample"]["labels"])
        names = result["label_names"]
        with report_style():
            for r, variant in enumerate(variants):
                for c, p in enumerate(mods):
                    ax = axes[r][c]
                    t = result["tsne"][variant][p]
                    xy = np.asarray(t["coords"])
                    for k, name in enumerate(names):
                        m = labels == k
                        if m.any():
                            ax.scatter(xy[m, 0], xy[m, 1], s=8, color=f"C{k}", label=name)
                    sil = t["silhouette_rank_space"]
                    ax.set_title(f"{_VAR[variant].split(' (')[0]}: {p}\nsilhouette {sil:.2f}" if sil is not None
                                 else f"{variant}: {p}", fontsize=8)
                    ax.set_xticks([])
                    ax.set_yticks([])
                    ax.set_xlabel("t-SNE 1")
                    ax.set_ylabel("t-SNE 2")
            axes[0][-1].legend(fontsize=6, markerscale=1.5)
        paths += save_figure(fig, out_dir / "lora_internals_tsne")
    return paths


def reading(result: dict[str, Any]) -> str:
    order = result["module_order"]
    rank = max(result["rank"].values())

    def mean_k(variant: str, kind: str) -> float:
        return float(np.mean([result["modules"][p][variant][f"{kind}_k90"] for p in order]))

    def mean_cka(variant: str) -> float | None:
        vals = [result["modules"][p][variant]["cka_ab_forward"] for p in order]
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None

    fw, fw_rand = mean_cka("trained"), mean_cka("random")
    text = (
        f"Over {result['sample']['n_clips']} clips and {len(order)} adapted modules (rank {rank}), the trained "
        f"adapter's B output needs {mean_k('trained', 'b_out'):.1f} components for 90 % of its energy on average "
        f"(random Gaussian adapter {mean_k('random', 'b_out'):.1f}; at peft's init B output is exactly zero), "
        f"its rank space {mean_k('trained', 'a_out'):.1f} (random {mean_k('random', 'a_out'):.1f}"
    )
    if result.get("init_a_source") == INIT_RECONSTRUCTED:
        text += f"; peft's initial A, reconstructed from the run's seed, {mean_k('init', 'a_out'):.1f})."
    else:
        text += "; the init control reuses the trained A: the initial weights were unavailable)."
    if fw is not None:
        text += f" Forward CKA between A and B outputs averages {fw:.2f} for the trained adapter"
        text += f" ({fw_rand:.2f} for the random one)." if fw_rand is not None else "."
    sil = [result["tsne"]["trained"][p]["silhouette_rank_space"] for p in result["tsne"]["modules"]]
    if sil and all(s is not None for s in sil):
        text += f" Emotion silhouette in the rank space: {', '.join(f'{s:.2f}' for s in sil)} (t-SNE layers)"
        init_tsne = result["tsne"].get("init", {})
        sil0 = [init_tsne[p]["silhouette_rank_space"] for p in result["tsne"]["modules"] if p in init_tsne]
        if sil0 and all(s is not None for s in sil0):
            text += f", at peft's initialisation {', '.join(f'{s:.2f}' for s in sil0)}"
        text += "."
    return text


register(Analysis(NAME, "LoRA internals: rank space, updates and gradients", run, plot, reading))

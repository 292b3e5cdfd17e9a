"""Statistics pooling, screened on the frozen encoder (issue 11): does the head gain from each hidden state's standard
deviation over frames, next to its mean (x-vector / ECAPA-style statistics pooling), before anything is trained?

    python bench/pooling.py --model base --out runs/pooling-base --json bench/results/pooling-base.json
    python bench/pooling.py --corpus manifest --root runs/synth/hard/manifest.csv --label-set neutral,happy,sad,angry \
        --folds-scheme speaker-kfold --folds-k 5 --model tiny.en --out runs/pooling-synth \
        --json bench/results/pooling-synthetic-hard-tiny.en.json

One frozen pass over every clip (trimmed windows, the padding mask, the package's runner) stores per clip and hidden
state the masked mean and the masked standard deviation over valid frames (`<out>/stats.safetensors`, reused when
present). Per fold (the corpus's speaker-independent folds) it then trains, for pooled inputs "mean" (what loralens'
head reads today) and "mean+std" (both concatenated, 2 x d_model):
- the head of `bench/head_inputs.py` (loralens' `ClassificationHead`, weighted layer sum + per-layer LN on z-scored
  inputs, the default recipe's read-out; 30 epochs, the epoch of best validation UAR);
- the probe (standardised logistic regression) on the hidden state of best validation UAR.
Test UAR per fold and the paired difference mean+std - mean are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from loralens.io import atomic_write_json  # noqa: E402
from loralens.training.metrics import mean_std  # noqa: E402


def masked_mean_std(h: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) standard deviation over the first `lengths[b]` frames of `h` `[batch, frames, d]`."""
    mask = (torch.arange(h.shape[1])[None, :] < lengths[:, None]).to(h.dtype)[..., None]
    n = mask.sum(1)
    mean = (h * mask).sum(1) / n
    var = (((h - mean[:, None]) ** 2) * mask).sum(1) / n
    return mean, var.clamp_min(0).sqrt()


def frozen_stats(cfg, out: Path) -> tuple[np.ndarray, np.ndarray, list[str], object]:
    """(mean `[clips, hidden states, d]`, std of the same shape, clip ids, the prepared corpus) of the frozen
    encoder, computed once and stored in `out/stats.safetensors`."""
    from accelerate import Accelerator
    from safetensors import safe_open
    from safetensors.torch import load_file
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from loralens.training.checkpoint import save_safetensors
    from loralens.training.crossval import _feature_split, build_classifier, prepare

    accelerator = Accelerator(cpu=True)
    prep = prepare(cfg, accelerator, write=True, echo=print)
    path = out / "stats.safetensors"
    if not path.exists():
        split = _feature_split(prep.corpus.clips, prep, cfg.window)
        clf = build_classifier(cfg, prep.whisper_encoder, len(prep.labels)).eval()
        means, stds = [], []
        t0 = time.perf_counter()
        loader = DataLoader(split.dataset, batch_size=8, collate_fn=split.collate)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision != "fp32"):
            for batch in tqdm(loader, desc="frozen pass", unit="batch"):
                o = clf.runner(batch.features, batch.mel_lengths)
                pairs = [masked_mean_std(h.float(), o.lengths) for h in o.hidden_states]
                means.append(torch.stack([m for m, _ in pairs], 1))
                stds.append(torch.stack([s for _, s in pairs], 1))
        print(f"frozen pass: {time.perf_counter() - t0:.0f} s", flush=True)
        save_safetensors(path, {"mean": torch.cat(means), "std": torch.cat(stds)},
                         metadata={"ids": json.dumps(list(split.ids))})
    with safe_open(str(path), framework="pt") as f:
        ids = json.loads((f.metadata() or {})["ids"])
    t = load_file(str(path))
    return t["mean"].numpy(), t["std"].numpy(), ids, prep


def probe(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> tuple[int, float]:
    """(hidden state of best validation UAR, its test UAR) of a standardised logistic regression per hidden state."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = (-1.0, 0, 0.0)
    for h in range(x["train"].shape[1]):
        p = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(x["train"][:, h], y["train"])
        val = balanced_accuracy_score(y["validation"], p.predict(x["validation"][:, h]))
        if val > best[0]:
            best = (val, h, balanced_accuracy_score(y["test"], p.predict(x["test"][:, h])))
    return best[1], float(best[2])


def main(argv: list[str] | None = None) -> int:
    from head_inputs import train_head

    from loralens.training.config import make_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="ravdess")
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "ravdess")
    ap.add_argument("--label-set", default=None)
    ap.add_argument("--folds-scheme", default=None)
    ap.add_argument("--folds-k", type=int, default=None)
    ap.add_argument("--model", default="base")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--feature-cache", type=Path, default=None)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {"corpus": args.corpus, "corpus_root": str(args.root), "model": args.model, "method": "frozen",
                "folds": args.folds_scheme or ("ravdess6" if args.corpus == "ravdess" else "auto"),
                "window": "trim", "run_dir": str(args.out / "run"),
                "feature_cache": str(args.feature_cache or args.out / "feature_cache")}
    if args.folds_k is not None:
        settings["folds_k"] = args.folds_k
    if args.label_set is not None:
        settings["label_set"] = args.label_set
    cfg = make_config(settings, {}, source="bench/pooling.py")
    mean, std, ids, prep = frozen_stats(cfg, args.out)
    torch.set_num_threads(1)
    row = {c: n for n, c in enumerate(ids)}
    label_of = {c.id: c.label for c in prep.corpus.clips}
    inputs = {"mean": mean, "mean+std": np.concatenate([mean, std], axis=-1)}
    per: dict[str, list[float]] = {}
    for k, fold in enumerate(prep.folds):
        y = {s: np.array([prep.labels.index(label_of[c]) for c in fold.split(s)])
             for s in ("train", "validation", "test")}
        line = []
        for name, arr in inputs.items():
            x = {s: arr[[row[c] for c in fold.split(s)]] for s in y}
            _, test = train_head(x, y, prep.labels, wls=True, zscore=True)
            per.setdefault(f"head wls-ln-z, {name}", []).append(test)
            h, ptest = probe(x, y)
            per.setdefault(f"probe, {name}", []).append(ptest)
            line.append(f"{name}: head {test:.3f}, probe (hidden state {h}) {ptest:.3f}")
        print(f"fold {k}: " + "; ".join(line), flush=True)
    summary = {name: {"per_fold": v, **mean_std(v)} for name, v in per.items()}
    for reader in ("head wls-ln-z", "probe"):
        a, b = per[f"{reader}, mean"], per[f"{reader}, mean+std"]
        d = [q - p for p, q in zip(a, b)]
        summary[f"{reader}: mean+std - mean"] = {"per_fold": d, **mean_std(d),
                                                  "better": sum(v > 0 for v in d), "worse": sum(v < 0 for v in d)}
    for name, s in summary.items():
        print(f"{name:<32} {s['mean']:+.3f} ± {s['std']:.3f}")
    atomic_write_json(args.json, {"benchmark": "pooling", "model": args.model, "corpus": args.corpus,
                                  "labels": prep.labels, "results": summary,
                                  "command": "python bench/pooling.py " + " ".join(argv or sys.argv[1:])})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

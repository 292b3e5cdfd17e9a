"""What the trained head lacks against the probe (issue 11's next lever): the same head trained on the frozen encoder's
cached pooled outputs with and without z-scoring its input (training-split mean and std of each dimension).

    python bench/head_inputs.py --run runs/recipes-base/frozen-last --json bench/results/head_inputs-base.json
    python bench/head_inputs.py --run runs/recipes-synth-tiny.en/frozen-last --json bench/results/head_inputs-synth.json

`--run` is a frozen run folder of `bench/recipes.py` (its `encoder_cache/`, `folds.json` and `config.yaml`). The head is
loralens' own (`ClassificationHead`: projector 256 + classifier, or the weighted layer sum with per-layer LayerNorm),
trained as the `frozen-*` recipes are (AdamW lr 1e-3, weight decay 0.01, batch 32, 30 epochs, the epoch of best
validation UAR, seed 0) by a plain loop, not the package's (no warm-up, no schedule: a fair comparison between
inputs, not a reproduction of the recipe's numbers). Inputs: the last hidden state; the weighted layer sum + LN; each
with z-scored dimensions; the hidden state of best validation UAR, z-scored (the probe's choice). The reference is
the probe of bench/recipes.py (standardised logistic regression on the hidden state chosen on validation). Prints
per-fold test UAR and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loralens.io import atomic_write_json, read_json, read_yaml_mapping  # noqa: E402
from loralens.training.metrics import classification_metrics, mean_std  # noqa: E402


def load(run: Path) -> tuple[np.ndarray, dict[str, int], list, list[str], dict[str, str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from loralens.data.corpora import load_corpus

    (cache,) = sorted((run / "encoder_cache").glob("*.safetensors"))
    with safe_open(str(cache), framework="pt") as f:
        ids = json.loads((f.metadata() or {})["ids"])
    pooled = load_file(str(cache))["pooled"].numpy().astype(np.float32)  # [clips, hidden states, d]
    cfg = read_yaml_mapping(run / "config.yaml")
    corpus = load_corpus(cfg["corpus"], cfg["corpus_root"], cfg.get("label_set"))
    folds = read_json(run / "folds.json")["folds"]
    return pooled, {c: n for n, c in enumerate(ids)}, folds, list(corpus.labels), {c.id: c.label for c in corpus.clips}


def train_head(x: dict[str, np.ndarray], y: dict[str, np.ndarray], labels: list[str], wls: bool, zscore: bool,
               epochs: int = 30, seed: int = 0, state: int = -1) -> tuple[float, float]:
    """(validation UAR, test UAR) of a head trained on x["train"] ([n, hidden states, d]); hidden state `state` (the
    last by default) unless `wls`."""
    from loralens.models.head import ClassificationHead

    torch.manual_seed(seed)
    xs = {k: torch.from_numpy(v if wls else v[:, state]) for k, v in x.items()}
    if zscore:
        mu, sd = xs["train"].mean(0, keepdim=True), xs["train"].std(0, keepdim=True) + 1e-6
        xs = {k: (v - mu) / sd for k, v in xs.items()}
    d = xs["train"].shape[-1]
    head = ClassificationHead(d, len(labels), proj_size=256, use_weighted_layer_sum=wls,
                              n_hidden_states=xs["train"].shape[1] if wls else None, normalize_layers=wls)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    ys = {k: torch.from_numpy(v) for k, v in y.items()}
    g = torch.Generator().manual_seed(seed)

    def logits(v: torch.Tensor) -> torch.Tensor:
        return head.classify(head.combine_layers(v) if wls else v)

    def uar(split: str) -> float:
        with torch.no_grad():
            pred = logits(xs[split]).argmax(-1).tolist()
        return classification_metrics(ys[split].tolist(), pred, labels).uar

    best = (-1.0, 0.0)
    for _ in range(epochs):
        head.train()
        for idx in torch.randperm(len(ys["train"]), generator=g).split(32):
            loss = torch.nn.functional.cross_entropy(logits(xs["train"][idx]), ys["train"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        head.eval()
        val = uar("validation")
        if val > best[0]:
            best = (val, uar("test"))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a frozen run folder of bench/recipes.py")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    pooled, row, folds, labels, label_of = load(args.run)
    variants = {"last": (False, False), "last, z-scored": (False, True), "wls-ln": (True, False),
                "wls-ln, z-scored": (True, True)}
    per: dict[str, list[float]] = {v: [] for v in [*variants, "chosen hidden state, z-scored"]}
    for k, fold in enumerate(folds):
        x = {s: pooled[[row[c] for c in fold[s]]] for s in ("train", "validation", "test")}
        y = {s: np.array([labels.index(label_of[c]) for c in fold[s]]) for s in x}
        line = []
        for name, (wls, z) in variants.items():
            _, test = train_head(x, y, labels, wls, z)
            per[name].append(test)
            line.append(f"{name} {test:.3f}")
        # the probe's choice: the hidden state of best validation UAR, here with the trained head
        val, test, h = max(train_head(x, y, labels, False, True, state=h) + (h,) for h in range(pooled.shape[1]))
        per["chosen hidden state, z-scored"].append(test)
        line.append(f"chosen hidden state {h}, z-scored {test:.3f}")
        print(f"fold {k}: " + ", ".join(line), flush=True)
    summary = {name: {"per_fold": v, **mean_std(v)} for name, v in per.items()}
    for name, s in summary.items():
        print(f"{name:<18} {s['mean']:.3f} ± {s['std']:.3f}")
    atomic_write_json(args.json, {"benchmark": "head_inputs", "run": str(args.run), "labels": labels,
                                  "command": "python bench/head_inputs.py " + " ".join(argv or sys.argv[1:]),
                                  "results": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())

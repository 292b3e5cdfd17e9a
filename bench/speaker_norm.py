"""Per-speaker normalisation of the head's input (`head.speaker_norm`, issue 11), screened on the frozen encoder:
how much it gains over the training-clip z-scoring, and how it holds when a test speaker's statistics come from few
clips or from clips of only some emotions (a user's speaker rarely brings a balanced set).

    python bench/speaker_norm.py --stats runs/pooling-base/stats.safetensors --run runs/recipes-base/frozen-last \
        --json bench/results/speaker_norm-base.json

`--stats`: per clip and hidden state, the frozen encoder's masked mean over valid frames (`bench/pooling.py`'s
`stats.safetensors`); `--run`: a run folder of the same corpus (its `folds.json` and `config.yaml`). Per fold, the
head of `bench/head_inputs.py` (loralens' `ClassificationHead`, weighted layer sum + per-layer LN on z-scored inputs,
30 epochs, the epoch of best validation UAR) is trained on inputs normalised by:
- `global`: the training clips' mean and std (loralens' `head.standardize`);
- `speaker`: each clip's speaker's mean and std over all the speaker's clips (`head.speaker_norm`);
- `speaker, test k clips`: training and validation speakers as `speaker`; each test speaker's statistics from k of
  their clips drawn at random (k = 4, 8, 16; `--draws` draws, test UAR averaged), applied to all their clips;
- `speaker, test m classes`: each test speaker's statistics from their clips of m emotions only (drawn at random per
  speaker; m = 1 (one emotion: the most skewed a set can be), half of the classes).
Test UAR per fold and paired differences against `global` are printed and written as JSON.
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
sys.path.insert(0, str(REPO / "bench"))

from loralens.io import atomic_write_json, read_json, read_yaml_mapping  # noqa: E402
from loralens.training.metrics import mean_std  # noqa: E402


def normalise(mean: np.ndarray, speakers: np.ndarray, source: np.ndarray | None = None) -> np.ndarray:
    """Each clip's vectors `mean[i]` `[hidden states, d]` z-scored with its speaker's statistics, computed over the
    speaker's clips where `source` is True (all clips when None)."""
    out = np.empty_like(mean)
    for s in np.unique(speakers):
        rows = speakers == s
        pick = rows if source is None else rows & source
        x = torch.from_numpy(mean[pick]).double()
        mu, sd = x.mean(0).numpy(), (x.std(0) + 1e-5).numpy()
        out[rows] = (mean[rows] - mu) / sd
    return out


def main(argv: list[str] | None = None) -> int:
    from head_inputs import train_head
    from safetensors import safe_open
    from safetensors.torch import load_file

    from loralens.data.corpora import load_corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stats", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    with safe_open(str(args.stats), framework="pt") as f:
        ids = json.loads((f.metadata() or {})["ids"])
    mean = load_file(str(args.stats))["mean"].numpy().astype(np.float32)
    cfg = read_yaml_mapping(args.run / "config.yaml")
    corpus = load_corpus(cfg["corpus"], cfg["corpus_root"], cfg.get("label_set"))
    labels = list(corpus.labels)
    by_id = {c.id: c for c in corpus.clips}
    speakers = np.array([by_id[i].speaker for i in ids])
    classes = np.array([labels.index(by_id[i].label) for i in ids])
    row = {c: n for n, c in enumerate(ids)}
    folds = read_json(args.run / "folds.json")["folds"]
    torch.set_num_threads(1)
    spk_all = normalise(mean, speakers)
    n_classes = len(labels)
    per: dict[str, list[float]] = {}

    def score(name: str, arr: np.ndarray, fold: dict) -> float:
        y = {s: classes[[row[c] for c in fold[s]]] for s in ("train", "validation", "test")}
        x = {s: arr[[row[c] for c in fold[s]]] for s in y}
        return train_head(x, y, labels, wls=True, zscore=True)[1]

    for k, fold in enumerate(folds):
        test_rows = np.zeros(len(ids), bool)
        test_rows[[row[c] for c in fold["test"]]] = True
        line = {"global": score("global", mean, fold), "speaker": score("speaker", spk_all, fold)}
        variants: list[tuple[str, str, int]] = [(f"speaker, test {n} clips", "clips", n) for n in (4, 8, 16)]
        variants += [("speaker, test 1 class", "classes", 1),
                     (f"speaker, test {n_classes // 2} classes", "classes", n_classes // 2)]
        for name, kind, n in variants:
            scores = []
            for d in range(args.draws):
                rng = np.random.default_rng(1000 * k + d)
                source = ~test_rows.copy()  # training and validation speakers: all their clips
                for s in np.unique(speakers[test_rows]):
                    mine = np.flatnonzero(speakers == s)
                    if kind == "clips":
                        chosen = rng.choice(mine, size=min(n, mine.size), replace=False)
                    else:
                        keep = rng.choice(n_classes, size=n, replace=False)
                        chosen = mine[np.isin(classes[mine], keep)]
                    source[chosen] = True
                arr = np.where(test_rows[:, None, None], normalise(mean, speakers, source), spk_all)
                scores.append(score(name, arr, fold))
            line[name] = float(np.mean(scores))
        for name, v in line.items():
            per.setdefault(name, []).append(v)
        print(f"fold {k}: " + ", ".join(f"{n} {v:.3f}" for n, v in line.items()), flush=True)
    summary = {}
    for name, v in per.items():
        d = [a - b for a, b in zip(v, per["global"])]
        summary[name] = {"per_fold": v, **mean_std(v), "vs_global": {**mean_std(d), "better": sum(x > 0 for x in d),
                                                                       "worse": sum(x < 0 for x in d)}}
        print(f"{name:<28} {summary[name]['mean']:.3f} ± {summary[name]['std']:.3f}   vs global "
              f"{summary[name]['vs_global']['mean']:+.3f} ({summary[name]['vs_global']['better']} / "
              f"{summary[name]['vs_global']['worse']})")
    atomic_write_json(args.json, {"benchmark": "speaker_norm", "stats": str(args.stats), "run": str(args.run),
                                  "corpus": cfg["corpus"], "labels": labels, "draws": args.draws, "results": summary,
                                  "command": "python bench/speaker_norm.py " + " ".join(argv or sys.argv[1:])})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

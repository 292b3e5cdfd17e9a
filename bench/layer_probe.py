"""Linear probe per hidden state of a frozen encoder on the RAVDESS folds: the scale against which the trained heads
are read (issue 4 quotes 0.742 for the best layer of a frozen `base` with trimmed windows).

    python bench/layer_probe.py --run runs/bench-ravdess/frozen-trim [--json bench/results/layer_probe.json]

Reads the frozen run's cached per-layer pooled encoder outputs (`encoder_cache/*.safetensors`, written by
`bench/ravdess.py --methods frozen`) and its `folds.json`; per fold, a standardised logistic regression
(scikit-learn defaults, C=1) is fitted on the training speakers of each hidden state and scored on the test
speakers (UAR). No validation split is needed: nothing is selected per fold; the best layer is read off the mean.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.torch import load_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from loralens.data.corpora.ravdess import parse_name
from loralens.io import atomic_write_json, read_json
from loralens.training.metrics import mean_std


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/bench-ravdess/frozen-trim"))
    ap.add_argument("--json", type=Path, default=Path("bench/results/layer_probe.json"))
    args = ap.parse_args(argv)

    caches = sorted((args.run / "encoder_cache").glob("*.safetensors"))
    if len(caches) != 1:
        ap.error(f"{args.run / 'encoder_cache'}: expected one cache file, found {len(caches)}; "
                 "run bench/ravdess.py --methods frozen first")
    with safe_open(str(caches[0]), framework="pt") as f:
        ids = json.loads((f.metadata() or {})["ids"])
    pooled = load_file(str(caches[0]))["pooled"].numpy()  # [clips, hidden states, d_model]
    row = {clip: n for n, clip in enumerate(ids)}
    folds = read_json(args.run / "folds.json")
    labels = folds["labels"]
    y = np.array([labels.index(parse_name(Path(clip).name).emotion) for clip in ids])

    per_fold = []
    for fold in folds["folds"]:
        train = [row[c] for c in fold["train"]]
        test = [row[c] for c in fold["test"]]
        uars = []
        for layer in range(pooled.shape[1]):
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
            probe.fit(pooled[train, layer], y[train])
            uars.append(float(balanced_accuracy_score(y[test], probe.predict(pooled[test, layer]))))
        per_fold.append(uars)
        print(fold["name"], " ".join(f"{u:.3f}" for u in uars), flush=True)
    by_layer = [mean_std([f[layer] for f in per_fold]) for layer in range(pooled.shape[1])]
    best = int(np.argmax([b["mean"] for b in by_layer]))
    print("mean UAR per hidden state (0 = embeddings):", " ".join(f"{b['mean']:.3f}" for b in by_layer))
    print(f"best hidden state {best}: {by_layer[best]['mean']:.3f} ± {by_layer[best]['std']:.3f}")
    atomic_write_json(args.json, {"run": str(args.run), "labels": labels, "per_fold_uar": per_fold,
                                  "by_hidden_state": by_layer, "best_hidden_state": best,
                                  "command": "python bench/layer_probe.py " + " ".join(argv or sys.argv[1:])})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Variance reduction by seeds (issue 11): several seeds of one recipe, their test predictions averaged per fold.

    python bench/recipes.py --model tiny.en --recipes lpft-wls-ln-z --folds 0,1,2,3,4,5 --seed 1 \
        --out runs/recipes-tiny.en-seed1 --json runs/seed1.json        # and --seed 2, ... (seed 0: the usual --out)
    python bench/seed_ensemble.py --runs runs/recipes-tiny.en/lpft-wls-ln-z,runs/recipes-tiny.en-seed1/lpft-wls-ln-z \
        --baseline bench/results/recipes-tiny.en-wls-ln-z.json --json bench/results/seeds-tiny.en.json

`--runs`: run folders of the same recipe and folds that differ only in `seed` (checked: their configurations must agree
on every other result-changing field); the folds complete in every run are scored. Per fold, each seed's test UAR
(from its `predictions.json`) and the UAR of the mean of the seeds' class probabilities (the ensemble `loralens
predict` makes of them, scored as `loralens run --seeds` does: `loralens.training.ensemble`); over folds, mean ± std
of both, the paired gain of the ensemble over the mean single seed, and, with `--baseline` (a `bench/recipes.py` JSON
of the same folds), the ensemble's paired difference with that run's strong frozen baseline. Prints a table and
writes JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loralens.errors import LoralensError  # noqa: E402
from loralens.io import atomic_write_json, read_json  # noqa: E402
from loralens.training.ensemble import seed_ensemble  # noqa: E402
from loralens.training.metrics import mean_std  # noqa: E402


def fold_rows(runs: list[Path]) -> tuple[list[int], list[dict]]:
    """The runs' seeds and, per fold complete in every run, each seed's test UAR and the UAR of the mean
    probabilities (`loralens.training.ensemble.seed_ensemble`, the same scoring `loralens run --seeds` does)."""
    try:
        e = seed_ensemble(runs)
    except LoralensError as err:
        sys.exit(f"{err.message}" + (f" ({err.hint})" if err.hint else ""))
    rows = [{"fold": f["index"], "seeds_uar": f["members_uar"], "ensemble_uar": f["uar"]} for f in e["folds"].values()]
    return e["seeds"], sorted(rows, key=lambda r: r["fold"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", required=True, help="comma-separated run folders (one recipe, several seeds)")
    ap.add_argument("--baseline", type=Path, default=None, help="bench/recipes.py JSON with the strong frozen "
                    "baseline of the same folds")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    runs = [Path(r) for r in args.runs.split(",") if r.strip()]
    if len(runs) < 2:
        ap.error("--runs needs at least two run folders")
    seeds, rows = fold_rows(runs)
    if not rows:
        sys.exit(f"{runs[0]}: no complete fold")
    single = np.array([np.mean(r["seeds_uar"]) for r in rows])
    ens = np.array([r["ensemble_uar"] for r in rows])
    out = {"benchmark": "seed_ensemble", "runs": [str(r) for r in runs], "seeds": seeds, "per_fold": rows,
           "single_seed_uar": mean_std(single.tolist()), "ensemble_uar": mean_std(ens.tolist()),
           "ensemble_minus_single": {**mean_std((ens - single).tolist()), "better": int((ens > single).sum()),
                                     "worse": int((ens < single).sum())},
           "command": "python " + " ".join(sys.argv)}
    print(f"{'fold':>4}  " + "  ".join(f"seed {s:>2}" for s in seeds) + "  ensemble")
    for r in rows:
        print(f"{r['fold']:>4}  " + "  ".join(f"{u:7.3f}" for u in r["seeds_uar"]) + f"  {r['ensemble_uar']:8.3f}")
    print(f"single seed {single.mean():.3f} ± {single.std(ddof=1) if len(single) > 1 else 0:.3f}, ensemble "
          f"{ens.mean():.3f} ± {ens.std(ddof=1) if len(ens) > 1 else 0:.3f}, gain {np.mean(ens - single):+.3f} "
          f"(better on {(ens > single).sum()} of {len(ens)} folds, worse on {(ens < single).sum()})")
    if args.baseline:
        strong = {f["fold"]: f["uar"] for f in read_json(args.baseline)["strong_frozen"]["per_fold"]}
        missing = [r["fold"] for r in rows if r["fold"] not in strong]
        if missing:
            sys.exit(f"{args.baseline}: no strong frozen baseline for fold(s) {missing}")
        d = np.array([r["ensemble_uar"] - strong[r["fold"]] for r in rows])
        out["baseline"] = str(args.baseline)
        out["ensemble_minus_strong"] = {**mean_std(d.tolist()), "better": int((d > 0).sum()),
                                        "worse": int((d < 0).sum())}
        print(f"ensemble vs strong frozen baseline: {d.mean():+.3f}, better on {(d > 0).sum()} of {len(d)}, "
              f"worse on {(d < 0).sum()}")
    atomic_write_json(args.json, out)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

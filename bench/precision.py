"""bf16 autocast against fp32 on the same folds: does `precision: auto` (bf16 on a CPU with AVX512-BF16 or AMX)
cost accuracy? LoRA (r=32, alpha=64, v_proj) on RAVDESS, embedded `base`, `trim` windows, the 3-epoch recipe of
docs/results.md (adapter lr 3e-4), trained once per precision on the same folds with the same seed.

    python bench/precision.py --root ../shared/data/ravdess --out runs/bench-precision --folds 0,1,2
    python bench/precision.py --method frozen --folds 0,1,2,3,4,5 --epochs 10   # bf16 encoder outputs, head fp32

Prints per fold test UAR of both, the paired difference (bf16 - fp32, mean ± std over folds), how many test
predictions differ, and the training wall time of each; writes bench/results/precision.json. Resumable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ravdess import fold_rows, paired_difference, pm  # noqa: E402

from loralens.io import atomic_write_json  # noqa: E402
from loralens.training.config import make_config  # noqa: E402
from loralens.training.crossval import train  # noqa: E402
from loralens.training.metrics import mean_std  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("../shared/data/ravdess"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench-precision"))
    ap.add_argument("--model", default="base")
    ap.add_argument("--folds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr-encoder", type=float, default=3e-4)
    ap.add_argument("--method", choices=("lora", "frozen"), default="lora")
    ap.add_argument("--json", type=Path, default=None, help="default bench/results/precision_<method>.json")
    args = ap.parse_args(argv)
    folds = [int(f) for f in args.folds.split(",") if f.strip()]
    common = {"corpus": "ravdess", "corpus_root": str(args.root), "model": args.model, "folds": "ravdess6",
              "epochs": args.epochs, "batch_size": 8, "seed": 0, "lr_encoder": args.lr_encoder, "method": args.method,
              "window": "trim", "lp_ft_epochs": 0, "feature_cache": str(args.out / "feature_cache")}
    json_path = args.json or Path(f"bench/results/precision_{args.method}.json")
    run_dirs = {p: args.out / f"{args.method}-{p}" for p in ("fp32", "bf16")}
    for k in folds:
        for precision in ("fp32", "bf16"):
            cfg = make_config({**common, "precision": precision}, {"run_dir": str(run_dirs[precision]), "fold": k})
            t0 = time.perf_counter()
            train(cfg)
            print(f"[{precision}] fold {k}: {time.perf_counter() - t0:.0f} s", flush=True)
    rows = {p: [r for r in fold_rows(run_dirs[p]) if r["fold"] in folds] for p in ("fp32", "bf16")}
    differ = {}
    for k in folds:
        a = json.loads((run_dirs["fp32"] / f"fold_{k}" / "predictions.json").read_text())
        b = json.loads((run_dirs["bf16"] / f"fold_{k}" / "predictions.json").read_text())
        assert a["ids"] == b["ids"]
        differ[k] = {"differ": sum(x != y for x, y in zip(a["pred"], b["pred"])), "of": len(a["pred"])}
    result = {
        "recipe": common, "folds": folds,
        "fp32": {"folds": rows["fp32"], "uar": mean_std([r["uar"] for r in rows["fp32"]])},
        "bf16": {"folds": rows["bf16"], "uar": mean_std([r["uar"] for r in rows["bf16"]])},
        "bf16_minus_fp32": paired_difference(rows["bf16"], rows["fp32"]),
        "predictions_differ": differ,
        "train_wall_s": {p: sum(r["wall_time_s"] for r in rows[p]) for p in rows},
    }
    print("| fold | fp32 UAR | bf16 UAR | Δ (bf16 - fp32) | test predictions that differ | wall fp32 / bf16 (s) |")
    print("|---|---|---|---|---|---|")
    for a, b in zip(rows["fp32"], rows["bf16"]):
        d = differ[a["fold"]]
        print(f"| {a['fold']} | {a['uar']:.3f} | {b['uar']:.3f} | {b['uar'] - a['uar']:+.3f} | {d['differ']} of "
              f"{d['of']} | {a['wall_time_s']:.0f} / {b['wall_time_s']:.0f} |")
    diff = result["bf16_minus_fp32"]
    print(f"mean: fp32 {pm(result['fp32']['uar'])}, bf16 {pm(result['bf16']['uar'])}; paired Δ {pm(diff)} "
          f"({diff['better']} better, {diff['worse']} worse)")
    atomic_write_json(json_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory and wall time of the `lora_internals` analysis against its gradient batch (issue 10: the suite on one
RAVDESS fold within 1.5 GB). Each gradient batch runs in its own subprocess, so no allocator state carries over.

    python bench/lora_internals_memory.py --root ../shared/data/ravdess --model base --grad-batches 16,4 \
        --out bench/results/lora_internals_memory.json

The model is the one of bench/speed.py (embedded weights, r=32 v_proj adapter with random B, random head), the
clips fold 0's test clips of RAVDESS (trim windows, batches of 16 as the suite uses). Before issue 10's change the
analysis ran its backward passes on the suite's batches of 16 clips; now on sub-batches of `grad_batch` (4).
Besides memory it reports how far the numbers move (max |diff| over the statistics' leaves against the first
gradient batch listed): sub-batches change float summation order only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from loralens.io import atomic_write_json  # noqa: E402


def worker(args: argparse.Namespace) -> dict:
    from speed import build

    from loralens.analysis.context import AnalysisContext
    from loralens.analysis.loading import split_data
    from loralens.analysis.suite import PeakRSS, run_suite

    _, prep, adapted, frozen, test, _, _ = build(args, args.cache)
    ctx = AnalysisContext(adapted=adapted, frozen=frozen, label_names=tuple(prep.labels),
                          test=split_data(test, prep, "trim", 16), train=None, n_boot=200,
                          options={"lora_internals": {"grad_batch": args.grad_batch}})
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as rss:
        t = time.perf_counter()
        res = run_suite(ctx, Path(tmp), ["lora_internals"], keep_going=False)
        wall = time.perf_counter() - t
    r = res["lora_internals"]
    return {"grad_batch": args.grad_batch, "wall_s": wall, "peak_rss_mib": rss.peak_mib,
            "analysis_peak_rss_mib": r["meta"]["peak_rss_mib"], "modules": r.get("modules")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("../shared/data/ravdess"))
    ap.add_argument("--model", default="base")
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-speed/feature_cache"))
    ap.add_argument("--grad-batches", default="16,4")
    ap.add_argument("--grad-batch", type=int, default=None, help=argparse.SUPPRESS)  # the worker's
    ap.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=Path("bench/results/lora_internals_memory.json"))
    args = ap.parse_args(argv)
    if args.grad_batch is not None:
        atomic_write_json(args.worker_out, worker(args))
        return 0

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for gb in [int(g) for g in args.grad_batches.split(",")]:
            out = Path(tmp) / f"{gb}.json"
            subprocess.run([sys.executable, __file__, "--root", str(args.root), "--model", args.model, "--cache",
                            str(args.cache), "--grad-batch", str(gb), "--worker-out", str(out)], check=True)
            rows.append(json.loads(out.read_text()))
            r = rows[-1]
            print(f"grad_batch {gb:>3}: {r['wall_s']:.0f} s, peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    from speed import _leaves as leaves

    ref = leaves(rows[0]["modules"])
    for r in rows[1:]:
        other = leaves(r["modules"])
        diffs = [abs(other[k] - v) for k, v in ref.items() if k in other]
        r["max_abs_diff_vs_first"] = max(diffs) if diffs else None
        print(f"grad_batch {r['grad_batch']} vs {rows[0]['grad_batch']}: max |diff| of the module statistics "
              f"{r['max_abs_diff_vs_first']:.3g}", flush=True)
    atomic_write_json(args.out, {"benchmark": "lora_internals_memory", "model": args.model,
                                 "rows": [{k: v for k, v in r.items() if k != "modules"} for r in rows]})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""RAVDESS benchmark (issue 4): 6 speaker-independent folds (4 consecutive actors each), embedded `base`, `trim`
windows; LoRA (r=32, alpha=64, v_proj, as the paper), frozen and full fine-tuning on the same folds, plus LoRA with
30-s `full` windows on one fold. Prints the table, writes JSON and a Markdown table.

    python bench/ravdess.py --root ../shared/data/ravdess --out runs/bench-ravdess [--methods lora,frozen,full]
        [--folds 0,1,2,3,4,5] [--epochs 10] [--json bench/results/ravdess.json]

Resumable: re-running skips complete folds and resumes an interrupted one from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

from loralens.io import atomic_write_json, atomic_write_text, read_yaml_mapping
from loralens.training.config import make_config
from loralens.training.crossval import train
from loralens.training.metrics import mean_std


def fold_rows(run_dir: Path) -> list[dict]:
    rows = []
    for m in sorted(run_dir.glob("fold_*/metrics.json")):
        d = json.loads(m.read_text())
        rows.append({
            "fold": d["fold"], "uar": d["test"]["uar"], "war": d["test"]["war"], "macro_f1": d["test"]["macro_f1"],
            "wall_time_s": d["wall_time_s"], "peak_rss_mib": d["peak_memory"].get("cpu_rss_peak_mib"),
            "peak_cuda_mib": d["peak_memory"].get("cuda_max_allocated_mib"),
            "trainable_params": d["trainable_params"], "selected_epoch": d["selected_epoch"],
        })
    return rows


def settings(run_dir: Path) -> dict:
    """The recipe a variant was trained with (its config snapshot), so each row of the table says how it was made."""
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    cfg = read_yaml_mapping(path)
    keep = ("method", "window", "epochs", "batch_size", "lr_encoder", "lr_head", "patience", "head")
    out = {k: cfg.get(k) for k in keep}
    if cfg.get("method") == "lora":
        out["lora"] = cfg.get("lora")
    return out


def summarise(name: str, rows: list[dict], recipe: dict | None = None) -> dict:
    out = {"variant": name, "settings": recipe or {}, "folds": rows, "n_folds": len(rows)}
    for key in ("uar", "war", "macro_f1"):
        out[key] = mean_std([r[key] for r in rows]) if rows else None
    out["wall_time_s"] = sum(r["wall_time_s"] for r in rows)
    out["peak_rss_mib"] = max((r["peak_rss_mib"] or 0) for r in rows) if rows else None
    out["trainable_params"] = rows[0]["trainable_params"] if rows else None
    return out


def paired_difference(rows: list[dict], reference: list[dict]) -> dict | None:
    """Test-UAR differences `rows - reference` on the folds both have: mean ± std (ddof 1), counts of folds better and
    worse; None without a common fold."""
    ref = {r["fold"]: r["uar"] for r in reference}
    common = [r for r in rows if r["fold"] in ref]
    if not common:
        return None
    diffs = [r["uar"] - ref[r["fold"]] for r in common]
    return {**mean_std(diffs), "folds": [r["fold"] for r in common],
            "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs)}


def recipe_text(recipe: dict) -> str:
    """`3 ep, lr 3e-4 / head 1e-3` from a variant's settings (the encoder lr only where the encoder trains)."""
    if not recipe:
        return "–"
    text = f"{recipe['epochs']} ep"
    if recipe.get("method") != "frozen":
        text += f", lr {recipe['lr_encoder']:g}"
    return text + f", head lr {recipe['lr_head']:g}"


def pm(d: dict | None) -> str:
    if not d or d.get("mean") is None:
        return "–"
    std = d.get("std")
    return f"{d['mean']:.3f} ± {std:.3f}" if std is not None else f"{d['mean']:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("../shared/data/ravdess"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench-ravdess"))
    ap.add_argument("--model", default="base")
    ap.add_argument("--methods", default="lora,frozen,full",
                    help="among lora, frozen, full, each optionally with -wls or -wls-ln (e.g. frozen-wls-ln)")
    ap.add_argument("--folds", default="0,1,2,3,4,5", help="fold indices to run")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr-encoder", type=float, default=1e-4, help="learning rate of the adapters / encoder")
    ap.add_argument("--full-window-fold", type=int, default=0, help="fold of the LoRA run with 30-s windows (-1: none)")
    ap.add_argument("--suffix", default="", help="appended to the variant names (their run folders), e.g. -e10 for "
                    "a second recipe of the same method")
    ap.add_argument("--json", type=Path, default=Path("bench/results/ravdess.json"))
    ap.add_argument("--markdown", type=Path, default=Path("bench/results/ravdess.md"))
    args = ap.parse_args(argv)

    folds = [int(f) for f in args.folds.split(",") if f.strip()]
    common = {"corpus": "ravdess", "corpus_root": str(args.root), "model": args.model, "folds": "ravdess6",
              "folds_file": None, "epochs": args.epochs, "batch_size": args.batch_size, "seed": 0,
              "lr_encoder": args.lr_encoder, "lp_ft_epochs": 0,  # the recipes of section 2 of docs/results.md: no LP-FT
              "feature_cache": str(args.out / "feature_cache")}
    variants = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        # `<method>` or `<method>-wls` (head on a learned softmax-weighted sum of all layers, SUPERB) or
        # `<method>-wls-ln` (the same, each layer's pooled vector normalised first)
        base_method, _, head_kind = method.partition("-")
        if base_method not in ("lora", "frozen", "full") or head_kind not in ("", "wls", "wls-ln"):
            ap.error(f"unknown method {method!r}: use lora, frozen or full, optionally with -wls or -wls-ln")
        head = {"weighted_layer_sum": bool(head_kind), "layer_norm": head_kind == "wls-ln"}
        variants.append((f"{method}-trim{args.suffix}",
                         {**common, "method": base_method, "window": "trim", "head": head}, folds))
    if args.full_window_fold >= 0:
        variants.append((f"lora-full-window{args.suffix}", {**common, "method": "lora", "window": "full"},
                         [args.full_window_fold]))

    for name, base, fold_list in variants:
        run_dir = args.out / name
        cached = args.out / "frozen-trim" / "encoder_cache"
        if name.startswith("frozen-wls") and cached.is_dir() and not (run_dir / "encoder_cache").exists():
            # same encoder, window and clips: the cached per-layer pooled outputs are the same; reuse them
            shutil.copytree(cached, run_dir / "encoder_cache")
        for k in fold_list:
            cfg = make_config(base, {"run_dir": str(run_dir), "fold": k})
            t0 = time.perf_counter()
            train(cfg)
            print(f"[{name}] fold {k}: {time.perf_counter() - t0:.0f} s", flush=True)
    # The table covers every variant trained so far under --out (earlier invocations included).
    order = {"lora": 0, "frozen": 1, "full": 2}
    known = sorted((p.name for p in args.out.iterdir() if (p / "config.yaml").exists()),
                   key=lambda n: (order.get(n.split("-")[0], 9), "full-window" in n, n))
    results = [summarise(n, fold_rows(args.out / n), settings(args.out / n)) for n in known]

    lines = ["| variant | recipe | folds | UAR | WAR | macro-F1 | trainable params | train time (s, all folds) "
             "| peak RSS (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['variant']} | {recipe_text(r['settings'])} | {r['n_folds']} | {pm(r['uar'])} | "
                     f"{pm(r['war'])} | {pm(r['macro_f1'])} | {r['trainable_params']:,} | {r['wall_time_s']:.0f} | "
                     f"{r['peak_rss_mib']:.0f} |"
                     if r["n_folds"] else
                     f"| {r['variant']} | {recipe_text(r['settings'])} | 0 | – | – | – | – | – | – |")
    # Speakers differ far more between folds than methods do: compare each variant with the frozen baseline fold by
    # fold (paired differences on the same test speakers), not only by the means.
    reference = next((r for r in results if r["variant"] == "frozen-trim"), None)
    if reference is not None:
        lines += ["",
                  "Paired with frozen-trim on the same folds (test UAR difference, mean ± std over those folds):", "",
                  "| variant | folds | ΔUAR vs frozen-trim | folds better / worse |", "|---|---|---|---|"]
        for r in results:
            r["vs_frozen"] = paired_difference(r["folds"], reference["folds"])
            if r is reference or r["vs_frozen"] is None:
                continue
            d = r["vs_frozen"]
            lines.append(f"| {r['variant']} | {d['n']} | {d['mean']:+.3f} ± {d['std']:.3f} | "
                         f"{d['better']} / {d['worse']} |" if d["std"] is not None else
                         f"| {r['variant']} | {d['n']} | {d['mean']:+.3f} | {d['better']} / {d['worse']} |")
    table = "\n".join(lines)
    print(table)
    # each variant's own recipe is in its "settings"; these are the arguments of the invocation that wrote the file
    doc = {"benchmark": "ravdess", "model": args.model,
           "last_invocation": {"epochs": args.epochs, "batch_size": args.batch_size, "lr_encoder": args.lr_encoder},
           "machine": {"platform": platform.platform(), "python": sys.version.split()[0]},
           "command": "python bench/ravdess.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "results": results}
    atomic_write_json(args.json, doc)
    atomic_write_text(args.markdown, table + "\n")
    print(f"wrote {args.json} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

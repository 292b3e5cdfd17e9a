"""Assemble a `loralens run`-shaped output folder from training runs made separately (e.g. by bench/ravdess.py),
so that `loralens report OUT` turns them into one report.

    python bench/assemble_run.py --out runs/ravdess-report --corpus ravdess --root ../shared/data/ravdess \\
        --variant lora=runs/bench-ravdess/lora-trim --variant frozen=runs/bench-ravdess/frozen-trim \\
        --analysis lora:0=runs/bench-ravdess/lora-trim/analysis/fold_0
    loralens report runs/ravdess-report

Training runs and analyses are linked (symlinks), not copied; run.yaml, folds.json, data/summary.json and
stages.json are written from the runs' own files (folds must agree across variants).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from loralens.data.corpora import load_corpus
from loralens.data.folds import load_folds
from loralens.data.summary import summarize
from loralens.io import atomic_write_json, atomic_write_text, read_json
from loralens.training.run_folder import RunFolder
from loralens.training.run_layout import RunLayout


def _pairs(values: list[str], what: str) -> list[tuple[str, Path]]:
    out = []
    for v in values:
        if "=" not in v:
            raise SystemExit(f"--{what} {v!r}: expected NAME=PATH")
        name, path = v.split("=", 1)
        out.append((name, Path(path).resolve()))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--label-set")
    ap.add_argument("--variant", action="append", default=[], help="NAME=TRAINING_RUN_DIR (repeat)")
    ap.add_argument("--analysis", action="append", default=[], help="VARIANT:FOLD=ANALYSIS_DIR (repeat)")
    args = ap.parse_args(argv)

    out = args.out
    layout = RunLayout(out)
    variants = _pairs(args.variant, "variant")
    if not variants:
        raise SystemExit("name at least one --variant")
    layout.train_root.mkdir(parents=True, exist_ok=True)
    folds_files = {name: read_json(RunFolder(path).folds) for name, path in variants}
    first_name, first = next(iter(folds_files.items()))
    for name, doc in folds_files.items():
        if [sorted(f["test"]) for f in doc["folds"]] != [sorted(f["test"]) for f in first["folds"]]:
            raise SystemExit(f"variant {name} has other folds than {first_name}")
    atomic_write_json(layout.folds, first)

    corpus = load_corpus(args.corpus, args.root, args.label_set)
    in_folds = {i for f in first["folds"] for s in ("train", "validation", "test") for i in f[s]}
    corpus.clips = [c for c in corpus.clips if c.id in in_folds]
    atomic_write_json(layout.data_summary, summarize(corpus, load_folds(layout.folds, corpus)))

    stages = []
    train_cfg = None
    for name, path in variants:
        link = layout.variant(name)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path, target_is_directory=True)
        run = RunFolder(path)
        cfg = yaml.safe_load(run.config.read_text())
        train_cfg = train_cfg or cfg
        wall = sum(json.loads(run.fold(k).metrics.read_text())["wall_time_s"] for k in run.fold_indices()
                   if run.fold(k).metrics.exists())
        stages.append({"name": f"train:{name}", "wall_time_s": round(wall, 2), "status": "done"})
    for spec, path in _pairs(args.analysis, "analysis"):
        variant, fold = spec.split(":")
        link = layout.analysis_fold(variant, int(fold))
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path, target_is_directory=True)
        wall = sum(read_json(r)["meta"]["wall_time_s"] for r in path.glob("*/result.json"))
        stages.append({"name": f"analysis:{variant}:fold_{fold}", "wall_time_s": round(wall, 2), "status": "done"})
    shared = {k: train_cfg[k] for k in ("corpus", "corpus_root", "label_set", "model", "window", "folds", "epochs",
                                        "batch_size", "lr_encoder", "lr_head", "seed", "lora") if k in train_cfg}
    run_yaml = {"out": str(out), "train": shared, "method": "lora", "baseline": any(n == "frozen" for n, _ in variants),
                "assembled_from": {name: str(path) for name, path in variants}, "synthetic": False}
    atomic_write_text(layout.run_yaml, yaml.safe_dump(run_yaml, sort_keys=False))
    atomic_write_json(layout.stages, {"stages": stages, "seed": train_cfg.get("seed", 0)})
    print(f"assembled {out}: variants {[n for n, _ in variants]}; now: loralens report {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

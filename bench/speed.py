"""Speed of every stage on this machine, before and after issue 10, side by side in one run (one job at a time).

    python bench/speed.py --root ../shared/data/ravdess --model base --out bench/results/speed.json
    python bench/speed.py --root ../shared/data/ravdess --model base --suite-fold   # + the whole suite, one fold

Measures (per clip unless said):
- the machine's matmul peak: 2048 x 2048 matmul, fp32 and bf16, GFLOP/s with the threads torch uses;
- features, cold: Whisper's extractor on the 30-s window (before) and on the shortened window `compute_features`
  uses (after); warm: read back from the cache;
- encoder forward (no grad) on trimmed batches, fp32 and bf16 autocast, with the achieved GFLOP/s (FLOPs counted
  from the model's shapes and the batch's padded frames);
- a LoRA training step (forward, backward, gradient clipping, AdamW) on trimmed batches, fp32 and bf16, and on 30-s
  windows in fp32 (the paper's recipe);
- the reference's four analyses (layer contribution, logit lens without the tuned lens, single and progressive
  erasure) on `--analysis-clips` test clips for the adapted and the frozen model, each analysis on its own passes
  (before) and with shared passes (after), fp32 and bf16;
- with --suite-fold: the whole analysis suite on fold 0 of RAVDESS (all test clips, all training clips for the
  tuned lens and probes), wall time and peak resident memory.

The models are the embedded weights with a LoRA adapter (r=32, alpha=64, v_proj) whose B matrices are random
(N(0, 0.02^2)) and random heads: analysis and training costs do not depend on trained values. Writes JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from loralens.io import atomic_write_json


def _time(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> float:
    """Median wall seconds of `fn` over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def matmul_peak(n: int = 2048) -> dict[str, float]:
    """GFLOP/s of an n x n matmul in fp32 and bf16 (2 n^3 FLOP each)."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        s = _time(lambda a=a, b=b: a @ b, repeat=5, warmup=2)
        out[name] = 2 * n**3 / s / 1e9
    return out


def encoder_flops(cfg: Any, frames: int, mel_frames: int) -> float:
    """FLOPs of one encoder forward on one clip of `mel_frames` mel frames (`frames` encoder frames): conv stem,
    per layer the q/k/v/out projections, attention scores and mixing, the two FFN matmuls (2 FLOP per MAC)."""
    d, ffn, n_mels, layers = cfg.d_model, cfg.encoder_ffn_dim, cfg.num_mel_bins, cfg.encoder_layers
    conv = 3 * n_mels * d * mel_frames + 3 * d * d * frames
    per_layer = frames * (4 * d * d + 2 * d * ffn) + 2 * frames * frames * d
    return 2.0 * (conv + layers * per_layer)


def build(args: argparse.Namespace, cache_dir: Path):
    """(config, prepared corpus, adapted classifier, frozen classifier, fold 0 test clips, fold 0 train clips)."""
    from loralens.analysis.loading import balanced_sample
    from loralens.models.lora import ADAPTER, lora_modules
    from loralens.training.config import make_config
    from loralens.training.crossval import build_classifier, make_accelerator, prepare

    cfg = make_config({"corpus": "ravdess", "corpus_root": str(args.root), "model": args.model, "folds": "ravdess6",
                       "method": "lora", "window": "trim", "feature_cache": str(cache_dir), "run_dir": str(cache_dir),
                       "precision": "fp32"})
    prep = prepare(cfg, make_accelerator("fp32"), write=False)
    adapted = build_classifier(cfg, prep.whisper_encoder, len(prep.labels))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in lora_modules(adapted.encoder).values():
            w = m.lora_B[ADAPTER].weight
            w.copy_(torch.randn(w.shape, generator=gen) * 0.02)
    frozen_cfg = make_config({**cfg.model_dump(), "method": "frozen", "lp_ft_epochs": 0})
    frozen = build_classifier(frozen_cfg, prep.whisper_encoder, len(prep.labels))
    by_id = prep.corpus.by_id()
    fold = prep.folds[0]
    test = [by_id[i] for i in fold.test]
    train = [by_id[i] for i in fold.train]
    return cfg, prep, adapted.eval(), frozen.eval(), test, train, balanced_sample


def bench_features(prep: Any, clips: list, n: int) -> dict[str, float]:
    from loralens.data.audio import load_audio
    from loralens.data.features import FeatureCache, compute_features

    settings = prep.feature_cache.settings
    ex = settings.extractor()
    audio = [load_audio(c.path, sr=settings.sampling_rate) for c in clips[:n]]
    t = time.perf_counter()
    for a in audio:
        ex(a, sampling_rate=settings.sampling_rate, return_tensors="pt")
    full = (time.perf_counter() - t) / len(audio)
    t = time.perf_counter()
    for a in audio:
        compute_features(a, settings, ex)
    prefix = (time.perf_counter() - t) / len(audio)
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(Path(tmp))
        t = time.perf_counter()
        for c in clips[:n]:
            cache.get(c)  # decode + hash + features + write: a cold cache
        cold = (time.perf_counter() - t) / n
        again = FeatureCache(Path(tmp))
        t = time.perf_counter()
        for c in clips[:n]:
            again.get(c)
        warm = (time.perf_counter() - t) / n
    return {"extractor_30s_window_s": full, "extractor_short_window_s": prefix, "cold_cache_get_s": cold,
            "warm_cache_get_s": warm, "clips": len(audio)}


def _autocast(precision: str):
    import contextlib

    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def bench_forward(clf: Any, split: Any, precision: str, peak: dict[str, float]) -> dict[str, float]:
    cfg = clf.encoder.config
    flops = sum(encoder_flops(cfg, (int(b.features.shape[-1]) + 1) // 2, int(b.features.shape[-1])) * len(b.ids)
                for b in split.batches)
    n = split.n_clips

    def once():
        with torch.no_grad(), _autocast(precision):
            for b in split.batches:
                clf.run(b.features, b.mel_lengths)

    s = _time(once, repeat=3, warmup=1)
    return {"s_per_clip": s / n, "gflop_per_clip": flops / n / 1e9, "gflops": flops / s / 1e9,
            "fraction_of_peak": flops / s / 1e9 / peak[precision], "clips": n}


def bench_train_step(clf: Any, split: Any, precision: str) -> dict[str, float]:
    model = copy.deepcopy(clf).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def once():
        for b in split.batches:
            with _autocast(precision):
                logits = model(b.features, b.mel_lengths)
            loss = torch.nn.functional.cross_entropy(logits.float(), b.labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

    s = _time(once, repeat=2, warmup=1)
    return {"s_per_clip": s / split.n_clips, "clips": split.n_clips}


def bench_analyses(adapted: Any, frozen: Any, labels: list[str], test: Any, names: list[str], shared: bool,
                   precision: str, n_boot: int) -> dict[str, Any]:
    from loralens.analysis.context import AnalysisContext
    from loralens.analysis.passes import SharedPasses
    from loralens.analysis.suite import PeakRSS, run_suite

    ctx = AnalysisContext(adapted=adapted, frozen=frozen, label_names=tuple(labels), test=test, train=None,
                          n_boot=n_boot, passes=SharedPasses(enabled=shared, progress=False), precision=precision)
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as rss:
        t = time.perf_counter()
        res = run_suite(ctx, Path(tmp), names, keep_going=False)
        wall = time.perf_counter() - t
    return {"wall_s": wall, "s_per_clip": wall / test.n_clips, "clips": test.n_clips, "peak_rss_mib": rss.peak_mib,
            "per_analysis_s": {n: r["meta"]["wall_time_s"] for n, r in res.items()},
            "per_analysis_peak_rss_mib": {n: r["meta"]["peak_rss_mib"] for n, r in res.items()}, "results": res}


def _leaves(x: Any, path: str = "") -> dict[str, float]:
    """Numeric leaves of a result (lists flattened with their index), path -> value; meta and readings left out."""
    out: dict[str, float] = {}
    if isinstance(x, dict):
        for k, v in x.items():
            if k not in ("meta", "reading"):
                out.update(_leaves(v, f"{path}.{k}" if path else str(k)))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            out.update(_leaves(v, f"{path}[{i}]"))
    elif isinstance(x, (int, float)) and not isinstance(x, bool) and x == x:
        out[path] = float(x)
    return out


#: the curves the verdicts read, as path prefixes of the results (point estimates only)
VERDICT_CURVES = ("logit_lens.adapted.agreement.value", "logit_lens.frozen.agreement.value",
                  "erasure.single.uar", "erasure.prefix.uar", "layer_contribution.adapted.total_rel.value")


def max_curve_diff(a: dict, b: dict) -> dict[str, float]:
    """Max |difference| between two runs of the reference analyses: over the curves the verdicts read, and over every
    numeric value of each analysis (bands included)."""
    la, lb = _leaves(a), _leaves(b)
    out = {}
    for prefix in VERDICT_CURVES:
        keys = [k for k in la if k in lb and re.fullmatch(re.escape(prefix) + r"(\.value)?(\[\d+\])*", k)]
        if keys:
            out[prefix] = max(abs(la[k] - lb[k]) for k in keys)
    for name in a:
        keys = [k for k in la if k.startswith(name + ".") and k in lb]
        out[f"{name} (every value)"] = max((abs(la[k] - lb[k]) for k in keys), default=0.0)
    return out


#: What a previous session measured on this machine before issue 10 (docs/performance.md cites it).
BEFORE_ISSUE_10 = {"train_trim_fp32_s_per_clip": 0.090, "train_reference_30s_fp32_s_per_clip": 1.27,
                   "reference_analyses_both_models_s_per_clip": 0.79, "suite_fold0_wall_s": 720.0,
                   "suite_fold0_peak_rss_mib": 2.9 * 1024, "features_cold_ms_per_clip": 83.0}


def markdown_table(r: dict) -> str:
    """The before / after table of docs/performance.md from a JSON written by this script."""
    f, t, a = r["features"], r["train_step"], r["reference_analyses"]
    rows = [
        ("LoRA training step, s per clip (forward, backward, optimiser)",
         f"{t['full_window_fp32']['s_per_clip']:.3f} (30-s windows, fp32)" if "full_window_fp32" in t else "-",
         f"{t['trim_fp32']['s_per_clip']:.3f} (trim, fp32)", f"{t['trim_bf16']['s_per_clip']:.3f} (trim, bf16)",
         "<= 0.045 (2x)"),
        ("encoder forward, s per clip (no grad, trim)", "-", f"{r['forward']['fp32']['s_per_clip']:.4f} fp32 "
         f"({r['forward']['fp32']['gflops']:.0f} GFLOP/s)", f"{r['forward']['bf16']['s_per_clip']:.4f} bf16 "
         f"({r['forward']['bf16']['gflops']:.0f} GFLOP/s)", "-"),
        ("the reference's four analyses, both models, s per clip", "-",
         f"{a['separate_fp32']['s_per_clip']:.3f} (separate passes, fp32)",
         f"{a['shared_fp32']['s_per_clip']:.3f} shared fp32 / {a['shared_bf16']['s_per_clip']:.3f} shared bf16",
         "<= 0.28"),
        ("cold features, ms per clip (extractor only)", "-", f"{1000 * f['extractor_30s_window_s']:.1f} (30-s window)",
         f"{1000 * f['extractor_short_window_s']:.1f} (short window)", "<= 12"),
        ("cold cache get, ms per clip (decode, hash, features, write)", "-", "-",
         f"{1000 * f['cold_cache_get_s']:.1f}", "-"),
    ]
    if "suite_fold0" in r:
        s = r["suite_fold0"]
        rows.append(("whole suite, fold 0 (all test and training clips)", "-", "-",
                     f"{s['wall_s'] / 60:.1f} min, {s['peak_rss_mib'] / 1024:.2f} GiB peak", "<= 3 min, <= 1.5 GB"))
    out = ["| work | the reference recipe | before (this run) | after (this run) | goal |", "|---|---|---|---|---|"]
    out += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("../shared/data/ravdess"))
    ap.add_argument("--model", default="base")
    ap.add_argument("--out", type=Path, default=Path("bench/results/speed.json"))
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-speed/feature_cache"),
                    help="feature cache for the model stages (warm after the first run)")
    ap.add_argument("--feature-clips", type=int, default=96)
    ap.add_argument("--step-clips", type=int, default=32, help="clips per training-step measurement")
    ap.add_argument("--analysis-clips", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--skip-full-window", action="store_true", help="skip the 30-s window training step (slow)")
    ap.add_argument("--suite-fold", action="store_true", help="also run the whole suite on fold 0")
    ap.add_argument("--table", type=Path, default=None, help="print the Markdown table of a JSON written before, exit")
    args = ap.parse_args(argv)
    if args.table is not None:
        print(markdown_table(json.loads(args.table.read_text())))
        return 0
    from loralens.analysis.loading import split_data
    from loralens.training.precision import cpu_bf16_features

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16 features {cpu_bf16_features()}",
          flush=True)
    out: dict[str, Any] = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                                       "threads": torch.get_num_threads(), "bf16_features": list(cpu_bf16_features())},
                           "model": args.model, "corpus_root": str(args.root)}
    out["matmul_peak_gflops"] = peak = matmul_peak()
    print(f"matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s", flush=True)

    cfg, prep, adapted, frozen, test_clips, train_clips, balanced_sample = build(args, args.cache)
    out["features"] = feats = bench_features(prep, test_clips, args.feature_clips)
    print(f"features: 30-s extractor {1000 * feats['extractor_30s_window_s']:.1f} ms/clip, short window "
          f"{1000 * feats['extractor_short_window_s']:.1f} ms/clip; cold cache get (decode, hash, features, write) "
          f"{1000 * feats['cold_cache_get_s']:.1f} ms/clip, warm {1000 * feats['warm_cache_get_s']:.2f} ms/clip",
          flush=True)
    prep.feature_cache.prefetch(test_clips + train_clips, progress=False)

    step_clips = balanced_sample(train_clips, max(1, args.step_clips // len(prep.labels)), 0)[: args.step_clips]
    trim = split_data(step_clips, prep, "trim", args.batch_size)
    out["forward"] = {p: bench_forward(adapted, trim, p, peak) for p in ("fp32", "bf16")}
    for p, r in out["forward"].items():
        print(f"encoder forward {p}: {r['s_per_clip']:.4f} s/clip, {r['gflop_per_clip']:.2f} GFLOP/clip, "
              f"{r['gflops']:.0f} GFLOP/s ({100 * r['fraction_of_peak']:.0f}% of the matmul peak)", flush=True)
    out["train_step"] = {f"trim_{p}": bench_train_step(adapted, trim, p) for p in ("fp32", "bf16")}
    if not args.skip_full_window:
        full = split_data(step_clips[: max(2, args.batch_size)], prep, "full", args.batch_size)
        out["train_step"]["full_window_fp32"] = bench_train_step(adapted, full, "fp32")
    for k, r in out["train_step"].items():
        print(f"LoRA training step {k}: {r['s_per_clip']:.4f} s/clip", flush=True)

    names = ["layer_contribution", "logit_lens", "erasure"]
    a_clips = balanced_sample(test_clips, max(1, args.analysis_clips // len(prep.labels)), 0)[: args.analysis_clips]
    a_split = split_data(a_clips, prep, "trim", 16)
    runs = {}
    for label, shared, precision in (("separate_fp32", False, "fp32"), ("shared_fp32", True, "fp32"),
                                     ("shared_bf16", True, "bf16")):
        runs[label] = bench_analyses(adapted, frozen, prep.labels, a_split, names, shared, precision, args.n_boot)
        r = runs[label]
        print(f"reference analyses ({label}): {r['s_per_clip']:.3f} s/clip for both models "
              f"({r['clips']} clips; {', '.join(f'{n} {s:.1f} s' for n, s in r['per_analysis_s'].items())}), "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    out["reference_analyses"] = {k: {kk: vv for kk, vv in v.items() if kk != "results"} for k, v in runs.items()}
    out["bf16_vs_fp32_max_abs_diff"] = max_curve_diff(runs["shared_fp32"]["results"], runs["shared_bf16"]["results"])
    out["shared_vs_separate_max_abs_diff"] = max_curve_diff(runs["shared_fp32"]["results"],
                                                            runs["separate_fp32"]["results"])
    print(f"bf16 vs fp32, max |diff| of verdict curves: {out['bf16_vs_fp32_max_abs_diff']}", flush=True)
    print(f"shared vs separate passes (fp32): {out['shared_vs_separate_max_abs_diff']}", flush=True)

    if args.suite_fold:
        from loralens.analysis.context import AnalysisContext
        from loralens.analysis.suite import PeakRSS, run_suite

        ctx = AnalysisContext(adapted=adapted, frozen=frozen, label_names=tuple(prep.labels),
                              test=split_data(test_clips, prep, "trim", 16),
                              train=split_data(train_clips, prep, "trim", 16), n_boot=1000)
        with tempfile.TemporaryDirectory() as tmp, PeakRSS() as rss:
            t = time.perf_counter()
            res = run_suite(ctx, Path(tmp), None, keep_going=True)
            wall = time.perf_counter() - t
        out["suite_fold0"] = {"wall_s": wall, "peak_rss_mib": rss.peak_mib, "test_clips": ctx.test.n_clips,
                              "train_clips": ctx.train.n_clips,
                              "per_analysis_s": {n: r["meta"]["wall_time_s"] for n, r in res.items()},
                              "per_analysis_peak_rss_mib": {n: r["meta"]["peak_rss_mib"] for n, r in res.items()}}
        print(f"whole suite, fold 0 ({ctx.test.n_clips} test, {ctx.train.n_clips} training clips): {wall:.0f} s, "
              f"peak RSS {rss.peak_mib:.0f} MiB; seconds {out['suite_fold0']['per_analysis_s']}; peak RSS (MiB) "
              f"{out['suite_fold0']['per_analysis_peak_rss_mib']}", flush=True)
    atomic_write_json(args.out, out)
    print(markdown_table(out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

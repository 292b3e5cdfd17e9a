"""Benchmark of the feature cache: a cold and a warm pass over a corpus folder, and what padding costs.

    python bench/feature_cache.py --root ../shared/data/ravdess [--cache DIR] [--out bench_feature_cache.json]

Prints the figures and writes them as JSON. Measures: the cold pass (decode + extractor + write, per clip),
the warm pass (hash + read) in a fresh cache object, the extractor's torch path (what `__call__` uses) against
its numpy path on a sample, exactness of cached `full` features against the extractor on that sample, disk
use, and the share of padding frames under `full`, `trim` in file order and `trim` with length-grouped batches.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from loralens.data.audio import is_audio_file, load_audio
from loralens.data.batching import LengthGroupedBatchSampler, trim_frames
from loralens.data.features import FeatureCache, FeatureSettings
from loralens.io import atomic_write_json


def padding_share(lengths: list[int], batches: list[list[int]], window: str, multiple: int) -> float:
    """Share of the frames in all batches that are padding (past each clip's valid frames)."""
    total = valid = 0
    for b in batches:
        frames = 3000 if window == "full" else trim_frames(max(lengths[i] for i in b), multiple)
        total += frames * len(b)
        valid += sum(lengths[i] for i in b)
    return 1.0 - valid / total


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="corpus folder (audio files, any depth)")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=Path("bench_feature_cache.json"))
    parser.add_argument("--n-mels", type=int, default=80)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N files (0 = all)")
    parser.add_argument("--sample", type=int, default=48, help="clips for the extractor-path comparison")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    files = sorted(p for p in args.root.rglob("*") if p.is_file() and is_audio_file(p))
    if args.limit:
        files = files[: args.limit]
    if not files:
        sys.exit(f"no audio files under {args.root}")
    cache_root = args.cache or Path(tempfile.mkdtemp(prefix="loralens-feature-bench-"))
    settings = FeatureSettings.from_n_mels(args.n_mels)

    cold_cache = FeatureCache(cache_root, settings)
    t0 = time.perf_counter()
    computed = cold_cache.prefetch(files, progress=not args.no_progress)
    cold_s = time.perf_counter() - t0

    warm_cache = FeatureCache(cache_root, settings)
    t0 = time.perf_counter()
    feats = [warm_cache.get(f) for f in files]
    warm_s = time.perf_counter() - t0
    assert warm_cache.computed == 0, "warm pass computed features"

    t0 = time.perf_counter()
    for f in files:
        FeatureCache(cache_root, settings).content_key(f)
    hash_s = time.perf_counter() - t0

    # the extractor's two paths on a sample, plus exactness of the cache against __call__
    rng = random.Random(0)
    sample = rng.sample(range(len(files)), min(args.sample, len(files)))
    extractor = settings.extractor()
    audios = [load_audio(files[i]) for i in sample]
    t0 = time.perf_counter()
    refs = [extractor(a, sampling_rate=settings.sampling_rate, return_tensors="pt")["input_features"][0]
            for a in audios]
    torch_s = (time.perf_counter() - t0) / len(sample)
    t0 = time.perf_counter()
    np_out = []
    for a in audios:
        padded = np.zeros(settings.max_samples, np.float32)
        padded[: min(a.size, settings.max_samples)] = a[: settings.max_samples]
        np_out.append(extractor._np_extract_fbank_features(padded[None], "cpu")[0])
    numpy_s = (time.perf_counter() - t0) / len(sample)
    np_diff = max(float(np.abs(n - r.numpy()).max()) for n, r in zip(np_out, refs))
    exact = sum(torch.equal(feats[i].full(settings.max_frames), r) for i, r in zip(sample, refs))

    lengths = [f.n_frames for f in feats]
    in_order = [list(range(i, min(i + args.batch_size, len(files)))) for i in range(0, len(files), args.batch_size)]
    shuffled = list(range(len(files)))
    random.Random(0).shuffle(shuffled)
    random_batches = [shuffled[i : i + args.batch_size] for i in range(0, len(files), args.batch_size)]
    grouped = LengthGroupedBatchSampler(lengths, args.batch_size, seed=0).batches()
    entries = list(cold_cache.folder.rglob("*.safetensors"))
    disk = sum(p.stat().st_size for p in entries)

    result = {
        "root": str(args.root),
        "cache": str(cache_root),
        "clips": len(files),
        "n_mels": settings.n_mels,
        "settings_key": cold_cache.settings_key,
        "cold": {"seconds": cold_s, "ms_per_clip": 1000 * cold_s / len(files), "computed": computed},
        "warm": {"seconds": warm_s, "ms_per_clip": 1000 * warm_s / len(files), "computed": warm_cache.computed},
        "hash_only": {"seconds": hash_s, "ms_per_clip": 1000 * hash_s / len(files)},
        "extractor_paths": {
            "sample": len(sample),
            "torch_call_ms_per_clip": 1000 * torch_s,
            "numpy_ms_per_clip": 1000 * numpy_s,
            "numpy_vs_torch_max_abs_diff": np_diff,
            "cache_full_equal_to_extractor": f"{exact}/{len(sample)}",
        },
        "disk": {"entries": len(entries), "bytes": disk, "kib_per_clip": disk / 1024 / max(1, len(entries))},
        "frames": {
            "valid_mean": statistics.mean(lengths),
            "valid_min": min(lengths),
            "valid_max": max(lengths),
            "truncated_clips": sum(f.truncated for f in feats),
        },
        "padding_share": {
            "batch_size": args.batch_size,
            "full": padding_share(lengths, in_order, "full", 2),
            "trim_file_order": padding_share(lengths, in_order, "trim", 2),
            "trim_random_batches": padding_share(lengths, random_batches, "trim", 2),
            "trim_length_grouped": padding_share(lengths, grouped, "trim", 2),
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
        },
    }
    atomic_write_json(args.out, result)
    c, w, e = result["cold"], result["warm"], result["extractor_paths"]
    print(f"{len(files)} clips, cache {cache_root}")
    print(f"cold: {c['seconds']:.1f} s ({c['ms_per_clip']:.1f} ms/clip, computed {computed})")
    print(f"warm: {w['seconds']:.1f} s ({w['ms_per_clip']:.2f} ms/clip, computed 0); hashing alone {hash_s:.2f} s")
    print(
        f"extractor per clip: torch __call__ {e['torch_call_ms_per_clip']:.1f} ms, "
        f"numpy {e['numpy_ms_per_clip']:.1f} ms "
        f"(max |diff| {np_diff:.2e}); cache == extractor on {e['cache_full_equal_to_extractor']}"
    )
    print(f"disk: {disk / 2**20:.1f} MiB ({result['disk']['kib_per_clip']:.0f} KiB/clip)")
    print("padding share: "
          + ", ".join(f"{k} {v:.1%}" for k, v in result["padding_share"].items() if k != "batch_size"))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

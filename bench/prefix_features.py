"""Short-window features against the 30-s extractor output on every clip of a corpus folder.

For each audio file: `compute_features` (the extractor on the clip padded to `prefix_samples`, the kept frames
only) against `WhisperFeatureExtractor` on the 30-s window; prints the max abs difference over all kept frames
and padding values, how many clips are bit-identical, and the time per clip of both. Writes JSON.

    python bench/prefix_features.py --root ../shared/data/ravdess --out bench/results/prefix_features.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from loralens.data.audio import load_audio
from loralens.data.features import FeatureSettings, compute_features
from loralens.io import atomic_write_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="folder searched recursively for .flac/.wav files")
    ap.add_argument("--out", type=Path, default=Path("bench/results/prefix_features.json"))
    ap.add_argument("--limit", type=int, default=None, help="first N files only")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    files = sorted(p for p in args.root.rglob("*") if p.suffix.lower() in (".flac", ".wav"))[: args.limit]
    if not files:
        print(f"no audio files under {args.root}", file=sys.stderr)
        return 2
    settings = FeatureSettings()
    ex = settings.extractor()
    worst, worst_file, identical, t_prefix, t_full = 0.0, "", 0, 0.0, 0.0
    for f in files:
        audio = load_audio(f, sr=settings.sampling_rate)
        t = time.perf_counter()
        feats = compute_features(audio, settings, ex, where=str(f))
        t_prefix += time.perf_counter() - t
        t = time.perf_counter()
        ref = ex(audio, sampling_rate=settings.sampling_rate, return_tensors="pt")["input_features"][0]
        t_full += time.perf_counter() - t
        d = float((feats.full() - ref).abs().max())
        identical += int(torch.equal(feats.full(), ref))
        if d > worst:
            worst, worst_file = d, str(f)
    res = {"files": len(files), "root": str(args.root), "max_abs_diff": worst, "worst_file": worst_file,
           "bit_identical": identical, "ms_per_clip_prefix": 1000 * t_prefix / len(files),
           "ms_per_clip_30s": 1000 * t_full / len(files), "threads": 1}
    print(json.dumps(res, indent=1))
    atomic_write_json(args.out, res)
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())

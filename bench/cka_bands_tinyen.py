"""Old (bootstrap) vs new (jackknife) bands of the CKA diagonal on real tiny.en outputs.

The embedded tiny.en encoder, frozen and with a LoRA adapter on v_proj whose B is set to small Gaussian noise (a
stand-in for a trained adapter: the point is the band, not the adapter), on RAVDESS clips (`--clips` spread over
all actors, `trim` windows). For every hidden state: debiased linear CKA(adapted, frozen), the percentile-bootstrap
band over resampled kernels the similarity analysis used before (duplicated clips included) and the delete-a-group
jackknife band it uses now.

    python bench/cka_bands_tinyen.py --root ../shared/data/ravdess --clips 96
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from loralens.analysis.context import SplitData
from loralens.analysis.probing import pooled_hidden_states
from loralens.data.audio import load_audio
from loralens.data.batching import FeatureItem, collate
from loralens.data.features import FeatureSettings, compute_features
from loralens.models.classifier import EmotionClassifier
from loralens.models.lora import ADAPTER, lora_modules
from loralens.numerics.cka_bands import bands


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("../shared/data/ravdess"))
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--b-std", type=float, default=0.01)
    ap.add_argument("--n-boot", type=int, default=200)
    args = ap.parse_args()
    torch.manual_seed(0)
    files = sorted(args.root.glob("Actor_*/*.flac"))
    pick = [files[i] for i in np.linspace(0, len(files) - 1, args.clips).astype(int)]
    settings = FeatureSettings.from_n_mels(80)
    items = [FeatureItem(p.stem, compute_features(load_audio(p), settings), 0) for p in pick]
    batches = [collate(items[i:i + 8], window="trim") for i in range(0, len(items), 8)]
    split = SplitData(batches, [p.parent.name for p in pick])
    frozen = EmotionClassifier.from_whisper("tiny.en", n_classes=8).prepare_for("frozen").eval()
    adapted = EmotionClassifier.from_whisper("tiny.en", n_classes=8).prepare_for("lora").eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in lora_modules(adapted.encoder).values():
            w = m.lora_B[ADAPTER].weight
            w.copy_(torch.randn(w.shape, generator=gen) * args.b_std)
    xa = pooled_hidden_states(adapted, split, torch.device("cpu"))
    xf = pooled_hidden_states(frozen, split, torch.device("cpu"))
    print(f"{args.clips} RAVDESS clips, tiny.en, LoRA B ~ N(0, {args.b_std}^2); 95 % bands of debiased linear CKA")
    print("hidden state | debiased CKA | old bootstrap band | holds estimate | new jackknife band | holds estimate")
    for h, (a, f) in enumerate(zip(xa, xf)):
        a, f = a.astype(np.float64), f.astype(np.float64)
        est, blo, bhi = bands(a, f, "bootstrap", n_boot=args.n_boot)["linear_debiased"]
        _, jlo, jhi = bands(a, f, "jackknife", groups=100)["linear_debiased"]
        print(f"{h} | {est:.3f} | [{blo:.3f}, {bhi:.3f}] | {blo <= est <= bhi} | [{jlo:.3f}, {jhi:.3f}] | "
              f"{jlo <= est <= jhi}", flush=True)


if __name__ == "__main__":
    main()

"""`loralens demo`: the whole pipeline offline, on embedded `tiny.en` and a synthetic corpus made on the fly.

A smoke test of the tool, not an emotion benchmark: the synthetic classes differ by construction in pitch,
tempo, loudness and spectral tilt (see loralens.data.synthetic). The same run on RAVDESS:
`loralens data download ravdess --dest data/ravdess` then
`loralens run --corpus ravdess --corpus-root data/ravdess --model base --window trim`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from loralens.pipeline import AnalysisSettings, RunConfig, run_pipeline

# Sized for minutes on 2 CPU cores: 8 speakers x 4 classes x 6 clips of 1.5-3 s, 4 folds of 2 speakers, a few
# epochs, analyses on fold 0 on at most 6 test clips per class (of 12) and 12 training clips per class (of 24). For
# scale: 4 speakers x 4 classes x 3 clips, 2 folds, 2 epochs, 4 test clips per class took 170 CPU-seconds in all,
# three quarters of it in the analyses (lora_internals, logit_lens and weight_analysis the longest).
DEMO_SPEAKERS = 8
DEMO_CLIPS_PER_CLASS = 6


def demo_config(out: Path, seed: int = 0) -> RunConfig:
    """The demo's run configuration (corpus under `out/corpus`)."""
    return RunConfig(
        out=out,
        train={
            "corpus": "manifest",
            "corpus_root": str(out / "corpus"),
            "model": "tiny.en",
            "window": "trim",
            "folds": "speaker-kfold",
            "folds_k": 4,
            "epochs": 4,
            "batch_size": 8,
            "lr_encoder": 5e-4,
            "lr_head": 2e-3,
            "patience": None,
            "seed": seed,
            "feature_cache": str(out / "feature_cache"),
            "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["v_proj"]},
        },
        method="lora",
        baseline=True,
        analysis=AnalysisSettings(folds=[0], batch_size=16, n_boot=200, test_per_class=6, train_per_class=12),
        synthetic=True,
    )


def run_demo(out: str | Path = "runs/demo", *, seed: int = 0, echo: Callable[[str], None] = print) -> Path:
    """Generate the synthetic corpus (once), run the pipeline on it, return the report's path."""
    from loralens.data.synthetic import generate_corpus

    out = Path(out)
    corpus_dir = out / "corpus"
    if not (corpus_dir / "manifest.csv").exists():
        echo(f"generating the synthetic corpus in {corpus_dir} ...")
        generate_corpus(corpus_dir, n_speakers=DEMO_SPEAKERS, clips_per_class_per_speaker=DEMO_CLIPS_PER_CLASS,
                        seed=seed)
    return run_pipeline(demo_config(out, seed), echo=echo)

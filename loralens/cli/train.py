"""`loralens train`: cross-validated fine-tuning of Whisper's encoder for emotion recognition, into a run folder.

Options come from `--config FILE.yaml` with flags on top (a flag given overrides the file). Re-running the same
command resumes: complete folds are skipped, an interrupted fold continues from its last checkpoint. Several
processes: `accelerate launch --multi_gpu --num_processes N -m loralens train ...` (docs/training.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from loralens.cli.options import Command


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _label_map(value: str | None) -> dict[str, str] | None:
    from loralens.data.corpora import parse_label_map

    return None if value is None else parse_label_map(value)


def _ints(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated layer indices, e.g. 0,1,2") from None


def _d(field: str) -> str:
    from loralens.cli.options import config_default

    return config_default(field)


@click.command(cls=Command, examples=[
    "loralens train --corpus ravdess --corpus-root data/ravdess --model tiny.en --run-dir runs/tiny",
    "loralens train --corpus manifest --corpus-root my_corpus/manifest.csv --label-map anger=angry \\\n"
    "    --folds speaker-kfold --folds-k 4 --model base --run-dir runs/mine --dry-run",
    "loralens train --config train.yaml --fold 0 --epochs 2",
])
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file of training settings; flags override it.")
@click.option("--corpus", show_default=_d("corpus"),
              help="Corpus name (ravdess, crema-d, emodb, tess, iemocap, manifest, hf).")
@click.option("--corpus-root", type=click.Path(path_type=Path), show_default=_d("corpus_root"),
              help="Folder of the corpus, or the manifest file (.csv / .jsonl).")
@click.option("--label-set", show_default="the corpus default",
              help="Label set (e.g. 4class, all) or comma-separated labels in class order.")
@click.option("--label-map", show_default=_d("label_map"),
              help="Rename labels before the label set, e.g. anger=angry,hap=happy.")
@click.option("--on-unknown-label", type=click.Choice(["error", "skip"]), show_default=_d("on_unknown_label"),
              help="Manifest labels that look like mistakes or lie outside the label set: stop, or leave them out.")
@click.option("--audio-column", show_default="audio", help="hf corpus: the audio column.")
@click.option("--label-column", show_default="label", help="hf corpus: the label column.")
@click.option("--speaker-column", show_default="speaker", help="hf corpus: the speaker column.")
@click.option("--session-column", show_default="session, when present", help="hf corpus: the session column.")
@click.option("--folds", show_default=_d("folds"),
              help="Fold scheme (auto, ravdess6, leave-one-speaker-out, leave-one-session-out, speaker-kfold) "
                   "or a folds JSON file.")
@click.option("--folds-file", type=click.Path(dir_okay=False, path_type=Path), show_default=_d("folds_file"),
              help="Folds JSON file (overrides --folds).")
@click.option("--folds-k", type=int, show_default="auto: 5, fewer with few speakers",
              help="Number of folds of speaker-kfold.")
@click.option("--fold", type=int, show_default="all folds", help="Run only this fold (0-based index).")
@click.option("--model", show_default=_d("model"),
              help="Whisper source: tiny.en, base, a Hugging Face folder, a .pt, a CTranslate2 folder.")
@click.option("--method", type=click.Choice(["lora", "frozen", "full"]), show_default=_d("method"),
              help="What trains besides the head.")
@click.option("--lora-r", type=int, show_default=_d("lora.r"), help="LoRA rank.")
@click.option("--lora-alpha", type=float, show_default=_d("lora.alpha"), help="LoRA alpha.")
@click.option("--lora-dropout", type=float, show_default=_d("lora.dropout"), help="LoRA dropout.")
@click.option("--lora-targets", show_default=_d("lora.target_modules"), help="Comma-separated modules to adapt.")
@click.option("--lora-layers", show_default="all", help="Comma-separated encoder layers to adapt.")
@click.option("--projector-dim", type=int, show_default=_d("head.projector_dim"), help="Projector width of the head.")
@click.option("--weighted-layer-sum/--last-layer", default=None, show_default=_d("head.weighted_layer_sum"),
              help="Learned weighted sum of all hidden states.")
@click.option("--layer-norm/--no-layer-norm", default=None, show_default=_d("head.layer_norm"),
              help="With --weighted-layer-sum: normalise each layer's pooled vector before weighting.")
@click.option("--window", type=click.Choice(["full", "trim"]), show_default=_d("window"),
              help="full: 30-s windows (paper); trim: longest clip of the batch.")
@click.option("--mask-padding/--no-mask-padding", default=None, show_default="on for trim, off for full",
              help="Mask padded frames in attention.")
@click.option("--batch-size", type=int, show_default=_d("batch_size"), help="Global batch (all processes together).")
@click.option("--eval-batch-size", type=int, show_default="--batch-size", help="Batch of evaluation.")
@click.option("--grad-accum", type=int, show_default=_d("grad_accum"), help="Micro-batches per optimiser step.")
@click.option("--epochs", type=int, show_default=_d("epochs"), help="Maximum epochs.")
@click.option("--lr-head", type=float, show_default=_d("lr_head"), help="Learning rate of the head.")
@click.option("--lr-encoder", type=float, show_default=_d("lr_encoder"),
              help="Learning rate of the adapters (lora) or the encoder (full).")
@click.option("--weight-decay", type=float, show_default=_d("weight_decay"), help="AdamW weight decay.")
@click.option("--warmup-ratio", type=float, show_default=_d("warmup_ratio"), help="Share of steps warming up.")
@click.option("--schedule", type=click.Choice(["cosine", "linear"]), show_default=_d("schedule"),
              help="Learning-rate decay after warm-up.")
@click.option("--grad-clip", type=float, show_default=_d("grad_clip"), help="Max gradient norm; 0 = no clipping.")
@click.option("--patience", type=int, show_default=_d("patience"),
              help="Early stopping patience in epochs on validation UAR; 0 = off.")
@click.option("--seed", type=int, show_default=_d("seed"), help="Seed of folds, initialisation and data order.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), show_default=_d("precision"),
              help="Numeric precision (auto: bf16 on CPUs with AMX/AVX512-BF16 and on bf16 GPUs, else fp32; printed "
                   "and saved in the run).")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              show_default=_d("gradient_checkpointing"), help="Recompute activations to save memory.")
@click.option("--num-workers", type=int, show_default=_d("num_workers"), help="DataLoader worker processes.")
@click.option("--feature-cache", type=click.Path(file_okay=False, path_type=Path),
              show_default="$LORALENS_CACHE/features", help="Feature cache folder.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), show_default=_d("run_dir"),
              help="Run folder (results, checkpoints).")
@click.option("--on-bad-audio", type=click.Choice(["stop", "skip"]), show_default=_d("on_bad_audio"),
              help="A clip that fails the audio checks: stop, or leave it out (listed in bad_files.json).")
@click.option("--checkpoint-every", type=int, show_default=_d("checkpoint_every"),
              help="Optimiser steps between checkpoints.")
@click.option("--log-every", type=int, show_default=_d("log_every"), help="Optimiser steps between log lines.")
@click.option("--dry-run", is_flag=True, help="Print the plan (folds, sizes, trainable parameters) and stop.")
def train(config_file: Path | None, dry_run: bool, **flags) -> None:
    """Train an emotion classifier on Whisper's encoder with cross-validation (LoRA, frozen or full).

    \b
    Writes <run-dir>/config.yaml, folds.json, summary.json, summary.md and per fold fold_k/ with
    adapter/ (peft), head.safetensors, metrics.json, log.jsonl and figures/.
    """
    from loralens.training.config import load_config
    from loralens.training.crossval import train as run_training

    overrides = {
        "corpus": flags["corpus"], "corpus_root": flags["corpus_root"], "label_set": flags["label_set"],
        "label_map": _label_map(flags["label_map"]), "on_unknown_label": flags["on_unknown_label"],
        "folds": flags["folds"], "folds_file": flags["folds_file"], "folds_k": flags["folds_k"], "fold": flags["fold"],
        "model": flags["model"], "method": flags["method"],
        "lora.r": flags["lora_r"], "lora.alpha": flags["lora_alpha"], "lora.dropout": flags["lora_dropout"],
        "lora.target_modules": _csv(flags["lora_targets"]), "lora.layers": _ints(flags["lora_layers"]),
        "head.projector_dim": flags["projector_dim"], "head.weighted_layer_sum": flags["weighted_layer_sum"],
        "head.layer_norm": flags["layer_norm"],
        "window": flags["window"], "mask_padding": flags["mask_padding"],
        "batch_size": flags["batch_size"], "eval_batch_size": flags["eval_batch_size"],
        "grad_accum": flags["grad_accum"],
        "epochs": flags["epochs"], "lr_head": flags["lr_head"], "lr_encoder": flags["lr_encoder"],
        "weight_decay": flags["weight_decay"], "warmup_ratio": flags["warmup_ratio"], "schedule": flags["schedule"],
        "seed": flags["seed"], "precision": flags["precision"],
        "gradient_checkpointing": flags["gradient_checkpointing"], "num_workers": flags["num_workers"],
        "feature_cache": flags["feature_cache"], "run_dir": flags["run_dir"], "on_bad_audio": flags["on_bad_audio"],
        "checkpoint_every": flags["checkpoint_every"], "log_every": flags["log_every"],
        **{f"corpus_options.{k}": flags[k] for k in ("audio_column", "label_column", "speaker_column",
                                                     "session_column")},
    }
    # 0 switches these off (None in the config); None here means "flag not given"
    off = {k: 0 for k in ("grad_clip", "patience") if flags[k] == 0}
    for k in ("grad_clip", "patience"):
        if flags[k] is not None and flags[k] != 0:
            overrides[k] = flags[k]
    overrides = {k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()}
    cfg = load_config(config_file, overrides)
    for k in off:
        setattr(cfg, k, None)
    run_training(cfg, dry_run=dry_run, echo=click.echo)


def main(argv: list[str] | None = None) -> int:
    """`loralens train` as a function of its arguments (returns the exit code; errors printed, exit 2)."""
    from loralens.cli import run_command

    return run_command(train, argv, "loralens train")


if __name__ == "__main__":
    sys.exit(main())

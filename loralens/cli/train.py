"""`loralens train`: cross-validated fine-tuning of Whisper's encoder for emotion recognition, into a run folder.

Options come from `--config FILE.yaml` with flags on top (a flag given overrides the file). Re-running the same
command resumes: complete folds are skipped, an interrupted fold continues from its last checkpoint. Several
processes: `accelerate launch --multi_gpu --num_processes N -m loralens train ...` (docs/training.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click



def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated layer indices, e.g. 0,1,2") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file of training settings; flags override it.")
@click.option("--corpus", help="Corpus name (ravdess, crema-d, emodb, tess, iemocap, manifest, hf).")
@click.option("--corpus-root", type=click.Path(file_okay=False, path_type=Path), help="Folder of the corpus.")
@click.option("--label-set", help="Label set of the corpus (default: the corpus default).")
@click.option("--audio-column", help="hf corpus: the audio column (default audio).")
@click.option("--label-column", help="hf corpus: the label column (default label).")
@click.option("--speaker-column", help="hf corpus: the speaker column (default speaker).")
@click.option("--session-column", help="hf corpus: the session column (default session, when present).")
@click.option("--folds", help="Fold scheme: auto, ravdess6, leave-one-speaker-out, leave-one-session-out, speaker-kfold.")
@click.option("--folds-file", type=click.Path(dir_okay=False, path_type=Path), help="Folds JSON file (overrides --folds).")
@click.option("--folds-k", type=int, help="Number of folds of speaker-kfold.")
@click.option("--fold", type=int, help="Run only this fold (0-based index); default all.")
@click.option("--model", help="Whisper source: tiny.en, base, a Hugging Face folder, a .pt, a CTranslate2 folder.")
@click.option("--method", type=click.Choice(["lora", "frozen", "full"]), help="What trains besides the head.")
@click.option("--lora-r", type=int, help="LoRA rank (default 32).")
@click.option("--lora-alpha", type=float, help="LoRA alpha (default 64).")
@click.option("--lora-dropout", type=float, help="LoRA dropout (default 0.1).")
@click.option("--lora-targets", help="Comma-separated modules to adapt (default v_proj).")
@click.option("--lora-layers", help="Comma-separated encoder layers to adapt (default all).")
@click.option("--projector-dim", type=int, help="Projector width of the head (default 256).")
@click.option("--weighted-layer-sum/--last-layer", default=None, help="Learned weighted sum of all hidden states.")
@click.option("--layer-norm/--no-layer-norm", default=None,
              help="With --weighted-layer-sum: normalise each layer's pooled vector before weighting.")
@click.option("--window", type=click.Choice(["full", "trim"]), help="full: 30-s windows (paper); trim: longest clip.")
@click.option("--mask-padding/--no-mask-padding", default=None, help="Mask padded frames in attention (default: trim only).")
@click.option("--batch-size", type=int, help="Global batch (all processes together).")
@click.option("--eval-batch-size", type=int)
@click.option("--grad-accum", type=int, help="Micro-batches per optimiser step.")
@click.option("--epochs", type=int)
@click.option("--lr-head", type=float, help="Learning rate of the head.")
@click.option("--lr-encoder", type=float, help="Learning rate of the adapters (lora) or the encoder (full).")
@click.option("--weight-decay", type=float)
@click.option("--warmup-ratio", type=float)
@click.option("--schedule", type=click.Choice(["cosine", "linear"]))
@click.option("--grad-clip", type=float, help="Max gradient norm; 0 = no clipping.")
@click.option("--patience", type=int, help="Early stopping patience in epochs on validation UAR; 0 = off.")
@click.option("--seed", type=int)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]))
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None)
@click.option("--num-workers", type=int, help="DataLoader worker processes.")
@click.option("--feature-cache", type=click.Path(file_okay=False, path_type=Path), help="Feature cache folder.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), help="Run folder (results, checkpoints).")
@click.option("--on-bad-audio", type=click.Choice(["stop", "skip"]))
@click.option("--checkpoint-every", type=int, help="Optimiser steps between checkpoints.")
@click.option("--log-every", type=int, help="Optimiser steps between log lines.")
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
        "folds": flags["folds"], "folds_file": flags["folds_file"], "folds_k": flags["folds_k"], "fold": flags["fold"],
        "model": flags["model"], "method": flags["method"],
        "lora.r": flags["lora_r"], "lora.alpha": flags["lora_alpha"], "lora.dropout": flags["lora_dropout"],
        "lora.target_modules": _csv(flags["lora_targets"]), "lora.layers": _ints(flags["lora_layers"]),
        "head.projector_dim": flags["projector_dim"], "head.weighted_layer_sum": flags["weighted_layer_sum"],
        "head.layer_norm": flags["layer_norm"],
        "window": flags["window"], "mask_padding": flags["mask_padding"],
        "batch_size": flags["batch_size"], "eval_batch_size": flags["eval_batch_size"], "grad_accum": flags["grad_accum"],
        "epochs": flags["epochs"], "lr_head": flags["lr_head"], "lr_encoder": flags["lr_encoder"],
        "weight_decay": flags["weight_decay"], "warmup_ratio": flags["warmup_ratio"], "schedule": flags["schedule"],
        "seed": flags["seed"], "precision": flags["precision"],
        "gradient_checkpointing": flags["gradient_checkpointing"], "num_workers": flags["num_workers"],
        "feature_cache": flags["feature_cache"], "run_dir": flags["run_dir"], "on_bad_audio": flags["on_bad_audio"],
        "checkpoint_every": flags["checkpoint_every"], "log_every": flags["log_every"],
        **{f"corpus_options.{k}": flags[k] for k in ("audio_column", "label_column", "speaker_column", "session_column")},
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

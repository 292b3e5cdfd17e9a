"""`loralens train`: cross-validated fine-tuning of Whisper's encoder for emotion recognition, into a run folder.

Options come from `--config FILE.yaml` with flags on top (a flag given overrides the file). Re-running the same
command resumes: complete folds are skipped, an interrupted fold continues from its last checkpoint. Several
processes: `accelerate launch --multi_gpu --num_processes N -m loralens train ...` (docs/training.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from loralens.cli.config_flags import TRAIN_FLAGS, config_options, config_overrides, switched_off
from loralens.cli.options import Command


@click.command(cls=Command, examples=[
    "loralens train --corpus ravdess --corpus-root data/ravdess --model tiny.en --run-dir runs/tiny",
    "loralens train --corpus manifest --corpus-root my_corpus/manifest.csv --label-map anger=angry \\\n"
    "    --folds speaker-kfold --folds-k 4 --model base --run-dir runs/mine --dry-run",
    "loralens train --config train.yaml --fold 0 --epochs 2",
])
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file of training settings; flags override it.")
@config_options(TRAIN_FLAGS)
@click.option("--dry-run", is_flag=True, help="Print the plan (folds, sizes, trainable parameters) and stop.")
def train(config_file: Path | None, dry_run: bool, **flags: Any) -> None:
    """Train an emotion classifier on Whisper's encoder with cross-validation (LoRA, frozen or full).

    \b
    Writes <run-dir>/config.yaml, folds.json, summary.json, summary.md and per fold fold_k/ with
    adapter/ (peft), head.safetensors, metrics.json, log.jsonl and figures/.
    """
    from loralens.training.config import load_config
    from loralens.training.crossval import train as run_training

    cfg = load_config(config_file, config_overrides(TRAIN_FLAGS, flags))
    for field in switched_off(TRAIN_FLAGS, flags):  # 0 switches these off (None in the config)
        setattr(cfg, field, None)
    run_training(cfg, dry_run=dry_run, echo=click.echo)


def main(argv: list[str] | None = None) -> int:
    """`loralens train` as a function of its arguments (returns the exit code; errors printed, exit 2)."""
    from loralens.cli import run_command

    return run_command(train, argv, "loralens train")


if __name__ == "__main__":
    sys.exit(main())

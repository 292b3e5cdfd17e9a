"""`loralens export RUN --fold k --out DIR`: one fold as a transformers audio-classification folder."""

from __future__ import annotations

from pathlib import Path

import click

from loralens.cli.options import Command


@click.command("export", cls=Command, examples=[
    "loralens export runs/ravdess/train/lora --fold 0 --out exported/ravdess-fold0 --exact",
    "loralens export runs/ravdess/train/lora --fold 2 --out exported/fold2 --no-measure",
])
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--fold", type=int, required=True, help="The fold to export (0-based index).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New (or empty) folder to write the model to.")
@click.option("--exact/--plain", default=None, show_default="exact when the head needs it (per-layer normalisation "
              "or z-scoring before a weighted layer sum, the default head), plain otherwise",
              help="--exact also writes loralens' pooling as transformers remote code: loaded with "
                   "trust_remote_code=True the folder reproduces loralens predict; --plain writes only the plain "
                   "WhisperForAudioClassification (a close copy; refused for a head transformers cannot express).")
@click.option("--measure/--no-measure", default=True, show_default=True,
              help="Measure how often transformers' pipeline agrees with loralens predict on the fold's test clips.")
@click.option("--measure-clips", type=int, default=None, show_default="all", help="At most this many test clips.")
@click.option("--corpus-root", type=click.Path(exists=True, path_type=Path), default=None,
              show_default="the run's corpus_root", help="Where the run's corpus is now, for the measurement.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def export(run_dir: Path, fold: int, out: Path, exact: bool | None, measure: bool, measure_clips: int | None,
           corpus_root: Path | None, no_progress: bool) -> None:
    """Export fold FOLD of the run RUN_DIR as a WhisperForAudioClassification folder (LoRA merged into the encoder),
    with its feature-extractor config, id2label/label2id, a model card (README.md) and the unmerged peft adapter
    (peft_adapter/). Load it with transformers.pipeline("audio-classification", model=OUT)."""
    from loralens.inference.export import export_fold

    def progress(items):
        from tqdm import tqdm

        return tqdm(items, desc="pipeline", unit="clip", disable=True if no_progress else None)

    info = export_fold(run_dir, fold, out, exact=exact, measure=measure, measure_clips=measure_clips,
                       corpus_root=corpus_root, progress=progress, echo=lambda s: click.echo(s, err=True))
    click.echo(f"fold {fold} of {run_dir} exported to {out} ({info['method']} on {info['model']}, "
               f"{len(info['labels'])} classes"
               f"{', exact pooling with trust_remote_code=True' if info['exact'] else ''})")
    ag = info["agreement"]
    if ag:
        click.echo(f"pipeline vs loralens predict on {ag['clips']} test clips: "
                   f"same label {100 * ag['agreement']:.1f} %, "
                   f"max abs. probability difference {ag['max_abs_prob_diff']:.2g}")

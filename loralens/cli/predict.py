"""`loralens predict RUN INPUT...`: classify audio files with a trained run (one fold or the ensemble of its folds)."""

from __future__ import annotations

from pathlib import Path

import click

from loralens.cli.options import Command


@click.command("predict", cls=Command, examples=[
    "loralens predict runs/ravdess/train/lora clip.wav more_clips/ --out predictions.csv",
    "loralens predict runs/ravdess/train/lora manifest.csv --fold 0 --json --on-bad-audio skip",
    "loralens predict runs/seed0 clips/ --join runs/seed1 --join runs/seed2 --out predictions.csv",
])
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--fold", type=int, default=None, show_default="the ensemble of all complete folds",
              help="Use this fold's model (0-based index).")
@click.option("--ensemble", is_flag=True,
              help="Average the class probabilities of every complete fold (the default without --fold).")
@click.option("--join", "join", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Another run of the same recipe (e.g. another seed) whose models (the same --fold, or every "
                   "complete fold) join the ensemble; repeatable.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              show_default="the standard output", help="File to write (CSV, or JSON with --json).")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of CSV.")
@click.option("--on-bad-audio", type=click.Choice(["stop", "skip"]), default="stop", show_default=True,
              help="stop at the first bad audio file, or skip bad files (named on stderr and in the JSON).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Windows per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
@click.option("--max-seconds", type=float, default=600.0, show_default=True,
              help="Longer files are bad files (clips over 30 s are classified over consecutive 30-s windows).")
@click.option("--speaker", default=None,
              help="The speaker of clips whose manifest names none (a run trained with head.speaker_norm needs each "
                   "clip's speaker, and several clips of each).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def predict(run_dir: Path, inputs: tuple[Path, ...], fold: int | None, ensemble: bool, join: tuple[Path, ...],
            out: Path | None, as_json: bool, on_bad_audio: str, batch_size: int, device: str, max_seconds: float,
            speaker: str | None, no_progress: bool) -> None:
    """Classify audio files, folders (searched recursively) or manifests (CSV/JSONL with a path column) with the
    run RUN_DIR. Writes per clip the label, every class probability, the duration and the number of 30-s windows.

    Clips longer than 30 s are classified over consecutive 30-s windows whose probabilities are averaged weighted
    by window length; --ensemble averages the folds' probabilities. A run that normalises per speaker
    (head.speaker_norm) reads every clip first, then each speaker's statistics, then classifies.
    """
    import json

    from loralens.errors import ConfigError
    from loralens.inference.predict import predict as run_predict

    if fold is not None and ensemble:
        raise ConfigError("--fold and --ensemble both given", "use one fold's model (--fold k) or all (--ensemble)")

    def progress(items):
        from tqdm import tqdm

        return tqdm(items, desc="predict", unit="clip", disable=True if no_progress else None)

    def report_bad(bad) -> None:
        click.echo(f"bad audio, skipped: {bad.path}: {bad.reason}", err=True)

    result = run_predict(run_dir, list(inputs), fold=fold, on_bad_audio=on_bad_audio, batch_size=batch_size,
                         device=device, max_seconds=max_seconds, progress=progress, on_bad=report_bad, join=join,
                         speaker=speaker)
    if out is not None:
        result.write(out, as_json=as_json)
    else:
        click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.to_csv(), nl=as_json)
    folds = ", ".join(map(str, result.folds))
    models = f"fold {result.folds[0]}" if not result.ensemble else f"ensemble of folds {folds}"
    if result.joined_runs:
        models += f" of {1 + len(result.joined_runs)} runs"
    acc = result.accuracy()
    click.echo(f"{len(result.clips)} clip(s) classified with {models}"
               + (f", {len(result.bad_files)} bad file(s) skipped" if result.bad_files else "")
               + (f"; accuracy against the manifest's labels {acc:.4f}" if acc is not None else "")
               + (f" -> {out}" if out is not None else ""), err=True)

"""`loralens data ...`: corpus summaries, folds, checksum verification, downloads."""

from __future__ import annotations

import json
from pathlib import Path

import click

from loralens.cli.options import Command


class CheckFailed(click.ClickException):
    """A check ran and found problems (exit code 1; bad input is exit code 2)."""

    exit_code = 1


@click.group()
def data() -> None:
    """Emotion corpora: summary, folds, verify, download."""


COLUMN_FLAGS = ("audio_column", "label_column", "speaker_column", "session_column")


def _corpus_options(f):
    for name in reversed(COLUMN_FLAGS):
        f = click.option(f"--{name.replace('_', '-')}", name, default=None, show_default=name.split("_")[0],
                         help=f"hf corpus: the {name.split('_')[0]} column.")(f)
    f = click.option("--on-unknown-label", type=click.Choice(["error", "skip"]), default="error",
                     help="Manifest labels that look like mistakes or lie outside the label set: stop, or leave "
                          "them out.")(f)
    f = click.option("--label-map", default=None, show_default="none",
                     help="Rename labels before the label set, e.g. anger=angry,hap=happy.")(f)
    f = click.option("--label-set", default=None, show_default="the corpus default",
                     help="Label set (e.g. 8class, 4class, all) or comma-separated labels in class order.")(f)
    f = click.option("--corpus-root", "root", required=True, type=click.Path(path_type=Path),
                     help="Folder holding the corpus in its official layout, or a manifest file.")(f)
    f = click.option("--corpus", "corpus_name", required=True,
                     help="Corpus name: ravdess, crema-d, emodb, tess, iemocap, manifest, hf.")(f)
    return f


def _fold_options(f):
    f = click.option("--seed", type=int, default=0,
                     help="Seed of the validation-speaker draw (and of speaker-kfold).")(f)
    f = click.option("--val-speakers", "n_val_speakers", type=int, default=None, show_default="~10% of training",
                     help="Validation speakers per fold, taken from its training speakers.")(f)
    f = click.option("--folds-k", "k", type=int, default=None, show_default="auto: 5, fewer with few speakers",
                     help="Number of folds of the speaker-kfold scheme (--folds auto then means speaker-kfold).")(f)
    return f


def _load(corpus_name: str, root: Path, label_set: str | None, label_map: str | None, on_unknown_label: str,
          columns: dict[str, str | None] | None = None):
    from loralens.data.corpora import load_corpus

    return load_corpus(corpus_name, root, label_set, label_map=label_map, on_unknown_label=on_unknown_label,
                       warn=lambda t: click.echo(f"warning: {t}", err=True), options=columns)


def _tqdm_iter(desc: str):
    from tqdm import tqdm

    return lambda items: tqdm(items, desc=desc, unit="file", disable=None)


@data.command("summary", cls=Command, examples=[
    "loralens data summary --corpus ravdess --corpus-root data/ravdess --label-set 4class",
    "loralens data summary --corpus manifest --corpus-root my_corpus/manifest.csv --folds auto",
])
@_corpus_options
@click.option("--folds", "folds_spec", default=None, show_default="no fold table",
              help="Also count per fold and check the folds: a scheme (auto, ravdess6, leave-one-speaker-out, "
                   "leave-one-session-out, speaker-kfold) or a folds JSON file.")
@_fold_options
@click.option("--no-durations", is_flag=True, help="Skip the duration statistics (they read every file header).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the JSON summary to this file.")
def summary_cmd(corpus_name: str, root: Path, label_set: str | None, label_map: str | None, on_unknown_label: str,
                folds_spec: str | None, k: int | None, n_val_speakers: int | None, seed: int, no_durations: bool,
                as_json: bool, out: Path | None, **columns: str | None) -> None:
    """Clips per class, per speaker and per fold, and duration statistics (from file headers, no decoding).

    With --folds, the fold check too: clips per class in every split, errors for folds that cannot measure a
    class (exit code 1) and warnings for weak validation splits."""
    from loralens.data.folds import (
        check_fold_classes,
        describe_scheme,
        fold_check_hint,
        format_fold_check,
        resolve_folds,
    )
    from loralens.data.summary import format_summary, summarize
    from loralens.io import atomic_write_json

    corpus = _load(corpus_name, root, label_set, label_map, on_unknown_label, columns)
    folds = None
    scheme = None
    check = None
    if folds_spec is not None:
        folds, scheme = resolve_folds(folds_spec, corpus, k=k, n_val_speakers=n_val_speakers, seed=seed)
        check = check_fold_classes(folds, corpus, scheme=scheme, seed=seed)
    result = summarize(corpus, folds, durations=not no_durations, progress=_tqdm_iter("durations"))
    if scheme is not None:
        result["fold_scheme"] = scheme
        result["fold_check"] = {"errors": check.errors, "warnings": check.warnings, "suggestion": check.suggestion}
    if out is not None:
        atomic_write_json(out, result)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        text = format_summary(result)
        if scheme is not None:
            scheme_text = describe_scheme(corpus, folds_spec, k=k) if not folds_spec.endswith(".json") else scheme
            text += f"(folds: {scheme_text}, seed {seed})\n\n" + format_fold_check(check, corpus.labels) + "\n"
        click.echo(text, nl=False)
    if check is not None and check.errors:
        raise CheckFailed(f"{len(check.errors)} fold error(s): the folds cannot measure every class\n"
                          f"  hint: {fold_check_hint(check)}")


@data.command("folds", cls=Command, examples=[
    "loralens data folds --corpus ravdess --corpus-root data/ravdess --out folds.json",
    "loralens data folds --corpus manifest --corpus-root my_corpus/manifest.csv --folds speaker-kfold \\\n"
    "    --folds-k 4 --val-speakers 2 --out my_folds.json",
])
@_corpus_options
@click.option("--folds", "scheme", default="auto",
              help="auto, ravdess6, leave-one-speaker-out, leave-one-session-out or speaker-kfold.")
@_fold_options
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file to write the folds to (pass it back with --folds FILE).")
def folds_cmd(corpus_name: str, root: Path, label_set: str | None, label_map: str | None, on_unknown_label: str,
              scheme: str, k: int | None, n_val_speakers: int | None, seed: int, out: Path,
              **columns: str | None) -> None:
    """Make speaker-independent folds (with validation speakers), check what they can measure, write them.

    Prints the clips per class of every split; folds with errors (a test split missing a class training has, a
    class of one speaker) are not written (exit code 2), and the error names a scheme that works."""
    from loralens.data.folds import (
        check_fold_classes,
        describe_scheme,
        fold_check_hint,
        format_fold_check,
        make_folds,
        resolve_scheme,
        save_folds,
    )
    from loralens.errors import FoldError

    corpus = _load(corpus_name, root, label_set, label_map, on_unknown_label, columns)
    name = resolve_scheme(corpus, scheme, k=k)
    folds = make_folds(corpus, name, k=k, n_val_speakers=n_val_speakers, seed=seed)
    check = check_fold_classes(folds, corpus, scheme=name, seed=seed)
    click.echo(f"{len(folds)} folds ({name}, seed {seed}) of {corpus.name}, {len(corpus.clips)} clips; scheme "
               f"{describe_scheme(corpus, scheme, k=k)}")
    for f in folds:
        sp = f.speakers(corpus)
        click.echo(f"  {f.name}: test {', '.join(sp['test'])} | validation {', '.join(sp['validation'])} | "
                   f"{len(f.train)}/{len(f.validation)}/{len(f.test)} clips")
    click.echo("")
    click.echo(format_fold_check(check, corpus.labels))
    if check.errors:
        raise FoldError(f"{len(check.errors)} fold error(s): {out} not written", fold_check_hint(check))
    save_folds(out, folds, corpus, scheme=name, seed=seed)
    click.echo(f"-> {out}")


@data.command("verify", cls=Command, examples=[
    "loralens data verify --corpus ravdess --corpus-root data/ravdess",
    "loralens data verify --corpus-root my_copy --hashes my_hashes.tsv --subset",
])
@click.option("--corpus", "corpus_name", default=None,
              help="Corpus whose packaged hash list to use: ravdess, crema-d, emodb, tess.")
@click.option("--corpus-root", "root", required=True, type=click.Path(path_type=Path),
              help="Folder holding the copy to check.")
@click.option("--hashes", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Tab-separated list (relative path, sha256, size) to check against instead of the packaged one.")
@click.option("--subset", is_flag=True, help="Check only the listed files that are present; absent ones are fine.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def verify_cmd(corpus_name: str | None, root: Path, hashes: Path | None, subset: bool, as_json: bool,
               no_progress: bool) -> None:
    """Check a corpus copy file by file against SHA-256 hashes; exit code 1 when anything is wrong."""
    from loralens.data.verify import format_verify_report, verify_files

    if corpus_name is None and hashes is None:
        raise click.UsageError("give --corpus (packaged hash list) or --hashes FILE")
    report = verify_files(root, hashes, corpus=corpus_name, subset=subset, progress=not no_progress)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(format_verify_report(report), nl=False)
    if not report.passed:
        raise CheckFailed(f"{report.base} does not match {report.hash_list}")


@data.command("download", cls=Command, examples=["loralens data download ravdess --dest data/ravdess"])
@click.argument("corpus", type=click.Choice(["ravdess"], case_sensitive=False))
@click.option("--dest", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to put the corpus in (Actor_01/ ... Actor_24/).")
@click.option("--url", default=None, help="Archive URL (default: the official Zenodo record 1188976).")
@click.option("--hashes", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Hash list to verify against (default: the packaged one).")
@click.option("--archive", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Use this already downloaded zip instead of downloading.")
@click.option("--keep-archive", is_flag=True, help="Keep the downloaded zip after a passing check.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def download_cmd(corpus: str, dest: Path, url: str | None, hashes: Path | None, archive: Path | None,
                 keep_archive: bool, no_progress: bool) -> None:
    """Download CORPUS (ravdess: speech, audio-only) resumably, extract it safely and verify every file.

    RAVDESS is licensed CC BY-NC-SA 4.0; cite Livingstone & Russo (2018), PLoS ONE 13(5): e0196391.
    """
    from loralens.data.download import RAVDESS_URL, download_ravdess

    report = download_ravdess(dest, url=url or RAVDESS_URL, hashes=hashes, archive=archive,
                              keep_archive=keep_archive, progress=not no_progress)
    click.echo(f"{corpus}: {len(report.ok)} files verified in {report.base}")


@data.command("synth", cls=Command, examples=[
    "loralens data synth data/synthetic",
    "loralens data synth data/synthetic-hard --speakers 10 --clips 12 --separation 0.5 --clip-sd 0.15",
])
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--speakers", type=int, default=8, show_default=True, help="Speakers (alternating female / male).")
@click.option("--clips", type=int, default=6, show_default=True, help="Clips per class and speaker.")
@click.option("--separation", type=float, default=1.0, show_default=True,
              help="Distance of each class from the neutral voice (1 = the published profiles; 0.5 = harder).")
@click.option("--clip-sd", type=float, default=None, show_default="0.06",
              help="Per-clip log-normal spread of pitch and tempo within a class (larger = harder).")
@click.option("--min-duration", type=float, default=1.5, show_default=True, help="Shortest clip, seconds.")
@click.option("--max-duration", type=float, default=3.0, show_default=True, help="Longest clip, seconds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (the same seed gives the same files).")
@click.option("--flac", is_flag=True, help="Write FLAC instead of 16-bit WAV.")
def synth_cmd(out: Path, speakers: int, clips: int, separation: float, clip_sd: float | None, min_duration: float,
              max_duration: float, seed: int, flac: bool) -> None:
    """Write the synthetic emotional-speech corpus (4 classes; the demo's generator, docs/synthetic.md) to OUT,
    with OUT/manifest.csv to train on: `--corpus manifest --corpus-root OUT/manifest.csv
    --label-set neutral,happy,sad,angry`."""
    from loralens.data.synthetic import generate_corpus

    corpus = generate_corpus(out, n_speakers=speakers, clips_per_class_per_speaker=clips, seed=seed,
                             min_duration=min_duration, max_duration=max_duration,
                             audio_format="flac" if flac else "wav", separation=separation, clip_sd=clip_sd)
    click.echo(f"{len(corpus.clips)} clips of {speakers} speakers, classes {', '.join(corpus.labels)}, in "
               f"{corpus.root}; manifest {corpus.root / 'manifest.csv'}")

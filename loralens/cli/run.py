"""`loralens run` (the whole pipeline) and `loralens demo` (the same, offline, on a synthetic corpus)."""

from __future__ import annotations

from pathlib import Path

import click

from loralens.cli.options import Command


def _ints(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers, e.g. 8,32,64") from None


def _label_map(value: str | None) -> dict[str, str] | None:
    from loralens.data.corpora import parse_label_map

    return None if value is None else parse_label_map(value)


def _targets(value: str | None) -> list[list[str]] | None:
    # "v_proj;q_proj,v_proj" -> [["v_proj"], ["q_proj", "v_proj"]]
    if not value:
        return None
    return [[m.strip() for m in group.split(",") if m.strip()] for group in value.split(";") if group.strip()]


def _d(field: str) -> str:
    from loralens.cli.options import config_default

    return config_default(field)


@click.command(cls=Command, examples=[
    "loralens run --corpus ravdess --corpus-root data/ravdess --model tiny.en --out runs/ravdess",
    "loralens run --corpus manifest --corpus-root my_corpus/manifest.csv --label-map anger=angry \\\n"
    "    --ranks 8,32 --on-bad-audio skip --out runs/mine",
    "loralens run --config run.yaml --dry-run",
])
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Run YAML (see docs/pipeline.md); flags override it.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), show_default="runs/loralens",
              help="Output folder.")
@click.option("--corpus", show_default=_d("corpus"), help="ravdess, crema-d, emodb, tess, iemocap, manifest.")
@click.option("--corpus-root", type=click.Path(path_type=Path), show_default=_d("corpus_root"),
              help="Corpus folder, or the manifest file (.csv / .jsonl).")
@click.option("--label-set", show_default="the corpus default",
              help="Label set (e.g. 4class, all) or comma-separated labels in class order.")
@click.option("--label-map", show_default=_d("label_map"),
              help="Rename labels before the label set, e.g. anger=angry,hap=happy.")
@click.option("--on-unknown-label", type=click.Choice(["error", "skip"]), show_default=_d("on_unknown_label"),
              help="Manifest labels that look like mistakes or lie outside the label set: stop, or leave them out.")
@click.option("--on-bad-audio", type=click.Choice(["stop", "skip"]), show_default=_d("on_bad_audio"),
              help="A clip that fails the audio checks: stop, or leave it out (listed in the report).")
@click.option("--model", show_default=_d("model"),
              help="Whisper weights: tiny.en, base, a HF id or folder, a .pt, a CTranslate2 folder.")
@click.option("--window", type=click.Choice(["full", "trim"]), show_default=_d("window"),
              help="30-s windows (the paper) or trimmed batches.")
@click.option("--folds", show_default=_d("folds"),
              help="Fold scheme (auto, ravdess6, leave-one-speaker-out, leave-one-session-out, speaker-kfold) "
                   "or a folds JSON file.")
@click.option("--folds-k", type=int, show_default="auto: 5, fewer with few speakers", help="Folds of speaker-kfold.")
@click.option("--fold", type=int, show_default="all folds", help="Train (and analyse) only this fold.")
@click.option("--epochs", type=int, show_default=_d("epochs"), help="Maximum epochs.")
@click.option("--seed", type=int, show_default=_d("seed"), help="Seed of the folds, initialisation and data order.")
@click.option("--batch-size", type=int, show_default=_d("batch_size"), help="Global batch.")
@click.option("--lr-encoder", type=float, show_default=_d("lr_encoder"),
              help="Learning rate of the adapters (lora) or encoder (full).")
@click.option("--method", type=click.Choice(["lora", "full"]), show_default="lora",
              help="The adapted model's method.")
@click.option("--ranks", show_default=_d("lora.r"), help="LoRA ranks to compare, e.g. 8,32,64 (alpha = 2 r).")
@click.option("--lora-targets", "targets", show_default=_d("lora.target_modules"),
              help="LoRA target modules; ';' separates sets to compare, e.g. 'v_proj;q_proj,v_proj'.")
@click.option("--seeds", show_default="--seed", help="Seeds to compare, e.g. 0,1,2.")
@click.option("--full/--no-full", "full", default=None, show_default="off", help="Also train full fine-tuning.")
@click.option("--baseline/--no-baseline", default=None, show_default="on", help="Train the frozen baseline.")
@click.option("--analyses", show_default="all", help="Comma-separated analyses (see `loralens analyze --list`).")
@click.option("--analysis-folds", show_default="0", help="Folds to analyse, e.g. 0 or 0,1 or 'all'.")
@click.option("--test-per-class", type=int, show_default="all", help="Class-balanced cap on analysed test clips.")
@click.option("--train-per-class", type=int, show_default="all",
              help="Class-balanced cap on training clips fitting lenses and probes.")
@click.option("--n-boot", type=int, show_default="1000", help="Bootstrap resamples.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), show_default=_d("precision"),
              help="Training precision (auto: bf16 on CPUs with AMX/AVX512-BF16 and on bf16 GPUs, else fp32).")
@click.option("--analysis-precision", type=click.Choice(["fp32", "bf16"]), show_default="fp32",
              help="Precision of the analyses' forward passes.")
@click.option("--no-report", is_flag=True, help="Skip building report.html.")
@click.option("--dry-run", is_flag=True, help="Print the plan of every variant without training.")
def run(config_file: Path | None, out: Path | None, corpus: str | None, corpus_root: Path | None,
        label_set: str | None, label_map: str | None, on_unknown_label: str | None, on_bad_audio: str | None,
        model: str | None, window: str | None, folds: str | None, folds_k: int | None,
        fold: int | None, epochs: int | None, seed: int | None, batch_size: int | None, lr_encoder: float | None,
        method: str | None, ranks: str | None, targets: str | None, seeds: str | None, full: bool | None,
        baseline: bool | None, analyses: str | None, analysis_folds: str | None, test_per_class: int | None,
        train_per_class: int | None, n_boot: int | None, precision: str | None, analysis_precision: str | None,
        no_report: bool, dry_run: bool) -> None:
    """Train the adapted model and its frozen baseline on the same folds, analyse them, write the report."""
    from loralens.pipeline import failed_stages, load_run_config, results_table, run_pipeline

    a_folds = None
    if analysis_folds:
        a_folds = "all" if analysis_folds.strip() == "all" else _ints(analysis_folds)
    overrides = {
        "out": str(out) if out else None,
        "train.corpus": corpus, "train.corpus_root": str(corpus_root) if corpus_root else None,
        "train.label_set": label_set, "train.label_map": _label_map(label_map),
        "train.on_unknown_label": on_unknown_label, "train.on_bad_audio": on_bad_audio, "train.model": model,
        "train.window": window, "train.folds": folds,
        "train.folds_k": folds_k, "train.fold": fold, "train.epochs": epochs, "train.seed": seed,
        "train.batch_size": batch_size, "train.lr_encoder": lr_encoder, "train.precision": precision,
        "method": method, "ranks": _ints(ranks), "target_modules": _targets(targets), "seeds": _ints(seeds),
        "full": full, "baseline": baseline,
        "analysis.names": [n.strip() for n in analyses.split(",")] if analyses else None,
        "analysis.folds": a_folds, "analysis.test_per_class": test_per_class,
        "analysis.train_per_class": train_per_class, "analysis.n_boot": n_boot,
        "analysis.precision": analysis_precision,
        "report": False if no_report else None,
    }
    cfg = load_run_config(config_file, overrides)
    path = run_pipeline(cfg, echo=click.echo, dry_run=dry_run)
    if dry_run:
        click.echo("dry run: nothing was trained or written")
        return
    click.echo("")
    click.echo(results_table(cfg.out))
    failed = failed_stages(cfg.out)
    if failed:  # e.g. an analysis that failed while the others went on: the report shows it; the exit code says it
        raise click.ClickException("stage(s) failed: "
                                   + "; ".join(f"{s['name']} ({s.get('error', '')})" for s in failed)
                                   + f"\n  the report is at {path}; re-run the same command to retry only what failed")
    click.echo(f"report: {path}" if path.suffix == ".html" else f"results: {path}")


@click.command(cls=Command, examples=["loralens demo --out runs/demo"])
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"),
              help="Output folder.")
@click.option("--seed", type=int, default=0, help="Seed of the corpus, folds and training.")
def demo(out: Path, seed: int) -> None:
    """Offline demo: a synthetic emotional-speech corpus, embedded tiny.en, LoRA vs frozen, analyses, report.

    A smoke test of the whole tool (minutes on a laptop CPU), not an emotion benchmark."""
    from loralens.demo import run_demo

    path = run_demo(out, seed=seed, echo=click.echo)
    click.echo(f"\nThe report is at: {path.resolve()}")

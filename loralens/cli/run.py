"""`loralens run` (the whole pipeline) and `loralens demo` (the same, offline, on a synthetic corpus)."""

from __future__ import annotations

from pathlib import Path

import click


def _ints(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers, e.g. 8,32,64") from None


def _targets(value: str | None) -> list[list[str]] | None:
    # "v_proj;q_proj,v_proj" -> [["v_proj"], ["q_proj", "v_proj"]]
    if not value:
        return None
    return [[m.strip() for m in group.split(",") if m.strip()] for group in value.split(";") if group.strip()]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Run YAML (see docs/pipeline.md); flags override it.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder [runs/loralens].")
@click.option("--corpus", help="ravdess, crema-d, emodb, tess, iemocap, manifest.")
@click.option("--corpus-root", type=click.Path(path_type=Path), help="Corpus folder (or manifest file).")
@click.option("--label-set", help="Label set of the corpus.")
@click.option("--model", help="Whisper weights: tiny.en, base, a HF id or folder, a .pt, a CTranslate2 folder.")
@click.option("--window", type=click.Choice(["full", "trim"]), help="30-s windows (the paper) or trimmed batches.")
@click.option("--folds",
              help="Fold scheme (auto, ravdess6, leave-one-speaker-out, leave-one-session-out, speaker-kfold).")
@click.option("--folds-k", type=int, help="Folds of speaker-kfold.")
@click.option("--fold", type=int, help="Train (and analyse) only this fold.")
@click.option("--epochs", type=int)
@click.option("--seed", type=int, help="Seed of the folds, initialisation and data order [0].")
@click.option("--batch-size", type=int)
@click.option("--lr-encoder", type=float, help="Learning rate of the adapters (lora) or encoder (full).")
@click.option("--method", type=click.Choice(["lora", "full"]), help="The adapted model's method [lora].")
@click.option("--ranks", help="LoRA ranks to compare, e.g. 8,32,64 (alpha = 2 r).")
@click.option("--targets", help="LoRA target-module sets, ';'-separated, e.g. 'v_proj;q_proj,v_proj'.")
@click.option("--seeds", help="Seeds to compare, e.g. 0,1,2.")
@click.option("--full/--no-full", "full", default=None, help="Also train full fine-tuning.")
@click.option("--baseline/--no-baseline", default=None, help="Train the frozen baseline [on].")
@click.option("--analyses", help="Comma-separated analyses (default: all).")
@click.option("--analysis-folds", help="Folds to analyse, e.g. 0 or 0,1 or 'all' [0].")
@click.option("--test-per-class", type=int, help="Class-balanced cap on analysed test clips.")
@click.option("--train-per-class", type=int, help="Class-balanced cap on training clips fitting lenses and probes.")
@click.option("--n-boot", type=int, help="Bootstrap resamples [1000].")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]),
              help="Training precision [auto: bf16 on CPUs with AMX/AVX512-BF16 and bf16 GPUs, else fp32].")
@click.option("--analysis-precision", type=click.Choice(["fp32", "bf16"]),
              help="Precision of the analyses' forward passes [fp32].")
@click.option("--no-report", is_flag=True, help="Skip building report.html.")
@click.option("--dry-run", is_flag=True, help="Print the plan of every variant without training.")
def run(config_file: Path | None, out: Path | None, corpus: str | None, corpus_root: Path | None,
        label_set: str | None, model: str | None, window: str | None, folds: str | None, folds_k: int | None,
        fold: int | None, epochs: int | None, seed: int | None, batch_size: int | None, lr_encoder: float | None,
        method: str | None, ranks: str | None, targets: str | None, seeds: str | None, full: bool | None,
        baseline: bool | None, analyses: str | None, analysis_folds: str | None, test_per_class: int | None,
        train_per_class: int | None, n_boot: int | None, precision: str | None, analysis_precision: str | None,
        no_report: bool, dry_run: bool) -> None:
    """Train the adapted model and its frozen baseline on the same folds, analyse them, write the report."""
    from loralens.pipeline import failed_stages, load_run_config, run_pipeline

    a_folds = None
    if analysis_folds:
        a_folds = "all" if analysis_folds.strip() == "all" else _ints(analysis_folds)
    overrides = {
        "out": str(out) if out else None,
        "train.corpus": corpus, "train.corpus_root": str(corpus_root) if corpus_root else None,
        "train.label_set": label_set, "train.model": model, "train.window": window, "train.folds": folds,
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
        return
    failed = failed_stages(cfg.out)
    if failed:  # e.g. an analysis that failed while the others went on: the report shows it; the exit code says it
        raise click.ClickException("stage(s) failed: " + "; ".join(f"{s['name']} ({s.get('error', '')})" for s in failed)
                                   + f"\n  the report is at {path}; re-run the same command to retry only what failed")
    click.echo(f"done: {path}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out: Path, seed: int) -> None:
    """Offline demo: a synthetic emotional-speech corpus, embedded tiny.en, LoRA vs frozen, analyses, report.

    A smoke test of the whole tool (minutes on a laptop CPU), not an emotion benchmark."""
    from loralens.demo import run_demo

    path = run_demo(out, seed=seed, echo=click.echo)
    click.echo(f"\nThe report is at: {path.resolve()}")

"""`loralens run` (the whole pipeline) and `loralens demo` (the same, offline, on a synthetic corpus)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from loralens.cli.config_flags import RUN_FLAGS, config_options, config_overrides
from loralens.cli.options import Command


@click.command(cls=Command, examples=[
    "loralens run --corpus ravdess --corpus-root data/ravdess --model tiny.en --out runs/ravdess",
    "loralens run --corpus manifest --corpus-root my_corpus/manifest.csv --label-map anger=angry \\\n"
    "    --ranks 8,32 --on-bad-audio skip --out runs/mine",
    "loralens run --config run.yaml --dry-run",
])
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Run YAML (see docs/pipeline.md); flags override it.")
@config_options(RUN_FLAGS)
@click.option("--dry-run", is_flag=True, help="Print the plan of every variant without training.")
def run(config_file: Path | None, dry_run: bool, **flags: Any) -> None:
    """Train the adapted model and its frozen baseline on the same folds, analyse them, write the report."""
    from loralens.pipeline import failed_stages, load_run_config, results_table, run_pipeline

    overrides = config_overrides(RUN_FLAGS, flags)
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

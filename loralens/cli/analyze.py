"""`loralens analyze RUN`: run the interpretability suite on one fold of a trained run."""

from __future__ import annotations

from pathlib import Path

import click

from loralens.cli.options import Command


def _names(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command(cls=Command, examples=[
    "loralens analyze --list",
    "loralens analyze runs/mine/train/lora --baseline runs/mine/train/frozen --fold 0",
    "loralens analyze runs/tiny --analyses layer_contribution,logit_lens --test-per-class 20",
])
@click.argument("run_dir", required=False, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--baseline", "baseline_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Frozen-baseline run on the same folds (needed by comparisons with the frozen model).")
@click.option("--fold", type=click.IntRange(min=0), default=0, show_default=True, help="Fold index to analyse.")
@click.option("--analyses", show_default="all", help="Comma-separated analyses. See --list.")
@click.option("--list", "list_only", is_flag=True, help="List the analyses and exit.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), show_default="RUN/analysis/fold_K",
              help="Output folder.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, help="Clips per forward pass.")
@click.option("--test-per-class", type=click.IntRange(min=1), show_default="all",
              help="Class-balanced cap on test clips per class.")
@click.option("--train-per-class", type=click.IntRange(min=1), show_default="all",
              help="Cap on training clips per class for fitted lenses/probes.")
@click.option("--n-boot", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Bootstrap resamples for CIs.")
@click.option("--seed", type=int, default=0, help="Seed of subsampling, bootstrap and probes.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the models run (auto: CUDA when available).")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16: forward passes under bf16 autocast (faster on CPUs with AMX/AVX512-BF16 and on GPUs).")
@click.option("--force", is_flag=True, help="Recompute results that are already complete.")
def analyze(run_dir: Path | None, baseline_dir: Path | None, fold: int, analyses: str | None, list_only: bool,
            out_dir: Path | None, batch_size: int, test_per_class: int | None, train_per_class: int | None,
            n_boot: int, seed: int, device: str, precision: str, force: bool) -> None:
    """Run the analysis suite on fold FOLD of the trained run RUN_DIR; results under RUN_DIR/analysis/.

    `--list` needs no run folder."""
    from loralens.analysis.api import analysis_errors, analyze_run
    from loralens.analysis.suite import available

    if list_only:
        for a in available().values():
            needs = [w for w, f in (("frozen baseline", a.needs_frozen), ("training split", a.needs_train)) if f]
            click.echo(f"{a.name:<20} {a.title}" + (f"  (needs {', '.join(needs)})" if needs else ""))
        return
    if run_dir is None:
        raise click.UsageError("give the run folder RUN_DIR (or --list to see the analyses)")
    from loralens.training.run_folder import RunFolder, RunLock

    with RunLock(run_dir, echo=click.echo):  # not while a training command writes this run folder
        results = analyze_run(
            run_dir, fold=fold, baseline_dir=baseline_dir, names=_names(analyses), out_dir=out_dir,
            batch_size=batch_size, test_per_class=test_per_class, train_per_class=train_per_class,
            n_boot=n_boot, seed=seed, force=force, device=device, precision=precision, echo=click.echo,
        )
    for name, r in results.items():
        if name != "verdicts":
            click.echo(f"{name}: {r.get('reading', '')}")
    for v in results.get("verdicts", {}).values():
        if isinstance(v, dict) and "statement" in v:
            click.echo(f"verdict, {v.get('claim', '')}: {v['statement']}")
    errors = analysis_errors(out_dir or RunFolder(run_dir).analysis(fold),
                             (n for n in _names(analyses) or available() if n not in results))
    if errors:  # the others went on; the exit code says that not all did
        raise click.ClickException("analysis failed: " + "; ".join(f"{n}: {e}" for n, e in errors.items())
                                   + " (details in <out>/<analysis>/error.json)")

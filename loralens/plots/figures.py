"""The one figure idiom of loralens: a headless (Agg) matplotlib `Figure` in the report style, drawn inside
`report_style()`, saved atomically as PNG + SVG with reproducible bytes by `save_figure`.

Figures are made with `matplotlib.figure.Figure` directly, not pyplot: no global state, no GUI backend,
safe in worker processes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

# Headless: never open a window, never need a display. Our figures do not go through pyplot at all, so a
# session that already chose a backend for pyplot (a notebook) keeps it.
if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

from loralens.io import atomic_write_with  # noqa: E402

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

# A light, legible style for report figures (applied per figure, so global rcParams stay untouched).
REPORT_RC: dict[str, object] = {
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.labelsize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8.5,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "svg.fonttype": "path",  # text as paths: the SVG looks the same without the fonts installed
    "svg.hashsalt": "loralens",  # fixed ids in the SVG: same figure, same bytes
}


def report_style() -> AbstractContextManager[None]:
    """Context manager applying REPORT_RC: draw (legends, labels) inside it so they take the report style."""
    return matplotlib.rc_context(REPORT_RC)


def new_figure(width_in: float = 6.4, height_in: float = 3.6, nrows: int = 1, ncols: int = 1,
               **subplots_kw: object) -> tuple[MplFigure, Axes | object]:
    """A figure in the report style (inches) and its axes (one `Axes`, or an array when nrows*ncols > 1)."""
    from matplotlib.figure import Figure

    with matplotlib.rc_context(REPORT_RC):
        fig = Figure(figsize=(width_in, height_in), layout="constrained")
        axes = fig.subplots(nrows, ncols, **subplots_kw)
    return fig, axes


def save_figure(fig: MplFigure, out_stem: str | os.PathLike[str], dpi: int = 150) -> tuple[Path, Path]:
    """Save `fig` as `<out_stem>.png` and `<out_stem>.svg`, each written atomically; returns (png, svg).

    The files carry no creation date or software stamp, so the same figure gives the same bytes.
    """
    stem = Path(out_stem)
    if stem.suffix.lower() in (".png", ".svg"):
        stem = stem.with_suffix("")
    png, svg = stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.svg"
    with matplotlib.rc_context(REPORT_RC):
        atomic_write_with(
            png, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
        )
        atomic_write_with(
            svg, lambda tmp: fig.savefig(tmp, format="svg", metadata={"Date": None, "Creator": None})
        )
    return png, svg

"""Figure helpers shared by the report: a headless (Agg) matplotlib figure, atomic PNG + SVG saving with
reproducible bytes, and data URIs to embed images in the self-contained HTML page.

Figures are made with `matplotlib.figure.Figure` directly, not pyplot: no global state, no GUI backend,
safe in worker processes.
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

# Headless: never open a window, never need a display. Our figures do not go through pyplot at all, so a
# session that already chose a backend for pyplot (a notebook) keeps it.
if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

from loralens.errors import RunFolderError  # noqa: E402
from loralens.io import atomic_write_with  # noqa: E402

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

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


def report_style() -> "AbstractContextManager[None]":
    """Context manager applying REPORT_RC: draw (legends, labels) inside it so they take the report style."""
    return matplotlib.rc_context(REPORT_RC)


def new_figure(width_in: float = 6.4, height_in: float = 3.6, nrows: int = 1, ncols: int = 1,
               **subplots_kw: object) -> tuple["MplFigure", "Axes | object"]:
    """A figure in the report style (inches) and its axes (one `Axes`, or an array when nrows*ncols > 1)."""
    from matplotlib.figure import Figure

    with matplotlib.rc_context(REPORT_RC):
        fig = Figure(figsize=(width_in, height_in), layout="constrained")
        axes = fig.subplots(nrows, ncols, **subplots_kw)
    return fig, axes


def save_figure(fig: "MplFigure", out_stem: str | os.PathLike[str], dpi: int = 150) -> tuple[Path, Path]:
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


def _read(source: str | os.PathLike[str] | bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "<bytes>"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise RunFolderError(
            f"{path}: figure file not found", "re-run the stage that draws this figure"
        ) from None


def image_mime(data: bytes) -> str | None:
    """'image/png' or 'image/svg+xml' from the content (not the file name); None for anything else."""
    if data.startswith(PNG_SIGNATURE):
        return "image/png"
    head = data[:2048].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head) or (
        head.startswith(b"<!doctype svg")
    ):
        return "image/svg+xml"
    if b"<svg" in head and head.startswith(b"<!--"):
        return "image/svg+xml"
    return None


def png_data_uri(source: str | os.PathLike[str] | bytes) -> str:
    """`data:image/png;base64,...` for a PNG file or PNG bytes (checked by signature)."""
    data, name = _read(source)
    if image_mime(data) != "image/png":
        raise RunFolderError(f"{name}: not a PNG file", "pass the .png written by save_figure")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def image_data_uri(source: str | os.PathLike[str] | bytes) -> str:
    """A data URI for a PNG or SVG file or bytes (type from the content). SVG embedded through `<img>` cannot
    run scripts and its ids cannot clash with the page's."""
    data, name = _read(source)
    mime = image_mime(data)
    if mime is None:
        raise RunFolderError(f"{name}: neither PNG nor SVG", "embed the .png or .svg written by save_figure")
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def png_size(source: str | os.PathLike[str] | bytes) -> tuple[int, int]:
    """(width, height) in pixels of a PNG, from its IHDR chunk."""
    data, name = _read(source)
    if image_mime(data) != "image/png" or len(data) < 24:
        raise RunFolderError(f"{name}: not a PNG file", "pass the .png written by save_figure")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def png_dpi(source: str | os.PathLike[str] | bytes) -> float | None:
    """Resolution stored in a PNG's pHYs chunk (dots per inch), None when it has none."""
    data, _ = _read(source)
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"pHYs" and length == 9:
            ppu_x = int.from_bytes(data[pos + 8 : pos + 12], "big")
            unit = data[pos + 16]
            return ppu_x * 0.0254 if unit == 1 and ppu_x > 0 else None
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None

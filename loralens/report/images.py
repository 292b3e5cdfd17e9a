"""Figure files as the self-contained report embeds them: the type from the content (PNG or SVG), data URIs, and a
PNG's pixel size and resolution. The figures themselves are drawn by `loralens.plots`."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from loralens.errors import RunFolderError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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

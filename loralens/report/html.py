"""The self-contained HTML report: one file, inline CSS, images embedded as data URIs, no script, no network.

Build it from typed parts::

    report = Report("LoRA-Whisper SER", subtitle="RAVDESS, 5-fold", banner="Demo run on synthetic audio")
    report.add_section(Section(
        "Accuracy",
        paragraphs=["Unweighted accuracy per fold."],
        tables=[Table(["model", "UA"], [["LoRA", MeanStd(0.71, 0.03)]], caption="Test folds")],
        figures=[Figure("run/figures/ua.png", caption="UA per fold", alt="bar chart of UA per fold")],
    ))
    report.write("run/report.html")

All text is escaped; nothing in the content can inject markup. A Content-Security-Policy meta tag forbids
every fetch except `data:` images, so the page provably works offline and leaks nothing.
"""

from __future__ import annotations

import html
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loralens.errors import ConfigError
from loralens.io import atomic_write_text
from loralens.report.images import image_data_uri, png_dpi, png_size

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass(frozen=True)
class MeanStd:
    """A table cell shown as `mean ± std` with `digits` decimals (the table's default when None); `n` runs
    are mentioned in the cell's tooltip when given."""

    mean: float
    std: float
    digits: int | None = None
    n: int | None = None


Cell = str | int | float | MeanStd | None


#: Tables with more columns than this are set compact (`table.wide`): smaller type, wrapping headers.
WIDE_TABLE_COLUMNS = 7


@dataclass
class Table:
    """A table. rows: one sequence of cells per row, as many cells as `columns`. Floats are shown with
    `digits` decimals, NaN/None as an en dash; numeric columns are right-aligned."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    caption: str = ""
    digits: int = 3
    notes: str = ""

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ConfigError(
                    f"table {self.caption!r}: row {i} has {len(row)} cells for {len(self.columns)} columns "
                    f"{list(self.columns)}",
                    "give every row one cell per column",
                )


@dataclass
class Figure:
    """An image: a PNG or SVG file path, or PNG/SVG bytes (type from content). alt: text for screen readers
    and when the image cannot be shown; caption: shown under it. width: CSS width (e.g. '60%'), default
    the natural width capped at the text column."""

    source: str | os.PathLike[str] | bytes
    caption: str = ""
    alt: str = ""
    width: str | None = None


@dataclass
class Section:
    """A numbered section: paragraphs, then tables, then figures, then notes (small print)."""

    title: str
    paragraphs: Sequence[str] = field(default_factory=list)
    tables: Sequence[Table] = field(default_factory=list)
    figures: Sequence[Figure] = field(default_factory=list)
    notes: Sequence[str] = field(default_factory=list)


def format_number(value: float | int | None, digits: int = 3) -> str:
    """`value` with `digits` decimals (ints as they are); NaN / None as an en dash; a true minus sign."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}".replace(",", "\u2009") if abs(value) >= 10000 else str(value)
    if not math.isfinite(value):
        return "\u2013" if math.isnan(value) else ("\u221e" if value > 0 else "\u2212\u221e")
    text = f"{value:.{digits}f}"
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]
    return text.replace("-", "\u2212")


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """`mean ± std`, e.g. format_mean_std(0.7134, 0.0312, 2) == '0.71 ± 0.03'."""
    return f"{format_number(mean, digits)} \u00b1 {format_number(std, digits)}"


def _is_numeric(cell: Cell) -> bool:
    return isinstance(cell, (int, float, MeanStd)) and not isinstance(cell, bool)


def _cell_html(cell: Cell, digits: int) -> str:
    if isinstance(cell, MeanStd):
        d = digits if cell.digits is None else cell.digits
        title = f' title="mean \u00b1 std over {cell.n} runs"' if cell.n else ""
        return f"<span{title}>{html.escape(format_mean_std(cell.mean, cell.std, d))}</span>"
    if isinstance(cell, (int, float)) or cell is None:
        return html.escape(format_number(cell, digits))
    return html.escape(str(cell))


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, k = base, 2
    while slug in taken:
        slug, k = f"{base}-{k}", k + 1
    taken.add(slug)
    return slug


_CSS = """
:root { --fg: #1d2127; --muted: #5b6470; --line: #e3e6ea; --accent: #2557a7; --bg: #ffffff;
        --soft: #f6f7f9; --warn-bg: #fff6df; --warn-line: #e6b84c; }
* { box-sizing: border-box; }
html { font-size: 16px; }
body { margin: 0; background: var(--bg); color: var(--fg); line-height: 1.55;
       font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", "Helvetica Neue", Arial, "Noto Sans",
                    "DejaVu Sans", sans-serif; }
main { max-width: 58rem; margin: 0 auto; padding: 2.5rem 1.5rem 4rem; }
header h1 { font-size: 1.9rem; line-height: 1.2; margin: 0 0 .3rem; letter-spacing: -.01em; }
header .subtitle { color: var(--muted); font-size: 1.05rem; margin: 0 0 1.2rem; }
.banner { background: var(--warn-bg); border-left: 4px solid var(--warn-line); padding: .7rem 1rem;
          margin: 0 0 1.5rem; border-radius: 3px; font-weight: 500; }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1.2rem;
          margin: 0 0 2rem; }
nav.toc h2 { font-size: .8rem; text-transform: uppercase; letter-spacing: .08em; color: var(--muted);
             margin: 0 0 .4rem; border: 0; padding: 0; }
nav.toc ol { margin: 0; padding-left: 1.4rem; columns: 2; column-gap: 2rem; }
nav.toc li { margin: .1rem 0; break-inside: avoid; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
section { margin: 0 0 2.6rem; }
h2 { font-size: 1.35rem; margin: 0 0 .8rem; padding-bottom: .3rem; border-bottom: 1px solid var(--line); }
h2 .num { color: var(--muted); font-weight: 400; margin-right: .4rem; }
p { margin: 0 0 .9rem; max-width: 46rem; }
.table-wrap { overflow-x: auto; margin: 1.2rem 0 1.6rem; }
table { border-collapse: collapse; font-size: .9rem; font-variant-numeric: tabular-nums; min-width: 40%; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0 0 .45rem; color: var(--fg); }
th, td { padding: .32rem .75rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid #c9ced5; font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
table.wide { font-size: .8rem; }
table.wide th, table.wide td { padding: .26rem .42rem; }
table.wide thead th { white-space: normal; min-width: 3.2rem; }
.table-notes { color: var(--muted); font-size: .82rem; margin: .4rem 0 0; }
figure { margin: 1.4rem 0 1.8rem; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .88rem; margin-top: .45rem; max-width: 46rem; }
figcaption .fignum { font-weight: 600; color: var(--fg); }
.notes { color: var(--muted); font-size: .85rem; border-top: 1px dashed var(--line); padding-top: .6rem; }
.notes p { margin: 0 0 .4rem; }
footer { color: var(--muted); font-size: .8rem; border-top: 1px solid var(--line); padding-top: 1rem; }
@media (max-width: 700px) { nav.toc ol { columns: 1; } main { padding: 1.2rem 1rem 3rem; } }
@media print { nav.toc { display: none; } section { break-inside: avoid-page; } a { color: inherit; } }
"""


class Report:
    """One self-contained HTML page: title, optional subtitle and warning banner, a table of contents and
    numbered sections. `add_section` returns the report, so calls chain."""

    def __init__(self, title: str, subtitle: str | None = None, banner: str | None = None,
                 footer: str | None = None) -> None:
        self.title = title
        self.subtitle = subtitle
        self.banner = banner
        self.footer = footer
        self.sections: list[Section] = []

    def add_section(self, section: Section) -> Report:
        if not isinstance(section, Section):
            raise ConfigError(f"add_section got {type(section).__name__}", "pass a loralens.report.html.Section")
        self.sections.append(section)
        return self

    # -- rendering -------------------------------------------------------------------------------------

    def _table(self, table: Table, number: int) -> str:
        numeric = [
            bool(table.rows) and all(_is_numeric(r[j]) or r[j] is None for r in table.rows)
            and any(_is_numeric(r[j]) for r in table.rows)
            for j in range(len(table.columns))
        ]
        cls = lambda j: ' class="num"' if numeric[j] else ""  # noqa: E731
        # many columns: smaller type, tighter cells and wrapping headers, so the last columns fit the text column
        # instead of being cut off behind a horizontal scroll bar
        wide = len(table.columns) > WIDE_TABLE_COLUMNS
        out = ['<div class="table-wrap"><table class="wide">' if wide else '<div class="table-wrap"><table>']
        if table.caption:
            out.append(f"<caption>Table {number}. {html.escape(table.caption)}</caption>")
        out.append("<thead><tr>" + "".join(
            f'<th scope="col"{cls(j)}>{html.escape(str(c))}</th>' for j, c in enumerate(table.columns)
        ) + "</tr></thead>")
        out.append("<tbody>")
        for row in table.rows:
            out.append("<tr>" + "".join(
                f"<td{cls(j)}>{_cell_html(c, table.digits)}</td>" for j, c in enumerate(row)
            ) + "</tr>")
        out.append("</tbody></table>")
        if table.notes:
            out.append(f'<p class="table-notes">{html.escape(table.notes)}</p>')
        out.append("</div>")
        return "\n".join(out)

    def _figure(self, figure: Figure, number: int) -> str:
        uri = image_data_uri(figure.source)
        alt = figure.alt or figure.caption or f"Figure {number}"
        if figure.width:
            size = f' style="width:{html.escape(figure.width)}"'
        elif uri.startswith("data:image/png"):
            # Show a PNG at its intended physical size (CSS px are 1/96 in), not one CSS px per pixel;
            # high-dpi screens then get the extra pixels for sharpness.
            width_px, height_px = png_size(figure.source)
            dpi = png_dpi(figure.source) or 96.0
            size = f' width="{round(width_px * 96 / dpi)}" height="{round(height_px * 96 / dpi)}"'
        else:
            size = ""
        cap = ""
        if figure.caption:
            cap = f'<figcaption><span class="fignum">Figure {number}.</span> {html.escape(figure.caption)}</figcaption>'
        return f'<figure><img src="{uri}" alt="{html.escape(alt)}"{size}>{cap}</figure>'

    def render(self) -> str:
        """The page as an HTML string."""
        from loralens import __version__ as version

        taken: set[str] = set()
        ids = [_slug(s.title, taken) for s in self.sections]
        e = html.escape
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<meta name="generator" content="loralens {e(str(version))}">',
            f"<title>{e(self.title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            "<main>",
            "<header>",
            f"<h1>{e(self.title)}</h1>",
        ]
        if self.subtitle:
            parts.append(f'<p class="subtitle">{e(self.subtitle)}</p>')
        if self.banner:
            parts.append(f'<div class="banner" role="note">{e(self.banner)}</div>')
        parts.append("</header>")
        if self.sections:
            parts.append('<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>')
            parts += [f'<li><a href="#{i}">{e(s.title)}</a></li>' for i, s in zip(ids, self.sections)]
            parts.append("</ol></nav>")
        n_table = n_figure = 0
        for k, (sid, s) in enumerate(zip(ids, self.sections), start=1):
            parts.append(f'<section id="{sid}">')
            parts.append(f'<h2><span class="num">{k}</span>{e(s.title)}</h2>')
            parts += [f"<p>{e(p)}</p>" for p in s.paragraphs]
            for t in s.tables:
                n_table += 1
                parts.append(self._table(t, n_table))
            for f in s.figures:
                n_figure += 1
                parts.append(self._figure(f, n_figure))
            if s.notes:
                parts.append('<div class="notes">' + "".join(f"<p>{e(n)}</p>" for n in s.notes) + "</div>")
            parts.append("</section>")
        footer = self.footer if self.footer is not None else f"Generated by loralens {version}."
        parts += [f"<footer>{e(footer)}</footer>", "</main>", "</body>", "</html>", ""]
        return "\n".join(parts)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Render and write the page atomically to `path`; returns the path."""
        path = Path(path)
        atomic_write_text(path, self.render())
        return path


# ---------------------------------------------------------------------------------------------------------
# Reproducibility: what to record at run time (JSON-able) and the table that shows it.

_PACKAGES = ("torch", "transformers", "peft", "accelerate", "numpy", "scipy", "scikit-learn", "loralens")


def _git_commit(repo_dir: Path) -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return "not a git checkout"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_dir,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_environment(repo_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Versions, git commit and hardware of this process, as strings (store it in the run folder's JSON at
    run time; the report is built later from that JSON). repo_dir: the checkout whose commit to record
    (default: the one this package is imported from)."""
    from importlib import metadata

    env: dict[str, str] = {"python": platform.python_version() + f" ({sys.implementation.name})",
                           "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env[name] = "not installed"
    repo = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parents[2]
    env["git commit"] = _git_commit(repo)
    env["cpu"] = f"{_cpu_name()} ({os.cpu_count()} logical cores)"
    torch = sys.modules.get("torch")  # only if already imported: importing torch here would cost seconds
    if torch is not None and torch.cuda.is_available():
        env["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    elif torch is not None:
        env["gpu"] = "none (CPU)"
    return env


def format_seconds(seconds: float) -> str:
    """Wall time as '850 ms', '12.3 s', '4 min 05 s' or '2 h 03 min'."""
    if not math.isfinite(seconds):
        return "\u2013"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _flatten(prefix: str, value: object, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (list, tuple)) and not all(isinstance(v, (str, int, float, bool)) for v in value):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    else:
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        out.append((prefix, str(value)))


def reproducibility_table(
    environment: Mapping[str, str],
    config: Mapping[str, object] | None = None,
    seed: int | None = None,
    wall_times: Mapping[str, float] | None = None,
    extra: Iterable[tuple[str, str]] = (),
    caption: str = "Reproducibility: environment, configuration, seed and wall times",
) -> Table:
    """A two-column (item, value) table: seed, the environment from `collect_environment`, wall times in
    seconds per stage (formatted), extra rows, then the configuration flattened to dotted keys."""
    rows: list[list[Cell]] = []
    if seed is not None:
        rows.append(["seed", str(seed)])
    rows += [[k, str(v)] for k, v in environment.items()]
    for stage, seconds in (wall_times or {}).items():
        rows.append([f"wall time: {stage}", format_seconds(float(seconds))])
    rows += [[k, str(v)] for k, v in extra]
    if config:
        flat: list[tuple[str, str]] = []
        _flatten("", config, flat)
        rows += [[f"config: {k}", v] for k, v in flat]
    return Table(columns=["item", "value"], rows=rows, caption=caption)

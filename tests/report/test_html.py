"""The self-contained HTML report and the figure helpers: escaping, embedding, formatting, reproducibility."""

from __future__ import annotations

import base64
import io
import platform
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from loralens.errors import ConfigError, RunFolderError
from loralens.plots.figures import new_figure, report_style, save_figure
from loralens.report.html import (
    CSP,
    Figure,
    MeanStd,
    Report,
    Section,
    Table,
    collect_environment,
    format_mean_std,
    format_number,
    format_seconds,
    reproducibility_table,
)
from loralens.report.images import image_data_uri, png_data_uri, png_dpi, png_size

EVIL = '<script>alert("x")</script> & <img src=http://example.com/a.png>'
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr", "col"}


class _Checker(HTMLParser):
    """Collects tags, attributes and text; checks that non-void tags are balanced."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    return checker


def _figure_png(tmp_path: Path, name: str = "fig") -> tuple[Path, Path]:
    with report_style():
        fig, ax = new_figure(4.0, 2.5)
        x = np.linspace(0, 1, 50)
        ax.plot(x, np.sin(6 * x), label="sin")
        ax.set_xlabel("time (s)")
        ax.legend()
    return save_figure(fig, tmp_path / name)


# ---------------------------------------------------------------------------------------------------------
# Figures


def test_save_figure_writes_reproducible_png_and_svg(tmp_path):
    png, svg = _figure_png(tmp_path, "a")
    png2, svg2 = _figure_png(tmp_path, "b.png")  # a suffix on the stem is dropped
    assert (png.name, svg.name, png2.name) == ("a.png", "a.svg", "b.png")
    assert png.read_bytes() == png2.read_bytes() and svg.read_bytes() == svg2.read_bytes()
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    root = ET.fromstring(svg.read_bytes())
    assert root.tag.endswith("svg")
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind
    assert png_dpi(png) == pytest.approx(150.0, abs=0.1)


def test_png_size_and_data_uri_known_answers(tmp_path):
    fig, _ = new_figure(4.0, 2.0)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)  # no tight bbox: exactly 4 in x 50 dpi = 200 px by 100 px
    data = buf.getvalue()
    assert png_size(data) == (200, 100)
    assert png_dpi(data) == pytest.approx(50.0, abs=0.1)
    uri = png_data_uri(data)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == data
    (tmp_path / "x.svg").write_text('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>')
    assert image_data_uri(tmp_path / "x.svg").startswith("data:image/svg+xml;base64,")


def test_figure_errors_name_the_file(tmp_path):
    with pytest.raises(RunFolderError, match="missing.png"):
        png_data_uri(tmp_path / "missing.png")
    (tmp_path / "fake.png").write_bytes(b"GIF89a....")
    with pytest.raises(RunFolderError, match="fake.png: not a PNG"):
        png_data_uri(tmp_path / "fake.png")
    with pytest.raises(RunFolderError, match="neither PNG nor SVG"):
        image_data_uri(b"hello")


# ---------------------------------------------------------------------------------------------------------
# Formatting


@pytest.mark.parametrize(
    "value, digits, expected",
    [
        (0.71234, 2, "0.71"),
        (-1.5, 1, "\u22121.5"),
        (-0.0001, 2, "0.00"),  # no negative zero
        (float("nan"), 3, "\u2013"),
        (None, 3, "\u2013"),
        (float("inf"), 3, "\u221e"),
        (42, 3, "42"),
        (1234567, 3, "1\u2009234\u2009567"),
    ],
)
def test_format_number(value, digits, expected):
    assert format_number(value, digits) == expected


def test_format_mean_std_and_seconds():
    assert format_mean_std(0.7134, 0.0312, 2) == "0.71 \u00b1 0.03"
    assert format_mean_std(-0.5, 0.25, 1) == "\u22120.5 \u00b1 0.2"  # round-half-even of 0.25
    assert [format_seconds(s) for s in (0.25, 12.34, 245, 7380)] == ["250 ms", "12.3 s", "4 min 05 s", "2 h 03 min"]


# ---------------------------------------------------------------------------------------------------------
# The page


def _report(tmp_path: Path) -> tuple[Report, Path, Path]:
    png, svg = _figure_png(tmp_path)
    report = Report("Whisper <LoRA> & SER", subtitle="5-fold CV", banner="Demo on synthetic audio")
    report.add_section(
        Section(
            "Accuracy",
            paragraphs=["Unweighted accuracy.", EVIL],
            tables=[
                Table(
                    ["model", "UA", "WA", "note"],
                    [["LoRA", MeanStd(0.7134, 0.0312, 2, n=5), 0.74, EVIL], ["frozen", MeanStd(0.5, 0.1), None, ""]],
                    caption="Test folds " + EVIL,
                    notes="mean ± std over folds",
                )
            ],
            figures=[Figure(png, caption="UA per fold", alt="bar chart"), Figure(svg, caption="as SVG", alt="svg")],
            notes=["small print " + EVIL],
        )
    ).add_section(Section("Accuracy", paragraphs=["same title twice"]))
    return report, png, svg


def test_page_is_self_contained_escaped_and_well_formed(tmp_path):
    report, png, svg = _report(tmp_path)
    path = report.write(tmp_path / "out" / "report.html")
    page = path.read_text(encoding="utf-8")
    checker = _parse(page)

    # Everything the user wrote is text, never markup: no script, no external image, no link.
    assert "<script" not in page.lower() and "alert(" in page
    assert EVIL not in page and "&lt;script&gt;" in page
    assert "Whisper &lt;LoRA&gt; &amp; SER" in page
    tags = [t for t, _ in checker.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    for tag, attrs in checker.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:image/png;base64,", "data:image/svg+xml;base64,", "#")), \
                    (tag, value[:60])
    assert f'content="{CSP}"' in page
    assert "&lt;img src=http://example.com/a.png&gt;" in page  # as text; no attribute holds it (above)

    # The figures are the files' exact bytes; the PNG shows at its physical size (150 dpi -> 96 CSS px/in).
    imgs = [a for t, a in checker.tags if t == "img"]
    assert len(imgs) == 2
    assert base64.b64decode(imgs[0]["src"].split(",", 1)[1]) == png.read_bytes()
    assert base64.b64decode(imgs[1]["src"].split(",", 1)[1]) == svg.read_bytes()
    w, h = png_size(png)
    assert imgs[0]["width"] == str(round(w * 96 / 150)) and imgs[0]["height"] == str(round(h * 96 / 150))
    assert imgs[0]["alt"] == "bar chart"

    # Table of contents: one link per section, to unique ids that exist.
    ids = [a["id"] for t, a in checker.tags if t == "section"]
    links = [a["href"] for t, a in checker.tags if t == "a"]
    assert ids == ["accuracy", "accuracy-2"] and links == ["#accuracy", "#accuracy-2"]

    text = "".join(checker.text)
    assert "0.71 \u00b1 0.03" in text and "0.500 \u00b1 0.100" in text and "0.740" in text
    assert "Table 1. Test folds" in text and "Figure 1. UA per fold" in text and "Figure 2. as SVG" in text
    assert "Demo on synthetic audio" in text
    assert 'title="mean ± std over 5 runs"' in page
    assert '<th scope="col" class="num">UA</th>' in page and '<th scope="col">note</th>' in page


def test_write_is_atomic_and_repeatable(tmp_path):
    report, _, _ = _report(tmp_path)
    a = report.write(tmp_path / "a.html").read_bytes()
    b = report.write(tmp_path / "a.html").read_bytes()
    assert a == b
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_bad_content_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="row 1 has 1 cells for 2 columns"):
        Table(["a", "b"], [[1, 2], [3]], caption="t")
    with pytest.raises(ConfigError):
        Report("t").add_section("not a section")  # type: ignore[arg-type]
    report = Report("t").add_section(Section("s", figures=[Figure(tmp_path / "gone.png")]))
    with pytest.raises(RunFolderError, match="gone.png"):
        report.write(tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_empty_report_still_renders(tmp_path):
    page = Report("Only a title").render()
    _parse(page)
    assert "<nav" not in page and "<h1>Only a title</h1>" in page


# ---------------------------------------------------------------------------------------------------------
# Reproducibility


def test_collect_environment_reports_this_process():
    env = collect_environment()
    assert env["python"].startswith(platform.python_version())
    for name in ("torch", "transformers", "peft"):
        assert env[name] == metadata.version(name)
    repo = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode == 0:
        assert env["git commit"].startswith(head.stdout.strip())
    assert "logical cores" in env["cpu"]


def test_collect_environment_outside_git(tmp_path):
    assert collect_environment(tmp_path)["git commit"] in ("not a git checkout", "unknown (git not available)")


def test_reproducibility_table():
    table = reproducibility_table(
        {"python": "3.11.7", "torch": "2.13.0"},
        config={"lora": {"r": 8, "targets": ["q_proj", "v_proj"]}, "folds": [{"test": ["01"]}]},
        seed=42,
        wall_times={"train": 245.0},
        extra=[("dataset", "synthetic")],
    )
    assert list(table.columns) == ["item", "value"]
    assert [list(r) for r in table.rows] == [
        ["seed", "42"],
        ["python", "3.11.7"],
        ["torch", "2.13.0"],
        ["wall time: train", "4 min 05 s"],
        ["dataset", "synthetic"],
        ["config: lora.r", "8"],
        ["config: lora.targets", "q_proj, v_proj"],
        ["config: folds[0].test", "01"],
    ]
    page = Report("r").add_section(Section("Reproducibility", tables=[table])).render()
    assert "config: lora.targets" in page


def test_wide_tables_are_set_compact_so_their_last_columns_fit(tmp_path):
    from loralens.report.html import WIDE_TABLE_COLUMNS

    narrow = Table([f"c{i}" for i in range(WIDE_TABLE_COLUMNS)], [[1.0] * WIDE_TABLE_COLUMNS], caption="narrow")
    wide = Table([f"c{i}" for i in range(WIDE_TABLE_COLUMNS + 3)], [[2.0] * (WIDE_TABLE_COLUMNS + 3)],
                 caption="wide")
    page = Report("t").add_section(Section("s", tables=[narrow, wide])).write(tmp_path / "r.html").read_text()
    assert page.count('<table class="wide">') == 1
    assert page.index('<table class="wide">') > page.index("narrow")
    assert "table.wide thead th { white-space: normal" in page

"""The report in a real browser: headless Chromium loads it offline with no console message, every figure
decodes, and a screenshot is saved.

A test copy of the page gets a small probe script (and a CSP that admits it) that writes, at `load`, each
image's size and decode result (drawn on a canvas: painted pixels) and every error / CSP violation into
the DOM; `--dump-dom` returns that DOM.
The production page itself has no script. Any console line Chromium logs for the production page counts
as an error: the page runs no script, so a console line can only be the browser complaining (blocked
fetch, bad image, CSP violation).

Needs Chromium: when absent the test skips with the reason. It installs nothing unless asked: with
LORALENS_INSTALL_BROWSER=1 it first runs `scripts/install-chromium.sh` (root + apt-get). Set LORALENS_SCREENSHOT_DIR to
keep the screenshot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from loralens.plots.figures import new_figure, report_style, save_figure
from loralens.report.html import CSP, Figure, MeanStd, Report, Section, Table

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install-chromium.sh"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]
TIMEOUT_S = 90

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push('error: ' + (e.message || (e.target && e.target.tagName + ' failed to load')));
}, true);
document.addEventListener('securitypolicyviolation', function (e) {
  window.__errors.push('csp: ' + e.violatedDirective + ' blocked ' + e.blockedURI);
});
['error', 'warn'].forEach(function (level) {
  var original = console[level];
  console[level] = function () {
    window.__errors.push('console.' + level + ': ' + Array.prototype.join.call(arguments, ' '));
    original.apply(console, arguments);
  };
});
window.addEventListener('load', function () {
  // Synchronous on purpose: --dump-dom returns the DOM right after the load event, so the result must be
  // in the DOM when the handler returns. Drawing an image on a canvas decodes it for real.
  var canvas = document.createElement('canvas');
  canvas.width = 64; canvas.height = 64;
  var ctx = canvas.getContext('2d', {willReadFrequently: true});
  var images = Array.prototype.slice.call(document.images).map(function (img) {
    var painted = -1;
    if (img.complete && img.naturalWidth > 0) {
      try {
        ctx.clearRect(0, 0, 64, 64);
        ctx.drawImage(img, 0, 0, 64, 64);
        var data = ctx.getImageData(0, 0, 64, 64).data;
        painted = 0;
        for (var i = 3; i < data.length; i += 4) { if (data[i] > 0) painted++; }
      } catch (err) { window.__errors.push('canvas: ' + err); }
    }
    return {alt: img.alt, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
            width: img.width, complete: img.complete, painted: painted};
  });
  var pre = document.createElement('pre');
  pre.id = '__probe';
  pre.textContent = JSON.stringify({images: images, errors: window.__errors});
  document.body.appendChild(pre);
});
</script>"""


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _find_chromium()
    if path:
        return path
    if os.environ.get("LORALENS_INSTALL_BROWSER") != "1":
        pytest.skip("Chromium not found; set LORALENS_INSTALL_BROWSER=1 to let this test run "
                    "scripts/install-chromium.sh (apt-get as root), or run that script yourself")
    if not shutil.which("apt-get") or (os.geteuid() != 0 and not shutil.which("sudo")):
        pytest.skip("Chromium not found and not installable here (needs apt-get as root); "
                    "run scripts/install-chromium.sh on a Debian machine")
    try:
        proc = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("Chromium not found and scripts/install-chromium.sh timed out")
    path = _find_chromium()
    if not path:
        pytest.skip(f"Chromium not found and scripts/install-chromium.sh failed: {proc.stderr.strip()[-300:]}")
    return path


def _run(chromium: str, tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = Path(tmp_path) / f"profile-{len(list(Path(tmp_path).glob('profile-*')))}"
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path)


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _probe(chromium: str, page: str, tmp_path: Path, name: str) -> dict:
    """Load `page` (HTML text) with the probe injected; returns {'images': [...], 'errors': [...], 'console': [...]}."""
    assert "<script" not in page.lower(), "the production page must not contain a script"
    probed = page.replace(f'content="{CSP}"', f'content="{CSP}; script-src \'unsafe-inline\'"', 1)
    probed = probed.replace("</head>", PROBE + "\n</head>", 1)
    test_copy = tmp_path / f"{name}.probe.html"
    test_copy.write_text(probed, encoding="utf-8")
    proc = _run(chromium, tmp_path, test_copy.as_uri(), "--virtual-time-budget=10000", "--dump-dom")
    match = re.search(r'<pre id="__probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"no probe result in the DOM (rc={proc.returncode}); stderr tail:\n{proc.stderr[-2000:]}"
    import html

    result = json.loads(html.unescape(match.group(1)))
    result["console"] = _console_lines(proc.stderr)
    return result


def _problems(result: dict) -> list[str]:
    problems = list(result["errors"]) + [f"console: {line}" for line in result["console"]]
    for img in result["images"]:
        if not (img["complete"] and img["naturalWidth"] > 0 and img["naturalHeight"] > 0 and img["painted"] > 0):
            problems.append(f"image {img['alt']!r} did not decode: {img}")
    return problems


def _real_report(tmp_path: Path) -> tuple[Report, int]:
    rng = np.random.default_rng(0)
    with report_style():
        fig, ax = new_figure(6.0, 3.0)
        for k, name in enumerate(["frozen", "LoRA r=8", "LoRA r=32"]):
            ax.plot(np.arange(1, 13), 0.4 + 0.03 * k * np.arange(1, 13) ** 0.5 + rng.normal(0, 0.01, 12), label=name)
        ax.set(xlabel="encoder layer", ylabel="probe accuracy", title="Layer-wise probing")
        ax.legend()
        png1, _ = save_figure(fig, tmp_path / "figures" / "probing")
        fig, axes = new_figure(6.0, 2.6, ncols=2)
        axes[0].imshow(rng.random((12, 12)), cmap="viridis")
        axes[0].set_title("CKA, frozen vs LoRA")
        axes[1].bar(["neutral", "happy", "sad", "angry"], [0.8, 0.6, 0.7, 0.75], color="#4c72b0")
        axes[1].set_title("recall per class")
        _, svg2 = save_figure(fig, tmp_path / "figures" / "cka")
    report = Report("LoRA-Whisper SER: browser check", subtitle="two real figures", banner="Synthetic demo data")
    report.add_section(Section("Probing", paragraphs=["Accuracy of linear probes per layer."],
                               figures=[Figure(png1, "Probe accuracy per layer.", "line chart of probe accuracy")]))
    report.add_section(Section("Similarity", tables=[Table(["model", "UA"], [["LoRA", MeanStd(0.71, 0.03)]], "UA")],
                               figures=[Figure(svg2, "CKA and per-class recall (SVG).", "heat map and bar chart")]))
    return report, 2


@pytest.mark.slow
def test_report_loads_cleanly_in_headless_chromium(chromium, tmp_path):
    report, n_figures = _real_report(tmp_path)
    path = report.write(tmp_path / "report.html")
    page = path.read_text(encoding="utf-8")

    result = _probe(chromium, page, tmp_path, "report")
    assert _problems(result) == []
    assert len(result["images"]) == n_figures
    assert all(img["naturalWidth"] > 100 for img in result["images"])

    # The production page itself (no probe): loads with no console line at all; screenshot of the top.
    shot = tmp_path / "report.png"
    proc = _run(chromium, tmp_path, path.as_uri(), "--window-size=1280,1800", f"--screenshot={shot}")
    assert shot.exists(), proc.stderr[-2000:]
    assert _console_lines(proc.stderr) == []
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (1800, 1280)
    assert pixels[..., :3].std() > 0.05  # not a blank page
    keep = os.environ.get("LORALENS_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report-screenshot.png")


@pytest.mark.slow
def test_the_check_catches_a_broken_page(chromium, tmp_path):
    # Negative control: an external image (blocked by the CSP), a corrupt embedded PNG and a script error
    # must all be reported, so a clean result above means something.
    report, _ = _real_report(tmp_path)
    page = report.render().replace(
        "</main>",
        '<img src="http://127.0.0.1:9/x.png" alt="external">'
        '<img src="data:image/png;base64,iVBORw0KGgoAAAA" alt="corrupt"></main>',
    )
    result = _probe(chromium, page, tmp_path, "broken")
    problems = _problems(result)
    assert any("csp" in p and "127.0.0.1" in p for p in problems), problems
    assert any("'external' did not decode" in p for p in problems), problems
    assert any("'corrupt' did not decode" in p for p in problems), problems
    assert any("console:" in p for p in problems), problems
    assert sum(img["naturalWidth"] > 0 for img in result["images"]) == 2  # the two real figures still decode

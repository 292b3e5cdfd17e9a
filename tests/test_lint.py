"""The package, its tests, the benchmarks and the scripts are clean under the project's ruff rules ([tool.ruff] in
pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    paths = ["loralens", "tests", "bench", "scripts"]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *paths], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert "No module named ruff" not in proc.stderr, "ruff is not installed: pip install -e '.[dev]'"
    assert proc.returncode == 0, proc.stdout + proc.stderr

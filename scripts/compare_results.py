"""Compare the numbers of two run folders (or analysis folders) bit for bit: every JSON file under `before` against
the file at the same relative path under `after`. Used to show that a restructuring changed no result.

    python scripts/compare_results.py runs/demo-before runs/demo-after
    python scripts/compare_results.py A B --ignore-key wall_s --ignore-path 'logs/*'

Keys that hold measurements of the run rather than its results (wall times, memory, timestamps, absolute paths,
versions) are ignored by default (`--ignore-key` adds more; `--strict` ignores none). Floats must be equal exactly
(`--atol` allows a tolerance). Prints one line per difference (file, JSON path, before, after) and a summary;
exit status 0 when nothing differs, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# measurements of the run, not results: they differ between two runs of the same code
DEFAULT_IGNORED_KEYS = {
    "wall_s", "time_s", "train_time_s", "seconds", "elapsed_s", "process_wall_s", "peak_rss_mib", "peak_mem_mib",
    "cpu_rss_peak_mib", "process_peak_rss_mib", "git commit",
    "peak_memory_mib", "rss_mib", "memory_mib", "started", "finished", "created", "timestamp", "time", "date",
    "started_at", "finished_at", "host", "hostname", "pid", "python", "torch", "transformers", "peft", "platform",
    "versions", "version", "loralens_version", "path", "run_dir", "out", "root", "corpus_root", "feature_cache",
    "command", "argv", "cwd", "wall_time_s", "duration_s", "s_per_clip", "clips_per_s", "throughput",
}


def diff(a: Any, b: Any, where: str, ignored: set[str], atol: float) -> Iterator[tuple[str, Any, Any]]:
    """Yield (JSON path, before, after) for every leaf where `a` and `b` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k in ignored:
                continue
            if k not in a or k not in b:
                yield f"{where}.{k}", a.get(k, "<missing>"), b.get(k, "<missing>")
            else:
                yield from diff(a[k], b[k], f"{where}.{k}", ignored, atol)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{where}[len]", len(a), len(b)
            return
        for i, (x, y) in enumerate(zip(a, b)):
            yield from diff(x, y, f"{where}[{i}]", ignored, atol)
    elif isinstance(a, float) and isinstance(b, float):
        same = (a == b) or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= atol
        if not same:
            yield where, a, b
    elif a != b or type(a) is not type(b):
        yield where, a, b


def compare(before: Path, after: Path, ignored: set[str], ignore_paths: list[str], atol: float = 0.0
            ) -> tuple[list[str], int]:
    """Differences (as printable lines) between the JSON files of two folders, and the number of files compared."""
    lines: list[str] = []
    files = sorted(p.relative_to(before) for p in before.rglob("*.json"))
    files = [f for f in files if not any(fnmatch.fnmatch(str(f), pat) for pat in ignore_paths)]
    for rel in files:
        other = after / rel
        if not other.is_file():
            lines.append(f"{rel}: missing in {after}")
            continue
        try:
            a, b = json.loads((before / rel).read_text()), json.loads(other.read_text())
        except (OSError, json.JSONDecodeError) as e:
            lines.append(f"{rel}: cannot be read ({e})")
            continue
        lines.extend(f"{rel}: {path}: {x!r} -> {y!r}" for path, x, y in diff(a, b, "$", ignored, atol))
    extra = sorted(p.relative_to(after) for p in after.rglob("*.json") if not (before / p.relative_to(after)).exists())
    lines.extend(f"{rel}: only in {after}" for rel in extra
                 if not any(fnmatch.fnmatch(str(rel), pat) for pat in ignore_paths))
    return lines, len(files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--ignore-key", action="append", default=[], help="a JSON key to skip (repeatable)")
    ap.add_argument("--ignore-path", action="append", default=[], help="a glob of relative file paths to skip")
    ap.add_argument("--strict", action="store_true", help="ignore no key (timings and paths then differ)")
    ap.add_argument("--atol", type=float, default=0.0, help="allowed absolute difference of floats (default exact)")
    args = ap.parse_args(argv)
    for p in (args.before, args.after):
        if not p.is_dir():
            print(f"error: {p} is not a folder: give two run or analysis folders", file=sys.stderr)
            return 2
    ignored = set() if args.strict else set(DEFAULT_IGNORED_KEYS)
    ignored |= set(args.ignore_key)
    lines, n = compare(args.before, args.after, ignored, args.ignore_path, args.atol)
    for line in lines:
        print(line)
    if n == 0:
        print(f"error: no JSON files under {args.before}", file=sys.stderr)
        return 2
    print(f"{n} JSON files compared: " + ("identical" if not lines else f"{len(lines)} differences"))
    return 0 if not lines else 1


if __name__ == "__main__":
    sys.exit(main())

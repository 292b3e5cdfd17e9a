"""Check a corpus copy file by file against a SHA-256 list: missing, extra, wrong size, wrong content.

A hash list is tab-separated text, one file a line: path relative to the corpus audio folder (forward slashes),
lower-case hex SHA-256, size in bytes. Lists of the release audio of RAVDESS (speech), CREMA-D, EmoDB and TESS
ship with the package (`packaged_hash_list`). Sizes are compared first (cheap); only files of the right size
are hashed, in 1 MiB chunks.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from loralens.errors import CorpusError

#: Packaged hash list of each corpus (file names in `loralens/data/hashes/`).
PACKAGED_HASHES: dict[str, str] = {
    "ravdess": "ravdess_speech.sha256.tsv",
    "crema-d": "crema-d_AudioWAV.sha256.tsv",
    "emodb": "emodb_wav.sha256.tsv",
    "tess": "tess.sha256.tsv",
}

#: Files with these endings count as "extra" when present but not listed (others, e.g. README, are ignored).
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aif", ".aiff", ".opus"})

CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class HashEntry:
    """One listed file: relative path (forward slashes), SHA-256 (hex), size in bytes."""

    path: str
    sha256: str
    size: int


def _corpus_key(name: str) -> str:
    # Same matching as the corpus registry: case, '-' and '_' ignored ("CREMA-D" = "cremad" = "crema_d").
    key = name.strip().lower().replace("-", "").replace("_", "")
    return {k.replace("-", ""): k for k in PACKAGED_HASHES}.get(key, key)


def packaged_hash_list(corpus: str) -> Path:
    """Path of the hash list shipped for `corpus` (ravdess, crema-d, emodb, tess)."""
    key = _corpus_key(corpus)
    if key not in PACKAGED_HASHES:
        raise CorpusError(
            f"no packaged hash list for corpus {corpus!r}",
            f"packaged lists: {', '.join(PACKAGED_HASHES)}; pass your own list with --hashes FILE",
        )
    ref = resources.files("loralens.data").joinpath("hashes", PACKAGED_HASHES[key])
    path = Path(str(ref))
    if not path.is_file():
        raise CorpusError(f"packaged hash list {path} is missing", "reinstall loralens")
    return path


def read_hash_list(path: str | os.PathLike[str]) -> dict[str, HashEntry]:
    """{relative path: HashEntry} from a tab-separated list; blank lines and `#` comments are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorpusError(f"{path}: hash list not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CorpusError(f"{path}: cannot read the hash list ({e})") from None
    entries: dict[str, HashEntry] = {}
    hint = "each line must be: relative path <TAB> sha256 <TAB> size in bytes"
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) != 3:
            raise CorpusError(f"{path}:{n}: expected 3 tab-separated fields, found {len(parts)}", hint)
        rel, digest, size = parts[0].strip().replace("\\", "/"), parts[1].strip().lower(), parts[2].strip()
        if not _SHA256.match(digest):
            raise CorpusError(f"{path}:{n}: {digest!r} is not a hex SHA-256", hint)
        if not size.isdigit():
            raise CorpusError(f"{path}:{n}: size {size!r} is not a whole number of bytes", hint)
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise CorpusError(f"{path}:{n}: {rel!r} is not a relative path inside the corpus", hint)
        if rel in entries:
            raise CorpusError(f"{path}:{n}: {rel!r} is listed twice", hint)
        entries[rel] = HashEntry(rel, digest, int(size))
    if not entries:
        raise CorpusError(f"{path}: the hash list is empty", hint)
    return entries


def sha256_file(path: str | os.PathLike[str], on_chunk: Callable[[int], Any] | None = None) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks; `on_chunk(n_bytes)` is called after each chunk."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            if on_chunk is not None:
                on_chunk(n)
    return h.hexdigest()


def find_hash_base(root: Path, entries: dict[str, HashEntry], sample: int = 50) -> Path:
    """The folder under `root` (itself, or a sub-folder up to 2 levels down, e.g. CREMA-D's `AudioWAV/`)
    where most of the first `sample` listed paths exist; `root` when none matches."""
    probe = list(entries)[:sample]
    candidates = [root]
    for child in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        candidates.append(child)
        candidates.extend(sorted(p for p in child.iterdir() if p.is_dir()))
    best, best_hits = root, 0
    for c in candidates:  # shallower first, so ties keep the shallower folder
        hits = sum((c / rel).is_file() for rel in probe)
        if hits > best_hits:
            best, best_hits = c, hits
    return best


def _audio_files(base: Path, suffixes: frozenset[str]) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        for name in filenames:
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in suffixes:
                out.append(Path(dirpath, name).relative_to(base).as_posix())
    return sorted(out)


@dataclass
class VerifyReport:
    """What `verify_files` found. Paths are relative to `base`.

    ok: listed files present with the right size and hash. missing: listed, absent. extra: audio files present,
    not listed. size_mismatch: (path, expected bytes, actual bytes). hash_mismatch: (path, expected, actual).
    subset: absent listed files were allowed (only the files present were checked).
    """

    base: Path
    hash_list: str
    n_listed: int
    subset: bool = False
    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    size_mismatch: list[tuple[str, int, int]] = field(default_factory=list)
    hash_mismatch: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when nothing is wrong (missing files allowed with `subset`) and at least one file matched."""
        missing_ok = self.subset or not self.missing
        return bool(self.ok) and missing_ok and not (self.extra or self.size_mismatch or self.hash_mismatch)

    def converted_copy_hint(self) -> str | None:
        """A note when missing files are present under another extension (a converted copy cannot match)."""
        stems = {os.path.splitext(p)[0]: p for p in self.extra}
        renamed = [stems[os.path.splitext(m)[0]] for m in self.missing if os.path.splitext(m)[0] in stems]
        if not renamed:
            return None
        example = renamed[0]
        return (
            f"{len(renamed)} missing files are present with another extension (e.g. {example}): this looks like a "
            "converted copy; the hashes are of the release files, so only an unconverted copy can be verified"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "base": str(self.base),
            "hash_list": self.hash_list,
            "n_listed": self.n_listed,
            "subset": self.subset,
            "passed": self.passed,
            "n_ok": len(self.ok),
            "missing": self.missing,
            "extra": self.extra,
            "size_mismatch": [{"path": p, "expected": e, "actual": a} for p, e, a in self.size_mismatch],
            "hash_mismatch": [{"path": p, "expected": e, "actual": a} for p, e, a in self.hash_mismatch],
        }


def verify_files(
    root: str | os.PathLike[str],
    hashes: str | os.PathLike[str] | dict[str, HashEntry] | None = None,
    *,
    corpus: str | None = None,
    subset: bool = False,
    progress: bool = True,
) -> VerifyReport:
    """Compare the files under `root` with a hash list.

    hashes: a list file, parsed entries, or None for the packaged list of `corpus`. The listed paths are looked
    up under `root` or the sub-folder of it that holds them (`find_hash_base`). subset: only the listed files
    that are present are checked (absent ones are still reported in `missing`, but do not fail the check).
    progress: a tqdm bar over the bytes hashed (shown on a terminal only).
    """
    from tqdm import tqdm

    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: corpus folder not found", "pass the folder that holds the corpus with --root")
    if hashes is None:
        if corpus is None:
            raise CorpusError("no hash list given", "name the corpus or pass --hashes FILE")
        hashes = packaged_hash_list(corpus)
    if isinstance(hashes, dict):
        entries, source = hashes, "(entries)"
    else:
        entries, source = read_hash_list(hashes), str(hashes)
    base = find_hash_base(root, entries)
    suffixes = AUDIO_SUFFIXES | {os.path.splitext(p)[1].lower() for p in entries}
    present = set(_audio_files(base, frozenset(suffixes)))
    report = VerifyReport(base=base, hash_list=source, n_listed=len(entries), subset=subset)
    report.extra = sorted(present - set(entries))
    to_hash: list[tuple[str, Path]] = []
    for rel, entry in entries.items():
        path = base / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            report.missing.append(rel)
            continue
        if size != entry.size:
            report.size_mismatch.append((rel, entry.size, size))
        else:
            to_hash.append((rel, path))
    total = sum(entries[rel].size for rel, _ in to_hash)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="sha256",
              disable=None if progress else True) as bar:
        for rel, path in to_hash:
            digest = sha256_file(path, bar.update)
            if digest == entries[rel].sha256:
                report.ok.append(rel)
            else:
                report.hash_mismatch.append((rel, entries[rel].sha256, digest))
    return report


def format_verify_report(report: VerifyReport, max_listed: int = 10) -> str:
    """A human-readable account of a `VerifyReport`, at most `max_listed` paths per problem."""

    def listing(title: str, items: list[str]) -> list[str]:
        if not items:
            return []
        lines = [f"{title}: {len(items)}"]
        lines += [f"  {x}" for x in items[:max_listed]]
        if len(items) > max_listed:
            lines.append(f"  ... and {len(items) - max_listed} more")
        return lines

    lines = [f"checked {report.base} against {report.hash_list} ({report.n_listed} files listed)"]
    lines.append(f"ok: {len(report.ok)}")
    if report.subset and report.missing:
        lines.append(f"not present (allowed, --subset): {len(report.missing)}")
    else:
        lines += listing("missing", report.missing)
    lines += listing("extra (not in the list)", report.extra)
    lines += listing(
        "size mismatch", [f"{p}: {a} bytes, expected {e}" for p, e, a in report.size_mismatch]
    )
    lines += listing("hash mismatch", [f"{p}: sha256 {a}, expected {e}" for p, e, a in report.hash_mismatch])
    note = report.converted_copy_hint()
    if note:
        lines.append(f"note: {note}")
    if not report.ok and not report.size_mismatch and not report.hash_mismatch:
        lines.append("no listed file was found: check --root and the hash list")
    lines.append("PASSED" if report.passed else "FAILED")
    return "\n".join(lines) + "\n"

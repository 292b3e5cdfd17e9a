"""Download RAVDESS (speech, audio-only) from its official Zenodo record, resumably, and verify every file.

The archive is fetched into `<archive>.part` and continued with an HTTP Range request when a previous attempt
stopped; it is extracted only after every member name has been checked (no absolute paths, no `..`, no links),
then each extracted file is checked against the packaged SHA-256 list.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import urllib.error
import urllib.request
import zipfile
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from loralens.data.verify import VerifyReport, format_verify_report, packaged_hash_list, verify_files
from loralens.errors import LoralensError
from loralens.io import atomic_path

RAVDESS_URL = "https://zenodo.org/records/1188976/files/Audio_Speech_Actors_01-24.zip?download=1"
"""Official RAVDESS speech archive (Zenodo record 1188976, DOI 10.5281/zenodo.1188976), about 200 MB."""
RAVDESS_ARCHIVE = "Audio_Speech_Actors_01-24.zip"
RAVDESS_PAGE = "https://zenodo.org/records/1188976"

CHUNK = 1 << 20


class DownloadError(LoralensError):
    """A download failed, stopped early, or its archive is damaged or unsafe to extract."""


def _user_agent() -> str:
    from loralens import __version__

    return f"loralens/{__version__} (+urllib)"


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header ("bytes 10-99/100", "bytes */100")."""
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def download_file(
    url: str,
    target: str | os.PathLike[str],
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Fetch `url` to `target` through `target.part`, resuming a partial `.part` with an HTTP Range request.

    An existing `target` is taken as complete. A server that ignores Range (200) restarts the file; a download
    that stops early raises DownloadError and keeps the `.part`, so the same call resumes it.
    """
    from tqdm import tqdm

    target = Path(target)
    if target.is_file():
        return target
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"{url}: only http(s) URLs can be downloaded", "give an http:// or https:// URL")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    hint_resume = f"run the same command again to resume from {part}"
    for _attempt in range(2):  # a second attempt only after a stale .part was dropped
        offset = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": _user_agent()}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:
                _, total = _content_range(e.headers.get("Content-Range"))
                e.close()
                if total == offset:  # the .part already holds the whole file
                    os.replace(part, target)
                    return target
                part.unlink()  # larger than the file on the server: not a prefix of it
                continue
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}", "check the URL, or try again later") from None
        except (urllib.error.URLError, HTTPException, OSError) as e:
            reason = getattr(e, "reason", e)
            raise DownloadError(
                f"{url}: cannot connect ({reason})",
                f"check the internet connection, or download the archive by hand from {RAVDESS_PAGE} "
                "and pass it with --archive",
            ) from None
        with response:
            if response.status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != offset:
                    raise DownloadError(
                        f"{url}: the server resumed at byte {start}, not at {offset}",
                        f"delete {part} and run again",
                    )
                mode = "ab"
            else:  # 200: the whole file (the server ignored Range, or there was nothing to resume)
                offset = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                mode = "wb"
            done = offset
            with open(part, mode) as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=target.name, disable=None if progress else True,
            ) as bar:
                try:
                    while chunk := response.read(CHUNK):
                        f.write(chunk)
                        done += len(chunk)
                        bar.update(len(chunk))
                except (HTTPException, OSError) as e:
                    f.flush()
                    raise DownloadError(
                        f"{url}: download stopped at {done} of {total or '?'} bytes ({type(e).__name__})",
                        hint_resume,
                    ) from None
        if total is not None and done != total:
            raise DownloadError(f"{url}: download stopped at {done} of {total} bytes", hint_resume)
        os.replace(part, target)
        return target
    raise DownloadError(f"{url}: cannot resume {part}", f"delete {part} and run again")


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "path goes up with '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[str]:
    """Extract a zip into `dest` after checking every member; returns the relative paths of the files written.

    Refuses the whole archive (DownloadError, nothing written) when any member has an absolute name, a `..`
    component or is a symbolic link. macOS `__MACOSX/` metadata is skipped. Each file is written atomically.
    """
    archive, dest = Path(archive), Path(dest)
    damaged_hint = f"the archive is damaged: delete {archive} and download it again"
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise DownloadError(f"{archive}: not a readable zip archive ({e})", damaged_hint) from None
    written: list[str] = []
    with zf:
        members = zf.infolist()
        for info in members:
            reason = _unsafe_reason(info)
            if reason:
                raise DownloadError(
                    f"{archive}: refusing to extract member {info.filename!r} ({reason})",
                    "this is not the official release archive; delete it and download from the official source",
                )
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for info in members:
            rel = PurePosixPath(info.filename.replace("\\", "/"))
            if not rel.parts or rel.parts[0] == "__MACOSX":
                continue
            out = dest.joinpath(*rel.parts)
            if not out.resolve().is_relative_to(root):  # e.g. through a symlink already in dest
                raise DownloadError(f"{archive}: member {info.filename!r} would be written outside {dest}")
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            try:
                with atomic_path(out) as tmp, zf.open(info) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            except (zipfile.BadZipFile, EOFError) as e:
                raise DownloadError(f"{archive}: member {info.filename!r} is damaged ({e})", damaged_hint) from None
            written.append(rel.as_posix())
    return written


def download_ravdess(
    dest: str | os.PathLike[str],
    *,
    url: str = RAVDESS_URL,
    hashes: str | os.PathLike[str] | None = None,
    archive: str | os.PathLike[str] | None = None,
    keep_archive: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> VerifyReport:
    """Download, extract and verify RAVDESS speech into `dest` (`dest/Actor_01/...`).

    url / hashes: the archive URL and the SHA-256 list (default: the official Zenodo archive and the packaged
    list). archive: a zip already on disk (nothing is downloaded). When `dest` already passes verification,
    nothing is done. The downloaded archive is deleted after a passing verification unless `keep_archive`.
    Raises DownloadError (with the verification summary) when an extracted file does not match its hash.
    """
    dest = Path(dest)
    hash_list = Path(hashes) if hashes is not None else packaged_hash_list("ravdess")
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.glob("Actor_*")):
        existing = verify_files(dest, hash_list, progress=progress)
        if existing.passed:
            return existing
    downloaded = archive is None
    zip_path = Path(archive) if archive is not None else dest / RAVDESS_ARCHIVE
    if downloaded:
        download_file(url, zip_path, progress=progress, timeout=timeout)
    elif not zip_path.is_file():
        raise DownloadError(f"{zip_path}: archive not found", f"download it from {RAVDESS_PAGE}")
    safe_extract(zip_path, dest)
    report = verify_files(dest, hash_list, progress=progress)
    if not report.passed:
        raise DownloadError(
            f"{dest}: the extracted files do not match {hash_list}:\n{format_verify_report(report)}",
            f"delete {zip_path} and run again to download a fresh copy",
        )
    if downloaded and not keep_archive:
        zip_path.unlink()
    return report

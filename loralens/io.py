"""Atomic writes: write to a temporary file in the same folder, then rename over the target.

A crash never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Files written atomically get the permissions a plain open() would give them (mkstemp makes them 0600).
_FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it is renamed to `target`, on error removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, target)
    except OSError as e:
        if e.filename is None and e.errno is not None:  # a failed write() names no file: name the target
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(target)) from e
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 `text` to `target` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths, dataclasses: the types results are made of.
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def atomic_write_json(target: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """Serialise `obj` (dicts, lists, numbers, numpy values, dataclasses) to JSON at `target` atomically."""
    atomic_write_text(target, json.dumps(obj, indent=indent, default=_json_default, allow_nan=True) + "\n")


def atomic_write_with(target: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` to produce the file (e.g. safetensors' save_file), then rename to `target`."""
    with atomic_path(target) as tmp:
        writer(tmp)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, with an error that names the file when it is missing or malformed."""
    from loralens.errors import RunFolderError

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise RunFolderError(f"{path}: not valid JSON ({e})", "delete it and re-run the stage that writes it") from None


def read_yaml_mapping(path: str | os.PathLike[str], doc: str = "the documentation") -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file = {}); ConfigError naming the file when it is missing,
    not valid YAML, or not a mapping. `doc` names where an example is (for the hint)."""
    import yaml

    from loralens.errors import ConfigError

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})", "check indentation and quoting") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of field: value", f"see {doc} for an example")
    return data


#: errno values of the OSErrors users meet (a full disk, a folder they cannot write); `describe_os_error` words them.
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def describe_os_error(e: OSError) -> tuple[str, str] | None:
    """(one-line message, hint) for an OSError of `USER_ERRNOS` (disk full, quota, permission, read-only), naming
    the file and, for a full disk, the free space left; None for other OSErrors (bugs keep their traceback)."""
    if e.errno not in USER_ERRNOS:
        return None
    where = e.filename if e.filename is not None else "a file"
    resumable = "files written before are complete, and re-running the same command resumes"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the device" if e.errno == errno.ENOSPC else "disk quota exceeded"
        free = ""
        probe = Path(e.filename).parent if e.filename is not None else None
        while probe is not None and not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe is not None:
            try:
                free = f" ({shutil.disk_usage(probe).free / 2**20:.0f} MiB free on {probe})"
            except OSError:
                pass
        return (f"{what} while writing {where}{free}",
                "free space there (old runs, checkpoints/ folders, the feature cache in $LORALENS_CACHE) or write "
                f"elsewhere (--out, --run-dir, --feature-cache); {resumable}")
    if e.errno == errno.EROFS:
        return (f"read-only file system: cannot write {where}",
                f"write to a writable folder (--out, --run-dir, --feature-cache); {resumable}")
    return (f"permission denied: cannot write {where}",
            f"write to a folder you own (--out, --run-dir, --feature-cache), or fix its permissions; {resumable}")


def user_os_error(e: BaseException) -> OSError | None:
    """The OSError of `USER_ERRNOS` behind `e`: `e` itself, one in its cause/context chain (libraries wrap them),
    or, for an error whose text says "No space left on device" (e.g. a native writer's RuntimeError), an ENOSPC
    OSError without a file name; None otherwise."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in USER_ERRNOS:
            return cur
        cur = cur.__cause__ or cur.__context__
    if "No space left on device" in str(e):
        return OSError(errno.ENOSPC, "No space left on device")
    return None

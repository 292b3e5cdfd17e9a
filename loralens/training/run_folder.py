"""The layout of a training run folder, and the checks that keep one folder to one configuration.

    <run>/config.yaml                the configuration (snapshot; a re-run must match its hash)
    <run>/folds.json                 the folds (loralens.data.folds format)
    <run>/bad_files.json             clips left out by the bad-audio screen (on_bad_audio: skip)
    <run>/summary.json, summary.md   per fold test metrics and their mean ± std (ddof=1)
    <run>/encoder_cache/             frozen method: encoder outputs computed once
    <run>/fold_{k}/adapter/          LoRA adapter in peft format (method lora)
    <run>/fold_{k}/encoder.safetensors  encoder weights (method full)
    <run>/fold_{k}/head.safetensors  classification head
    <run>/fold_{k}/metrics.json      selected epoch, validation and test metrics, time, memory, parameters
    <run>/fold_{k}/predictions.json  test clip ids, true and predicted classes, class probabilities
    <run>/fold_{k}/log.jsonl         training log
    <run>/fold_{k}/figures/          training curve, confusion matrix (PNG + SVG)
    <run>/fold_{k}/checkpoints/      resumable state while the fold trains (removed once it is complete)
    <run>/analysis/fold_{k}/         `loralens analyze RUN`'s results by default

A `loralens run` output folder holds one such folder per variant: `run_layout.RunLayout`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from loralens.errors import RunFolderError
from loralens.io import atomic_write_text, read_json
from loralens.training.config import TrainConfig, config_from_snapshot, config_hash, config_to_yaml
from loralens.training.run_layout import fold_dirs, fold_name


@dataclass(frozen=True)
class RunFolder:
    """Paths of a run folder (nothing is created until written)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def folds(self) -> Path:
        return self.root / "folds.json"

    @property
    def bad_files(self) -> Path:
        return self.root / "bad_files.json"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    @property
    def summary_md(self) -> Path:
        return self.root / "summary.md"

    @property
    def encoder_cache(self) -> Path:
        return self.root / "encoder_cache"

    @property
    def precision(self) -> Path:
        """`precision.json`: what `precision` resolved to when the run started (kept for every later session)."""
        return self.root / "precision.json"

    def fold(self, index: int) -> FoldFolder:
        return FoldFolder(self.root / fold_name(index))

    def fold_indices(self) -> list[int]:
        """Indices of the fold folders present."""
        return [k for k, _ in fold_dirs(self.root)]

    def analysis(self, fold: int) -> Path:
        """`analysis/fold_<fold>/`: where `loralens analyze` writes the analyses of a fold by default."""
        return self.root / "analysis" / fold_name(fold)

    def claim(self, cfg: TrainConfig) -> None:
        """Write `config.yaml`, or check that the one present has the same hash (same results-changing settings)."""
        self.check_claim(cfg)
        atomic_write_text(self.config, config_to_yaml(cfg))

    def check_claim(self, cfg: TrainConfig) -> None:
        """RunFolderError when `config.yaml` is present with another hash (what `claim` would refuse); no write."""
        if self.config.exists():
            try:
                saved = config_from_snapshot(yaml.safe_load(self.config.read_text(encoding="utf-8")))
            except Exception as e:  # noqa: BLE001 - any unreadable snapshot is reported the same way
                raise RunFolderError(f"{self.config}: unreadable configuration snapshot ({e})",
                                     "use a new run folder (--run-dir)") from None
            if config_hash(saved) != config_hash(cfg):
                diff = _differences(saved, cfg)
                raise RunFolderError(
                    f"{self.root} holds a run with other settings ({diff})",
                    "use a new run folder (--run-dir), or the settings of config.yaml to resume it")


def _differences(a: TrainConfig, b: TrainConfig) -> str:
    from loralens.training.config import _NOT_HASHED

    da = a.model_dump(mode="json", exclude=_NOT_HASHED)
    db = b.model_dump(mode="json", exclude=_NOT_HASHED)
    keys = [k for k in da if da[k] != db.get(k)]
    return ", ".join(f"{k}: {da[k]!r} there, {db[k]!r} now" for k in keys[:4])


@dataclass(frozen=True)
class FoldFolder:
    root: Path

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def head(self) -> Path:
        return self.root / "head.safetensors"

    @property
    def speaker_statistics(self) -> Path:
        """Per-speaker statistics of a speaker-normalising head (`head.speaker_norm`)."""
        return self.root / "speaker_statistics.safetensors"

    @property
    def encoder(self) -> Path:
        return self.root / "encoder.safetensors"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.json"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def completed(self, cfg_hash: str) -> dict | None:
        """The fold's metrics when it is complete under configuration hash `cfg_hash`, else None."""
        if not self.metrics.exists():
            return None
        m = read_json(self.metrics)
        return m if m.get("config_hash") == cfg_hash else None


# ------------------------------------------------------------------------------------------------ lock
LOCK_NAME = ".loralens.lock"
_held: dict[Path, int] = {}  # folders this process holds, with a re-entry count


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _read_lock(path: Path) -> dict | None:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {}  # being written, or damaged: treated as held by an unknown process
    return data if isinstance(data, dict) else {}


class RunLock:
    """An exclusive lock on a run folder for the duration of one command: the file `<folder>/.loralens.lock`
    holding the pid, host, start time and command of its holder, created with O_EXCL (atomic on local and NFSv3+
    file systems). A second command gets a `RunFolderError` naming the holder. A lock left by a process that is no
    longer alive on this host (killed, crashed) is stale and is taken over, with a message. Re-entrant within one
    process (the pipeline holds <out>, its training stages their own folders)."""

    def __init__(self, folder: str | os.PathLike[str], *, echo=None, command: str | None = None) -> None:
        self.folder = Path(os.path.abspath(folder))
        self.path = self.folder / LOCK_NAME
        self.echo = echo
        self.command = command

    def _record(self) -> dict:
        import socket
        import sys
        import time

        return {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": self.command or " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])[:300]}

    def acquire(self) -> RunLock:
        import json
        import socket

        if self.folder in _held:
            _held[self.folder] += 1
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(self.path)
                if holder is None:  # released meanwhile
                    continue
                pid, host = holder.get("pid"), holder.get("host")
                same_host = host == socket.gethostname()
                if isinstance(pid, int) and same_host and pid != os.getpid() and not _pid_alive(pid):
                    # stale: its holder died without releasing it. Move it aside (atomic), and put it back if
                    # what was moved is not that stale lock (another process took over in between).
                    aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
                    try:
                        os.rename(self.path, aside)
                    except FileNotFoundError:
                        continue
                    moved = _read_lock(aside) or {}
                    if moved.get("pid") != pid or moved.get("started") != holder.get("started"):
                        try:
                            os.link(aside, self.path)
                        except FileExistsError:
                            pass
                        aside.unlink(missing_ok=True)
                        continue
                    aside.unlink(missing_ok=True)
                    if self.echo is not None:
                        self.echo(f"{self.folder}: took over the lock of process {pid} (started "
                                  f"{holder.get('started', '?')}), which is no longer running")
                    continue
                who = (f"process {pid} on {host}" if pid is not None else "another process")
                since = f" since {holder['started']}" if holder.get("started") else ""
                cmd = f" ({holder['command']})" if holder.get("command") else ""
                hint = ("wait for it to finish, or use another folder; if it is not running any more, delete "
                        f"{self.path}" if not same_host else
                        "wait for it to finish (or stop it), or use another folder")
                raise RunFolderError(f"{self.folder} is in use by {who}{since}{cmd}", hint) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self._record(), f)
            _held[self.folder] = 1
            return self
        raise RunFolderError(f"{self.folder}: could not take the lock {self.path}", "try again")

    def release(self) -> None:
        n = _held.get(self.folder, 0)
        if n > 1:
            _held[self.folder] = n - 1
            return
        _held.pop(self.folder, None)
        holder = _read_lock(self.path)
        if holder and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def read_log(path: str | os.PathLike[str]) -> list[dict]:
    """The records of a `log.jsonl` training log (one JSON object a line; blank lines ignored)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The `config.yaml` of a training run folder, validated."""
    path = RunFolder(run_dir).config
    if not path.exists():
        raise RunFolderError(f"{path}: not found", "point at a training run folder (written by loralens train/run)")
    try:
        return config_from_snapshot(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValidationError) as e:
        raise RunFolderError(f"{path}: unreadable configuration snapshot ({e})".splitlines()[0],
                             "point at a run folder written by this version of loralens, or retrain it") from None


def complete_folds(run_dir: str | os.PathLike[str], cfg: TrainConfig) -> dict[int, dict]:
    """fold index -> metrics.json of every fold of the run that is complete under its configuration."""
    run = RunFolder(run_dir)
    h = config_hash(cfg)
    done = {}
    for k in run.fold_indices():
        m = run.fold(k).completed(h)
        if m is not None:
            done[k] = m
    return done

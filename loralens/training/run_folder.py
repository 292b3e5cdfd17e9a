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
    <run>/fold_{k}/predictions.json  test clip ids, true and predicted classes
    <run>/fold_{k}/log.jsonl         training log
    <run>/fold_{k}/figures/          training curve, confusion matrix (PNG + SVG)
    <run>/fold_{k}/checkpoints/      resumable state while the fold trains (removed once it is complete)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from loralens.errors import RunFolderError
from loralens.io import atomic_write_text, read_json
from loralens.training.config import TrainConfig, config_hash, config_to_yaml


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

    def fold(self, index: int) -> "FoldFolder":
        return FoldFolder(self.root / f"fold_{index}")

    def fold_indices(self) -> list[int]:
        """Indices of the fold folders present."""
        out = []
        for p in self.root.glob("fold_*"):
            suffix = p.name[len("fold_"):]
            if p.is_dir() and suffix.isdigit():
                out.append(int(suffix))
        return sorted(out)

    def claim(self, cfg: TrainConfig) -> None:
        """Write `config.yaml`, or check that the one present has the same hash (same results-changing settings)."""
        if self.config.exists():
            try:
                saved = TrainConfig.model_validate(yaml.safe_load(self.config.read_text(encoding="utf-8")) or {})
            except Exception as e:  # noqa: BLE001 - any unreadable snapshot is reported the same way
                raise RunFolderError(f"{self.config}: unreadable configuration snapshot ({e})",
                                     "use a new run folder (--run-dir)") from None
            if config_hash(saved) != config_hash(cfg):
                diff = _differences(saved, cfg)
                raise RunFolderError(
                    f"{self.root} holds a run with other settings ({diff})",
                    "use a new run folder (--run-dir), or the settings of config.yaml to resume it")
        atomic_write_text(self.config, config_to_yaml(cfg))


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

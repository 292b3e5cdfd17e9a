"""Figures of a training fold, drawn from its JSON files only: the training curve (from `log.jsonl`) and the
confusion matrix (from `metrics.json`). Each is saved as PNG and SVG (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    from loralens.io import atomic_path

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        target = out_dir / f"{stem}.{ext}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(target)
    return paths


def read_log(path: str | os.PathLike[str]) -> list[dict]:
    """The records of a `log.jsonl` training log."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def training_curve(records: Sequence[dict], out_dir: str | os.PathLike[str], title: str = "",
                   best_epoch: int | None = None) -> list[Path]:
    """Training loss per logged step interval and per epoch, and validation UAR per epoch (right axis);
    the selected epoch is marked. Writes `training_curve.png` and `.svg` to `out_dir`; returns their paths."""
    plt = _pyplot()
    steps = [r for r in records if r.get("type") == "step"]
    epochs = [r for r in records if r.get("type") == "epoch"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], color="0.6", lw=1, label="train loss (interval)")
    if epochs:
        ax.plot([r["step"] for r in epochs], [r["train_loss"] for r in epochs], "o-", color="C0", label="train loss (epoch)")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy")
    ax2 = ax.twinx()
    if epochs:
        ax2.plot([r["step"] for r in epochs], [r["validation"]["uar"] for r in epochs], "s-", color="C1",
                 label="validation UAR")
        if best_epoch is not None:
            best = [r for r in epochs if r["epoch"] == best_epoch]
            if best:
                ax2.axvline(best[0]["step"], color="C1", ls=":", lw=1)
                ax2.annotate(f"selected (epoch {best_epoch + 1})", (best[0]["step"], best[0]["validation"]["uar"]),
                             textcoords="offset points", xytext=(4, -12), fontsize=8, color="C1")
    ax2.set_ylabel("validation UAR")
    ax2.set_ylim(0, 1)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    try:
        return _save(fig, Path(out_dir), "training_curve")
    finally:
        plt.close(fig)


def confusion_figure(confusion: Sequence[Sequence[int]], labels: Sequence[str], out_dir: str | os.PathLike[str],
                     title: str = "") -> list[Path]:
    """Row-normalised confusion matrix (recall per true class) with the counts written in each cell.
    Writes `confusion.png` and `.svg` to `out_dir`; returns their paths."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    try:
        return _save(fig, Path(out_dir), "confusion")
    finally:
        plt.close(fig)

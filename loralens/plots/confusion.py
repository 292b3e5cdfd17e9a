"""Confusion matrices, drawn one way: rows true class, columns predicted, coloured by the fraction of the true class
(row-normalised recall) with the clip counts written in the cells. `draw_confusion` draws one on an axes; the
figures of a training fold (`confusion_figure`) and of the report (`confusion_grid_figure`) are made of it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loralens.plots.figures import new_figure, report_style, save_figure


def row_normalised(confusion: Sequence[Sequence[int]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(counts as float64 `[C, C]`, each row divided by its sum: the recall of the true class; 0 for an empty row)."""
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return cm, np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def draw_confusion(ax: Any, confusion: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str], *,
                   fontsize: float = 8, xlabel: str = "predicted", ylabel: str = "true") -> Any:
    """Draw `confusion` (counts, `[C, C]`, rows true class) on `ax`; returns the image (for a colorbar)."""
    cm, norm = row_normalised(confusion)
    n = len(labels)
    image = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=fontsize,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.grid(False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return image


def confusion_figure(confusion: Sequence[Sequence[int]], labels: Sequence[str], out_dir: str | os.PathLike[str],
                     title: str = "") -> list[Path]:
    """Row-normalised confusion matrix (recall per true class) with the counts written in each cell.
    Writes `confusion.png` and `.svg` to `out_dir`; returns their paths."""
    n = len(labels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with report_style():
        fig, ax = new_figure(1.0 + 0.75 * n, 0.8 + 0.7 * n)
        image = draw_confusion(ax, confusion, labels)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
        if title:
            ax.set_title(title)
    return list(save_figure(fig, out_dir / "confusion"))


def confusion_grid_figure(
    confusions: Mapping[str, Sequence[Sequence[int]]],
    labels: Sequence[str],
    out_stem: str | os.PathLike[str],
    n_folds: Mapping[str, int] | None = None,
) -> tuple[Path, Path]:
    """One panel per variant: the confusion matrix summed over test folds (rows true class, columns predicted),
    coloured by the fraction of the true class (row-normalised recall) with the clip counts written in the cells.
    Returns (png, svg)."""
    names = list(confusions)
    n = len(labels)
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    side = 0.55 * n + 1.2
    with report_style():
        fig, axes = new_figure(side * ncols + 0.8, side * nrows + 0.3, nrows=nrows, ncols=ncols, squeeze=False)
        image = None
        for k, name in enumerate(names):
            ax = axes[k // ncols][k % ncols]
            image = draw_confusion(ax, confusions[name], labels, fontsize=7.5, xlabel="predicted class",
                                   ylabel="true class")
            folds = (n_folds or {}).get(name)
            ax.set_title(f"{name}" + (f" ({folds} folds)" if folds else ""))
        for k in range(len(names), nrows * ncols):
            axes[k // ncols][k % ncols].set_visible(False)
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.8, label="fraction of true class")
    return save_figure(fig, out_stem)

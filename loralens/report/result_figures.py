"""Figures the report draws from the JSON of a run: test UAR per variant, and confusion matrices summed over
folds. Each is saved as PNG + SVG with `save_figure` (matplotlib Agg, no pyplot)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from loralens.report.figures import new_figure, report_style, save_figure


def uar_per_variant_figure(
    uar_by_variant: Mapping[str, Sequence[float]],
    out_stem: str | os.PathLike[str],
    chance: float | None = None,
) -> tuple[Path, Path]:
    """Bar chart of the mean test UAR (percent) per variant, error bars = sample std over folds (ddof=1; none
    with one fold), one dot per fold; a dashed line at chance (1 / classes, percent) when given.
    `uar_by_variant`: variant -> per-fold UAR as fractions in [0, 1]. Returns (png, svg)."""
    names = list(uar_by_variant)
    values = [100.0 * np.asarray(uar_by_variant[n], dtype=np.float64) for n in names]
    means = [float(v.mean()) if v.size else np.nan for v in values]
    stds = [float(v.std(ddof=1)) if v.size > 1 else 0.0 for v in values]
    with report_style():
        fig, ax = new_figure(max(3.2, 0.9 * len(names) + 1.6), 3.0)
        x = np.arange(len(names))
        colours = ["#8c8c8c" if n == "frozen" else "#c44e52" if n == "full" else "#4c72b0" for n in names]
        ax.bar(x, means, yerr=stds, capsize=4, color=colours, alpha=0.85, width=0.6,
               error_kw={"elinewidth": 1.0, "ecolor": "#222222"}, label="mean ± std over folds")
        for i, v in enumerate(values):
            if v.size:
                jitter = np.linspace(-0.12, 0.12, v.size) if v.size > 1 else np.zeros(1)
                ax.plot(x[i] + jitter, v, "o", ms=3.5, color="#222222", alpha=0.7,
                        label="fold" if i == 0 else None)
        if chance is not None:
            ax.axhline(100.0 * chance, ls="--", lw=1, color="#555555", label=f"chance ({100 * chance:.1f} %)")
        ax.set_xticks(x, names, rotation=20 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
        ax.set_xlabel("variant")
        ax.set_ylabel("test UAR (%)")
        ax.set_ylim(0, 104)  # room for a fold dot at 100 %
        ax.set_yticks(range(0, 101, 20))
        ax.set_title("Test UAR per variant")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5)
    return save_figure(fig, out_stem)


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
            cm = np.asarray(confusions[name], dtype=np.float64)
            rows = cm.sum(axis=1, keepdims=True)
            norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
            image = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7.5,
                            color="white" if norm[i, j] > 0.5 else "black")
            ax.set_xticks(range(n), labels, rotation=45, ha="right")
            ax.set_yticks(range(n), labels)
            ax.grid(False)
            ax.set_xlabel("predicted class")
            ax.set_ylabel("true class")
            folds = (n_folds or {}).get(name)
            ax.set_title(f"{name}" + (f" ({folds} folds)" if folds else ""))
        for k in range(len(names), nrows * ncols):
            axes[k // ncols][k % ncols].set_visible(False)
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.8, label="fraction of true class")
    return save_figure(fig, out_stem)

"""The summary figure of a run's results: test UAR per variant (mean ± std over folds, one dot per fold), saved
as PNG + SVG with `save_figure`. The confusion matrices summed over folds are `plots.confusion`'s."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from loralens.plots.figures import new_figure, report_style, save_figure


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

"""Per-layer curves drawn on an axis: lines with shaded bootstrap bands, integer layer ticks.

Curves are the results-JSON form of `loralens.numerics.curves` (`{"value", "low", "high"}` lists, None where not
finite); the caller makes the figure (`loralens.plots.figures.new_figure`) and sets the axis labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def plot_curves(ax: Any, series: dict[str, dict[str, list[float]]], x: Sequence[float] | None = None,
                colors: dict[str, str] | None = None, legend: bool = True,
                styles: dict[str, dict[str, Any]] | None = None) -> None:
    """Draw curves (`{"value","low","high"}`) with shaded CI bands on `ax`, one line per `series` entry (label ->
    curve), in order (later ones on top), with a legend when `legend` and more than one series; `styles`: label ->
    extra `ax.plot` keywords (line style, marker...); the caller sets the axis labels."""
    for i, (label, c) in enumerate(series.items()):
        v = np.array([np.nan if a is None else a for a in c["value"]], dtype=float)
        xs = np.arange(len(v)) if x is None else np.asarray(x)
        color = (colors or {}).get(label, f"C{i}")
        ax.plot(xs, v, **{"marker": "o", "ms": 3, "lw": 1.4, "label": label, "color": color,
                          **(styles or {}).get(label, {})})
        lo = np.array([np.nan if a is None else a for a in c.get("low", [])], dtype=float)
        hi = np.array([np.nan if a is None else a for a in c.get("high", [])], dtype=float)
        if lo.size == v.size and hi.size == v.size:
            ax.fill_between(xs, lo, hi, alpha=0.2, color=color, lw=0)
    if legend and len(series) > 1:
        ax.legend()


def layer_ticks(ax: Any, n_layers: int, offset: int = 0) -> None:
    """Integer ticks (at most ~16) on the x axis for layers `offset..offset + n_layers - 1`."""
    step = max(1, int(np.ceil(n_layers / 16)))
    ax.set_xticks(list(range(offset, offset + n_layers, step)))

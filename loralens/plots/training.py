"""The training curve of a fold, drawn from the records of its `log.jsonl` (`training.run_folder.read_log`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from loralens.plots.figures import new_figure, report_style, save_figure


def training_curve(records: Sequence[dict], out_dir: str | os.PathLike[str], title: str = "",
                   best_epoch: int | None = None) -> list[Path]:
    """Training loss per logged step interval and per epoch, and validation UAR per epoch (right axis);
    the selected epoch is marked. Writes `training_curve.png` and `.svg` to `out_dir`; returns their paths."""
    steps = [r for r in records if r.get("type") == "step"]
    epochs = [r for r in records if r.get("type") == "epoch"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with report_style():
        fig, ax = new_figure(6.4, 4.0)
        if steps:
            ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], color="0.6", lw=1,
                    label="train loss (interval)")
        if epochs:
            ax.plot([r["step"] for r in epochs], [r["train_loss"] for r in epochs], "o-", color="C0",
                    label="train loss (epoch)")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("cross-entropy")
        ax2 = ax.twinx()
        ax2.grid(False)
        if epochs:
            ax2.plot([r["step"] for r in epochs], [r["validation"]["uar"] for r in epochs], "s-", color="C1",
                     label="validation UAR")
            if best_epoch is not None:
                best = [r for r in epochs if r["epoch"] == best_epoch]
                if best:
                    ax2.axvline(best[0]["step"], color="C1", ls=":", lw=1)
                    ax2.annotate(f"selected (epoch {best_epoch + 1})",
                                 (best[0]["step"], best[0]["validation"]["uar"]),
                                 textcoords="offset points", xytext=(4, -12), fontsize=8, color="C1")
        ax2.set_ylabel("validation UAR")
        ax2.set_ylim(0, 1)
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=8)
        if title:
            ax.set_title(title)
    return list(save_figure(fig, out_dir / "training_curve"))

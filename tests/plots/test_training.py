"""Training-curve and confusion-matrix figures from JSON records: PNG + SVG, labels and numbers drawn."""

from __future__ import annotations

import matplotlib.image as mpimg

from loralens.plots.confusion import confusion_figure
from loralens.plots.training import training_curve
from loralens.training.run_folder import read_log


def test_training_curve_and_confusion(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = []
    for e in range(3):
        for s in range(1, 4):
            lines.append(f'{{"type": "step", "epoch": {e}, "step": {3 * e + s}, "loss": {1.5 - 0.1 * (3 * e + s)}, '
                         f'"lr": {{"head": 0.001, "encoder": 0.0001}}, "time": 0.1}}')
        lines.append(f'{{"type": "epoch", "epoch": {e}, "step": {3 * e + 3}, "train_loss": {1.3 - 0.3 * e}, '
                     f'"validation": {{"uar": {0.4 + 0.1 * e}, "war": 0.5, "macro_f1": 0.4}}, "time": 1.0}}')
    log.write_text("\n".join(lines) + "\n")
    records = read_log(log)
    assert len(records) == 12
    paths = training_curve(records, tmp_path / "fig", title="fold0 (lora)", best_epoch=2)
    assert sorted(p.name for p in paths) == ["training_curve.png", "training_curve.svg"]
    png = mpimg.imread(paths[0] if paths[0].suffix == ".png" else paths[1])
    assert png.shape[0] > 200 and png.shape[1] > 300
    svg = (tmp_path / "fig" / "training_curve.svg").read_text()
    assert "validation UAR" in svg and "selected (epoch 3)" in svg

    paths = confusion_figure([[5, 1, 0], [2, 3, 0], [0, 0, 4]], ["angry", "happy", "sad"], tmp_path / "fig",
                             title="test UAR 0.80")
    svg = (tmp_path / "fig" / "confusion.svg").read_text()
    assert all(lab in svg for lab in ("angry", "happy", "sad", "predicted", "true"))
    assert (tmp_path / "fig" / "confusion.png").stat().st_size > 1000

"""Classification metrics for emotion recognition and their aggregation over folds.

- UAR (unweighted average recall, = balanced accuracy): the mean of the per-class recalls over the classes that
  occur in the truth. A class absent from the truth has no recall and is left out of the mean (its recall is
  reported as None), so UAR of a split that lacks a class is the mean over the classes it has. Computed by the
  package's one UAR kernel, `loralens.numerics.uar.recall_and_uar` (the analyses' curves and bands use it too).
- WAR (weighted average recall, = accuracy): correct / total.
- macro-F1: the mean of per-class F1 over the classes that occur in the truth or in the predictions
  (scikit-learn's convention with `labels=None`); a class with no true and no predicted sample is left out,
  F1 is 0 for a class that is predicted but never true or true but never predicted.
- confusion matrix: `confusion[i][j]` = number of clips of true class i predicted as class j, over all classes
  of the label set (rows and columns in label order).

Fold aggregates are mean ± sample standard deviation (ddof=1, the unbiased variance estimator, as is usual for
cross-validation reports); with a single fold the std is None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from loralens.numerics.uar import class_recall, recall_and_uar


@dataclass
class ClassificationMetrics:
    """Metrics of one split. Rates are fractions in [0, 1]; `per_class_recall[label]` is None where the label is absent
    from the truth; `confusion[i][j]` counts true class i predicted as j (label order); `n` = number of clips."""

    uar: float
    war: float
    macro_f1: float
    per_class_recall: dict[str, float | None]
    confusion: list[list[int]]
    n: int
    labels: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """`[n_classes, n_classes]` int64 counts, rows = truth, columns = prediction."""
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} entries but y_pred has {p.size}")
    if t.size and (t.min() < 0 or p.min() < 0 or t.max() >= n_classes or p.max() >= n_classes):
        raise ValueError(f"class indices must lie in [0, {n_classes}); got truth {t.min()}..{t.max()}, "
                         f"predictions {p.min()}..{p.max()}")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int],
                           labels: Sequence[str]) -> ClassificationMetrics:
    """UAR, WAR, macro-F1, per-class recall and the confusion matrix of predictions `y_pred` (class indices into
    `labels`) against `y_true`. An empty split gives NaN rates."""
    labels = list(labels)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    n = int(cm.sum())
    support = cm.sum(axis=1)  # true clips per class
    predicted = cm.sum(axis=0)
    diag = np.diag(cm)
    recall, present = class_recall(diag, support)
    per_class = {lab: (float(recall[i]) if present[i] else None) for i, lab in enumerate(labels)}
    uar = float(recall_and_uar(diag[present], support[present])[2])  # the classes present only: see numerics.uar
    war = float(diag.sum() / n) if n else math.nan
    f1_classes = present | (predicted > 0)
    denom = support + predicted  # F1 = 2 tp / (2 tp + fp + fn) = 2 tp / (support + predicted)
    f1 = np.divide(2 * diag, denom, out=np.zeros(len(labels)), where=denom > 0)
    macro_f1 = float(f1[f1_classes].mean()) if f1_classes.any() else math.nan
    return ClassificationMetrics(
        uar=uar, war=war, macro_f1=macro_f1, per_class_recall=per_class,
        confusion=cm.tolist(), n=n, labels=labels,
    )


def mean_std(values: Sequence[float]) -> dict[str, float | int | None]:
    """`{"mean", "std", "n"}` of `values`; std is the sample standard deviation (ddof=1), None for fewer than 2
    values. NaN values (e.g. UAR of an empty split) are left out."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else None, "n": int(v.size)}


def aggregate_folds(per_fold: Mapping[str, Mapping], labels: Sequence[str]) -> dict:
    """Mean ± std over folds of the test metrics in `per_fold[name]` (dicts with `uar`, `war`, `macro_f1`,
    `per_class_recall`). Per-class recall is averaged over the folds where the class is present."""
    out: dict = {}
    for key in ("uar", "war", "macro_f1"):
        out[key] = mean_std([float(m[key]) for m in per_fold.values()])
    out["per_class_recall"] = {
        lab: mean_std([m["per_class_recall"].get(lab) for m in per_fold.values()]) for lab in labels
    }
    return out

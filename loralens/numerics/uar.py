"""UAR (unweighted average recall, = balanced accuracy): the one kernel, for a split and for bootstrap resamples.

UAR is the mean of the per-class recalls over the classes that occur in the truth; a class absent from the truth
has no recall and is left out of the mean, so the UAR of a sample that lacks a class is the mean over the classes
it has (NaN when it has none).

Arithmetic (fixed, so that every caller gets the same bits for the same counts): recall = hits / support per
class (0 where the support is 0), summed over the class axis in numpy's order (`sum(axis=-1)`), divided by the
number of classes present. Training's metrics (`loralens.training.metrics`), the analyses' curves and their
bootstrap bands (`loralens.numerics.curves`) all come through `recall_and_uar`.

An absent class adds an exact 0 to the sum, but numpy's pairwise summation groups the terms differently for 8 or
more classes, so the last bit can depend on whether absent classes are passed: the metrics of one split pass the
classes present only (the mean over them, as they always have); resampled UARs keep every class on a fixed axis
(vectorised over resamples and layers, as they always have). With every class present, or fewer than 8 classes,
both give the same bits.
"""

from __future__ import annotations

import numpy as np

from loralens.numerics.bootstrap import resample_counts


def class_recall(hits: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class recall and presence from per-class counts `[..., C]` (broadcastable against each other): recall
    = hits / support where support > 0, else 0 (float64); present = support > 0 (bool, support's shape)."""
    present = np.asarray(support) > 0
    shape = np.broadcast_shapes(np.shape(hits), np.shape(support))
    recall = np.divide(hits, support, out=np.zeros(shape), where=present)
    return recall, present


def recall_and_uar(hits: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recall `[..., C]`, present `[..., C]`, UAR `[...]`) from per-class counts `[..., C]`: hits = correct
    predictions of each class, support = true examples of each class (counts may be fractional weights, e.g.
    resample counts). UAR is NaN where no class is present."""
    recall, present = class_recall(hits, support)
    with np.errstate(invalid="ignore", divide="ignore"):
        uar = recall.sum(axis=-1) / present.sum(axis=-1)
    return recall, present, uar


def uar_weighted(pred: np.ndarray, labels: np.ndarray, counts: np.ndarray, n_classes: int) -> np.ndarray:
    """UAR of predictions `pred [n]` or `[n, L]` (one column per layer / configuration) against `labels [n]` on B
    weighted samples of the n examples: `counts [B, n]` (how often each example is in each sample, e.g.
    `bootstrap.resample_counts`; a row of ones is the full sample) -> `[B]` or `[B, L]`."""
    pred = np.asarray(pred)
    labels = np.asarray(labels).astype(np.int64)
    counts = np.asarray(counts, dtype=np.float64)
    single = pred.ndim == 1
    if single:
        pred = pred[:, None]
    n = labels.shape[0]
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), labels] = 1.0
    correct = (pred == labels[:, None]).astype(np.float64)  # [n, L]
    support = counts @ onehot  # [B, C]
    hits = np.einsum("bn,nl,nc->blc", counts, correct, onehot)  # [B, L, C]
    _, _, uar = recall_and_uar(hits, support[:, None, :])  # [B, L]
    return uar[:, 0] if single else uar


def uar_boot(pred: np.ndarray, labels: np.ndarray, idx: np.ndarray | None, n_classes: int) -> np.ndarray | float:
    """UAR of predictions `pred [n, L]` (or `[n]`) against `labels [n]`, on the full sample (`idx` None -> `[L]`,
    a float for 1-d `pred`) or on each bootstrap resample of the index matrix `idx [n_boot, n]` (-> `[n_boot, L]`,
    `[n_boot]` for 1-d `pred`)."""
    n = np.asarray(labels).shape[0]
    counts = np.ones((1, n)) if idx is None else resample_counts(idx, n)
    uar = uar_weighted(pred, labels, counts, n_classes)
    return uar[0] if idx is None else uar

"""The one UAR kernel: against training's metrics, scikit-learn, on resamples, with absent classes."""

from __future__ import annotations

import numpy as np
import pytest

from loralens.numerics.uar import recall_and_uar, uar_boot, uar_weighted
from loralens.training.metrics import classification_metrics


def test_uar_boot_matches_metrics():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 30)
    labels[:4] = [0, 1, 2, 3]
    pred = rng.integers(0, 4, (30, 3))
    est = uar_boot(pred, labels, None, 4)
    for j in range(3):
        assert est[j] == pytest.approx(classification_metrics(labels, pred[:, j], list("abcd")).uar)
    idx = rng.integers(0, 30, (5, 30))
    boot = uar_boot(pred, labels, idx, 4)
    for b in range(5):
        want = classification_metrics(labels[idx[b]], pred[idx[b], 1], list("abcd")).uar
        assert boot[b, 1] == pytest.approx(want)
    assert uar_boot(labels, labels, None, 4) == 1.0  # perfect predictions, 1-d input


def test_uar_kernel_known_answers_with_an_absent_class():
    # 3 classes, class 2 never true: recalls 1/2 (class 0) and 1 (class 1); class 2 is left out of the mean
    hits, support = np.array([1, 2, 0]), np.array([2, 2, 0])
    recall, present, uar = recall_and_uar(hits, support)
    assert recall.tolist() == [0.5, 1.0, 0.0] and present.tolist() == [True, True, False]
    assert uar == 0.75
    assert np.isnan(recall_and_uar(np.zeros(3), np.zeros(3))[2])  # no class present: no UAR
    # weighted samples: a row of counts 2 on every example gives the same UAR as the sample itself
    y, pred = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])
    got = uar_weighted(pred, y, np.array([[1.0] * 5, [2.0] * 5, [1, 1, 0, 0, 0]]), 3)
    assert got.tolist() == [pytest.approx(0.5), pytest.approx(0.5), 0.5]


@pytest.mark.parametrize("n_classes", [4, 8, 11])
def test_metrics_and_resampled_kernel_agree_bit_for_bit_when_every_class_is_present(n_classes):
    rng = np.random.default_rng(n_classes)
    for _ in range(50):
        labels = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, 40)])
        pred = rng.integers(0, n_classes, labels.size)
        assert uar_boot(pred, labels, None, n_classes) == classification_metrics(labels, pred, list(
            map(str, range(n_classes)))).uar

"""Curves and points with bootstrap bands: UAR with its band, the paired UAR gap."""

from __future__ import annotations

import numpy as np
import pytest

from loralens.numerics.curves import bootstrap_uar, paired_uar_gap


def test_paired_gap_known_answers():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 60)
    pred = np.where(rng.random(60) < 0.7, y, rng.integers(0, 4, 60))
    same = paired_uar_gap(y, pred, pred, 4, 300, 0)
    assert same == {"value": 0.0, "low": 0.0, "high": 0.0, "std": 0.0}  # identical predictions: exactly 0
    better = np.where(rng.random(60) < 0.5, y, pred)
    g = paired_uar_gap(y, better, pred, 4, 300, 0)
    a, b = bootstrap_uar(y, better, 4, 300, 0), bootstrap_uar(y, pred, 4, 300, 0)
    assert g["value"] == pytest.approx(a["value"] - b["value"])
    # pairing: the gap's spread is smaller than the two UARs' spreads combined as if independent
    assert g["std"] < np.hypot(a["std"], b["std"])


def test_bootstrap_uar_matches_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 50)
    pred = np.where(rng.random(50) < 0.6, y, rng.integers(0, 4, 50))
    p = bootstrap_uar(y, pred, 4, 200, 0)
    assert p["value"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    assert p["low"] < p["value"] < p["high"]

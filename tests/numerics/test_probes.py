"""Known answers for linear probes: chance on shuffled labels, ~1 on separable data, fold handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loralens.data.folds import Fold
from loralens.numerics.inputs import AnalysisInputError
from loralens.numerics.probes import (
    ProbeResult,
    folds_to_indices,
    linear_probe_cv,
    probe_layers,
    speaker_probe_cv,
    within_speaker_folds,
)


def _speaker_folds(speakers: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Speaker-independent folds: speaker s tests in fold s % k."""
    fold_of = speakers % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def _blobs(rng: np.random.Generator, n_per: int, n_classes: int, d: int, sep: float) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(n_classes, d)) * sep
    y = np.repeat(np.arange(n_classes), n_per)
    return centres[y] + rng.normal(size=(y.size, d)), y


def test_probe_on_shuffled_labels_is_at_chance() -> None:
    rng = np.random.default_rng(0)
    x, y = _blobs(rng, 100, 4, 16, sep=3.0)
    speakers = rng.integers(0, 10, y.size)
    res = linear_probe_cv(x, rng.permutation(y), _speaker_folds(speakers, 5))
    assert len(res.uar_per_fold) == 5
    assert abs(res.mean - 0.25) < 0.06
    assert res.std == pytest.approx(np.std(res.uar_per_fold))


def test_probe_on_linearly_separable_data_reaches_one() -> None:
    rng = np.random.default_rng(1)
    x, y = _blobs(rng, 60, 5, 12, sep=6.0)
    speakers = np.arange(y.size) % 12
    res = linear_probe_cv(torch.from_numpy(x).float(), y, _speaker_folds(speakers, 4))
    assert res.mean > 0.98 and min(res.uar_per_fold) > 0.95
    assert res.c_per_fold == [1.0] * 4


def test_c_grid_is_chosen_on_the_training_split_by_speaker_groups() -> None:
    rng = np.random.default_rng(2)
    x, y = _blobs(rng, 40, 3, 8, sep=1.0)
    speakers = np.arange(y.size) % 9
    res = linear_probe_cv(x, y, _speaker_folds(speakers, 3), c=[0.01, 1.0], groups=speakers)
    assert set(res.c_per_fold) <= {0.01, 1.0}
    assert 0.5 < res.mean <= 1.0
    assert set(res.to_dict()) == {"uar_per_fold", "mean", "std", "c_per_fold"}


def test_probe_layers_on_a_list_and_a_mapping() -> None:
    rng = np.random.default_rng(3)
    x, y = _blobs(rng, 30, 3, 6, sep=6.0)
    noise = rng.normal(size=x.shape)
    folds = _speaker_folds(np.arange(y.size) % 6, 3)
    out = probe_layers([noise, x], y, folds)
    assert isinstance(out[0], ProbeResult) and out[1].mean > out[0].mean
    named = probe_layers({"blocks.0": noise, "blocks.1": x}, y, folds)
    assert named["blocks.1"].mean == pytest.approx(out[1].mean)


def test_within_speaker_folds_put_every_speaker_in_train_and_test() -> None:
    speakers = np.repeat(np.array(["a", "b", "c"]), [10, 7, 5])
    folds = within_speaker_folds(speakers, n_folds=5, seed=1)
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(22))
    for tr, te in folds:
        assert set(speakers[tr]) == set(speakers[te]) == {"a", "b", "c"}
    with pytest.raises(AnalysisInputError, match="fewer than n_folds"):
        within_speaker_folds(speakers, n_folds=6)


def test_speaker_probe_finds_speakers_and_is_at_chance_without_them() -> None:
    rng = np.random.default_rng(4)
    speakers = np.repeat(np.arange(6), 20)
    timbre = rng.normal(size=(6, 10)) * 4
    x = timbre[speakers] + rng.normal(size=(speakers.size, 10))
    assert speaker_probe_cv(x, speakers, n_folds=4).mean > 0.95
    # random features: measured 0.159 +/- 0.032 over 20 draws of this size
    chance = speaker_probe_cv(np.random.default_rng(40).normal(size=x.shape), speakers, n_folds=4)
    assert abs(chance.mean - 1 / 6) < 0.08


def test_folds_to_indices_from_fold_records() -> None:
    ids = [f"clip{i}" for i in range(6)]
    fold = Fold(name="f0", train=["clip0", "clip1"], validation=["clip2"], test=["clip4", "clip5"])
    (tr, te), = folds_to_indices([fold], ids)
    assert tr.tolist() == [0, 1, 2] and te.tolist() == [4, 5]
    (tr, _), = folds_to_indices([fold], ids, train_splits=("train",))
    assert tr.tolist() == [0, 1]
    with pytest.raises(AnalysisInputError, match="no features"):
        folds_to_indices([fold], ids[:5])


def test_bad_folds_raise() -> None:
    x, y = np.zeros((6, 2)), np.array([0, 1, 0, 1, 0, 1])
    with pytest.raises(AnalysisInputError, match="both train and test"):
        linear_probe_cv(x, y, [([0, 1, 2, 3], [3, 4])])
    with pytest.raises(AnalysisInputError, match="single class"):
        linear_probe_cv(x, y, [([0, 2], [1, 3])])
    with pytest.raises(AnalysisInputError, match="outside"):
        linear_probe_cv(x, y, [([0, 1], [9])])

"""bench/seed_ensemble.py's bookkeeping (the benchmark itself is run by hand): per-fold UAR of each seed and of the
mean of their probabilities, computed by hand; runs that differ in more than the seed, or lack probabilities, are
refused."""

from __future__ import annotations

import pytest
import yaml

from loralens.io import atomic_write_json
from tests.training.conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("seed_ensemble")


def _run(root, seed: int, probs: list[list[float]], **config) -> None:
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "run_dir": str(root), "epochs": 3, **config}))
    atomic_write_json(root / "fold_0" / "predictions.json", {
        "ids": ["a", "b", "c", "d"], "true": [0, 0, 1, 1], "labels": ["x", "y"],
        "pred": [max(range(2), key=lambda c: p[c]) for p in probs], "probabilities": probs})


def test_mean_probabilities_by_hand(bench, tmp_path):
    # seed 0 gets clips a, b, c right (UAR 0.75); seed 1 gets a, c, d right (UAR 0.75); the mean gets all four
    _run(tmp_path / "s0", 0, [[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    _run(tmp_path / "s1", 1, [[0.8, 0.2], [0.45, 0.55], [0.2, 0.8], [0.3, 0.7]])
    runs = [tmp_path / "s0", tmp_path / "s1"]
    assert bench._check_same_recipe(runs) == [0, 1]
    (row,) = bench.fold_rows(runs)
    assert row["fold"] == 0 and row["seeds_uar"] == [0.75, 0.75] and row["ensemble_uar"] == 1.0


def test_refusals(bench, tmp_path):
    _run(tmp_path / "s0", 0, [[0.9, 0.1]] * 4)
    _run(tmp_path / "other", 1, [[0.9, 0.1]] * 4, epochs=6)
    with pytest.raises(SystemExit, match="epochs"):
        bench._check_same_recipe([tmp_path / "s0", tmp_path / "other"])
    _run(tmp_path / "old", 2, [[0.9, 0.1]] * 4)
    p = tmp_path / "old" / "fold_0" / "predictions.json"
    p.write_text(p.read_text().replace('"probabilities"', '"probs_renamed"'))
    with pytest.raises(SystemExit, match="without probabilities"):
        bench.fold_rows([tmp_path / "s0", tmp_path / "old"])

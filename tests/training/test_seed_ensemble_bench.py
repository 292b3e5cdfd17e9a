"""bench/seed_ensemble.py's bookkeeping (the benchmark itself is run by hand) on run folders as `train` writes
them: per-fold UAR of each seed and of the mean of their probabilities, computed by hand; runs that differ in more
than the seed, or lack probabilities, are refused with a message."""

from __future__ import annotations

import pytest

from tests.training.conftest import load_bench
from tests.training.test_ensemble import P0, P1, write_run


@pytest.fixture(scope="module")
def bench():
    return load_bench("seed_ensemble")


def test_mean_probabilities_by_hand(bench, tmp_path):
    runs = [write_run(tmp_path / "s0", 0, {0: P0}), write_run(tmp_path / "s1", 1, {0: P1})]
    seeds, (row,) = bench.fold_rows(runs)
    assert seeds == [0, 1]
    assert row["fold"] == 0 and row["seeds_uar"] == [0.75, 0.75] and row["ensemble_uar"] == 1.0


def test_refusals(bench, tmp_path):
    s0 = write_run(tmp_path / "s0", 0, {0: P0})
    with pytest.raises(SystemExit, match="epochs"):
        bench.fold_rows([s0, write_run(tmp_path / "other", 1, {0: P0}, epochs=6)])
    old = write_run(tmp_path / "old", 2, {0: P1})
    p = old / "fold_0" / "predictions.json"
    p.write_text(p.read_text().replace('"probabilities"', '"probs_renamed"'))
    with pytest.raises(SystemExit, match="without class probabilities"):
        bench.fold_rows([s0, old])

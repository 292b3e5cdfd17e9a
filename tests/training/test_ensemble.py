"""`loralens.training.ensemble`: the seed ensemble scored by hand (averaging two seeds' probabilities flips a
prediction), refusals that name the difference, and `seed_ensemble` on run folders as `train` writes them
(config.yaml snapshot, metrics.json with the config hash, predictions.json with probabilities)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loralens.errors import RunFolderError
from loralens.io import atomic_write_json, atomic_write_text
from loralens.training.config import config_hash, config_to_yaml, make_config
from loralens.training.ensemble import check_seed_runs, ensemble_fold, seed_ensemble

IDS, TRUE, LABELS = ["a", "b", "c", "d"], [0, 0, 1, 1], ["x", "y"]
# seed 0 gets a, b, c right (UAR 0.75); seed 1 gets a, c, d right (UAR 0.75); their mean gets all four:
# b: (0.6 + 0.45) / 2 = 0.525 for x; d: (0.45 + 0.7) / 2 = 0.575 for y
P0 = [[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]]
P1 = [[0.8, 0.2], [0.45, 0.55], [0.2, 0.8], [0.3, 0.7]]


def _preds(probs: list[list[float]], ids: list[str] = IDS) -> dict:
    return {"ids": ids, "true": TRUE, "labels": LABELS, "pred": [int(p[1] > p[0]) for p in probs],
            "probabilities": probs}


def write_run(root: Path, seed: int, folds: dict[int, list[list[float]]], **changes) -> Path:
    """A training run folder as `train` leaves it, with the given test probabilities per fold index."""
    cfg = make_config({"corpus": "manifest", "model": "tiny.en", "epochs": 3, "seed": seed, "run_dir": str(root),
                       **changes})
    atomic_write_text(root / "config.yaml", config_to_yaml(cfg))
    for k, probs in folds.items():
        atomic_write_json(root / f"fold_{k}" / "predictions.json", _preds(probs))
        metrics = {"name": f"speakers {k}", "config_hash": config_hash(cfg)}
        atomic_write_json(root / f"fold_{k}" / "metrics.json", metrics)
    return root


def test_averaging_flips_predictions_by_hand():
    e = ensemble_fold([_preds(P0), _preds(P1)])
    assert e["members_uar"] == [0.75, 0.75]
    assert e["uar"] == 1.0 and e["war"] == 1.0 and e["macro_f1"] == 1.0
    assert e["confusion"] == [[2, 0], [0, 2]] and e["n_test"] == 4
    assert e["per_class_recall"] == {"x": 1.0, "y": 1.0}


def test_one_member_is_that_member():
    e = ensemble_fold([_preds(P0)])
    assert e["uar"] == e["members_uar"][0] == 0.75 and e["confusion"] == [[2, 0], [1, 1]]


def test_fold_refusals():
    with pytest.raises(RunFolderError, match="differ in `ids`"):
        ensemble_fold([_preds(P0), _preds(P1, ids=["a", "b", "c", "e"])])
    old = _preds(P1)
    del old["probabilities"]
    with pytest.raises(RunFolderError, match="without class probabilities"):
        ensemble_fold([_preds(P0), old], source="fold 3")
    with pytest.raises(RunFolderError, match="shape"):
        ensemble_fold([_preds(P0), _preds(P1[:3])])


def test_seed_ensemble_of_run_folders(tmp_path):
    s0 = write_run(tmp_path / "s0", 0, {0: P0, 1: P1, 2: P0})
    s1 = write_run(tmp_path / "s1", 1, {0: P1, 1: P1})  # fold 2 not trained yet
    e = seed_ensemble([s0, s1])
    assert e["seeds"] == [0, 1] and e["labels"] == LABELS and e["missing_folds"] == [2]
    assert list(e["folds"]) == ["speakers 0", "speakers 1"]
    assert e["folds"]["speakers 0"]["uar"] == 1.0 and e["folds"]["speakers 1"]["uar"] == 0.75
    assert e["mean_std"]["uar"]["mean"] == pytest.approx(0.875) and e["mean_std"]["uar"]["n"] == 2
    assert e["members_uar"]["mean"] == pytest.approx(0.75)
    assert e["gain"]["mean"] == pytest.approx(0.125) and (e["gain"]["better"], e["gain"]["worse"]) == (1, 0)


def test_fold_of_another_configuration_is_not_complete(tmp_path):
    s0 = write_run(tmp_path / "s0", 0, {0: P0, 1: P0})
    s1 = write_run(tmp_path / "s1", 1, {0: P1, 1: P1})
    atomic_write_json(s1 / "fold_1" / "metrics.json", {"name": "speakers 1", "config_hash": "0" * 16})
    assert seed_ensemble([s0, s1])["missing_folds"] == [1]


def test_runs_must_differ_in_seed_only(tmp_path):
    s0 = write_run(tmp_path / "s0", 0, {0: P0})
    other = write_run(tmp_path / "other", 1, {0: P1}, epochs=6)
    with pytest.raises(RunFolderError, match="epochs, not only in seed"):
        check_seed_runs([s0, other])
    same = write_run(tmp_path / "same", 0, {0: P1}, feature_cache=str(tmp_path / "elsewhere"))
    with pytest.raises(RunFolderError, match="seeds repeat"):  # a cache folder is not a difference; the seed is
        check_seed_runs([s0, same])
    with pytest.raises(RunFolderError, match="at least two"):
        check_seed_runs([s0])

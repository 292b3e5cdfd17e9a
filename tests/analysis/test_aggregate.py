"""Known-answer tests of analysis results aggregated over folds (loralens.analysis.aggregate)."""

from __future__ import annotations

import json
import math

import pytest

from loralens.analysis.aggregate import aggregate_results, aggregate_run, aggregate_verdicts, mean_std
from loralens.errors import RunFolderError
from loralens.io import atomic_write_json


def curve(values):
    return {"value": values, "low": [v - 0.1 if v is not None else None for v in values],
            "high": [v + 0.1 if v is not None else None for v in values]}


def test_mean_std_by_hand():
    mean, std, n = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and n == 3
    # sample variance: ((1-7/3)^2 + (2-7/3)^2 + (4-7/3)^2) / 2 = (16/9 + 1/9 + 25/9) / 2 = 7/3
    assert std == pytest.approx(math.sqrt(7 / 3))
    assert mean_std([None, 3.0, float("nan")]) == (3.0, None, 1)
    assert mean_std([None, None]) == (None, None, 0)


def test_curves_mean_std_per_layer_nested():
    folds = [
        {"adapted": {"agreement": curve([0.5, 1.0, 0.2])}, "n_layers": 3, "reading": "x",
         "meta": {"wall_time_s": 5.0}},
        {"adapted": {"agreement": curve([0.7, 0.0, 0.4])}, "n_layers": 3, "reading": "y",
         "meta": {"wall_time_s": 7.0}},
    ]
    agg = aggregate_results(folds)
    assert set(agg) == {"adapted", "n_layers"}  # meta and reading left out
    a = agg["adapted"]["agreement"]
    assert a["mean"] == pytest.approx([0.6, 0.5, 0.3])
    # two folds: sample std = |x1 - x2| / sqrt(2)
    assert a["std"] == pytest.approx([0.2 / math.sqrt(2), 1.0 / math.sqrt(2), 0.2 / math.sqrt(2)])
    assert a["n_folds"] == 2 and a["per_fold"] == [[0.5, 1.0, 0.2], [0.7, 0.0, 0.4]]
    assert agg["n_layers"] == {"mean": 3.0, "std": 0.0, "n": 2, "per_fold": [3.0, 3.0]}


def test_nulls_are_skipped_per_layer():
    folds = [{"c": curve([None, 1.0, None])}, {"c": curve([None, 3.0, 2.0])}, {"c": curve([None, 5.0, None])}]
    c = aggregate_results(folds)["c"]
    assert c["mean"] == [None, pytest.approx(3.0), 2.0]
    assert c["std"] == [None, pytest.approx(2.0), None]  # sample std of 1, 3, 5 is 2; one value: none
    assert c["per_fold"][0] == [None, 1.0, None]
    nan_fold = [{"s": float("nan")}, {"s": 4.0}]
    assert aggregate_results(nan_fold)["s"] == {"mean": 4.0, "std": None, "n": 1, "per_fold": [None, 4.0]}
    assert "s" not in aggregate_results([{"s": None}, {"s": None}])


def test_mismatched_lengths_and_partial_keys_are_skipped():
    folds = [{"a": curve([1.0, 2.0]), "b": curve([1.0]), "only_first": curve([1.0]), "x": 1.0, "name": "lens",
              "flag": True, "matrix": [[1.0, 2.0], [3.0, 4.0]], "layers": [0, 1]},
             {"a": curve([1.0, 2.0, 3.0]), "b": curve([3.0]), "x": "text", "name": "lens", "flag": False,
              "matrix": [[1.0, 2.0], [3.0, 4.0]], "layers": [0, 1]}]
    agg = aggregate_results(folds)
    assert set(agg) == {"b"}
    assert agg["b"]["mean"] == [2.0]


def test_one_fold_has_null_std_and_equals_the_fold():
    fold = {"single": {"delta_uar": curve([0.1, -0.2])}, "baseline": {"uar": 0.5}}
    agg = aggregate_results([fold])
    d = agg["single"]["delta_uar"]
    assert d["mean"] == [0.1, -0.2] and d["std"] == [None, None] and d["n_folds"] == 1
    assert agg["baseline"]["uar"] == {"mean": 0.5, "std": None, "n": 1, "per_fold": [0.5]}
    assert aggregate_results([]) == {}


def test_aggregate_verdicts_counts():
    v0 = {"delayed_specialization": {"supported": True, "statement": "yes"},
          "fab": {"supported": False, "statement": "no"}, "thresholds": {"x": 1}}
    v1 = {"delayed_specialization": {"supported": True, "statement": "yes"},
          "fab": {"supported": None, "statement": "?"}, "thresholds": {"x": 1}}
    v2 = {"delayed_specialization": {"supported": False, "statement": "no"}}
    s = aggregate_verdicts([(0, v0), (1, v1), (3, v2)])
    assert s["folds"] == [0, 1, 3] and s["n_folds"] == 3
    d = s["claims"]["delayed_specialization"]
    assert d["supported"] == [True, True, False] and d["n_supported"] == 2 and d["n_not_supported"] == 1
    f = s["claims"]["fab"]
    assert f["supported"] == [False, None, None] and f["n_supported"] == 0 and f["n_undecided"] == 2
    assert f["n_inconclusive"] == 0 and f["outcome"] == ["not supported", "not enough data", None]
    assert "thresholds" not in s["claims"]
    # three outcomes from verdicts.py: inconclusive is counted apart from "not enough data"
    w = [(k, {"delayed_specialization": {"outcome": o, "supported": None if o == "inconclusive" else o == "supported",
                                         "statement": o}})
         for k, o in enumerate(("supported", "inconclusive", "inconclusive", "not supported", "not enough data"))]
    d = aggregate_verdicts(w)["claims"]["delayed_specialization"]
    assert (d["n_supported"], d["n_not_supported"], d["n_inconclusive"], d["n_undecided"]) == (1, 1, 2, 1)
    assert d["supported"] == [True, None, None, False, None]


def write_fold(root, k, results, verdicts=None):
    for name, r in results.items():
        atomic_write_json(root / f"fold_{k}" / name / "result.json", r)
    if verdicts is not None:
        atomic_write_json(root / f"fold_{k}" / "verdicts.json", verdicts)


def test_aggregate_run_writes_files(tmp_path):
    root = tmp_path / "analysis" / "lora"
    write_fold(root, 0, {"erasure": {"single": {"delta_uar": curve([0.1, 0.3])}, "meta": {"key": "a"}},
                         "probing": {"emotion": {"adapted": {"uar": curve([0.2, 0.4, 0.6])}}}},
               {"delayed_specialization": {"supported": True, "statement": "s"}})
    write_fold(root, 2, {"erasure": {"single": {"delta_uar": curve([0.3, 0.5])}, "meta": {"key": "b"}}},
               {"delayed_specialization": {"supported": False, "statement": "t"}})
    (root / "fold_1" / "erasure").mkdir(parents=True)  # started, not complete: no result.json
    (root / "fold_1" / "erasure" / "error.json").write_text('{"error": "boom"}')
    stale = root / "aggregate" / "patching.json"
    atomic_write_json(stale, {"analysis": "patching"})
    paths = aggregate_run(tmp_path, "lora")
    assert set(paths) == {"erasure", "probing", "verdicts"}
    assert not stale.exists()  # no complete patching result any more
    e = json.loads((root / "aggregate" / "erasure.json").read_text())
    assert e["analysis"] == "erasure" and e["folds"] == [0, 2] and e["n_folds"] == 2
    assert e["curves"]["single"]["delta_uar"]["mean"] == pytest.approx([0.2, 0.4])
    assert e["curves"]["single"]["delta_uar"]["std"] == pytest.approx([0.2 / math.sqrt(2)] * 2)
    p = json.loads(paths["probing"].read_text())
    assert p["folds"] == [0] and p["curves"]["emotion"]["adapted"]["uar"]["std"] == [None, None, None]
    v = json.loads(paths["verdicts"].read_text())
    assert v["folds"] == [0, 2] and v["claims"]["delayed_specialization"]["n_supported"] == 1
    assert v["claims"]["delayed_specialization"]["supported"] == [True, False]


def test_aggregate_run_names_malformed_file(tmp_path):
    root = tmp_path / "analysis" / "lora" / "fold_0" / "erasure"
    root.mkdir(parents=True)
    (root / "result.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="fold_0/erasure/result.json"):
        aggregate_run(tmp_path, "lora")


def test_aggregate_run_without_folds_writes_nothing(tmp_path):
    assert aggregate_run(tmp_path, "lora") == {}
    assert not (tmp_path / "analysis" / "lora" / "aggregate").exists()

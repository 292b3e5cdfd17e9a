"""bench/recipes.py's bookkeeping (the benchmark itself is run by hand): every built-in recipe is a valid training
configuration, the strong frozen baseline is chosen per fold on validation only, paired differences and the
validation/test correlation have known answers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.conftest import load_bench


@pytest.fixture(scope="module")
def recipes():
    return load_bench("recipes")


def test_every_builtin_recipe_is_a_valid_config(recipes, tiny_model_dir, tmp_path):
    common = {"corpus": "ravdess", "corpus_root": str(tmp_path), "model": str(tiny_model_dir), "folds": "ravdess6",
              "window": "trim", "seed": 0}
    for grid in recipes.GRIDS.values():
        assert set(grid) <= set(recipes.RECIPES)
    hashes = set()
    for name, recipe in recipes.RECIPES.items():
        if recipe.get("probe"):
            continue
        cfg = recipes.recipe_config(name, recipe, common, tmp_path, 0, str(tiny_model_dir))
        assert cfg.run_dir == tmp_path / name and cfg.fold == 0
        hashes.add(recipes.config_hash(cfg))
        if name == "lora-upper":
            assert cfg.lora.layers == (1,)  # the tiny model has 2 layers
    probes = sum(1 for r in recipes.RECIPES.values() if r.get("probe"))
    assert len(hashes) == len(recipes.RECIPES) - probes  # every recipe is a different configuration


def test_strong_baseline_is_chosen_on_validation_not_test(recipes):
    baselines = {
        "frozen-last": [{"fold": 0, "uar": 0.9, "validation_uar": 0.5}, {"fold": 1, "uar": 0.6, "validation_uar": 0.7}],
        "probe": [{"fold": 0, "uar": 0.7, "validation_uar": 0.6}, {"fold": 1, "uar": 0.8, "validation_uar": 0.7}],
    }
    strong = recipes.strong_baseline(baselines)
    assert (strong[0]["baseline"], strong[0]["uar"]) == ("probe", 0.7)  # better validation, worse test
    assert (strong[1]["baseline"], strong[1]["uar"]) == ("frozen-last", 0.6)  # tie: the first listed
    d = recipes.paired([{"fold": 0, "uar": 0.75}, {"fold": 1, "uar": 0.5}, {"fold": 2, "uar": 0.9}], strong)
    assert d["folds"] == [0, 1] and d["better"] == 1 and d["worse"] == 1
    assert d["mean"] == pytest.approx((0.05 - 0.1) / 2) and d["std"] == pytest.approx(np.std([0.05, -0.1], ddof=1))


def test_summary_correlation_and_costs(recipes):
    rows = [{"fold": k, "uar": u, "war": u, "macro_f1": u, "validation_uar": v, "wall_time_s": 10.0 * (k + 1),
             "process_wall_s": None, "peak_rss_mib": 100.0 + k, "peak_cuda_mib": None, "trainable_params": 5}
            for k, (u, v) in enumerate([(0.6, 0.5), (0.7, 0.6), (0.8, 0.8)])]
    s = recipes.summarise("x", {}, rows)
    assert s["validation_test_r"] == pytest.approx(np.corrcoef([0.5, 0.6, 0.8], [0.6, 0.7, 0.8])[0, 1])
    assert s["uar"]["mean"] == pytest.approx(0.7) and s["wall_time_s_per_fold"]["mean"] == pytest.approx(20.0)
    assert s["peak_rss_mib"] == 102.0 and s["peak_cuda_mib"] is None and s["process_wall_s_per_fold"] is None
    assert recipes.pearson([0.1, 0.2], [0.3, 0.4]) is None  # fewer than 3 folds
    assert "select loss" in recipes.describe({"method": "lora", "select_on": "loss"})

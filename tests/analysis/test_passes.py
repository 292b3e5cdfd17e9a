"""Shared forward passes: one pass per (model, split) feeds every analysis, with the numbers of separate passes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from loralens.analysis import passes
from loralens.analysis.layer_contribution import ContributionObserver, contribution_per_clip
from loralens.analysis.logit_lens import LensObserver, lens_readout
from loralens.analysis.passes import OBSERVERS, PooledHiddenObserver, SharedPasses, run_pass, wanted_on
from loralens.analysis.probing import pooled_hidden_states
from loralens.analysis.suite import run_suite
from loralens.errors import ConfigError
from tests.analysis.helpers import single_thread, tiny_context  # noqa: F401 - fixture

SHARED = ["layer_contribution", "logit_lens", "probing", "similarity"]


def _count_runs(ctx) -> dict[str, int]:
    """Count the forward passes over batches of each model (wraps `run` of both classifiers)."""
    counts = {"adapted": 0, "frozen": 0}
    for key in counts:
        clf = getattr(ctx, key)
        inner = clf.run

        def counted(*a, _inner=inner, _key=key, **k):
            counts[_key] += 1
            return _inner(*a, **k)

        clf.run = counted
    return counts


def test_observers_together_give_what_each_gives_alone():
    ctx = tiny_context()
    clf, split = ctx.adapted, ctx.test
    together = run_pass(clf, split.batches, {"contribution": ContributionObserver(clf), "lens": LensObserver(clf),
                                             "pooled_hidden": PooledHiddenObserver(clf)})
    alone_c = contribution_per_clip(clf, split)
    for q, v in alone_c.items():
        np.testing.assert_array_equal(together["contribution"][q], v)
    alone_l = lens_readout(clf, split)
    torch.testing.assert_close(together["lens"].lens_logits, alone_l.lens_logits, rtol=0, atol=0)
    torch.testing.assert_close(together["lens"].final_logits, alone_l.final_logits, rtol=0, atol=0)
    assert together["lens"].last_layer_max_abs_diff == alone_l.last_layer_max_abs_diff == 0.0
    for a, b in zip(together["pooled_hidden"].per_layer, pooled_hidden_states(clf, split, "cpu")):
        np.testing.assert_array_equal(a, b)
    # and the pooled hidden states are the runner's own, clip by clip
    first = split.batches[0]
    out = clf.runner(first.features, first.mel_lengths)
    h = out.hidden_states[1][0, : int(out.lengths[0])].mean(0)
    np.testing.assert_allclose(together["pooled_hidden"].per_layer[1][0], h.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert together["pooled_hidden"].batch_sizes == [len(b.ids) for b in split.batches]


def _results(ctx, tmp_path, names):
    res = run_suite(ctx, tmp_path, names, keep_going=False)
    return {k: {kk: vv for kk, vv in v.items() if kk not in ("meta", "reading")} for k, v in res.items()}


@pytest.mark.slow
def test_suite_runs_one_pass_per_model_and_split_with_the_numbers_of_separate_passes(tmp_path):
    shared_ctx = tiny_context(n_boot=20)
    counts = _count_runs(shared_ctx)
    shared = _results(shared_ctx, tmp_path / "shared", SHARED)
    n_test, n_train = len(shared_ctx.test.batches), len(shared_ctx.train.batches)
    # one pass over the test clips and one over the training clips per model, for all four analyses
    assert counts == {"adapted": n_test + n_train, "frozen": n_test + n_train}
    meta = json.loads((tmp_path / "shared" / "layer_contribution" / "result.json").read_text())["meta"]
    assert {"model": "adapted", "split": "test", "observers": ["contribution", "lens", "pooled_hidden"]} in \
        meta["shared_passes_run"]

    # each analysis alone in a fresh context (its own passes) gives the same numbers, to 1e-6 (in fact exactly)
    for name in SHARED:
        alone = _results(tiny_context(n_boot=20), tmp_path / f"alone_{name}", [name])[name]
        _assert_close(shared[name], alone, name)


def _assert_close(a, b, where):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6, nan_ok=True), where
    else:
        assert a == b, where


@pytest.mark.slow
def test_a_second_observer_asked_later_gets_its_own_pass_and_the_memo_is_cleared(tmp_path):
    ctx = tiny_context(n_boot=20)
    counts = _count_runs(ctx)
    ctx.passes.wanted = ("pooled_hidden",)
    ctx.observed("pooled_hidden", "adapted")
    assert counts["adapted"] == len(ctx.test.batches)
    ctx.observed("pooled_hidden", "adapted")  # memoised
    assert counts["adapted"] == len(ctx.test.batches)
    ctx.observed("contribution", "adapted")  # not wanted at first: a pass of its own
    assert counts["adapted"] == 2 * len(ctx.test.batches)
    assert [p[2] for p in ctx.passes.passes_run] == [("pooled_hidden",), ("contribution",)]
    run_suite(ctx, tmp_path, ["layer_contribution"])
    assert ctx.passes.results == {}


def test_an_observer_that_does_not_apply_does_not_stop_the_others(monkeypatch):
    """An observer not defined for a model (its factory raises ConfigError) is left out of the shared pass; the
    other observers' pass still runs, and asking for it raises."""
    def undefined(clf):
        raise ConfigError("not defined for this model")

    monkeypatch.setitem(OBSERVERS, "undefined", undefined)
    ctx = tiny_context(use_weighted_layer_sum=True)
    ctx.passes.wanted = ("contribution", "undefined", "lens", "pooled_hidden")
    ctx.observed("pooled_hidden", "adapted")
    assert ctx.passes.passes_run == [("adapted", "test", ("pooled_hidden", "contribution", "lens"))]
    with pytest.raises(ConfigError, match="not defined"):
        ctx.observed("undefined", "adapted")


def test_two_observers_may_not_edit_one_point_and_names_are_checked():
    ctx = tiny_context()
    clf = ctx.adapted
    with pytest.raises(ConfigError, match="both edit"):
        run_pass(clf, ctx.test.batches, {"a": ContributionObserver(clf), "b": ContributionObserver(clf)})
    with pytest.raises(ConfigError, match="no observer named 'nope'"):
        SharedPasses().get("nope", clf, "adapted", ctx.test.batches, "test")
    with pytest.raises(ConfigError, match="model is adapted or frozen"):
        ctx.observed("lens", "other")
    assert wanted_on(["lens", "lens@train", "contribution"], "train") == ["lens"]
    assert wanted_on(["lens", "lens@train", "contribution"], "test") == ["lens", "contribution"]
    assert {"contribution", "lens", "pooled_hidden"} <= set(passes.OBSERVERS)


@pytest.mark.slow
def test_disabled_passes_run_each_request_alone_with_the_same_numbers(tmp_path):
    ctx = tiny_context(n_boot=20)
    ctx.passes = SharedPasses(enabled=False)
    counts = _count_runs(ctx)
    alone = _results(ctx, tmp_path / "alone", ["layer_contribution", "similarity"])
    # contribution (test) and pooled hidden states (test, once for similarity) per model: two passes each
    assert counts == {"adapted": 2 * len(ctx.test.batches), "frozen": 2 * len(ctx.test.batches)}
    shared = _results(tiny_context(n_boot=20), tmp_path / "shared", ["layer_contribution", "similarity"])
    for name in alone:
        _assert_close(shared[name], alone[name], name)


@pytest.mark.slow
def test_every_analysis_runs_on_heads_that_read_an_earlier_hidden_state_z_scored(tmp_path):
    # the encoder cut after layer 1 of 3 (hidden state 2): every analysis sees a 2-layer model; the logit lens's
    # last layer is the model's own read-out (no final LayerNorm, the head's z-scoring)
    ctx = tiny_context(n_layers=3, head={"hidden_state": 2, "standardize": True}, n_boot=10)
    assert ctx.adapted.runner.n_layers == ctx.frozen.runner.n_layers == 2
    res = run_suite(ctx, tmp_path, keep_going=False)
    assert len(res) >= 8 and all("meta" in r for r in res.values())
    assert res["logit_lens"]["n_layers"] == 2 and res["logit_lens"]["last_layer_max_abs_logit_diff"] == 0.0

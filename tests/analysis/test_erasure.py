"""Layer erasure: cached prefix equals from-scratch skip_layers, a zero-update layer changes nothing, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from loralens.analysis import erasure as er
from loralens.analysis.suite import ANALYSES
from tests.analysis.helpers import (  # noqa: F401 (single_thread: autouse fixture)
    single_thread,
    tiny_classifiers,
    tiny_context,
)


@pytest.fixture(scope="module")
def ctx():
    return tiny_context(n_layers=3)


def test_cached_restart_equals_from_scratch_skip_layers(ctx):
    cached = er.erasure_logits(ctx.adapted, ctx.test)
    scratch = er.erasure_logits(ctx.adapted, ctx.test, cached=False)
    assert cached.single.shape == (12, 3, 4) and cached.prefix.shape == (12, 3, 4)
    assert torch.equal(cached.base, scratch.base)
    assert torch.allclose(cached.single, scratch.single, atol=1e-6, rtol=0)
    assert torch.allclose(cached.prefix, scratch.prefix, atol=1e-6, rtol=0)
    # erasing layer 0 alone is the prefix erasure of k = 1; erasures change the logits
    assert torch.allclose(cached.single[:, 0], cached.prefix[:, 0], atol=1e-6)
    assert (cached.single - cached.base[:, None]).abs().amax(dim=(0, 2)).min() > 1e-5


def test_erasing_a_zero_update_layer_changes_nothing(ctx):
    adapted, _ = tiny_classifiers(n_layers=3)
    layer = adapted.encoder.layers[1]
    with torch.no_grad():
        for lin in (layer.self_attn.out_proj, layer.fc2):
            lin.weight.zero_()
            lin.bias.zero_()
    logits = er.erasure_logits(adapted, ctx.test)
    assert torch.equal(logits.single[:, 1], logits.base)
    curves = er.erasure_curves(logits, 4, n_boot=30, seed=0)
    for metric in ("delta_uar", "delta_loss", "delta_confidence"):
        assert curves["single"][metric]["value"][1] == 0.0
        assert curves["single"][metric]["low"][1] == 0.0 and curves["single"][metric]["high"][1] == 0.0
    # erasing layers 0..1 equals erasing layer 0 alone when layer 1 adds nothing
    assert torch.allclose(logits.prefix[:, 1], logits.single[:, 0], atol=1e-6)


def test_weighted_layer_sum_head_runs_from_scratch(ctx):
    adapted, _ = tiny_classifiers(n_layers=2, use_weighted_layer_sum=True)
    logits = er.erasure_logits(adapted, ctx.test)
    with torch.no_grad():
        b = ctx.test.batches[0]
        want = adapted.run(b.features, b.mel_lengths, skip_layers=[1]).logits
    assert torch.equal(logits.single[:4, 1], want)


def test_per_clip_metrics_known_values():
    logits = torch.tensor([[0.0, np.log(3.0)], [2.0, 0.0]])
    labels = torch.tensor([1, 1])
    m = er.per_clip_metrics(logits, labels)
    assert m["loss"][0] == pytest.approx(-np.log(0.75)) and m["confidence"][0] == pytest.approx(0.75)
    p = 1 / (1 + np.exp(2.0))
    assert m["loss"][1] == pytest.approx(-np.log(p)) and m["confidence"][1] == pytest.approx(1 - p)
    assert m["pred"].tolist() == [1, 0]
    m3 = er.per_clip_metrics(torch.stack([logits, logits.flip(-1)], dim=1), labels)
    assert m3["loss"].shape == (2, 2) and m3["loss"][0, 0] == pytest.approx(-np.log(0.75))
    assert m3["pred"][:, 1].tolist() == [0, 1]


@pytest.mark.slow
def test_run_json_plot_reading(ctx, tmp_path):
    result = er.run(ctx)
    assert result["layers"] == [0, 1, 2] and result["prefix_k"] == [1, 2, 3]
    for block in (result, result["frozen"]):
        for kind in ("single", "prefix"):
            for metric in ("delta_uar", "delta_loss", "delta_confidence", "uar", "loss", "confidence"):
                assert len(block[kind][metric]["value"]) == 3
        base = block["baseline"]
        assert base["uar_ci"][0] <= base["uar"] <= base["uar_ci"][1]
        # delta = erased - intact, consistent with the absolute curves
        assert np.allclose(
            np.array(block["single"]["loss"]["value"]) - base["loss"], block["single"]["delta_loss"]["value"]
        )
        assert np.allclose(np.array(block["prefix"]["uar"]["value"]) - base["uar"],
                           block["prefix"]["delta_uar"]["value"])
    assert json.loads(json.dumps(result)) == result
    paths = er.plot(result, tmp_path)
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    from PIL import Image

    Image.open(paths[0]).verify()
    text = er.reading(result)
    assert "layer" in text and "frozen" in text
    assert ANALYSES[er.NAME].reading is er.reading


def test_cached_equals_scratch_without_padding_mask(ctx):
    adapted, _ = tiny_classifiers(n_layers=2)
    adapted.runner.mask_padding = False
    cached = er.erasure_logits(adapted, ctx.test)
    scratch = er.erasure_logits(adapted, ctx.test, cached=False)
    assert torch.allclose(cached.single, scratch.single, atol=1e-6, rtol=0)
    assert torch.allclose(cached.prefix, scratch.prefix, atol=1e-6, rtol=0)

"""Layer contribution: known answers (zeroed layer, one frame by hand), curve helpers, JSON, plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from loralens.analysis import layer_contribution as lc
from loralens.analysis.context import SplitData
from loralens.analysis.suite import ANALYSES
from loralens.data.batching import Batch
from tests.analysis.helpers import single_thread, tiny_classifiers, tiny_context  # noqa: F401 (single_thread: autouse fixture)


def _zero_layer_updates(clf, layer: int) -> None:
    """Zero out_proj and fc2 (weights and biases) of `layer`: its attention and MLP updates are then exactly 0."""
    enc_layer = clf.encoder.layers[layer]
    with torch.no_grad():
        for lin in (enc_layer.self_attn.out_proj, enc_layer.fc2):
            lin.weight.zero_()
            lin.bias.zero_()


def test_zeroed_layer_has_zero_relative_norm():
    adapted, _ = tiny_classifiers(n_layers=3)
    _zero_layer_updates(adapted, 1)
    ctx = tiny_context(n_layers=3)
    values = lc.contribution_per_clip(adapted, ctx.test)
    for q in lc.QUANTITIES:
        assert values[q].shape == (ctx.test.n_clips, 3)
        assert np.all(values[q][:, 1] == 0.0), q
    assert np.all(values["total_rel"][:, [0, 2]] > 0)
    assert np.all(values["resid_norm"] > 0)


def test_one_frame_by_hand():
    """A clip with one valid encoder frame (2 mel frames), batched with a longer clip: the per-clip value is that
    frame's, recomputed here from the layer's modules on the clip run alone."""
    adapted, _ = tiny_classifiers(n_layers=2)
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(2, 80, 40, generator=gen)
    split = SplitData([Batch(feats, torch.tensor([2, 40]), torch.tensor([0, 1]), ["a", "b"])], ["s0", "s1"])
    values = lc.contribution_per_clip(adapted, split)
    with torch.no_grad():
        h = adapted.runner(feats[:1, :, :2], None, stop_after=0, capture=["blocks.0.hook_resid_pre"]).captured[
            "blocks.0.hook_resid_pre"
        ]
        layer = adapted.encoder.layers[0]
        a = layer.self_attn(hidden_states=layer.self_attn_layer_norm(h))[0]
        m = layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(h + a))))
    r, a, m = h[0, 0].double(), a[0, 0].double(), m[0, 0].double()
    t = a + m
    expected = {
        "attn_rel": a.norm() / r.norm(),
        "mlp_rel": m.norm() / r.norm(),
        "total_rel": t.norm() / r.norm(),
        "attn_cos": a @ r / (a.norm() * r.norm()),
        "mlp_cos": m @ r / (m.norm() * r.norm()),
        "total_cos": t @ r / (t.norm() * r.norm()),
    }
    for q, v in expected.items():
        assert values[q][0, 0] == pytest.approx(float(v), rel=1e-5, abs=1e-7), q
    assert values["total_rel"][0, 0] > 0.01


def test_frame_stats_known_vectors():
    r = torch.tensor([[3.0, 4.0, 0.0]], dtype=torch.float64)
    a = torch.tensor([[0.0, 0.0, 5.0]], dtype=torch.float64)  # orthogonal, same norm
    m = torch.tensor([[-6.0, -8.0, 0.0]], dtype=torch.float64)  # anti-parallel, twice the norm
    s = lc.frame_stats(r, a, m)
    assert s["attn_rel"].item() == pytest.approx(1.0) and s["attn_cos"].item() == pytest.approx(0.0)
    assert s["mlp_rel"].item() == pytest.approx(2.0) and s["mlp_cos"].item() == pytest.approx(-1.0)
    assert s["total_rel"].item() == pytest.approx(np.sqrt(125) / 5)
    assert s["total_cos"].item() == pytest.approx(-50 / (np.sqrt(125) * 5))


@pytest.mark.slow
def test_run_structure_difference_json_plot_reading(tmp_path):
    ctx = tiny_context(n_layers=2)
    result = lc.run(ctx)
    assert result["layers"] == [0, 1] and result["n_layers"] == 2
    for model in ("adapted", "frozen", "difference"):
        for q in lc.QUANTITIES:
            c = result[model][q]
            assert len(c["value"]) == len(c["low"]) == len(c["high"]) == 2
            assert all(lo <= v + 1e-12 and v <= hi + 1e-12 for v, lo, hi in zip(c["value"], c["low"], c["high"]))
    # paired difference of means = difference of the means
    d = np.array(result["difference"]["total_rel"]["value"])
    assert np.allclose(d, np.array(result["adapted"]["total_rel"]["value"]) - result["frozen"]["total_rel"]["value"])
    assert np.abs(d).max() > 1e-4  # the perturbed adapters change the updates
    assert json.loads(json.dumps(result)) == result
    paths = lc.plot(result, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".svg"} and len(paths) == 6
    from PIL import Image

    for p in paths:
        assert p.stat().st_size > 1000
        if p.suffix == ".png":
            Image.open(p).verify()
    text = lc.reading(result)
    assert "layer" in text and "frozen" in text
    assert ANALYSES[lc.NAME].run is lc.run


def test_run_without_frozen():
    ctx = tiny_context(frozen=False, train=False)
    result = lc.run(ctx)
    assert "frozen" not in result and "difference" not in result
    assert "layer" in lc.reading(result)


@pytest.mark.slow
def test_suite_driver_runs_these_analyses(tmp_path):
    """Through the suite driver: result.json with meta, figures and reading for each of this helper's analyses."""
    from loralens.analysis.suite import run_suite
    from loralens.io import read_json

    ctx = tiny_context(n_layers=2, n_boot=20)
    names = ["layer_contribution", "logit_lens", "erasure", "patching"]
    results = run_suite(ctx, tmp_path, names)
    assert list(results) == names
    for name in names:
        saved = read_json(tmp_path / name / "result.json")
        assert saved["meta"]["analysis"] == name and saved["reading"]
        assert saved["n_layers"] == 2 and saved["layers"] == [0, 1]
        for fig in saved["meta"]["figures"]:
            assert (tmp_path / name / fig).stat().st_size > 0

"""Weight analysis: dW = 0 at init, spectra and norms against a direct computation, an intruder spike,
subspace overlap across ranks, plot and JSON."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
import torch

from loralens.analysis import weight_analysis
from loralens.analysis.suite import ANALYSES, run_analysis
from loralens.models.lora import ADAPTER, LoraSettings, lora_modules
from tests.analysis.helpers import tiny_classifiers, tiny_context


def test_init_update_is_exactly_zero():
    ctx = tiny_context(b_std=0.0, train=False, frozen=False, options={"weight_analysis": {"intruders_right": True}})
    r = weight_analysis.run(ctx)
    for p in r["module_order"]:
        m = r["modules"][p]
        assert m["singular_values"] == [0.0] * 4
        assert m["rel_norm"] == 0.0 and m["frobenius"] == 0.0
        assert m["intruders"] == 0 and m["intruders_right"] == 0
        assert m["stable_rank"] is None and m["amplification"] is None
        assert m["delta_check"] == 0.0
    assert "exactly zero" in weight_analysis.reading(r)


def test_measures_match_direct_computation():
    ctx = tiny_context(b_std=0.3, train=False, frozen=False)
    r = weight_analysis.run(ctx)
    for p, mod in lora_modules(ctx.adapted.encoder).items():
        w = mod.get_base_layer().weight.detach().double()
        a = mod.lora_A[ADAPTER].weight.detach().double()
        b = mod.lora_B[ADAPTER].weight.detach().double()
        dw = mod.scaling[ADAPTER] * b @ a
        m = r["modules"][p]
        assert m["scale"] == 2.0  # alpha 8 / r 4
        assert np.allclose(m["singular_values"], torch.linalg.svdvals(dw)[:4].numpy(), rtol=1e-9, atol=1e-12)
        assert m["rel_norm"] == pytest.approx(float(torch.linalg.norm(dw) / torch.linalg.norm(w)), rel=1e-12)
        s = np.asarray(m["singular_values"])
        assert m["stable_rank"] == pytest.approx((s**2).sum() / s[0] ** 2)
        assert 1.0 <= m["stable_rank"] <= 4.0
        u, _, vh = torch.linalg.svd(dw)
        amp = float(torch.linalg.norm(dw) / torch.linalg.norm(u[:, :4].T @ w @ vh[:4].T))
        assert m["numerical_rank"] == 4
        assert m["amplification"] == pytest.approx(amp, rel=1e-6)
        assert m["amplification"] > m["rel_norm"]  # dW lives in directions W does not emphasise
        assert m["delta_check"] < 1e-6


def test_same_result_under_bf16_autocast():
    # `loralens analyze --precision bf16` runs every analysis under autocast; the weight analysis reads weights only
    ctx = tiny_context(b_std=0.3, train=False, frozen=False)
    plain = weight_analysis.run(ctx)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under = weight_analysis.run(ctx)
    assert json.dumps(under, sort_keys=True) == json.dumps(plain, sort_keys=True)


def test_rank_one_spike_is_an_intruder():
    ctx = tiny_context(b_std=0.0, train=False, frozen=False)
    mod = lora_modules(ctx.adapted.encoder)["blocks.0.attn.v_proj"]
    gen = torch.Generator().manual_seed(5)
    u = torch.randn(64, generator=gen)
    v = torch.randn(64, generator=gen)
    with torch.no_grad():
        mod.lora_A[ADAPTER].weight.zero_()
        mod.lora_A[ADAPTER].weight[0] = v / v.norm()
        mod.lora_B[ADAPTER].weight[:, 0] = 50.0 * u / u.norm()
    m = weight_analysis.run(ctx)["modules"]["blocks.0.attn.v_proj"]
    assert m["intruders"] >= 1 and 0 in m["intruder_indices"]  # the spike is the top singular vector
    assert m["stable_rank"] == pytest.approx(1.0)
    assert m["singular_values"][0] == pytest.approx(2.0 * 50.0)  # scale * ||u|| * ||v||


def test_overlap_with_itself_and_another_rank():
    ctx = tiny_context(b_std=0.3, train=False, frozen=False)
    other, _ = tiny_classifiers(lora=LoraSettings(r=8, alpha=16, dropout=0.0), seed=3)
    ctx.options = {"weight_analysis": {"others": {"self": ctx.adapted, "r8": other}}}
    r = weight_analysis.run(ctx)
    same = r["overlap"]["self"]["modules"]["blocks.1.attn.v_proj"]
    assert np.allclose(same["A"]["diagonal"], 1.0) and np.allclose(same["B"]["diagonal"], 1.0)
    r8 = r["overlap"]["r8"]["modules"]["blocks.1.attn.v_proj"]
    assert r8["ranks"] == [4, 8] and r8["m"] == 4
    g = np.asarray(r8["A"]["grid"])
    assert g.shape == (4, 4) and (g >= -1e-12).all() and (g <= 1 + 1e-12).all()
    # unrelated random A matrices: phi(4, 4) near the random-subspace value 8/64, far below 1
    assert r8["A"]["diagonal"][-1] < 0.5
    assert r8["A"]["random_diagonal"] == pytest.approx([1 / 64, 2 / 64, 3 / 64, 4 / 64])


@pytest.mark.slow
def test_suite_plot_json(tmp_path):
    ctx = tiny_context(b_std=0.3, train=False, frozen=False)
    ctx.options = {"weight_analysis": {"others": {"seed 1": ctx.adapted}}}
    out = run_analysis(ANALYSES["weight_analysis"], ctx, tmp_path / "wa")
    back = json.loads((tmp_path / "wa" / "result.json").read_text())
    assert back["modules"] == json.loads(json.dumps(out["modules"]))
    assert back["n_layers"] == 2 and back["layers"] == [0, 1]
    assert len(back["meta"]["figures"]) == 6
    for rel in back["meta"]["figures"]:
        if rel.endswith(".png"):
            assert matplotlib.image.imread(tmp_path / "wa" / rel).ndim == 3
    assert "Frobenius" in back["reading"]


def test_needs_adapters():
    from loralens.errors import ConfigError

    ctx = tiny_context(train=False)
    ctx.adapted = ctx.frozen
    with pytest.raises(ConfigError):
        weight_analysis.run(ctx)

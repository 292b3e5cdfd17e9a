"""LoRA internals: B = 0 at init, matched random norms, CKA and gradients against a direct computation,
weights restored, balanced sample, plot and JSON."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from loralens.analysis import lora_internals
from loralens.analysis.cka import linear_cka
from loralens.analysis.streaming import valid_frames
from loralens.analysis.suite import ANALYSES, run_analysis
from loralens.models.lora import ADAPTER, lora_modules
from tests.analysis.helpers import tiny_context


@pytest.fixture(scope="module")
def ctx_and_result():
    ctx = tiny_context(train=False, frozen=False)
    return ctx, lora_internals.run(ctx)


def test_init_variant_known_answers(ctx_and_result):
    _, r = ctx_and_result
    assert r["module_order"] == ["blocks.0.attn.v_proj", "blocks.1.attn.v_proj"]
    for p in r["module_order"]:
        init, trained, rnd = (r["modules"][p][v] for v in ("init", "trained", "random"))
        assert init["b_out_k90"] == 0 and init["b_out_energy"] == [] and init["b_out_frobenius"] == 0.0
        assert init["a_grad_k90"] == 0  # the gradient reaches A's output through B = 0
        assert init["b_grad_k90"] > 0  # ... but the gradient at B's output exists
        assert init["cka_ab_forward"] is None and init["cka_ab_backward"] is None
        assert init["b_norm"] == 0.0
        if p == "blocks.0.attn.v_proj":  # same A and same input (no adapter below): same rank space
            assert init["a_out_k90"] == trained["a_out_k90"]
            assert init["a_out_energy"] == pytest.approx(trained["a_out_energy"], rel=1e-9)
        # random control: Gaussian with the trained matrices' Frobenius norms
        assert rnd["a_norm"] == pytest.approx(trained["a_norm"], rel=1e-6)
        assert rnd["b_norm"] == pytest.approx(trained["b_norm"], rel=1e-6)
        for v in ("trained", "random"):
            e = r["modules"][p][v]
            assert 1 <= e["a_out_k90"] <= r["rank"][p] and 1 <= e["b_out_k90"] <= r["rank"][p]
            assert e["a_out_energy"][-1] == pytest.approx(1.0)
            assert -0.2 <= e["cka_ab_forward"] <= 1.0


def test_cka_and_gradients_match_direct_computation(ctx_and_result):
    ctx, r = ctx_and_result
    clf = ctx.adapted
    mods = lora_modules(clf.encoder)
    names = [f"{p}.{k}" for p in mods for k in ("hook_lora_a", "hook_lora_b")]
    sample = set(r["sample"]["ids"])
    fa = {p: [] for p in mods}
    fb = {p: [] for p in mods}
    gb_scaled = {p: [] for p in mods}
    ga_frames = {p: [] for p in mods}
    with torch.enable_grad():
        for batch in ctx.test:
            rows = [i for i, cid in enumerate(batch.ids) if cid in sample]
            sel = torch.tensor(rows)
            out = clf.run(batch.features[sel], batch.mel_lengths[sel], grad_capture=names)
            loss = F.cross_entropy(out.logits, batch.labels[sel], reduction="sum")
            caps = [out.encoder.captured[n] for n in names]
            grads = torch.autograd.grad(loss, caps)
            for k, (p, m) in enumerate(mods.items()):
                lengths = out.encoder.lengths
                fa[p].append(valid_frames(caps[2 * k].detach(), lengths))
                fb[p].append(valid_frames(caps[2 * k + 1].detach(), lengths))
                ga_frames[p].append(valid_frames(grads[2 * k], lengths))
                # chain rule through b_out = scale * a_out B^T: grad_a = scale * grad_b B
                b_w = m.lora_B[ADAPTER].weight.detach()
                gb_scaled[p].append(valid_frames(m.scaling[ADAPTER] * grads[2 * k + 1] @ b_w, lengths))
    for p in mods:
        a, b = torch.cat(fa[p]), torch.cat(fb[p])
        e = r["modules"][p]["trained"]
        assert e["cka_ab_forward"] == pytest.approx(linear_cka(a, b, debiased=True), abs=1e-6)
        assert e["cka_ab_forward_biased"] == pytest.approx(linear_cka(a, b), abs=1e-6)
        ga, ga_chain = torch.cat(ga_frames[p]), torch.cat(gb_scaled[p])
        assert torch.allclose(ga, ga_chain, atol=1e-6, rtol=1e-4)
        assert e["a_grad_frobenius"] == pytest.approx(float(torch.linalg.norm(ga.double())), rel=1e-5)


def test_weights_restored_even_on_error(monkeypatch):
    ctx = tiny_context(train=False, frozen=False)
    mods = lora_modules(ctx.adapted.encoder)
    before = {p: (m.lora_A[ADAPTER].weight.clone(), m.lora_B[ADAPTER].weight.clone()) for p, m in mods.items()}
    calls = {"n": 0}
    real = lora_internals._collect

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # during the init variant (B zeroed)
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(lora_internals, "_collect", failing)
    with pytest.raises(RuntimeError):
        lora_internals.run(ctx)
    for p, m in mods.items():
        assert torch.equal(m.lora_A[ADAPTER].weight, before[p][0])
        assert torch.equal(m.lora_B[ADAPTER].weight, before[p][1])


def test_balanced_sample():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    idx = lora_internals.balanced_sample(labels, 5, seed=0)
    assert np.bincount(labels[idx]).tolist() == [5, 3, 5]
    assert np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, lora_internals.balanced_sample(labels, 5, seed=0))


def test_needs_adapters():
    from loralens.errors import ConfigError

    ctx = tiny_context(train=False)
    ctx.adapted = ctx.frozen
    with pytest.raises(ConfigError):
        lora_internals.run(ctx)


def test_suite_plot_json(tmp_path):
    ctx = tiny_context(train=False, frozen=False, options={"lora_internals": {"per_class": 2}})
    with torch.no_grad():  # the suite itself switches gradients on for lora_internals
        out = run_analysis(ANALYSES["lora_internals"], ctx, tmp_path / "li")
    back = json.loads((tmp_path / "li" / "result.json").read_text())
    assert back["sample"]["n_clips"] == 8
    assert back["modules"] == json.loads(json.dumps(out["modules"]))
    tsne = back["tsne"]["trained"]["blocks.0.attn.v_proj"]
    assert np.asarray(tsne["coords"]).shape == (8, 2)
    assert tsne["perplexity"] == pytest.approx(7 / 3)
    assert len(back["meta"]["figures"]) == 6
    for rel in back["meta"]["figures"]:
        if rel.endswith(".png"):
            assert matplotlib.image.imread(tmp_path / "li" / rel).ndim == 3
    assert "components" in back["reading"]

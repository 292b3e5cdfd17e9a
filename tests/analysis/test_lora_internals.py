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
from loralens.analysis.suite import ANALYSES, run_analysis
from loralens.models.lora import ADAPTER, lora_modules
from loralens.numerics.cka import linear_cka
from loralens.numerics.masking import valid_frames
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


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def reconstructed():
    """A context whose "trained" A is twice the initial one it carries in `initial_adapter` (B perturbed as usual)."""
    ctx = tiny_context(train=False, frozen=False, options={"lora_internals": {"per_class": 2}})
    initial = {}
    with torch.no_grad():
        for p, m in lora_modules(ctx.adapted.encoder).items():
            a, b = m.lora_A[ADAPTER].weight, m.lora_B[ADAPTER].weight
            initial[p] = {"A": a.detach().clone(), "B": torch.zeros_like(b)}
            a.mul_(2.0)
    ctx.initial_adapter = initial
    return ctx, lora_internals.run(ctx)


@pytest.mark.slow
def test_init_uses_the_reconstructed_initial_a(reconstructed, tmp_path):
    ctx, r = reconstructed
    assert r["init_a_source"] == lora_internals.INIT_RECONSTRUCTED == "reconstructed peft initialisation"
    for p, m in lora_modules(ctx.adapted.encoder).items():
        init, trained = r["modules"][p]["init"], r["modules"][p]["trained"]
        a0 = ctx.initial_adapter[p]["A"]
        assert init["a_norm"] == float(torch.linalg.norm(a0.double()))
        assert trained["a_norm"] == pytest.approx(2 * init["a_norm"], rel=1e-12)
        assert init["b_norm"] == 0.0 and init["b_out_k90"] == 0 and init["a_grad_k90"] == 0
        # the run leaves the trained weights in place
        assert torch.equal(m.lora_A[ADAPTER].weight, 2 * a0)
    # layer 0's input does not depend on any adapter: its rank space at init is the trained one halved
    p0 = "blocks.0.attn.v_proj"
    init, trained = r["modules"][p0]["init"], r["modules"][p0]["trained"]
    assert init["a_out_frobenius"] == pytest.approx(trained["a_out_frobenius"] / 2, rel=1e-6)
    assert init["a_out_k90"] == trained["a_out_k90"]
    assert init["a_out_energy"] == pytest.approx(trained["a_out_energy"], rel=1e-6)
    # the initial rank space gets its own t-SNE, and the reading says which A the init control used
    assert np.asarray(r["tsne"]["init"][p0]["coords"]).shape == (r["sample"]["n_clips"], 2)
    assert "reconstructed from the run's seed" in lora_internals.reading(r)
    paths = lora_internals.plot(r, tmp_path)
    tsne_png = tmp_path / "lora_internals_tsne.png"
    assert tsne_png in paths and matplotlib.image.imread(tsne_png).ndim == 3


def test_init_falls_back_to_the_trained_a(ctx_and_result):
    _, r = ctx_and_result
    assert r["init_a_source"] == lora_internals.INIT_FALLBACK == "trained A (initial weights unavailable)"
    assert "init" not in r["tsne"]
    for p in r["module_order"]:
        assert r["modules"][p]["init"]["a_norm"] == r["modules"][p]["trained"]["a_norm"]
    assert "initial weights were unavailable" in lora_internals.reading(r)


def test_verdict_compares_gradients_at_b_with_the_reconstructed_init(reconstructed):
    from loralens.analysis.verdicts import forward_alignment_backward_differentiation

    _, r = reconstructed
    v = forward_alignment_backward_differentiation({"lora_internals": json.loads(json.dumps(r))})
    for p in r["module_order"]:
        row = v["numbers"]["modules"][p]
        # like with like: the trained gradient at B against the gradient at B of peft's init and of the control
        assert row["b_grad_k90"] == r["modules"][p]["trained"]["b_grad_k90"]
        assert row["b_grad_k90_init"] == r["modules"][p]["init"]["b_grad_k90"]
        assert row["b_grad_k90_random"] == r["modules"][p]["random"]["b_grad_k90"]
        assert row["a_out_k90_init"] == r["modules"][p]["init"]["a_out_k90"]  # reported, not decided
        assert row["concentration"] in ("yes", "no", "inconclusive")
    assert [c["criterion"] for c in v["criteria"]] == ["forward_concentration", "forward_alignment",
                                                       "backward_differentiation"]
    assert v["outcome"] in ("supported", "not supported", "inconclusive")


def test_b_side_from_the_a_gram_equals_what_is_captured(ctx_and_result):
    """Known answer of the null's formula: with the module's own (scaled) B, the k90 of a B^T and CKA(a, a B^T)
    computed from the Gram of the A outputs alone equal the k90 and CKA measured on the captured B outputs."""
    from loralens.numerics.streaming import CovarianceAccumulator

    ctx, r = ctx_and_result
    mods = lora_modules(ctx.adapted.encoder)
    sample = set(r["sample"]["ids"])
    acc = {p: CovarianceAccumulator(r["rank"][p]) for p in mods}
    with torch.no_grad():
        for batch in ctx.test:
            rows = [i for i, cid in enumerate(batch.ids) if cid in sample]
            sel = torch.tensor(rows)
            out = ctx.adapted.run(batch.features[sel], batch.mel_lengths[sel],
                                  capture=[f"{p}.hook_lora_a" for p in mods])
            for p in mods:
                acc[p].update(valid_frames(out.encoder.captured[f"{p}.hook_lora_a"].double(), out.encoder.lengths))
    for p, m in mods.items():
        gc = acc[p].centered_gram()
        gram = gc + acc[p].count * torch.outer(acc[p].mean, acc[p].mean)
        b = m.scaling[ADAPTER] * m.lora_B[ADAPTER].weight.detach().double()
        k90, cka = lora_internals.b_out_from_a(gram, gc, b)
        e = r["modules"][p]["trained"]
        assert k90 == e["b_out_k90"]
        assert cka == pytest.approx(e["cka_ab_forward_biased"], abs=1e-5)
        # the null: 199 seeded draws, each a k90 within the rank and a CKA in (0, 1]
        null = e["b_null"]
        assert null["draws"] == lora_internals.NULL_DRAWS == len(null["b_out_k90"]) == \
            len(null["cka_ab_forward_biased"])
        assert all(1 <= k <= r["rank"][p] for k in null["b_out_k90"])
        assert all(0 < c <= 1 + 1e-9 for c in null["cka_ab_forward_biased"])
        # an isotropic B (orthonormal columns) keeps A's geometry: CKA exactly 1
        q, _ = torch.linalg.qr(torch.randn(b.shape[0], b.shape[1], dtype=torch.float64))
        assert lora_internals.b_out_from_a(gram, gc, 3.0 * q)[1] == pytest.approx(1.0, abs=1e-9)


def test_untrained_adapter_fails_claim_ii_end_to_end():
    """Known answer: an adapter at peft's initialisation (B = 0) writes nothing and its gradients at B are those of
    the init control: claim (ii) is not supported, not inconclusive."""
    from loralens.analysis.verdicts import forward_alignment_backward_differentiation

    ctx = tiny_context(train=False, frozen=False, b_std=0.0, options={"lora_internals": {"null_draws": 19}})
    r = lora_internals.run(ctx)
    v = forward_alignment_backward_differentiation({"lora_internals": json.loads(json.dumps(r))})
    assert v["outcome"] == "not supported", v["statement"]
    by = {c["criterion"]: c for c in v["criteria"]}
    assert by["forward_concentration"]["outcome"] == "not supported"  # B output has no energy
    assert by["backward_differentiation"]["outcome"] == "not supported"  # trained == init at B
    assert by["backward_differentiation"]["value"] == 0.0


def test_mismatched_initial_adapter_is_refused():
    from loralens.errors import ConfigError

    ctx = tiny_context(train=False, frozen=False)
    mods = lora_modules(ctx.adapted.encoder)
    before = {p: m.lora_A[ADAPTER].weight.clone() for p, m in mods.items()}
    ctx.initial_adapter = {p: {"A": torch.zeros(3, m.lora_A[ADAPTER].weight.shape[1]),
                               "B": torch.zeros(m.lora_B[ADAPTER].weight.shape[0], 3)} for p, m in mods.items()}
    with pytest.raises(ConfigError, match="initial adapter of blocks.0.attn.v_proj"):
        lora_internals.run(ctx)
    ctx.initial_adapter = {"blocks.0.attn.v_proj": ctx.initial_adapter["blocks.0.attn.v_proj"]}
    with pytest.raises(ConfigError, match="initial adapter modules"):
        lora_internals.run(ctx)
    assert all(torch.equal(m.lora_A[ADAPTER].weight, before[p]) for p, m in mods.items())


def test_gradient_batch_size_does_not_change_the_numbers(ctx_and_result):
    """Cutting the backward passes into smaller batches (the memory knob) changes only float rounding."""
    ctx, r = ctx_and_result
    ctx.options = {**ctx.options, "lora_internals": {**ctx.options.get("lora_internals", {}), "grad_batch": 1}}
    try:
        one = lora_internals.run(ctx)
    finally:
        ctx.options["lora_internals"].pop("grad_batch")
    assert one["sample"] == r["sample"]
    for p in r["module_order"]:
        for v in ("trained", "init", "random"):
            a, b = r["modules"][p][v], one["modules"][p][v]
            for key in ("a_out_k90", "b_out_k90", "a_grad_k90", "b_grad_k90"):
                assert a[key] == b[key], (p, v, key)
            for key in ("a_out_frobenius", "b_out_frobenius", "a_grad_frobenius", "b_grad_frobenius"):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-9), (p, v, key)
            for key in ("cka_ab_forward", "cka_ab_backward"):
                assert (a[key] is None) == (b[key] is None)
                if a[key] is not None:
                    assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (p, v, key)
    for v in r["loss"]:
        assert one["loss"][v] == pytest.approx(r["loss"][v], rel=1e-5)


def test_gradient_batch_must_be_positive(ctx_and_result):
    from loralens.errors import LoralensError

    with pytest.raises(LoralensError, match="grad_batch"):
        lora_internals._split_batches([], 0)

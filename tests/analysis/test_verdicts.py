"""Verdicts from handcrafted results: supported, not supported, missing inputs."""

from __future__ import annotations

import json

import pytest

from loralens.analysis.verdicts import (
    THRESHOLDS,
    delayed_specialization,
    forward_alignment_backward_differentiation,
    verdicts,
)
from loralens.errors import ConfigError

L = 6


def _curve(values):
    return {"value": list(values), "low": list(values), "high": list(values)}


def _specialization_results(agreement, probe_adapted, probe_frozen, cka):
    return {
        "logit_lens": {"n_layers": L, "adapted": {"agreement": _curve(agreement)}},
        "probing": {"n_layers": L, "emotion": {"adapted": {"uar": _curve(probe_adapted)}, "frozen": {"uar": _curve(probe_frozen)}}},
        "similarity": {"n_layers": L, "diagonal": {"linear_debiased": _curve(cka)}},
    }


LATE = _specialization_results(
    agreement=[0.2, 0.3, 0.3, 0.4, 0.85, 1.0],  # layer 4 -> depth 5/6
    probe_adapted=[0.3, 0.3, 0.31, 0.33, 0.36, 0.45, 0.6],  # hidden states 0..6
    probe_frozen=[0.3, 0.3, 0.30, 0.31, 0.33, 0.38, 0.4],  # gap >= 0.05 first at h=5 -> 5/6
    cka=[1.0, 0.99, 0.98, 0.97, 0.95, 0.85, 0.5],  # < 0.9 first at h=5
)


def test_delayed_specialization_supported():
    v = delayed_specialization(LATE)
    assert v["supported"] is True, v["statement"]
    on = v["numbers"]["onset_depth"]
    assert on["lens"] == pytest.approx(5 / 6) and on["probe"] == pytest.approx(5 / 6) and on["departure"] == pytest.approx(5 / 6)
    assert v["numbers"]["lens_layer"] == 4 and v["numbers"]["probe_hidden_state"] == 5
    assert v["thresholds"]["agreement_threshold"] == 0.8 and v["statement"].startswith("Supported")


def test_delayed_specialization_not_supported_when_an_onset_is_early():
    early = _specialization_results(
        agreement=LATE["logit_lens"]["adapted"]["agreement"]["value"],
        probe_adapted=[0.3, 0.4, 0.45, 0.5, 0.5, 0.55, 0.6],  # gap 0.1 at h=1 -> depth 1/6
        probe_frozen=LATE["probing"]["emotion"]["frozen"]["uar"]["value"],
        cka=LATE["similarity"]["diagonal"]["linear_debiased"]["value"],
    )
    v = delayed_specialization(early)
    assert v["supported"] is False
    assert v["numbers"]["onset_depth"]["probe"] == pytest.approx(1 / 6)
    assert "probe" in v["statement"] and v["statement"].startswith("Not supported")
    # exactly 2/3 of depth is not in the last third
    boundary = json.loads(json.dumps(LATE))
    boundary["logit_lens"]["adapted"]["agreement"]["value"] = [0.2, 0.3, 0.3, 0.9, 0.95, 1.0]  # layer 3 -> 4/6
    assert delayed_specialization(boundary)["supported"] is False
    # a looser late threshold accepts it
    assert delayed_specialization(boundary, {"late_depth": 0.5})["supported"] is True


def test_delayed_specialization_never_departing_is_not_supported():
    flat = json.loads(json.dumps(LATE))
    flat["similarity"]["diagonal"]["linear_debiased"]["value"] = [1.0] * 7
    v = delayed_specialization(flat)
    assert v["supported"] is False and v["numbers"]["onset_depth"]["departure"] is None
    assert "never" in v["statement"]


def test_delayed_specialization_missing_inputs():
    v = delayed_specialization({"logit_lens": LATE["logit_lens"]})
    assert v["supported"] is None
    assert "probing" in v["reason"] and "similarity" in v["reason"]
    assert delayed_specialization({})["supported"] is None


def _module(a_out, b_out, a_grad, b_grad, a_norm=1.0):
    return {"a_out_k90": a_out, "b_out_k90": b_out, "a_grad_k90": a_grad, "b_grad_k90": b_grad, "a_norm": a_norm}


def _internals(trained, random, init=None, n=4):
    mods = {}
    for i in range(n):
        entry = {"trained": _module(*trained), "random": _module(*random, a_norm=2.0)}
        entry["init"] = _module(*(init or (trained[0], 0, 0, trained[3])))  # lora_internals' init: trained A, B = 0
        mods[f"blocks.{i}.attn.v_proj"] = entry
    return {"lora_internals": {"n_layers": n, "rank": {p: 8 for p in mods}, "modules": mods}}


def test_forward_backward_supported():
    res = _internals(trained=(3, 2, 4, 20), random=(7, 6, 7, 25))
    v = forward_alignment_backward_differentiation(res)
    assert v["supported"] is True, v["statement"]
    m = v["numbers"]["modules"]["blocks.0.attn.v_proj"]
    assert m["forward"]["a_out_vs_random"] == {"trained": 3.0, "random": 7.0, "smaller": True}
    assert m["forward"]["b_out_vs_init"].startswith("skipped")  # init B = 0: no energy
    assert m["forward"]["a_out_vs_init"].startswith("skipped")  # this result's init keeps the trained A (the fallback)
    assert m["b_out_k90_over_rank"] == 0.25 and m["b_grad_k90_over_rank"] == 2.5
    assert v["numbers"]["forward_fraction"] == 1.0 and v["numbers"]["backward_fraction"] == 1.0


def test_forward_backward_init_with_its_own_a_is_compared():
    res = _internals(trained=(3, 2, 4, 20), random=(7, 6, 7, 25), init=(2, 5, 3, 20))
    for entry in res["lora_internals"]["modules"].values():
        entry["init"]["a_norm"] = 0.5  # a genuinely initial A
    v = forward_alignment_backward_differentiation(res)
    m = v["numbers"]["modules"]["blocks.0.attn.v_proj"]
    assert m["forward"]["a_out_vs_init"]["smaller"] is False  # 3 vs 2 at init
    assert v["supported"] is False and "forward alignment" in v["statement"]


def test_forward_backward_not_supported():
    # trained outputs spread MORE than random, and gradients are no wider than outputs
    res = _internals(trained=(7, 6, 4, 5), random=(3, 2, 7, 25))
    v = forward_alignment_backward_differentiation(res)
    assert v["supported"] is False
    assert v["numbers"]["forward_fraction"] == 0.0 and v["numbers"]["backward_fraction"] == 0.0
    assert "forward alignment and backward differentiation" in v["statement"]
    # half the modules meeting the conditions is below the 75 % threshold, above a 50 % one
    mixed = _internals(trained=(3, 2, 4, 20), random=(7, 6, 7, 25))
    for p in list(mixed["lora_internals"]["modules"])[:2]:
        mixed["lora_internals"]["modules"][p]["trained"] = _module(7, 6, 4, 5)
    assert forward_alignment_backward_differentiation(mixed)["supported"] is False
    assert forward_alignment_backward_differentiation(mixed, {"module_fraction": 0.5})["supported"] is True


def test_forward_backward_missing():
    assert forward_alignment_backward_differentiation({})["supported"] is None
    no_controls = _internals(trained=(3, 2, 4, 20), random=(7, 6, 7, 25))
    for entry in no_controls["lora_internals"]["modules"].values():
        del entry["random"]
    v = forward_alignment_backward_differentiation(no_controls)
    assert v["supported"] is None and "forward comparisons" in v["reason"]


def test_verdicts_combines_and_is_json():
    res = {**LATE, **_internals(trained=(3, 2, 4, 20), random=(7, 6, 7, 25))}
    v = verdicts(res)
    assert v["delayed_specialization"]["supported"] is True
    assert v["forward_alignment_backward_differentiation"]["supported"] is True
    assert v["thresholds"] == THRESHOLDS
    assert json.loads(json.dumps(v)) == v
    v_missing = verdicts({})
    assert all(v_missing[k]["supported"] is None and v_missing[k]["reason"] for k in
               ("delayed_specialization", "forward_alignment_backward_differentiation"))
    with pytest.raises(ConfigError, match="unknown verdict thresholds"):
        verdicts(res, {"agreement": 0.5})


def test_verdicts_on_real_results_of_tiny_models():
    """The result layouts the analyses actually write are read (bool verdicts, not None for missing keys)."""
    import torch

    from loralens.analysis import logit_lens, lora_internals, probing, similarity
    from tests.analysis.helpers import tiny_context

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ctx = tiny_context(n_layers=3, n_boot=20)
        results = {}
        for module in (logit_lens, probing, similarity):
            with torch.no_grad():
                results[module.NAME] = module.run(ctx)
        results[lora_internals.NAME] = lora_internals.run(ctx)
    finally:
        torch.set_num_threads(threads)
    v = verdicts(json.loads(json.dumps(results)))
    for key in ("delayed_specialization", "forward_alignment_backward_differentiation"):
        assert isinstance(v[key]["supported"], bool), v[key]
    assert v["delayed_specialization"]["numbers"]["n_layers"] == 3
    assert len(v["forward_alignment_backward_differentiation"]["numbers"]["modules"]) == 3

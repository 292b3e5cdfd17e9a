"""Verdicts: three outcomes with margins and bands, rules against like-with-like controls, known answers that the
rules can pass and can fail (constructed result dicts; the end-to-end known answers on tiny models are in
test_lora_internals.py and at the end of this file)."""

from __future__ import annotations

import copy
import json

import pytest

from loralens.analysis.verdicts import (
    INCONCLUSIVE,
    NOT_ENOUGH,
    NOT_SUPPORTED,
    SUPPORTED,
    THRESHOLDS,
    combine,
    delayed_specialization,
    forward_alignment_backward_differentiation,
    onset,
    verdicts,
)
from loralens.errors import ConfigError

L = 6


def _curve(values, half=0.0):
    return {"value": list(values), "low": [v - half for v in values], "high": [v + half for v in values]}


def _specialization(agreement, agreement_frozen, gap, cka, *, half_gap=0.01, half_cka=0.01, half_agree=0.02):
    """Result dicts of logit_lens, probing and similarity with the given curves (6 layers, hidden states 0..6)."""
    return {
        "logit_lens": {"n_layers": L, "adapted": {"agreement": _curve(agreement, half_agree)},
                       "frozen": {"agreement": _curve(agreement_frozen, half_agree)}},
        "probing": {"n_layers": L, "emotion_gap": {"uar": _curve(gap, half_gap)}},
        "similarity": {"n_layers": L, "diagonal": {"linear_debiased": _curve(cka, half_cka)},
                       "diagonal_band": {"method": "jackknife"}},
    }


# A model whose emotion information appears only in its last third, and whose frozen baseline forms its
# prediction earlier than the adapted model does.
LATE = _specialization(
    agreement=[0.2, 0.3, 0.3, 0.4, 0.9, 1.0],          # layer 4 -> depth 5/6
    agreement_frozen=[0.3, 0.5, 0.7, 0.95, 0.97, 1.0],  # layer 3 -> depth 4/6
    gap=[0.0, 0.0, 0.01, 0.0, 0.02, 0.12, 0.2],         # hidden state 5 -> 5/6
    cka=[1.0, 0.99, 0.99, 0.98, 0.97, 0.6, 0.4],        # hidden state 5
)


def _by(v):
    return {c["criterion"]: c for c in v["criteria"]}


def test_combine_rules():
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([INCONCLUSIVE, NOT_SUPPORTED, NOT_ENOUGH]) == NOT_SUPPORTED  # a failure decides
    assert combine([SUPPORTED, NOT_ENOUGH]) == NOT_ENOUGH
    assert combine([]) == NOT_ENOUGH


def test_onset_positions_from_bands():
    curve = ([0.5, 0.78, 0.85, 0.95], [0.4, 0.7, 0.79, 0.9], [0.6, 0.81, 0.9, 1.0])
    assert onset(curve, 0.8, above=True) == (2, 1, 3)  # point, earliest possible, earliest certain
    assert onset(([1.0, 0.95, 0.5], [0.99, 0.85, 0.4], [1.0, 0.97, 0.6]), 0.9, above=False) == (2, 1, 2)
    assert onset(([0.1, 0.2], [0.1, 0.2], [0.1, 0.2]), 0.5, above=True) == (None, None, None)


def test_constructed_late_model_is_supported_with_margins_and_bands():
    v = delayed_specialization(LATE)
    assert v["outcome"] == SUPPORTED and v["supported"] is True, v["statement"]
    c = _by(v)
    assert c["lens_onset_late"]["value"] == pytest.approx(5 / 6)
    assert c["lens_onset_late"]["margin"] == pytest.approx(5 / 6 - 2 / 3)
    assert c["lens_onset_late"]["band"] == pytest.approx([5 / 6, 5 / 6])
    assert c["lens_onset_vs_frozen"]["value"] == pytest.approx(1 / 6)
    assert c["probe_onset_late"]["value"] == pytest.approx(5 / 6)
    assert c["departure_onset_late"]["value"] == pytest.approx(5 / 6)
    for crit in v["criteria"]:
        assert crit["threshold_text"] and crit["band_text"] and crit["reading"]
    assert v["statement"].startswith("Supported")
    assert v["numbers"]["lens"] == "logit lens"


def test_adapter_identical_to_frozen_is_not_supported():
    """Known answer: adapted == frozen. CKA 1 everywhere with a zero-width band (no departure), probe gap exactly 0
    with a zero-width paired band, the same lens curve: claim (i) not supported, decisively."""
    agree = [0.2, 0.3, 0.3, 0.4, 0.9, 1.0]
    same = _specialization(agree, agree, [0.0] * 7, [1.0] * 7, half_gap=0.0, half_cka=0.0)
    v = delayed_specialization(same)
    assert v["outcome"] == NOT_SUPPORTED
    c = _by(v)
    assert c["departure_onset_late"]["outcome"] == NOT_SUPPORTED and c["departure_onset_late"]["value"] is None
    assert c["probe_onset_late"]["outcome"] == NOT_SUPPORTED
    assert c["lens_onset_vs_frozen"]["outcome"] == NOT_SUPPORTED  # the frozen model is just as "late"
    assert c["lens_onset_late"]["outcome"] == SUPPORTED  # the lens alone would have passed: why it is not enough


def test_early_onsets_fail_and_the_boundary_is_not_late():
    early = copy.deepcopy(LATE)
    early["probing"]["emotion_gap"]["uar"] = _curve([0.0, 0.1, 0.12, 0.15, 0.2, 0.2, 0.2], 0.01)  # h=1 -> 1/6
    v = delayed_specialization(early)
    assert v["outcome"] == NOT_SUPPORTED and _by(v)["probe_onset_late"]["outcome"] == NOT_SUPPORTED
    assert _by(v)["probe_onset_late"]["margin"] == pytest.approx(1 / 6 - 2 / 3)
    boundary = copy.deepcopy(LATE)
    boundary["similarity"]["diagonal"]["linear_debiased"] = _curve([1.0, 0.99, 0.99, 0.98, 0.6, 0.5, 0.4], 0.01)
    assert _by(delayed_specialization(boundary))["departure_onset_late"]["outcome"] == NOT_SUPPORTED  # h=4: 4/6
    assert delayed_specialization(boundary, {"late_depth": 0.5})["outcome"] == SUPPORTED


def test_thresholds_on_bands_not_points_give_inconclusive():
    """A gap of 0.049 and one of 0.051 are the same evidence when the band is +-0.06: both inconclusive, where the
    old rule flipped between "not supported" and "supported"."""
    for g in (0.049, 0.051):
        res = copy.deepcopy(LATE)
        res["probing"]["emotion_gap"]["uar"] = _curve([g] * 7, 0.06)
        c = _by(delayed_specialization(res))["probe_onset_late"]
        assert c["outcome"] == INCONCLUSIVE, (g, c)
    # a departure decided by 0.897 against 0.9 with a band [0.85, 0.94] is inconclusive too
    res = copy.deepcopy(LATE)
    res["similarity"]["diagonal"]["linear_debiased"] = {
        "value": [1.0, 0.99, 0.99, 0.897, 0.42, 0.5, 0.55], "low": [1.0, 0.99, 0.98, 0.85, 0.3, 0.4, 0.45],
        "high": [1.0, 0.99, 0.995, 0.94, 0.5, 0.6, 0.65]}
    c = _by(delayed_specialization(res))["departure_onset_late"]
    assert c["value"] == pytest.approx(0.5) and c["outcome"] == NOT_SUPPORTED  # certain by h=4: depth 4/6
    assert c["band"] == pytest.approx([0.5, 4 / 6])
    # but with no certain departure before the last third, the same point is inconclusive
    res["similarity"]["diagonal"]["linear_debiased"]["high"][4] = 0.95
    c = _by(delayed_specialization(res))["departure_onset_late"]
    assert c["outcome"] == INCONCLUSIVE and c["band"] == pytest.approx([0.5, 5 / 6])
    assert delayed_specialization(res)["outcome"] == INCONCLUSIVE


def test_tuned_lens_is_used_when_both_models_have_one():
    res = copy.deepcopy(LATE)
    res["logit_lens"]["tuned"] = {"agreement": _curve([0.5, 0.88, 0.9, 0.95, 0.97, 1.0], 0.02)}
    res["logit_lens"]["tuned_frozen"] = {"agreement": _curve([0.5, 0.7, 0.9, 0.95, 0.97, 1.0], 0.02)}
    v = delayed_specialization(res)
    c = _by(v)
    assert v["numbers"]["lens"] == "tuned lens" and "tuned" in c["lens_onset_late"]["name"]
    assert c["lens_onset_late"]["value"] == pytest.approx(2 / 6) and c["lens_onset_late"]["outcome"] == NOT_SUPPORTED
    assert v["outcome"] == NOT_SUPPORTED


def test_probe_gap_without_paired_band_uses_both_standard_errors():
    res = copy.deepcopy(LATE)
    del res["probing"]["emotion_gap"]
    ad = [0.3] * 5 + [0.5, 0.6]
    fr = [0.3] * 5 + [0.35, 0.4]
    res["probing"]["emotion"] = {"adapted": {"uar": {**_curve(ad, 0.05), "std": [0.03] * 7}},
                                 "frozen": {"uar": {**_curve(fr, 0.05), "std": [0.03] * 7}}}
    c = _by(delayed_specialization(res))["probe_onset_late"]
    half = 1.959963984540054 * (2 * 0.03**2) ** 0.5
    assert "independent" in c["band_method"] and c["value"] == pytest.approx(5 / 6)
    # gap 0.15 at h=5: certain (0.15 - 0.083 > 0.05); at h=0..4 gap 0 + 0.083 >= 0.05: possible from h=0
    assert c["onset_possible"] == 0 and c["onset_certain"] == 5 and c["outcome"] == INCONCLUSIVE
    assert 0.0 + half >= 0.05


def test_missing_inputs_are_not_enough_data():
    v = delayed_specialization({"logit_lens": LATE["logit_lens"]})
    assert v["outcome"] == NOT_ENOUGH and v["supported"] is None
    assert "probing" in v["reason"] and "similarity" in v["reason"]
    assert delayed_specialization({})["outcome"] == NOT_ENOUGH
    # a failing criterion decides even when another input is missing
    partial = copy.deepcopy(LATE)
    del partial["similarity"]
    partial["probing"]["emotion_gap"]["uar"] = _curve([0.0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2], 0.01)
    assert delayed_specialization(partial)["outcome"] == NOT_SUPPORTED


# ----------------------------------------------------------------------------- claim (ii)
def _variant(b_out_k90, b_grad_k90, cka, null_k90=None, null_cka=None, a_out_k90=4):
    e = {"a_out_k90": a_out_k90, "b_out_k90": b_out_k90, "b_grad_k90": b_grad_k90, "cka_ab_forward_biased": cka,
         "a_grad_k90": 3}
    if null_k90 is not None:
        e["b_null"] = {"draws": len(null_k90), "b_out_k90": list(null_k90), "cka_ab_forward_biased": list(null_cka)}
    return e


NULL_K90 = [6, 7, 7, 8, 6, 7, 8, 7, 6, 7, 7, 8, 6, 7, 8, 7, 6, 7, 7, 8, 6, 7, 8, 7, 6, 7, 7, 8, 6, 7, 8, 7, 6, 7,
            7, 8, 6, 7, 8]  # 39 draws: p = 1/40 when the trained value beats all
NULL_CKA = [0.95 + 0.001 * i for i in range(39)]  # up to 0.988


def _internals(trained, init, random, n=4):
    mods = {f"blocks.{i}.attn.v_proj": {"trained": copy.deepcopy(trained), "init": copy.deepcopy(init),
                                        "random": copy.deepcopy(random)} for i in range(n)}
    return {"lora_internals": {"n_layers": n, "rank": {p: 8 for p in mods}, "modules": mods,
                               "init_a_source": "reconstructed peft initialisation"}}


# Constructed positive case: B's output low-rank (2 components vs 6-8 under random B) and aligned with A's output
# (CKA 0.999, above every random draw), gradients at B spread over 120 components (init 60, random 80).
POSITIVE = _internals(trained=_variant(2, 120, 0.999, NULL_K90, NULL_CKA),
                      init=_variant(0, 60, None, NULL_K90, NULL_CKA),
                      random=_variant(7, 80, 0.97, NULL_K90, NULL_CKA))


def test_constructed_positive_adapter_is_supported():
    v = forward_alignment_backward_differentiation(POSITIVE)
    assert v["outcome"] == SUPPORTED, v["statement"]
    c = _by(v)
    for key in ("forward_concentration", "forward_alignment", "backward_differentiation"):
        assert c[key]["value"] == 1.0 and c[key]["margin"] == pytest.approx(0.25) and c[key]["band"] == [1.0, 1.0]
    m = v["numbers"]["modules"]["blocks.0.attn.v_proj"]
    assert m["p_concentration"] == pytest.approx(1 / 40) and m["p_alignment"] == pytest.approx(1 / 40)
    assert m["b_grad_k90_init"] == 60 and m["b_grad_k90_random"] == 80


def test_untrained_adapter_is_not_supported():
    """Known answer: B = 0 as trained: the trained adapter IS peft's init. B writes nothing and the gradients at B
    are exactly the init's."""
    init = _variant(0, 60, None, NULL_K90, NULL_CKA)
    v = forward_alignment_backward_differentiation(_internals(init, init, _variant(7, 80, 0.97, NULL_K90, NULL_CKA)))
    assert v["outcome"] == NOT_SUPPORTED
    c = _by(v)
    assert c["forward_concentration"]["outcome"] == NOT_SUPPORTED and c["forward_alignment"]["outcome"] == NOT_SUPPORTED
    assert c["backward_differentiation"]["outcome"] == NOT_SUPPORTED


def test_random_control_is_not_supported():
    """Known answer: the random control as trained: a draw from the null (p in the middle) and gradients at B equal
    to the control's."""
    rnd = _variant(7, 80, 0.97, NULL_K90, NULL_CKA)
    v = forward_alignment_backward_differentiation(_internals(rnd, _variant(0, 60, None, NULL_K90, NULL_CKA), rnd))
    assert v["outcome"] == NOT_SUPPORTED
    c = _by(v)
    assert c["backward_differentiation"]["outcome"] == NOT_SUPPORTED
    m = v["numbers"]["modules"]["blocks.0.attn.v_proj"]
    assert 0.05 < m["p_concentration"] and m["concentration"] in ("inconclusive", "no")


def test_the_old_backward_rule_is_gone():
    """b_grad_k90 > b_out_k90 held for any adapter (B's output lives in r dims); the new rule needs the trained
    gradients to spread wider than the controls' gradients: 100 components against a control at 95 is within the
    10 % tolerance (inconclusive), against 120 it fails."""
    res = copy.deepcopy(POSITIVE)
    for e in res["lora_internals"]["modules"].values():
        e["trained"]["b_grad_k90"], e["random"]["b_grad_k90"] = 100, 95
    assert _by(forward_alignment_backward_differentiation(res))["backward_differentiation"]["outcome"] == INCONCLUSIVE
    for e in res["lora_internals"]["modules"].values():
        e["random"]["b_grad_k90"] = 120
    assert _by(forward_alignment_backward_differentiation(res))["backward_differentiation"]["outcome"] == NOT_SUPPORTED


def test_module_fraction_band():
    res = copy.deepcopy(POSITIVE)
    mods = list(res["lora_internals"]["modules"].values())
    mods[0]["trained"]["cka_ab_forward_biased"] = 0.5  # below every draw: no
    mods[1]["trained"]["cka_ab_forward_biased"] = 0.97  # 18 of 39 draws >= 0.97 -> p = 19/40: inconclusive
    c = _by(forward_alignment_backward_differentiation(res))["forward_alignment"]
    assert c["value"] == 0.5 and c["band"] == [0.5, 0.75] and c["outcome"] == INCONCLUSIVE
    assert c["n_yes"] == 2 and c["n_inconclusive"] == 1
    assert _by(forward_alignment_backward_differentiation(res, {"module_fraction": 0.5}))["forward_alignment"][
        "outcome"] == SUPPORTED


def test_results_without_null_draws_are_not_enough_data_for_the_forward_rule():
    res = copy.deepcopy(POSITIVE)
    for e in res["lora_internals"]["modules"].values():
        for var in e.values():
            var.pop("b_null", None)
    v = forward_alignment_backward_differentiation(res)
    c = _by(v)
    assert c["forward_concentration"]["outcome"] == NOT_ENOUGH and "b_null" in c["forward_concentration"]["source"]
    assert c["backward_differentiation"]["outcome"] == SUPPORTED
    assert v["outcome"] == NOT_ENOUGH
    assert forward_alignment_backward_differentiation({})["outcome"] == NOT_ENOUGH


def test_verdicts_combines_and_is_json():
    v = verdicts({**LATE, **POSITIVE})
    assert v["delayed_specialization"]["outcome"] == SUPPORTED
    assert v["forward_alignment_backward_differentiation"]["outcome"] == SUPPORTED
    assert v["thresholds"] == THRESHOLDS
    assert json.loads(json.dumps(v)) == v
    with pytest.raises(ConfigError, match="unknown verdict thresholds"):
        verdicts(LATE, {"agreement": 0.5})


@pytest.mark.slow
def test_verdicts_on_real_results_of_tiny_models():
    """The result layouts the analyses actually write are read: every criterion decided or inconclusive, none
    missing; and identical adapted and frozen models (B = 0) give claim (i) not supported end to end."""
    import torch

    from loralens.analysis import logit_lens, lora_internals, probing, similarity
    from tests.analysis.helpers import tiny_context

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for b_std in (0.2, 0.0):
            ctx = tiny_context(n_layers=3, n_boot=20, b_std=b_std, options={"lora_internals": {"null_draws": 19}})
            results = {}
            for module in (logit_lens, probing, similarity):
                with torch.no_grad():
                    results[module.NAME] = module.run(ctx)
            if b_std:
                results[lora_internals.NAME] = lora_internals.run(ctx)
            out[b_std] = verdicts(json.loads(json.dumps(results)))
    finally:
        torch.set_num_threads(threads)
    v = out[0.2]
    for key in ("delayed_specialization", "forward_alignment_backward_differentiation"):
        assert v[key]["outcome"] in (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE), v[key]
        assert all(c["outcome"] != NOT_ENOUGH for c in v[key]["criteria"]), v[key]["statement"]
    assert v["delayed_specialization"]["numbers"]["n_layers"] == 3
    assert len(v["forward_alignment_backward_differentiation"]["numbers"]["modules"]) == 3
    same = out[0.0]["delayed_specialization"]
    assert same["outcome"] == NOT_SUPPORTED, same["statement"]
    assert _by(same)["departure_onset_late"]["outcome"] == NOT_SUPPORTED
    assert _by(same)["probe_onset_late"]["outcome"] == NOT_SUPPORTED

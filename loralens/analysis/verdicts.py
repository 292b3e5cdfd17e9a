"""Verdicts on the two claims of Ma et al. 2025 that the analyses test, computed from the analyses' results only.

`verdicts(results)` takes analysis name -> result dict (what `run_suite` returns or the `result.json` files hold)
and returns, for each claim, `supported` (True / False / None = not enough data), the numbers behind it, the
thresholds used and a one-line statement. A claim the numbers contradict is `False`; a claim whose inputs are
missing is `None` with the `reason`.

Depth convention: the output of layer l (0-based) of an L-layer encoder is at depth (l + 1) / L; hidden state h
(0 = embeddings, as in probing and similarity) is at depth h / L. "Late" means depth > `late_depth` (2/3: the last
third of the layers).

(i) Delayed specialization. Three onsets, each the first depth where
  - `lens`: the adapted model's logit-lens top-1 agreement with its final prediction reaches `agreement_threshold`
    (0.8) [logit_lens.adapted.agreement];
  - `probe`: the adapted model's emotion-probe UAR exceeds the frozen model's by at least `probe_margin` (0.05)
    [probing.emotion.{adapted,frozen}.uar, hidden states 0..L];
  - `departure`: debiased linear CKA between the adapted and frozen representations of the same hidden state falls
    below `cka_threshold` (0.9) [similarity.diagonal.linear_debiased].
  Supported when all three onsets exist and are late. An onset that never occurs (no probe advantage, no departure)
  means no specialization was seen by that measure: the claim is then not supported.

(ii) Forward alignment, backward differentiation [lora_internals.modules.<prefix>.<variant>.<kind>_k90]. Per adapted
module, with k90 = the number of singular components holding 90 % of the energy of the frame-level matrix:
  - forward alignment: the trained adapter's A outputs and B outputs each have a smaller k90 than the `random`
    control (Gaussian A and B of matched norms) and than `init` where init is informative (its output has energy,
    k90 > 0, and its A differs from the trained A). lora_internals' `init` is peft's reconstructed initialisation
    (initial A, B = 0): its B output has no energy, so only the A comparison is made; in the fallback (initial
    weights unavailable, `init` keeps the trained A) both are skipped;
  - backward differentiation: the loss gradients reaching B's output spread over more components than B's forward
    output: b_grad_k90 > b_out_k90 (both also reported as fractions of the rank r; b_grad is not confined to B's
    r-dimensional column space, b_out is).
  Supported when at least `module_fraction` (0.75) of the modules with data meet the forward condition and at least
  that fraction meet the backward condition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

THRESHOLDS: dict[str, float] = {
    "agreement_threshold": 0.8,
    "probe_margin": 0.05,
    "cka_threshold": 0.9,
    "late_depth": 2.0 / 3.0,
    "module_fraction": 0.75,
}


def _values(c: Any) -> list[float | None] | None:
    """The `value` list of a curve dict (or a plain list), None when absent or malformed."""
    if isinstance(c, Mapping):
        c = c.get("value")
    if not isinstance(c, Sequence) or isinstance(c, str):
        return None
    out: list[float | None] = []
    for v in c:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif isinstance(v, (int, float)):
            out.append(float(v))
        else:
            return None
    return out


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def _first(values: Sequence[float | None], test) -> int | None:
    for i, v in enumerate(values):
        if v is not None and test(v):
            return i
    return None


def _claim(name: str, supported: bool | None, statement: str, numbers: dict, thresholds: dict, reason: str | None = None) -> dict:
    return {"claim": name, "supported": supported, "statement": statement, "numbers": numbers,
            "thresholds": thresholds, "reason": reason}


def delayed_specialization(results: Mapping[str, Any], thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Verdict (i); see the module docstring."""
    t = {**THRESHOLDS, **(thresholds or {})}
    used = {k: t[k] for k in ("agreement_threshold", "probe_margin", "cka_threshold", "late_depth")}
    name = "delayed specialization"
    missing: list[str] = []
    numbers: dict[str, Any] = {}
    n_layers = None
    for key in ("logit_lens", "probing", "similarity"):
        if isinstance(_get(results, key, "n_layers"), int):
            n_layers = n_layers or results[key]["n_layers"]

    agreement = _values(_get(results, "logit_lens", "adapted", "agreement"))
    if agreement is None:
        missing.append("logit_lens.adapted.agreement")
    probe_a = _values(_get(results, "probing", "emotion", "adapted", "uar"))
    probe_f = _values(_get(results, "probing", "emotion", "frozen", "uar"))
    if probe_a is None or probe_f is None:
        missing.append("probing.emotion.{adapted,frozen}.uar")
    cka = _values(_get(results, "similarity", "diagonal", "linear_debiased"))
    if cka is None:
        missing.append("similarity.diagonal.linear_debiased")
    if n_layers is None:
        missing.append("n_layers")
    if missing:
        return _claim(name, None, "Not enough data to judge delayed specialization.", numbers, used,
                      "missing: " + ", ".join(missing))

    onsets: dict[str, float | None] = {}
    l = _first(agreement, lambda v: v >= t["agreement_threshold"])
    onsets["lens"] = None if l is None else (l + 1) / n_layers
    numbers["lens_layer"] = l
    if len(probe_a) != len(probe_f):
        return _claim(name, None, "Not enough data to judge delayed specialization.", numbers, used,
                      f"probe curves of different lengths ({len(probe_a)} vs {len(probe_f)})")
    gap = [None if a is None or f is None else a - f for a, f in zip(probe_a, probe_f)]
    h = _first(gap, lambda v: v >= t["probe_margin"])
    onsets["probe"] = None if h is None else h / n_layers
    numbers["probe_hidden_state"] = h
    numbers["probe_gap"] = gap
    h = _first(cka, lambda v: v < t["cka_threshold"])
    onsets["departure"] = None if h is None else h / n_layers
    numbers["departure_hidden_state"] = h
    numbers["cka_diagonal"] = cka
    numbers["onset_depth"] = onsets
    numbers["n_layers"] = n_layers

    late = {k: (v is not None and v > t["late_depth"] + 1e-12) for k, v in onsets.items()}
    numbers["late"] = late
    supported = all(late.values())

    def fmt(k: str) -> str:
        return "never" if onsets[k] is None else f"{onsets[k]:.2f}"

    detail = f"onset depths: lens {fmt('lens')}, probe {fmt('probe')}, departure {fmt('departure')}"
    if supported:
        statement = f"Supported: all three onsets lie in the last third of the encoder ({detail})."
    else:
        early = [k for k, v in late.items() if not v]
        statement = f"Not supported: {', '.join(early)} onset(s) not late ({detail}; late = depth > {t['late_depth']:.2f})."
    return _claim(name, supported, statement, numbers, used)


def _k90(entry: Any, kind: str) -> float | None:
    v = _get(entry, f"{kind}_k90")
    return float(v) if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else None


def forward_alignment_backward_differentiation(
    results: Mapping[str, Any], thresholds: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Verdict (ii); see the module docstring."""
    t = {**THRESHOLDS, **(thresholds or {})}
    used = {"module_fraction": t["module_fraction"]}
    name = "forward alignment, backward differentiation"
    modules = _get(results, "lora_internals", "modules")
    if not isinstance(modules, Mapping) or not modules:
        return _claim(name, None, "Not enough data to judge forward alignment / backward differentiation.", {}, used,
                      "missing: lora_internals.modules")
    ranks = _get(results, "lora_internals", "rank") or {}
    per_module: dict[str, dict[str, Any]] = {}
    for prefix, variants in modules.items():
        trained = _get(variants, "trained")
        if not isinstance(trained, Mapping):
            continue
        r = ranks.get(prefix) if isinstance(ranks, Mapping) else None
        row: dict[str, Any] = {"rank": r}
        checks: list[bool] = []
        comparisons: dict[str, Any] = {}
        for ref in ("init", "random"):
            ref_entry = _get(variants, ref)
            if not isinstance(ref_entry, Mapping):
                continue
            same_a = (
                ref == "init"
                and isinstance(ref_entry.get("a_norm"), (int, float))
                and ref_entry.get("a_norm") == trained.get("a_norm")
            )
            for kind in ("a_out", "b_out"):
                mine, theirs = _k90(trained, kind), _k90(ref_entry, kind)
                key = f"{kind}_vs_{ref}"
                if mine is None or theirs is None:
                    comparisons[key] = "missing"
                elif theirs == 0:
                    comparisons[key] = "skipped: reference output has no energy"
                elif same_a:
                    comparisons[key] = "skipped: reference keeps the trained A"
                else:
                    comparisons[key] = {"trained": mine, ref: theirs, "smaller": mine < theirs}
                    checks.append(mine < theirs)
        row["forward"] = comparisons
        row["forward_ok"] = all(checks) if checks else None
        b_out, b_grad = _k90(trained, "b_out"), _k90(trained, "b_grad")
        if b_out is None or b_grad is None:
            row["backward_ok"] = None
        else:
            row["b_out_k90"], row["b_grad_k90"] = b_out, b_grad
            if isinstance(r, (int, float)) and r > 0:
                row["b_out_k90_over_rank"], row["b_grad_k90_over_rank"] = b_out / r, b_grad / r
            row["backward_ok"] = b_grad > b_out
        a_out, a_grad = _k90(trained, "a_out"), _k90(trained, "a_grad")
        if a_out is not None and a_grad is not None:
            row["a_out_k90"], row["a_grad_k90"] = a_out, a_grad
        per_module[prefix] = row

    fwd = [m["forward_ok"] for m in per_module.values() if m.get("forward_ok") is not None]
    bwd = [m["backward_ok"] for m in per_module.values() if m.get("backward_ok") is not None]
    numbers: dict[str, Any] = {"modules": per_module, "n_modules_forward": len(fwd), "n_modules_backward": len(bwd)}
    if not fwd or not bwd:
        missing = [n for n, v in (("forward comparisons (trained vs random/init k90)", fwd),
                                  ("backward comparisons (b_grad_k90, b_out_k90)", bwd)) if not v]
        return _claim(name, None, "Not enough data to judge forward alignment / backward differentiation.", numbers,
                      used, "no module with " + " or ".join(missing))
    f_frac, b_frac = sum(fwd) / len(fwd), sum(bwd) / len(bwd)
    numbers["forward_fraction"], numbers["backward_fraction"] = f_frac, b_frac
    forward_ok, backward_ok = f_frac >= t["module_fraction"], b_frac >= t["module_fraction"]
    supported = forward_ok and backward_ok
    detail = (
        f"{f_frac:.0%} of {len(fwd)} modules have trained A/B outputs more concentrated than the controls, "
        f"{b_frac:.0%} of {len(bwd)} have b_grad_k90 > b_out_k90 (need {t['module_fraction']:.0%})"
    )
    if supported:
        statement = f"Supported: {detail}."
    else:
        failed = [p for p, ok in (("forward alignment", forward_ok), ("backward differentiation", backward_ok)) if not ok]
        statement = f"Not supported ({' and '.join(failed)} {'fails' if len(failed) == 1 else 'fail'}): {detail}."
    return _claim(name, supported, statement, numbers, used)


def verdicts(results: Mapping[str, Any], thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Verdicts on both claims from analysis name -> result; `thresholds` override `THRESHOLDS` entries.
    JSON-serialisable."""
    unknown = set(thresholds or {}) - set(THRESHOLDS)
    if unknown:
        from loralens.errors import ConfigError

        raise ConfigError(f"unknown verdict thresholds {sorted(unknown)}", hint=f"choose among {sorted(THRESHOLDS)}")
    return {
        "delayed_specialization": delayed_specialization(results, thresholds),
        "forward_alignment_backward_differentiation": forward_alignment_backward_differentiation(results, thresholds),
        "thresholds": {**THRESHOLDS, **(thresholds or {})},
    }

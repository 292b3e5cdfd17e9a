"""Verdicts on the two claims of Ma et al. 2025 that the analyses test, computed from the analyses' results only.

`verdicts(results)` takes analysis name -> result dict (what `run_suite` returns or the `result.json` files hold)
and returns, per claim, an `outcome` and a list of `criteria`, each with its value, threshold, margin (value minus
threshold, in the direction that supports the claim), uncertainty band and its own outcome. docs/claims.md gives
the paper's words, the operational definitions and what would make each criterion fail.

Outcomes: "supported", "not supported", "inconclusive" (the decision's margin lies inside the band: the data
allow both) and "not enough data" (an input is missing). A claim is not supported when any criterion is not
supported, supported when all are, otherwise inconclusive (or not enough data when an input is missing and
nothing fails). `supported` is kept for older readers: True / False / None (inconclusive or not enough data).

Depth convention: the output of layer l (0-based) of an L-layer encoder is at depth (l + 1) / L; hidden state h
(0 = embeddings, as in probing and similarity) is at depth h / L. "Late" means depth > `late_depth` (2/3).

Onsets with bands. An onset is the first position whose curve reaches a threshold. With a band per position,
the earliest POSSIBLE onset is the first position whose band reaches it and the earliest CERTAIN onset the first
whose whole band does; the onset's band is [possible, certain] ("never" when no position qualifies). "Onset is
late" is supported when the certain onset exists and even the possible one is late; not supported when the
certain onset is early or when no band reaches the threshold anywhere (no effect seen); else inconclusive.

(i) Delayed specialization, criteria:
  - `lens_onset_late`: the adapted model's lens agreement with its final prediction reaches
    `agreement_threshold` late. Read through the tuned lens where the result has one for both models (the logit
    lens reaches agreement 1 at the last layer by construction, so its onset always exists and is late for any
    model, frozen included); else through the logit lens.
  - `lens_onset_vs_frozen`: the adapted onset comes later than the frozen baseline's (same lens): difference of
    onset depths > 0, band from the onset bands.
  - `probe_onset_late`: the first hidden state where the adapted-minus-frozen emotion-probe UAR reaches
    `probe_margin`, with the paired bootstrap band of `probing.emotion_gap` (older results: the two UARs' standard
    errors combined as if independent, which is wider).
  - `departure_onset_late`: the first hidden state where the debiased linear CKA between adapted and frozen falls
    below `cka_threshold`, with the jackknife band of `similarity.diagonal.linear_debiased`.

(ii) Forward alignment, backward differentiation [lora_internals.modules.<prefix>.<variant>], per adapted module a
yes / no / inconclusive, then across modules: supported when at least `module_fraction` of the modules are
"yes", not supported when fewer than that are "yes" or inconclusive; the criterion's value is the share of "yes",
its band [share yes, share yes or inconclusive].
  - `forward_concentration`: the trained B output is more concentrated (smaller k90) than under random B matrices
    applied to the same A outputs (`b_null`, several draws): p = (1 + #{null k90 <= trained}) / (draws + 1);
    yes when p <= `alpha`, no when p > 0.5 (not below the null's median; ties count against) or when B's output
    has no energy, else inconclusive.
  - `forward_alignment`: the A and B outputs are more aligned (biased linear CKA over frames, `cka_ab_forward_biased`)
    than under the random B draws: p = (1 + #{null CKA >= trained}) / (draws + 1), same rule.
  - `backward_differentiation`: the gradient reaching B's output spreads over more components (b_grad_k90) in the
    trained adapter than at peft's initialisation (`init`) and in the random control (`random`), like with like:
    yes when trained > (1 + `k90_tolerance`) x the larger control, no when trained <= the larger control,
    inconclusive in between (k90 is an integer from a single draw of each control: the tolerance is the noise
    allowance, not a measured noise level).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
NOT_ENOUGH = "not enough data"
OUTCOMES: tuple[str, ...] = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_ENOUGH)

THRESHOLDS: dict[str, float] = {
    "agreement_threshold": 0.8,
    "probe_margin": 0.05,
    "cka_threshold": 0.9,
    "late_depth": 2.0 / 3.0,
    "module_fraction": 0.75,
    "alpha": 0.05,
    "k90_tolerance": 0.1,
}

_EPS = 1e-12
_Z95 = 1.959963984540054


# ----------------------------------------------------------------------------- reading result dicts
def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _list(c: Any, key: str = "value") -> list[float | None] | None:
    """The `key` list of a curve dict (or a plain list for "value"), None when absent or malformed."""
    if isinstance(c, Mapping):
        c = c.get(key)
    elif key != "value":
        return None
    if not isinstance(c, Sequence) or isinstance(c, str):
        return None
    out: list[float | None] = []
    for v in c:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return None
        out.append(_num(v))
    return out


def _curve(c: Any) -> tuple[list[float | None], list[float | None], list[float | None]] | None:
    """(value, low, high) of a curve; missing bounds become the value (a zero-width band)."""
    v = _list(c)
    if v is None:
        return None
    lo, hi = _list(c, "low"), _list(c, "high")
    lo = lo if lo is not None and len(lo) == len(v) else list(v)
    hi = hi if hi is not None and len(hi) == len(v) else list(v)
    lo = [a if a is not None else b for a, b in zip(lo, v)]
    hi = [a if a is not None else b for a, b in zip(hi, v)]
    return v, lo, hi


# ----------------------------------------------------------------------------- criteria
def _criterion(key: str, name: str, outcome: str, reading: str, *, value: float | None = None,
               value_text: str = "", threshold: float | None = None, threshold_text: str = "",
               margin: float | None = None, band: Sequence[float | None] | None = None, band_text: str = "",
               source: str = "", **extra: Any) -> dict[str, Any]:
    return {"criterion": key, "name": name, "outcome": outcome, "value": value, "value_text": value_text,
            "threshold": threshold, "threshold_text": threshold_text, "margin": margin,
            "band": None if band is None else [None if b is None else float(b) for b in band],
            "band_text": band_text, "reading": reading, "source": source, **extra}


def _missing(key: str, name: str, what: str) -> dict[str, Any]:
    return _criterion(key, name, NOT_ENOUGH, f"Not enough data: missing {what}.", source=what)


def _depth_text(d: float | None) -> str:
    return "never" if d is None else f"{d:.2f}"


def onset(curve: tuple[list, list, list], threshold: float, above: bool) -> tuple[int | None, int | None, int | None]:
    """(point, earliest possible, earliest certain) onset positions of a curve (value, low, high) crossing
    `threshold`: reaching means value >= threshold (`above`) or value < threshold (not `above`). None = never."""
    value, low, high = curve

    def reach(v: float | None) -> bool:
        return v is not None and (v >= threshold if above else v < threshold)

    def first(seq: Sequence[float | None]) -> int | None:
        return next((i for i, v in enumerate(seq) if reach(v)), None)

    best, worst = (high, low) if above else (low, high)
    return first(value), first(best), first(worst)


def _late_onset(key: str, name: str, what: str, curve: tuple[list, list, list], threshold: float, above: bool,
                depth, late: float, source: str, unit: str) -> dict[str, Any]:
    point, possible, certain = onset(curve, threshold, above)
    d = lambda i: None if i is None else depth(i)  # noqa: E731
    dp, de, du = d(point), d(possible), d(certain)
    if possible is None:
        outcome = NOT_SUPPORTED
        reading = f"{what} never reaches the threshold, not even within its band: no such effect was seen."
    elif du is not None and du <= late + _EPS:
        outcome = NOT_SUPPORTED
        reading = f"{what} is reached for certain by depth {du:.2f}, inside the first two thirds of the encoder."
    elif du is not None and de > late + _EPS:
        outcome = SUPPORTED
        reading = f"{what} is reached at depth {dp:.2f} and not possibly before {de:.2f}: late."
    else:
        outcome = INCONCLUSIVE
        reading = (f"{what} is reached at depth {_depth_text(dp)}, but within its band the onset could lie anywhere "
                   f"from {_depth_text(de)} to {_depth_text(du)}: the band straddles the late boundary "
                   f"{late:.2f}." if du is not None else
                   f"{what} is reached at depth {_depth_text(dp)} at best; no position reaches it for certain.")
    return _criterion(
        key, name, outcome, reading, value=dp,
        value_text=_depth_text(dp) + (f" ({unit} {point})" if point is not None else ""),
        threshold=late, threshold_text=f"depth > {late:.2f}", margin=None if dp is None else dp - late,
        band=[de, du], band_text=f"[{_depth_text(de)}, {_depth_text(du)}]", source=source,
        onset_point=point, onset_possible=possible, onset_certain=certain,
    )


def _lens_curves(results: Mapping[str, Any]) -> tuple[str, Any, Any, str]:
    """(lens name, adapted agreement curve, frozen agreement curve, source) — the tuned lens where both models have
    one, else the logit lens."""
    ll = _get(results, "logit_lens") or {}
    ta, tf = _get(ll, "tuned", "agreement"), _get(ll, "tuned_frozen", "agreement")
    if _list(ta) is not None and _list(tf) is not None:
        return "tuned lens", ta, tf, "logit_lens.tuned / tuned_frozen.agreement"
    return "logit lens", _get(ll, "adapted", "agreement"), _get(ll, "frozen", "agreement"), \
        "logit_lens.adapted / frozen.agreement"


def _probe_gap(results: Mapping[str, Any], alpha: float) -> tuple[tuple[list, list, list] | None, str]:
    """The adapted - frozen probe UAR curve with its band: the paired one of `probing.emotion_gap` when present,
    else a normal approximation from the two UARs' bootstrap standard errors (as if independent)."""
    paired = _curve(_get(results, "probing", "emotion_gap", "uar"))
    if paired is not None:
        return paired, "paired bootstrap (probing.emotion_gap)"
    a, f = _get(results, "probing", "emotion", "adapted", "uar"), _get(results, "probing", "emotion", "frozen", "uar")
    ca, cf = _curve(a), _curve(f)
    if ca is None or cf is None or len(ca[0]) != len(cf[0]):
        return None, ""
    from scipy.stats import norm

    z = float(norm.ppf(1 - alpha / 2))
    sa, sf = _list(a, "std"), _list(f, "std")
    value, low, high = [], [], []
    for i, (va, vf) in enumerate(zip(ca[0], cf[0])):
        if va is None or vf is None:
            value.append(None), low.append(None), high.append(None)
            continue
        if sa is not None and sf is not None and sa[i] is not None and sf[i] is not None:
            half = z * math.hypot(sa[i], sf[i])
        else:
            half = math.hypot((ca[2][i] - ca[1][i]) / 2, (cf[2][i] - cf[1][i]) / 2)
        value.append(va - vf), low.append(va - vf - half), high.append(va - vf + half)
    return (value, low, high), "independent normal approximation (no paired gap in this result)"


def delayed_specialization(results: Mapping[str, Any], thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Verdict (i); see the module docstring."""
    t = {**THRESHOLDS, **(thresholds or {})}
    used = {k: t[k] for k in ("agreement_threshold", "probe_margin", "cka_threshold", "late_depth", "alpha")}
    late = t["late_depth"]
    n_layers = next((results[k]["n_layers"] for k in ("logit_lens", "probing", "similarity")
                     if isinstance(_get(results, k, "n_layers"), int)), None)
    if n_layers is None:
        return _claim("delayed specialization", [], used, {}, reason="missing: n_layers (no logit_lens, probing or "
                                                                     "similarity result)")
    layer_depth = lambda l: (l + 1) / n_layers  # noqa: E731
    hidden_depth = lambda h: h / n_layers  # noqa: E731
    criteria = []

    lens, ca, cf, source = _lens_curves(results)
    thr = t["agreement_threshold"]
    adapted = _curve(ca)
    if adapted is None:
        criteria.append(_missing("lens_onset_late", "Lens onset is late", source))
    else:
        criteria.append(_late_onset("lens_onset_late", f"Lens onset is late ({lens}, adapted)",
                                    f"{lens.capitalize()} agreement >= {thr:g}", adapted, thr, True, layer_depth,
                                    late, source, "layer"))
    frozen = _curve(cf)
    if adapted is None or frozen is None:
        criteria.append(_missing("lens_onset_vs_frozen", "Lens onset later than the frozen baseline's", source))
    else:
        criteria.append(_later_than(adapted, frozen, thr, layer_depth, lens, source))

    gap, how = _probe_gap(results, t["alpha"])
    if gap is None:
        criteria.append(_missing("probe_onset_late", "Probe advantage appears late",
                                 "probing.emotion_gap or probing.emotion.{adapted,frozen}.uar"))
    else:
        c = _late_onset("probe_onset_late", "Probe advantage appears late",
                        f"The adapted-over-frozen probe UAR gain of {t['probe_margin']:g}", gap, t["probe_margin"],
                        True, hidden_depth, late, "probing: " + how, "hidden state")
        c["band_method"] = how
        criteria.append(c)

    diag = _get(results, "similarity", "diagonal", "linear_debiased")
    cka = _curve(diag)
    if cka is None:
        criteria.append(_missing("departure_onset_late", "Departure from the frozen representation is late",
                                 "similarity.diagonal.linear_debiased"))
    else:
        method = _get(results, "similarity", "diagonal_band", "method") or \
            "percentile bootstrap with duplicated clips (older result: biased upwards)"
        c = _late_onset("departure_onset_late", "Departure from the frozen representation is late",
                        f"Debiased linear CKA(adapted, frozen) < {t['cka_threshold']:g}", cka, t["cka_threshold"],
                        False, hidden_depth, late, "similarity.diagonal.linear_debiased", "hidden state")
        c["band_method"] = method
        criteria.append(c)
    numbers = {"n_layers": n_layers, "lens": lens,
               "onset_depth": {c["criterion"]: c["value"] for c in criteria
                               if c["criterion"] != "lens_onset_vs_frozen"}}
    return _claim("delayed specialization", criteria, used, numbers)


def _later_than(adapted: tuple, frozen: tuple, thr: float, depth, lens: str, source: str) -> dict[str, Any]:
    pa, ea, ua = onset(adapted, thr, True)
    pf, ef, uf = onset(frozen, thr, True)
    inf = math.inf
    d = lambda i: inf if i is None else depth(i)  # noqa: E731
    value = None if pa is None or pf is None else d(pa) - d(pf)
    lo = -inf if uf is None else d(ea) - d(uf)  # earliest possible adapted onset minus latest frozen one
    hi = inf if ef is None else d(ua) - d(ef)   # latest adapted onset minus earliest possible frozen one
    if lo > _EPS:
        outcome, reading = SUPPORTED, (f"The adapted model's {lens} forms its prediction later than the frozen "
                                       f"model's even at the ends of both bands (by {lo:.2f} of depth at least).")
    elif hi <= _EPS:
        outcome = NOT_SUPPORTED
        reading = (f"The adapted model's {lens} forms its prediction no later than the frozen baseline's "
                   f"(onset depths {_depth_text(None if pa is None else d(pa))} vs "
                   f"{_depth_text(None if pf is None else d(pf))}): the delay is not the adaptation's.")
    else:
        outcome = INCONCLUSIVE
        reading = (f"Onset depths {_depth_text(None if pa is None else d(pa))} (adapted) vs "
                   f"{_depth_text(None if pf is None else d(pf))} (frozen); the bands allow either order.")
    band = [None if math.isinf(lo) else lo, None if math.isinf(hi) else hi]
    fmt = lambda x: "-inf" if x == -inf else ("+inf" if x == inf else f"{x:+.2f}")  # noqa: E731
    return _criterion(
        "lens_onset_vs_frozen", f"Lens onset later than the frozen baseline's ({lens})", outcome, reading,
        value=value, value_text="n/a" if value is None else f"{value:+.2f} of depth", threshold=0.0,
        threshold_text="> 0", margin=value, band=band, band_text=f"[{fmt(lo)}, {fmt(hi)}]", source=source,
        onset_adapted=pa, onset_frozen=pf,
    )


# ----------------------------------------------------------------------------- claim (ii)
def _rank_p(trained: float, null: Sequence[float | None], smaller: bool) -> tuple[float, int] | None:
    """(p, draws): (1 + #{null at least as extreme as trained}) / (draws + 1); `smaller`: extreme = null <= trained."""
    vals = [v for v in (_num(x) for x in null) if v is not None]
    if not vals:
        return None
    hits = sum((v <= trained) if smaller else (v >= trained) for v in vals)
    return (1 + hits) / (len(vals) + 1), len(vals)


def _tri_from_p(p: float, alpha: float) -> str:
    return "yes" if p <= alpha + _EPS else ("no" if p > 0.5 else "inconclusive")


def _median(vals: Sequence[Any]) -> float | None:
    v = sorted(x for x in (_num(y) for y in vals) if x is not None)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def _module_checks(trained: Mapping[str, Any], variants: Mapping[str, Any], t: Mapping[str, float]) -> dict[str, Any]:
    """Per-module yes / no / inconclusive (None: no data) for the three criteria of claim (ii), with the numbers."""
    row: dict[str, Any] = {}
    null = _get(trained, "b_null")
    k90 = _num(trained.get("b_out_k90"))
    if isinstance(null, Mapping) and k90 is not None:
        row["b_out_k90"] = k90
        row["null_b_out_k90_median"] = _median(null.get("b_out_k90") or [])
        if k90 == 0:
            row["concentration"], row["p_concentration"] = "no", None  # B writes nothing
        else:
            r = _rank_p(k90, null.get("b_out_k90") or [], smaller=True)
            row["p_concentration"] = None if r is None else r[0]
            row["concentration"] = None if r is None else _tri_from_p(r[0], t["alpha"])
        cka = _num(trained.get("cka_ab_forward_biased"))
        row["cka_ab_forward_biased"] = cka
        row["null_cka_median"] = _median(null.get("cka_ab_forward_biased") or [])
        if cka is None:
            row["alignment"], row["p_alignment"] = "no", None  # one side has no variance: nothing aligned
        else:
            r = _rank_p(cka, null.get("cka_ab_forward_biased") or [], smaller=False)
            row["p_alignment"] = None if r is None else r[0]
            row["alignment"] = None if r is None else _tri_from_p(r[0], t["alpha"])
        row["null_draws"] = _num(null.get("draws"))
    else:
        row["concentration"] = row["alignment"] = None
    g = _num(trained.get("b_grad_k90"))
    controls = {v: _num(_get(variants, v, "b_grad_k90")) for v in ("init", "random")}
    controls = {k: v for k, v in controls.items() if v is not None}
    if g is None or not controls:
        row["differentiation"] = None
    else:
        ref = max(controls.values())
        row["b_grad_k90"] = g
        row.update({f"b_grad_k90_{k}": v for k, v in controls.items()})
        row["differentiation"] = ("yes" if g > (1 + t["k90_tolerance"]) * ref + _EPS else
                                  "no" if g <= ref + _EPS else "inconclusive")
    for kind in ("a_out", "b_out"):  # reported alongside, not decided (single draws)
        for v in ("init", "random"):
            x = _num(_get(variants, v, f"{kind}_k90"))
            if x is not None:
                row[f"{kind}_k90_{v}"] = x
    if _num(trained.get("a_out_k90")) is not None:
        row["a_out_k90"] = _num(trained.get("a_out_k90"))
    return row


_II = {
    "concentration": ("forward_concentration", "Trained B output more concentrated than random B on the same inputs",
                      "have a B output more concentrated (smaller k90) than at least 95 % of random B draws"),
    "alignment": ("forward_alignment", "A and B outputs more aligned than under random B",
                  "have A-B output CKA above at least 95 % of random B draws"),
    "differentiation": ("backward_differentiation",
                        "Gradients at B spread wider than at peft's init and in the random control",
                        "have gradients at B spread over more components than both controls (beyond the tolerance)"),
}


def forward_alignment_backward_differentiation(
    results: Mapping[str, Any], thresholds: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Verdict (ii); see the module docstring."""
    t = {**THRESHOLDS, **(thresholds or {})}
    used = {k: t[k] for k in ("module_fraction", "alpha", "k90_tolerance")}
    name = "forward alignment, backward differentiation"
    modules = _get(results, "lora_internals", "modules")
    if not isinstance(modules, Mapping) or not modules:
        return _claim(name, [], used, {}, reason="missing: lora_internals.modules")
    per_module: dict[str, dict[str, Any]] = {}
    for prefix, variants in modules.items():
        trained = _get(variants, "trained")
        if isinstance(trained, Mapping):
            per_module[prefix] = _module_checks(trained, variants, t)
    f = t["module_fraction"]
    criteria = []
    for check, (key, title, what) in _II.items():
        states = [m[check] for m in per_module.values() if m.get(check) is not None]
        if not states:
            src = ("lora_internals.modules.*.trained.b_null (rerun lora_internals: older results have no null draws)"
                   if check != "differentiation" else "lora_internals.modules.*.{trained,init,random}.b_grad_k90")
            criteria.append(_missing(key, title, src))
            continue
        m = len(states)
        yes, maybe = states.count("yes"), states.count("inconclusive")
        lo, hi = yes / m, (yes + maybe) / m
        if lo >= f - _EPS:
            outcome = SUPPORTED
        elif hi < f - _EPS:
            outcome = NOT_SUPPORTED
        else:
            outcome = INCONCLUSIVE
        reading = (f"{yes} of {m} modules {what}; {maybe} undecided, {m - yes - maybe} not "
                   f"(need {f:.0%} of modules).")
        criteria.append(_criterion(
            key, title, outcome, reading, value=lo, value_text=f"{yes} of {m} modules ({lo:.0%})", threshold=f,
            threshold_text=f">= {f:.0%} of modules", margin=lo - f, band=[lo, hi], band_text=f"[{lo:.0%}, {hi:.0%}]",
            source="lora_internals.modules", n_modules=m, n_yes=yes, n_inconclusive=maybe,
        ))
    numbers = {"modules": per_module, "init_a_source": _get(results, "lora_internals", "init_a_source")}
    return _claim(name, criteria, used, numbers)


# ----------------------------------------------------------------------------- combining
def combine(outcomes: Sequence[str]) -> str:
    """A claim's outcome from its criteria's: not supported if any is, else not enough data if any input is
    missing, else inconclusive if any is, else supported (no criteria: not enough data)."""
    if not outcomes:
        return NOT_ENOUGH
    if NOT_SUPPORTED in outcomes:
        return NOT_SUPPORTED
    if NOT_ENOUGH in outcomes:
        return NOT_ENOUGH
    if INCONCLUSIVE in outcomes:
        return INCONCLUSIVE
    return SUPPORTED


def _claim(name: str, criteria: list[dict[str, Any]], thresholds: dict, numbers: dict,
           reason: str | None = None) -> dict[str, Any]:
    outcome = combine([c["outcome"] for c in criteria])
    if reason is None and outcome == NOT_ENOUGH:
        reason = "; ".join(c["reading"] for c in criteria if c["outcome"] == NOT_ENOUGH) or "no criteria"
    def margin(c: Mapping[str, Any]) -> str:
        return "n/a" if c.get("margin") is None else f"{c['margin']:+.3f}"

    parts = [f"{c['criterion']} {c['outcome']} (value {c['value_text'] or 'n/a'}, threshold "
             f"{c['threshold_text'] or 'n/a'}, margin {margin(c)}, band {c['band_text'] or 'n/a'})"
             if c["outcome"] != NOT_ENOUGH else f"{c['criterion']} {c['outcome']}" for c in criteria]
    head = outcome[0].upper() + outcome[1:]
    statement = f"{head}: " + ("; ".join(parts) if parts else reason or "") + "."
    return {"claim": name, "outcome": outcome,
            "supported": True if outcome == SUPPORTED else False if outcome == NOT_SUPPORTED else None,
            "statement": statement, "criteria": criteria, "numbers": numbers, "thresholds": thresholds,
            "reason": reason}


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

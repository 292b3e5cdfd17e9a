"""Similarity analysis: B = 0 gives diagonal CKA 1, streamed equals in-memory, frames option, plots, JSON."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
import torch

from loralens.analysis import similarity
from loralens.analysis.probing import pooled_hidden_states
from loralens.analysis.suite import ANALYSES, run_analysis
from loralens.numerics.cka import cka_matrix
from tests.analysis.helpers import tiny_context


def test_identical_models_have_unit_diagonal():
    ctx = tiny_context(b_std=0.0, n_boot=20)
    with torch.no_grad():
        r = similarity.run(ctx)
    for est in similarity.ESTIMATORS:
        assert np.allclose(r["diagonal"][est]["value"], 1.0, atol=1e-9), est
        m = np.array(r[est], dtype=float)
        assert m.shape == (3, 3)
        assert np.allclose(m, m.T, atol=1e-9)  # same model on both sides: symmetric
        # every leave-out CKA is 1 too: a zero-width jackknife band (no bootstrap duplicates to inflate anything)
        d = r["diagonal"][est]
        assert np.allclose(d["low"], 1.0, atol=1e-9) and np.allclose(d["high"], 1.0, atol=1e-9), est
        assert np.allclose(d["se"], 0.0, atol=1e-9), est
    # spectra of identical models are identical
    assert np.allclose(r["spectra"]["adapted"][1], r["spectra"]["frozen"][1])


def test_streamed_linear_equals_in_memory():
    ctx = tiny_context(b_std=3.0, n_boot=20, options={"similarity": {"frames_per_clip": 5}})
    with torch.no_grad():
        r = similarity.run(ctx)
        xa = pooled_hidden_states(ctx.adapted, ctx.test, ctx.device)
        xf = pooled_hidden_states(ctx.frozen, ctx.test, ctx.device)
    for debiased, key in ((False, "linear_biased"), (True, "linear_debiased")):
        ref = cka_matrix([x.astype(np.float64) for x in xa], [x.astype(np.float64) for x in xf], debiased=debiased)
        # pooled vectors pass through float32 in pooled_hidden_states: agreement to float32 rounding
        assert np.allclose(np.array(r[key], dtype=float), ref, atol=1e-5), key
    ref_rbf = cka_matrix([x.astype(np.float64) for x in xa], [x.astype(np.float64) for x in xf], kernel="rbf")
    assert np.allclose(np.array(r["rbf_biased"], dtype=float), ref_rbf, atol=1e-5)
    # the adapted model differs: the output diagonal is below 1
    assert r["diagonal"]["linear_debiased"]["value"][-1] < 0.9999
    for est in similarity.ESTIMATORS:
        d = r["diagonal"][est]
        assert len(d["low"]) == len(d["high"]) == len(d["se"]) == 3
        # the band is centred on the reported value (jackknife t interval), so it always holds it
        assert all(lo <= v <= hi for lo, v, hi in zip(d["low"], d["value"], d["high"])), est
    assert r["diagonal_band"]["groups"] == 12 and "jackknife" in r["diagonal_band"]["method"]  # delete-one: 12 clips
    assert r["frames_per_clip"] == 5 and r["n_frames"] == 12 * 5
    assert np.array(r["frames_linear_biased"], dtype=float).shape == (3, 3)


@pytest.mark.slow
def test_plot_and_json_roundtrip(tmp_path):
    ctx = tiny_context(n_boot=20)
    out = run_analysis(ANALYSES["similarity"], ctx, tmp_path / "sim")
    back = json.loads((tmp_path / "sim" / "result.json").read_text())
    assert back["linear_debiased"] == out["linear_debiased"]
    assert back["n_layers"] == 2 and back["layers"] == [0, 1]
    assert len(back["meta"]["figures"]) == 6
    for rel in back["meta"]["figures"]:
        if rel.endswith(".png"):
            assert matplotlib.image.imread(tmp_path / "sim" / rel).ndim == 3
    assert "Linear CKA" in back["reading"]


def test_needs_frozen():
    from loralens.errors import ConfigError

    with pytest.raises(ConfigError):
        similarity.run(tiny_context(frozen=False))

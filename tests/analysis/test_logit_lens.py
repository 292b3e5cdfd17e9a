"""Logit lens and tuned lens: exact last layer, final LN in the read-out, tuned-lens fitting known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from loralens.analysis import logit_lens as ll
from loralens.analysis.suite import ANALYSES
from loralens.errors import ConfigError
from loralens.numerics.divergence import kl_divergence
from loralens.numerics.masking import masked_mean
from tests.analysis.helpers import single_thread, tiny_classifiers, tiny_context  # noqa: F401 (single_thread: autouse fixture)


@pytest.fixture(scope="module")
def ctx():
    return tiny_context(n_layers=3)


@pytest.fixture(scope="module")
def result(ctx):
    return ll.run(ctx)


def test_last_layer_reproduces_model_logits_exactly(ctx):
    readout = ll.lens_readout(ctx.adapted, ctx.test)
    assert readout.last_layer_max_abs_diff == 0.0
    assert torch.equal(readout.lens_logits[:, -1], readout.final_logits)
    assert readout.lens_logits.shape == (12, 3, 4) and readout.pooled.shape == (12, 3, 64)
    assert torch.equal(readout.labels, ctx.test.labels)


def test_readout_applies_final_layer_norm(ctx):
    clf, batch = ctx.adapted, ctx.test.batches[0]
    readout = ll.lens_readout(clf, ctx.test)
    with torch.no_grad():
        out = clf.runner(batch.features, batch.mel_lengths, stop_after=0, final_norm=True)
        want = clf.head.classify(masked_mean(out.last_hidden_state, out.lengths))
        raw = clf.runner(batch.features, batch.mel_lengths, stop_after=0)  # without the final LN
        without_ln = clf.head.classify(masked_mean(raw.last_hidden_state, raw.lengths))
    got = readout.lens_logits[: len(batch), 0]
    assert torch.allclose(got, want, atol=1e-6)
    assert (got - without_ln).abs().max() > 1e-3  # the final LN matters


@pytest.fixture(scope="module")
def wls_ctx():
    # the package's default head: weighted sum of every hidden state, each z-scored and normalised
    return tiny_context(n_layers=3, use_weighted_layer_sum=True, head={"normalize_layers": True, "standardize": True})


def test_weighted_sum_lens_is_the_partial_sum_and_exact_at_the_last_layer(wls_ctx):
    clf = wls_ctx.adapted
    readout = ll.lens_readout(clf, wls_ctx.test)
    assert readout.last_layer_max_abs_diff == 0.0
    assert torch.equal(readout.lens_logits[:, -1], readout.final_logits)
    assert readout.lens_logits.shape == (12, 3, 4) and readout.pooled.shape == (12, 3, 64)
    # by hand for the first batch: hidden states from the plain run, z-scored, LN'd, weighted, summed up to l + 1
    batch, head = wls_ctx.test.batches[0], clf.head
    with torch.no_grad():
        out = clf.runner(batch.features, batch.mel_lengths)
        pooled = torch.stack([masked_mean(h, out.lengths) for h in out.hidden_states], dim=1)  # [4, 4, 64]
        z = (pooled - head.input_mean) / head.input_std
        v = torch.nn.functional.layer_norm(z, (64,))
        w = torch.softmax(head.layer_weights, dim=0)
        for l in range(3):
            u = sum(w[j] * v[:, j] for j in range(l + 2))
            assert torch.allclose(readout.pooled[:4, l], u, atol=1e-5), l
            assert torch.allclose(readout.lens_logits[:4, l], head.classify(u), atol=1e-5), l
    # each layer's increment is the direct contribution of its hidden state: W w_j v_j
    wmat = ll.head_matrix(clf).float()
    inc = readout.lens_logits[:4, 2] - readout.lens_logits[:4, 1]
    assert torch.allclose(inc, (w[3] * v[:, 3]) @ wmat.T, atol=1e-4)
    assert ll.readout_description(clf) == ll.READOUT_SUM


def test_weighted_sum_lens_runs_with_the_tuned_lens(wls_ctx):
    result = ll.run(wls_ctx)
    assert result["last_layer_max_abs_logit_diff"] == 0.0
    assert result["readout"] == ll.READOUT_SUM
    assert result["tuned"]["last_layer_max_abs_logit_diff"] < 1e-6  # the gap is 0 there: D = 0
    assert result["adapted"]["agreement"]["value"][-1] == 1.0


def test_fit_tuned_layer_recovers_a_linear_correction():
    gen = torch.Generator().manual_seed(0)
    n, d, c = 300, 6, 4
    u = torch.randn(n, d, generator=gen, dtype=torch.float64)
    offset = torch.randn(n, c, generator=gen, dtype=torch.float64)
    g_true = torch.randn(c, d, generator=gen, dtype=torch.float64)
    b_true = torch.randn(c, generator=gen, dtype=torch.float64)
    target = offset + u @ g_true.T + b_true
    gm, gv = ll.fit_tuned_layer(u, offset, target, torch.eye(c, dtype=torch.float64), l2=0.0)
    fitted = offset + u @ gm.T + gv
    assert float(kl_divergence(target, fitted).mean()) < 1e-8
    # logits are defined up to a constant per clip: compare centred logits
    centre = lambda x: x - x.mean(-1, keepdim=True)  # noqa: E731
    assert torch.allclose(centre(fitted), centre(target), atol=1e-3)
    # a strong ridge shrinks the correction towards the identity translator (G = 0)
    gm_big, _ = ll.fit_tuned_layer(u, offset, target, torch.eye(c, dtype=torch.float64), l2=100.0)
    assert gm_big.norm() < 0.1 * gm.norm()


def test_fit_tuned_layer_lsq_recovers_a_linear_correction():
    gen = torch.Generator().manual_seed(3)
    n, d, c = 50, 6, 4
    u = torch.randn(n, d, generator=gen, dtype=torch.float64)
    offset = torch.randn(n, c, generator=gen, dtype=torch.float64)
    g_true = torch.randn(c, d, generator=gen, dtype=torch.float64)
    g_true -= g_true.mean(0)  # logits are defined up to a per-clip constant: the identifiable part is centred
    b_true = torch.randn(c, generator=gen, dtype=torch.float64)
    b_true -= b_true.mean()
    metric = ll.translator_metric(torch.randn(c, 10, generator=gen, dtype=torch.float64))
    gm, gv = ll.fit_tuned_layer_lsq(u, offset, offset + u @ g_true.T + b_true, metric, l2=0.0)
    assert torch.allclose(gm, g_true, atol=1e-10) and torch.allclose(gv, b_true, atol=1e-10)
    gm_small, _ = ll.fit_tuned_layer_lsq(u, offset, offset + u @ g_true.T + b_true, metric, l2=10.0)
    assert gm_small.norm() < 0.5 * gm.norm()


@pytest.mark.parametrize("fit", [ll.fit_tuned_layer, ll.fit_tuned_layer_lsq])
def test_fit_tuned_layer_is_exactly_identity_when_offset_is_target(fit):
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(20, 5, generator=gen)
    logits = torch.randn(20, 3, generator=gen)
    gm, gv = fit(u, logits, logits, torch.eye(3, dtype=torch.float64), 1e-3)
    assert torch.count_nonzero(gm) == 0 and torch.count_nonzero(gv) == 0


def test_translator_metric_gives_the_smallest_translator_norm():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(4, 16, generator=gen, dtype=torch.float64)
    d0 = torch.randn(16, 16, generator=gen, dtype=torch.float64)
    g = w @ d0
    m = ll.translator_metric(w)
    min_norm_sq = torch.einsum("cd,ce,ed->", g, m, g)
    d_min = torch.linalg.pinv(w) @ g
    assert torch.allclose(w @ d_min, g, atol=1e-9)
    assert float(min_norm_sq) == pytest.approx(float(d_min.norm() ** 2), rel=1e-9)
    assert float(min_norm_sq) <= float(d0.norm() ** 2)


@pytest.mark.parametrize("objective, l2", [("lsq", 1e-4)])  # "kl" is covered on synthetic data above
def test_tuned_lens_fits_train_better_than_logit_lens(ctx, objective, l2):
    train = ll.lens_readout(ctx.adapted, ctx.train)
    lens = ll.fit_tuned_lens(ctx.adapted, train, grid=(l2,), objective=objective)
    tuned = lens.logits(train)
    for l in range(2):
        kl_lens = float(kl_divergence(train.final_logits, train.lens_logits[:, l]).mean())
        kl_tuned = float(kl_divergence(train.final_logits, tuned[:, l]).mean())
        assert kl_tuned < 0.5 * kl_lens, (l, kl_tuned, kl_lens)
    assert torch.equal(tuned[:, -1], train.final_logits.double())
    assert lens.translator_norm[-1] == 0.0 and lens.translator_norm[0] > 0
    with pytest.raises(ConfigError, match="objective"):
        ll.fit_tuned_lens(ctx.adapted, train, objective="adam")


def test_run_known_answers(result):
    assert result["layers"] == [0, 1, 2] and result["n_layers"] == 3
    assert result["last_layer_max_abs_logit_diff"] == 0.0
    for key in ("adapted", "frozen", "tuned", "tuned_frozen"):
        r = result[key]
        assert r["kl"]["value"][-1] == 0.0, key
        assert r["agreement"]["value"][-1] == 1.0, key
        for metric in ("kl", "agreement", "uar"):
            assert len(r[metric]["value"]) == 3
    assert result["tuned"]["last_layer_max_abs_logit_diff"] == 0.0
    assert result["adapted"]["uar"]["value"][-1] == pytest.approx(result["adapted"]["final_uar"]["value"])
    assert result["adapted"]["kl"]["value"][0] > 0
    assert len(result["tuned"]["l2"]) == 3 and result["tuned_fit"]["split"] == "train"


def test_run_json_plot_reading(result, tmp_path):
    assert json.loads(json.dumps(result)) == result
    paths = ll.plot(result, tmp_path)
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    from PIL import Image

    Image.open(paths[0]).verify()
    text = ll.reading(result)
    assert "layer" in text and "tuned lens" in text and "max |diff| = 0" in text
    assert ANALYSES[ll.NAME].plot is ll.plot


def test_run_without_train_or_frozen():
    ctx = tiny_context(frozen=False, train=False)
    r = ll.run(ctx)
    assert r["tuned"] is None and "frozen" not in r and "tuned_skipped" in r
    assert "max |diff| = 0" in ll.reading(r)


def test_first_layer_at_least():
    assert ll.first_layer_at_least([0.1, None, 0.8, 0.9], 0.8) == 2
    assert ll.first_layer_at_least([0.1, 0.2], 0.8) is None
    assert np.isclose(ll.depth_fraction(2, 3), 1.0)


def test_last_layer_exact_without_padding_mask(ctx):
    """The paper's full-window setting (Whisper attends to its padding): still bit-exact at the last layer."""
    adapted, _ = tiny_classifiers(n_layers=2)
    adapted.runner.mask_padding = False
    readout = ll.lens_readout(adapted, ctx.test)
    assert readout.last_layer_max_abs_diff == 0.0

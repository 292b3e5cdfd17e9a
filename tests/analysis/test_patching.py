"""Activation patching: last layer / every layer reproduce the source, no patch is the corrupted run, the cached
restart equals a from-scratch patch, the recovered fraction's arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from loralens.analysis import patching as pt
from loralens.analysis.suite import ANALYSES
from loralens.errors import ConfigError
from tests.analysis.helpers import single_thread, tiny_classifiers, tiny_context  # noqa: F401 (single_thread: autouse fixture)


@pytest.fixture(scope="module")
def ctx():
    return tiny_context(n_layers=3)


@pytest.fixture(scope="module")
def logits(ctx):
    return pt.patching_logits(ctx.adapted, ctx.frozen, ctx.test)


def test_last_layer_patch_reproduces_source_exactly(logits):
    assert logits.patched.shape == (12, 3, 4)
    assert torch.equal(logits.patched[:, -1], logits.clean)
    assert (logits.clean - logits.corrupt).abs().max() > 1e-3  # the two encoders differ


def test_patch_every_layer_reproduces_source_and_none_the_corrupted_run(ctx, logits):
    b = ctx.test.batches[0]
    every = pt.patch_run(ctx.adapted, ctx.frozen, b.features, b.mel_lengths, range(3))
    assert torch.allclose(every, logits.clean[:4], atol=1e-6)
    none = pt.patch_run(ctx.adapted, ctx.frozen, b.features, b.mel_lengths, [])
    assert torch.allclose(none, logits.corrupt[:4], atol=1e-6)


def test_cached_restart_equals_from_scratch_patch(ctx, logits):
    b = ctx.test.batches[1]
    for l in range(3):
        scratch = pt.patch_run(ctx.adapted, ctx.frozen, b.features, b.mel_lengths, [l])
        assert torch.allclose(logits.patched[4:8, l], scratch, atol=1e-6), l
    reverse = pt.patching_logits(ctx.frozen, ctx.adapted, ctx.test)
    scratch = pt.patch_run(ctx.frozen, ctx.adapted, b.features, b.mel_lengths, [0])
    assert torch.allclose(reverse.patched[4:8, 0], scratch, atol=1e-6)
    assert torch.equal(reverse.patched[:, -1], reverse.clean)


def test_logit_diff_and_recovered_fraction_known_values():
    z = torch.tensor([[3.0, 1.0, 2.0], [0.0, 0.0, 6.0]])
    y = torch.tensor([0, 1])
    assert pt.logit_diff(z, y).tolist() == [1.5, -3.0]
    assert pt.logit_diff(torch.stack([z, 2 * z], dim=1), y).tolist() == [[1.5, 3.0], [-3.0, -6.0]]
    clean, corrupt = np.array([2.0, 4.0]), np.array([0.0, 0.0])
    patched = np.array([[0.0, 1.0, 2.0], [0.0, 2.0, 4.0]])  # means 0, 1.5, 3 over clean mean 3
    c = pt.recovered_fraction(patched, clean, corrupt, n_boot=20, seed=0)
    assert c["value"] == pytest.approx([0.0, 0.5, 1.0])
    assert c["low"][0] == c["high"][0] == 0.0 and c["low"][2] == c["high"][2] == 1.0
    # a zero denominator gives no value instead of an infinite one
    nan = pt.recovered_fraction(patched, corrupt, corrupt, n_boot=5, seed=0)
    assert nan["value"] == [None, None, None]


def test_run_known_answers_json_plot_reading(ctx, tmp_path):
    result = pt.run(ctx)
    assert result["layers"] == [0, 1, 2] and result["n_layers"] == 3
    for key in ("adapted_to_frozen", "frozen_to_adapted"):
        r = result[key]
        assert r["recovered_logit_diff"]["value"][-1] == pytest.approx(1.0, abs=1e-12)
        assert r["last_layer_max_abs_logit_diff"] == 0.0
        assert r["uar"]["value"][-1] == r["clean_uar"]["value"]
        assert len(r["uar"]["value"]) == len(r["logit_diff"]["value"]) == 3
    assert json.loads(json.dumps(result)) == result
    paths = pt.plot(result, tmp_path)
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    from PIL import Image

    Image.open(paths[0]).verify()
    text = pt.reading(result)
    assert "logit difference" in text and "reverse direction" in text
    assert ANALYSES[pt.NAME].needs_frozen


def test_needs_frozen():
    with pytest.raises(ConfigError, match="frozen baseline"):
        pt.run(tiny_context(frozen=False, train=False))


def test_weighted_sum_head_reads_the_source_up_to_the_patch():
    """The default head (weighted sum of every hidden state, z-scored, normalised): the patched read-out takes the
    source's hidden states up to the patch and the destination's continuation after it; the last layer (and every
    layer) gives the clean run, no layer the corrupted one."""
    ctx = tiny_context(n_layers=3, train=False, use_weighted_layer_sum=True,
                       head={"normalize_layers": True, "standardize": True})
    got = pt.patching_logits(ctx.adapted, ctx.frozen, ctx.test)
    assert torch.equal(got.patched[:, -1], got.clean)
    assert (got.clean - got.corrupt).abs().max() > 1e-3
    b = ctx.test.batches[0]
    with torch.no_grad():
        names = [f"blocks.{l}.hook_resid_post" for l in range(3)]
        src = ctx.adapted.runner(b.features, b.mel_lengths, capture=names)
        for l in range(3):
            scratch = pt.patch_run(ctx.adapted, ctx.frozen, b.features, b.mel_lengths, [l])
            assert torch.allclose(got.patched[:4, l], scratch, atol=1e-5), l
            # by hand: the destination from the source's resid_post of layer l, the source's states before it
            rest = ctx.frozen.runner(None, b.mel_lengths, start_at=(l, src.captured[names[l]]),
                                     skip_layers=[l])
            states = src.hidden_states[: l + 1] + rest.hidden_states[1:]
            want = ctx.adapted.head(states, src.lengths)
            assert torch.allclose(got.patched[:4, l], want, atol=1e-5), l
        every = pt.patch_run(ctx.adapted, ctx.frozen, b.features, b.mel_lengths, range(3))
        none = pt.patch_run(ctx.adapted, ctx.frozen, b.features, b.mel_lengths, [])
    assert torch.allclose(every, got.clean[:4], atol=1e-6)
    assert torch.allclose(none, got.corrupt[:4], atol=1e-6)
    result = pt.run(ctx)
    assert result["adapted_to_frozen"]["recovered_logit_diff"]["value"][-1] == pytest.approx(1.0)


def test_both_directions_at_once_equal_each_direction_alone(ctx):
    """The suite patches both directions in one loop (each model's full run serves both): the same logits, exactly."""
    models = {"adapted": ctx.adapted, "frozen": ctx.frozen}
    both = pt.patching_logits_directions(models, pt.DIRECTIONS, ctx.test)
    for key, (src, dst) in pt.DIRECTIONS.items():
        alone = pt.patching_logits(models[src], models[dst], ctx.test)
        for field in ("clean", "corrupt", "patched", "labels"):
            assert torch.equal(getattr(both[key], field), getattr(alone, field)), (key, field)

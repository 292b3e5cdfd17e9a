"""Known answers for the logit-lens divergence helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from loralens.numerics.divergence import kl_divergence, lens_summary, top1_agreement
from loralens.numerics.inputs import AnalysisInputError


def test_kl_of_identical_logits_is_exactly_zero() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 3, 8)) * np.array([1.0, 1e2, 1e4])[None, :, None]
    kl = kl_divergence(logits, logits.copy())
    assert kl.shape == (5, 3)
    assert bool((kl == 0.0).all())
    assert float(kl_divergence(logits, logits + 7.0).abs().max()) < 1e-12


def test_hand_computed_two_class_kl() -> None:
    # p_final = (1/2, 1/2), p_layer = softmax(ln 3, 0) = (3/4, 1/4):
    # KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    kl = kl_divergence(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64))
    assert float(kl[0]) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-15)


def test_kl_matches_torch_and_is_stable_for_huge_logits() -> None:
    rng = np.random.default_rng(1)
    f, l = torch.from_numpy(rng.normal(size=(20, 6))), torch.from_numpy(rng.normal(size=(20, 6)) * 3)
    ref = torch.nn.functional.kl_div(
        torch.log_softmax(l, -1), torch.log_softmax(f, -1), log_target=True, reduction="none"
    ).sum(-1)
    torch.testing.assert_close(kl_divergence(f, l), ref)
    # p_final ~ (1, e^-1000), log p_layer(0) ~ -1000: KL ~ 1000 nats, finite, no NaN
    huge = kl_divergence(torch.tensor([[1000.0, 0.0]], dtype=torch.float32), torch.tensor([[0.0, 1000.0]]))
    assert float(huge[0]) == pytest.approx(1000.0, rel=1e-12)


def test_top1_agreement_and_summary() -> None:
    final = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    layer = torch.tensor([[5.0, 1.0, 0.0], [3.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert top1_agreement(final, layer).tolist() == [True, False, True, True]
    s = lens_summary(final, layer)
    assert s.agreement == 0.75
    assert s.mean_kl == pytest.approx(float(kl_divergence(final, layer).mean()))
    assert lens_summary(final, final) == (0.0, 1.0)
    with pytest.raises(AnalysisInputError, match="same shape"):
        kl_divergence(final, layer[:, :2])

"""Agreement between a layer's read-out and the final prediction (logit lens).

Logits are `[..., n_classes]` (e.g. `[n_clips, n_classes]`, or `[n_clips, frames, n_classes]` with the
caller selecting valid frames); every leading position is one example. Probabilities come from a
float64 log-softmax (log-sum-exp with the max subtracted), so large logits neither overflow nor
underflow to log 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from loralens.numerics.arrays import ArrayLike, as_f64
from loralens.numerics.inputs import AnalysisInputError


def _pair(final_logits: ArrayLike, layer_logits: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    f, l = as_f64(final_logits, "final_logits"), as_f64(layer_logits, "layer_logits")
    if f.shape != l.shape or f.ndim == 0:
        raise AnalysisInputError(
            f"final_logits {tuple(f.shape)} and layer_logits {tuple(l.shape)} must have the same shape [..., n_classes]"
        )
    return f, l.to(f.device)


def kl_divergence(final_logits: ArrayLike, layer_logits: ArrayLike) -> torch.Tensor:
    """KL(p_final || p_layer) = sum_c p_final(c) (log p_final(c) - log p_layer(c)) in nats, per example `[...]`.

    Exactly 0 for identical logits; 0 up to rounding for logits differing by a constant per example.
    """
    f, l = _pair(final_logits, layer_logits)
    log_pf = torch.log_softmax(f, dim=-1)
    log_pl = torch.log_softmax(l, dim=-1)
    # Clamp tiny negative rounding; KL is >= 0.
    return (log_pf.exp() * (log_pf - log_pl)).sum(dim=-1).clamp_min(0.0)


def top1_agreement(final_logits: ArrayLike, layer_logits: ArrayLike) -> torch.Tensor:
    """Whether the arg-max class of the layer equals the final arg-max, per example `[...]` (bool)."""
    f, l = _pair(final_logits, layer_logits)
    return f.argmax(dim=-1) == l.argmax(dim=-1)


class LensSummary(NamedTuple):
    """Mean KL(p_final || p_layer) in nats and the share of examples whose top-1 class agrees."""

    mean_kl: float
    agreement: float


def lens_summary(final_logits: ArrayLike, layer_logits: ArrayLike) -> LensSummary:
    """Mean of `kl_divergence` and of `top1_agreement` over all examples."""
    kl = kl_divergence(final_logits, layer_logits)
    agree = top1_agreement(final_logits, layer_logits)
    return LensSummary(float(kl.mean()), float(agree.double().mean()))

"""LP-FT's head stage as a real linear probe (`lp_fit: logistic`): the head set to an L2-regularised multinomial
logistic regression fitted on the frozen encoder's pooled outputs.

The head is affine (`classifier(projector(x))`, no non-linearity in between), so a linear classifier `W x + b` with
`n_classes` rows is exactly a head whose projector's first `n_classes` rows are `W, b` and whose classifier picks
them (identity on those units, zero elsewhere). The other projector units keep their random initialisation, and the
classifier's zero columns on them get gradients at once, so the fine-tuning stage can still use the full width.

Why not the gradient-trained head (`lp_ft_epochs`): 20-30 epochs of AdamW on ~1,000 clips, selected on two
validation speakers, land well short of the convex optimum the probe reaches (on the synthetic corpus's hidden
state 1: 0.84 against the probe's 0.89 test UAR, docs/results.md 6g); the fit here is deterministic, takes
seconds, and needs no validation selection.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from loralens.errors import ConfigError

#: inverse L2 strength of the probe (scikit-learn's C; the default of `bench/recipes.py`'s probes)
PROBE_C = 1.0


def fit_logistic(x: np.ndarray, y: Sequence[int], n_classes: int, *, c: float = PROBE_C, seed: int = 0,
                 max_iter: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(W `[n_classes, d]`, b `[n_classes]`) of a standardised, class-balanced multinomial logistic regression of
    labels `y` on features `x` `[n, d]`, with the standardisation folded in, so that `x @ W.T + b` are its
    log-odds (its predicted class is their argmax; its probabilities their softmax). Classes absent from `y` get
    weights 0 and bias -inf-like (-1e4): never predicted."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if x.ndim != 2 or len(x) != len(y):
        raise ConfigError(f"logistic head: features {x.shape} and {len(y)} labels do not match")
    present = np.unique(y)
    if len(present) < 2:
        raise ConfigError(f"logistic head: the training clips hold {len(present)} class(es); a classifier needs 2",
                          "check the fold's training split and the label set")
    mu, sd = x.mean(0), x.std(0)
    sd[sd == 0] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr = LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter, random_state=seed)
        lr.fit((x - mu) / sd, y)
    coef, icpt = lr.coef_, lr.intercept_
    if len(present) == 2:  # scikit-learn keeps one row for two classes: log-odds of the second against the first
        coef = np.stack([np.zeros_like(coef[0]), coef[0]])
        icpt = np.array([0.0, icpt[0]])
    w = coef / sd
    b = icpt - w @ mu
    W = np.zeros((n_classes, x.shape[1]))
    B = np.full(n_classes, -1e4)
    W[present], B[present] = w, b
    return W, B


@torch.no_grad()
def set_linear_head(head, weight: Tensor | np.ndarray, bias: Tensor | np.ndarray) -> None:
    """Make `head` (a `ClassificationHead`) compute `weight @ x + bias` from its pooled input x (after its
    z-scoring and layer weighting): projector rows 0..n_classes-1 = (weight, bias), classifier = identity on those
    rows and zero on the rest."""
    weight, bias = torch.as_tensor(weight), torch.as_tensor(bias)
    n, d = head.classifier.out_features, head.projector.in_features
    if tuple(weight.shape) != (n, d) or tuple(bias.shape) != (n,):
        raise ConfigError(f"linear head of shape {tuple(weight.shape)} / {tuple(bias.shape)} for a head of {n} "
                          f"classes on {d} features")
    if head.projector.out_features < n:
        raise ConfigError(f"head.projector_dim={head.projector.out_features} is below the {n} classes: the head "
                          "cannot hold a linear probe", "set head.projector_dim >= the number of classes")
    dtype = head.projector.weight.dtype
    head.projector.weight[:n] = weight.to(dtype)
    head.projector.bias[:n] = bias.to(dtype)
    head.classifier.weight.zero_()
    head.classifier.weight[:, :n] = torch.eye(n, dtype=dtype)
    head.classifier.bias.zero_()


@torch.no_grad()
def head_inputs(model, pooled: Tensor, ids: Sequence[str], batch_size: int = 256) -> Tensor:
    """The head's input `[clips, d_model]` (pooled vectors after z-scoring and layer weighting) for per-layer
    pooled outputs `pooled` `[clips, n_hidden_states, d_model]` of clips `ids`; `model` is a `PooledHead`."""
    out = []
    for s in range(0, len(ids), batch_size):
        model.select_clips(ids[s: s + batch_size])
        out.append(model.head.combine_layers(pooled[s: s + batch_size].float()))
    return torch.cat(out) if out else pooled.new_zeros((0, pooled.shape[-1]))


def fit_logistic_head(model, pooled: Tensor, ids: Sequence[str], labels: Sequence[int], *, c: float = PROBE_C,
                      seed: int = 0) -> None:
    """Set `model.head` (`model` a `PooledHead`) to the logistic regression of `labels` on its own inputs for the
    clips `ids` (per-layer pooled frozen outputs `pooled` `[clips, n_hidden_states, d_model]`)."""
    x = head_inputs(model, pooled, ids).double().numpy()
    weight, bias = fit_logistic(x, labels, model.head.n_classes, c=c, seed=seed)
    set_linear_head(model.head, weight, bias)

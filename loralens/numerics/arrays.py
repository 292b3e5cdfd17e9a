"""Arrays as the numerics take them: numpy or torch in, float64 torch tensors with checked shape and values."""

from __future__ import annotations

import numpy as np
import torch

from loralens.numerics.inputs import AnalysisInputError

ArrayLike = torch.Tensor | np.ndarray


def as_f64(x: ArrayLike, name: str = "x", ndim: int | None = None) -> torch.Tensor:
    """`x` as a float64 torch tensor on its own device (numpy goes to the CPU); checks `ndim` and finiteness."""
    t = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
    if t.dtype != torch.float64:
        t = t.to(torch.float64)
    if ndim is not None and t.ndim != ndim:
        raise AnalysisInputError(
            f"{name} has shape {tuple(t.shape)}, expected {ndim} dimensions",
            hint="pass a features matrix [n_examples, dim] (flatten valid frames with valid_frames)"
            if ndim == 2
            else None,
        )
    if not bool(torch.isfinite(t).all()):
        raise AnalysisInputError(f"{name} holds NaN or infinite values", hint="check the captured activations")
    return t

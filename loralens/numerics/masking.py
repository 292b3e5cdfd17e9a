"""Valid frames of padded activations: masks, the valid frames themselves, and the one masked mean.

Encoder activations come as `[batch, frames, d]` with valid lengths `[batch]` in encoder frames (the runner's
`RunnerOutput.lengths`); frames beyond a row's length are padding and never enter a result, whatever their values
(NaN and inf included).
"""

from __future__ import annotations

import torch

from loralens.errors import ConfigError
from loralens.numerics.arrays import ArrayLike
from loralens.numerics.inputs import AnalysisInputError


class LengthsError(AnalysisInputError, ConfigError):
    """Activations and their valid lengths do not fit together: wrong shapes, or lengths outside the frames.

    Both an `AnalysisInputError` (bad arrays given to a numerics routine) and a `ConfigError` (what the
    classification head has always raised for them)."""


def check_lengths(x: torch.Tensor, lengths: ArrayLike) -> torch.Tensor:
    """`lengths` as int64 on x's device, after checking `x [batch, frames, d]` and `lengths [batch]` in
    0..frames; raises `LengthsError` otherwise."""
    if x.ndim != 3:
        raise LengthsError(f"x has shape {tuple(x.shape)}, expected [batch, frames, dim]")
    lt = torch.as_tensor(lengths, device=x.device).long()
    if lt.shape != (x.shape[0],):
        raise LengthsError(f"lengths has shape {tuple(lt.shape)}, expected [{x.shape[0]}] (one per batch row)")
    if bool((lt < 0).any()) or bool((lt > x.shape[1]).any()):
        raise LengthsError(
            f"lengths {lt.tolist()} out of range 0..{x.shape[1]} frames",
            hint="pass encoder-frame lengths (RunnerOutput.lengths)",
        )
    return lt


def frame_mask(lengths: ArrayLike, frames: int) -> torch.Tensor:
    """Boolean mask `[batch, frames]`, True on the first `lengths[b]` frames of row b."""
    lt = torch.as_tensor(lengths).long()
    return torch.arange(frames, device=lt.device)[None, :] < lt[:, None]


def valid_frames(x: torch.Tensor, lengths: ArrayLike) -> torch.Tensor:
    """The valid frames of `x [batch, frames, d]` stacked row by row: `[sum(lengths), d]`, same dtype."""
    lt = check_lengths(x, lengths)
    return x[frame_mask(lt, x.shape[1])]


def masked_mean(x: torch.Tensor, lengths: ArrayLike | None, *, batched: bool = False) -> torch.Tensor:
    """Mean over the valid frames of each row: `x [batch, frames, d]`, `lengths [batch]` -> `[batch, d]`.

    `lengths` None: every frame is valid. Frames beyond a row's length never enter, whatever their values: NaN
    and inf padding give the same result, bit for bit, as any other padding (the known answers in
    tests/numerics/test_masking.py). Lengths must lie in 1..frames (`LengthsError` otherwise: a row without a
    valid frame has no mean).

    Two summation orders, equal in what they include and differing only in rounding; each caller keeps the one
    its numbers have always had:

    - `batched=False` (the classification head, hence training, inference and export): each row's valid slice
      is averaged on its own, `x[b, :n].mean(0)` in x's dtype, so a clip's pooled vector does not depend on the
      batch it is in or on its padding.
    - `batched=True` (the analyses' pooled activations): one batched sum over frames with padding set to zero,
      divided by the lengths; sums in at least float32 (half inputs lose precision otherwise), returned in x's
      dtype.
    """
    if lengths is None:
        if x.ndim != 3:
            raise LengthsError(f"x has shape {tuple(x.shape)}, expected [batch, frames, dim]")
        if not batched:
            return torch.stack([x[b].mean(dim=0) for b in range(x.shape[0])])
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
    lt = check_lengths(x, lengths)
    if bool((lt == 0).any()):
        raise LengthsError(f"masked_mean: a row has no valid frame (lengths {lt.tolist()})",
                           hint="every clip has at least one valid frame; pass encoder-frame lengths")
    if not batched:
        return torch.stack([x[b, : int(n)].mean(dim=0) for b, n in enumerate(lt.tolist())])
    acc = x if x.dtype in (torch.float32, torch.float64) else x.float()
    valid = frame_mask(lt, x.shape[1])
    # torch.where, not a product with the mask: 0 * NaN is NaN, so a product would let NaN padding leak
    kept = torch.where(valid[:, :, None], acc, torch.zeros((), dtype=acc.dtype, device=acc.device))
    out = torch.einsum("btd,bt->bd", kept, valid.to(acc.dtype)) / lt.to(acc.dtype)[:, None]
    return out.to(x.dtype)

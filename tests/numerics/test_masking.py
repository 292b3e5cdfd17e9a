"""Valid-frame masks and the one masked mean: known answers, both summation orders, padding (NaN too) never enters."""

from __future__ import annotations

import pytest
import torch

from loralens.errors import ConfigError
from loralens.numerics.inputs import AnalysisInputError
from loralens.numerics.masking import frame_mask, masked_mean, valid_frames


def test_masked_mean_known_answer():
    hidden = torch.tensor([[[1.0, 10.0], [3.0, 30.0], [100.0, 100.0]], [[2.0, 4.0], [4.0, 8.0], [6.0, 12.0]]])
    assert masked_mean(hidden, torch.tensor([2, 3])).tolist() == [[2.0, 20.0], [4.0, 8.0]]
    assert masked_mean(hidden, None).tolist() == masked_mean(hidden, torch.tensor([3, 3])).tolist()
    with pytest.raises(ConfigError, match="lengths"):
        masked_mean(hidden, torch.tensor([0, 3]))
    with pytest.raises(ConfigError, match="lengths"):
        masked_mean(hidden, torch.tensor([4, 3]))


def test_masked_mean_and_valid_frames_by_hand() -> None:
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [99.0, 99.0]], [[5.0, 6.0], [99.0, 99.0], [99.0, 99.0]]])
    lengths = torch.tensor([2, 1])
    assert frame_mask(lengths, 3).tolist() == [[True, True, False], [True, False, False]]
    assert masked_mean(x, lengths).tolist() == [[2.0, 3.0], [5.0, 6.0]]
    assert valid_frames(x, lengths).tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    half = masked_mean(x.half(), lengths)
    assert half.dtype == torch.float16 and half.tolist() == [[2.0, 3.0], [5.0, 6.0]]
    with pytest.raises(AnalysisInputError, match="no valid frame"):
        masked_mean(x, torch.tensor([2, 0]))
    with pytest.raises(AnalysisInputError, match="out of range"):
        valid_frames(x, torch.tensor([4, 1]))
    with pytest.raises(AnalysisInputError, match="one per batch row"):
        valid_frames(x, torch.tensor([1]))


@pytest.mark.parametrize("batched", [False, True])
def test_both_summation_orders_give_the_known_answers(batched: bool) -> None:
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [99.0, 99.0]], [[5.0, 6.0], [99.0, 99.0], [99.0, 99.0]]])
    lengths = torch.tensor([2, 1])
    assert masked_mean(x, lengths, batched=batched).tolist() == [[2.0, 3.0], [5.0, 6.0]]
    assert torch.allclose(masked_mean(x, None, batched=batched), torch.tensor([[103 / 3, 35.0], [203 / 3, 68.0]]))
    half = masked_mean(x.half(), lengths, batched=batched)
    assert half.dtype == torch.float16 and half.tolist() == [[2.0, 3.0], [5.0, 6.0]]
    with pytest.raises(ConfigError, match="no valid frame"):
        masked_mean(x, torch.tensor([2, 0]), batched=batched)


@pytest.mark.parametrize("batched", [False, True])
def test_nan_and_inf_padding_never_enter(batched: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 9, 4)
    lengths = torch.tensor([9, 2, 5])
    poisoned = x.clone()
    poisoned[1, 2:] = float("nan")
    poisoned[2, 5:] = float("inf")
    poisoned[2, 7:] = float("-inf")
    clean = x.clone()
    clean[1, 2:] = 0.0
    clean[2, 5:] = 0.0
    got = masked_mean(poisoned, lengths, batched=batched)
    assert torch.isfinite(got).all()
    assert torch.equal(got, masked_mean(clean, lengths, batched=batched))  # bit for bit
    # the known answer: row 1 is the mean of its two valid frames
    assert torch.allclose(got[1], x[1, :2].mean(dim=0))


def test_batched_order_keeps_the_analyses_arithmetic_on_finite_values() -> None:
    # the pooled activations of probing, CKA and LoRA internals have always been a masked einsum over frames
    # divided by the lengths; zeroing the padding first (so NaN cannot leak) leaves finite results unchanged
    torch.manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(4, 57, 16, dtype=dtype) * 3 + 1
        lengths = torch.tensor([57, 3, 30, 12])
        mask = frame_mask(lengths, 57).to(dtype)
        want = torch.einsum("btd,bt->bd", x, mask) / lengths.to(dtype)[:, None]
        assert torch.equal(masked_mean(x, lengths, batched=True), want)


def test_per_row_order_is_the_heads_and_independent_of_the_batch() -> None:
    torch.manual_seed(2)
    x = torch.randn(3, 40, 8)
    lengths = torch.tensor([40, 11, 29])
    pooled = masked_mean(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(pooled[b], x[b, :n].mean(dim=0))
        assert torch.equal(pooled[b], masked_mean(x[b : b + 1, :n], None)[0])


def test_length_errors_are_analysis_input_and_config_errors() -> None:
    x = torch.zeros(2, 3, 1)
    for bad in (torch.tensor([1]), torch.tensor([4, 1]), torch.tensor([-1, 1])):
        with pytest.raises(AnalysisInputError) as info:
            valid_frames(x, bad)
        assert isinstance(info.value, ConfigError)
    with pytest.raises(ConfigError, match="expected \\[batch, frames, dim\\]"):
        masked_mean(torch.zeros(2, 3), None)

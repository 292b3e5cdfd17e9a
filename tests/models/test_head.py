"""Masked mean pooling, layer weighting and head compatibility with WhisperForAudioClassification."""

from __future__ import annotations

import pytest
import torch
from transformers import WhisperForAudioClassification

from loralens.errors import ConfigError
from loralens.models.head import ClassificationHead
from loralens.numerics.masking import masked_mean

from ..conftest import tiny_whisper_config


def test_appended_frames_change_nothing_exactly():
    torch.manual_seed(0)
    hidden = torch.randn(3, 50, 64)
    lengths = torch.tensor([50, 17, 33])
    garbage = torch.full((3, 25, 64), float("nan"))
    garbage[1] = float("inf")
    longer = torch.cat([hidden, garbage], dim=1)
    assert torch.equal(masked_mean(hidden, lengths), masked_mean(longer, lengths))
    head = ClassificationHead(64, 4, use_weighted_layer_sum=True, n_hidden_states=2)
    short_logits = head([hidden, 2 * hidden], lengths)
    long_logits = head([longer, 2 * longer], lengths)
    assert torch.equal(short_logits, long_logits) and torch.isfinite(long_logits).all()


def test_weighted_layer_sum_known_answer():
    head = ClassificationHead(2, 3, proj_size=4, use_weighted_layer_sum=True, n_hidden_states=2)
    assert torch.equal(head.layer_weights.detach(), torch.tensor([0.5, 0.5]))
    with torch.no_grad():
        head.layer_weights.copy_(torch.tensor([0.0, torch.log(torch.tensor(3.0))]))  # softmax = [0.25, 0.75]
    h0 = torch.tensor([[[4.0, 8.0], [0.0, 0.0]]])
    h1 = torch.tensor([[[0.0, 4.0], [8.0, 4.0]]])
    pooled = head.pool([h0, h1], torch.tensor([2]))
    torch.testing.assert_close(pooled, torch.tensor([[0.25 * 2 + 0.75 * 4, 0.25 * 4 + 0.75 * 4]]))
    with pytest.raises(ConfigError, match="2 hidden states"):
        head.pool(h0, None)


def test_normalized_layers_known_answer_and_invariance():
    head = ClassificationHead(2, 3, proj_size=4, use_weighted_layer_sum=True, n_hidden_states=2, normalize_layers=True)
    with torch.no_grad():
        head.layer_weights.copy_(torch.tensor([0.0, torch.log(torch.tensor(3.0))]))  # softmax = [0.25, 0.75]
    # pooled layer vectors [2, 4] and [1, 9]: each becomes [-1, 1] after a LayerNorm over 2 features (up to eps)
    h0 = torch.tensor([[[2.0, 4.0]]])
    h1 = torch.tensor([[[1.0, 9.0]]])
    torch.testing.assert_close(head.pool([h0, h1]), torch.tensor([[-1.0, 1.0]]), atol=1e-4, rtol=0)
    # invariance: each layer shifted and scaled by its own constants changes nothing
    torch.manual_seed(0)
    big = ClassificationHead(64, 4, use_weighted_layer_sum=True, n_hidden_states=3, normalize_layers=True)
    hidden = [torch.randn(2, 9, 64) for _ in range(3)]
    moved = [7.0 * hidden[0] + 3.0, 0.5 * hidden[1] - 5.0, hidden[2]]  # scales well above LayerNorm eps
    torch.testing.assert_close(big(hidden), big(moved), atol=1e-4, rtol=1e-4)
    plain = ClassificationHead(64, 4, use_weighted_layer_sum=True, n_hidden_states=3)
    plain.load_state_dict(big.state_dict())  # no extra parameters: the same state dict serves both
    assert not torch.allclose(plain(hidden), plain(moved), atol=1e-2)


def test_normalized_layers_needs_weighted_sum():
    with pytest.raises(ConfigError, match="weighted layer sum"):
        ClassificationHead(8, 3, normalize_layers=True)


@pytest.mark.parametrize("weighted", [False, True])
def test_head_matches_whisper_for_audio_classification(weighted):
    config = tiny_whisper_config(num_labels=5, use_weighted_layer_sum=weighted, classifier_proj_size=32)
    torch.manual_seed(0)
    hf = WhisperForAudioClassification(config).eval()
    head = ClassificationHead(64, 5, proj_size=32, use_weighted_layer_sum=weighted, n_hidden_states=3)
    hf_head_keys = {k for k in hf.state_dict() if not k.startswith("encoder.")}
    assert set(head.state_dict()) == hf_head_keys
    head.load_state_dict({k: hf.state_dict()[k] for k in hf_head_keys})
    if weighted:
        with torch.no_grad():
            hf.layer_weights.copy_(torch.tensor([0.2, -0.4, 1.0]))
            head.layer_weights.copy_(hf.layer_weights)
    hidden = [torch.randn(2, 40, 64) for _ in range(3)]
    with torch.no_grad():
        ref = hf(encoder_outputs=(hidden[-1], tuple(hidden))).logits
        ours = head(hidden if weighted else hidden[-1])
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_standardize_z_scores_with_fixed_training_statistics():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(50, 3, 8, generator=g) * torch.tensor([1.0, 10.0, 100.0])[None, :, None] + 5.0
    single = ClassificationHead(8, 3, proj_size=4, standardize=True)
    assert torch.equal(single.combine_layers(train), train[:, -1])  # identity statistics until they are set
    single.set_standardization(train)
    z = single.combine_layers(train)
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-5) and torch.allclose(z.std(0), torch.ones(8), atol=1e-4)
    # fixed: a batch of one clip is z-scored with the training statistics, not its own
    assert torch.allclose(single.combine_layers(train[:1]), z[:1])
    assert set(single.state_dict()) >= {"input_mean", "input_std"}
    wls = ClassificationHead(8, 3, proj_size=4, use_weighted_layer_sum=True, n_hidden_states=3, standardize=True)
    wls.set_standardization(train)
    assert torch.allclose(wls.input_std[:, 0], train.std(0)[:, 0] + 1e-5)  # per hidden state
    # the same weights on the pooled path (masked mean of frames) and on per-layer pooled vectors
    frames = train[:4, -1][:, None, :].expand(4, 5, 8)
    assert torch.allclose(single(frames), single.classify(z[:4]), atol=1e-5)
    with pytest.raises(ConfigError, match="standardize=True"):
        ClassificationHead(8, 3).set_standardization(train)
    with pytest.raises(ConfigError, match="clips >= 2"):
        single.set_standardization(train[:1])


def test_partial_weighted_sums_build_up_to_the_heads_input_exactly():
    torch.manual_seed(3)
    head = ClassificationHead(6, 3, proj_size=4, use_weighted_layer_sum=True, n_hidden_states=4,
                              normalize_layers=True, standardize=True)
    with torch.no_grad():
        head.layer_weights.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    pooled = torch.randn(5, 4, 6) * 3 + 1
    head.set_standardization(pooled)
    v = head.layer_vectors(pooled)
    z = (pooled - pooled.mean(0)) / (pooled.std(0) + 1e-5)
    assert torch.allclose(v, torch.nn.functional.layer_norm(z, (6,)), atol=1e-6)
    assert torch.equal(head.weighted_sum(v, upto=4), head.combine_layers(pooled))  # bit for bit
    w = torch.softmax(head.layer_weights, 0)
    for n in range(1, 4):  # hidden states 0..n-1, the weights not renormalised
        assert torch.allclose(head.weighted_sum(v, upto=n), sum(w[j] * v[:, j] for j in range(n)), atol=1e-6)
    with pytest.raises(ConfigError, match="weighted-layer-sum"):
        ClassificationHead(6, 3).layer_vectors(pooled)

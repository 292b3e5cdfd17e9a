"""Per-speaker normalisation of the head's input: the statistics (known answers, invariances, bad input), the head
that reads them, and their file round trip."""

from __future__ import annotations

import pytest
import torch

from loralens.errors import ConfigError, RunFolderError
from loralens.models.head import ClassificationHead
from loralens.models.speaker_stats import SpeakerStatistics, select_clips


def _pooled(n_speakers: int = 3, per: int = 5, layers: int = 4, d: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pooled, speaker_of = {}, {}
    for s in range(n_speakers):
        for c in range(per):
            pooled[f"s{s}c{c}"] = torch.randn(layers, d, generator=g) * (s + 1) + 10 * s
            speaker_of[f"s{s}c{c}"] = f"spk{s}"
    return pooled, speaker_of


def test_statistics_known_answer_by_hand():
    pooled = {"a": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([[3.0, 6.0]]), "c": torch.tensor([[5.0, 5.0]]),
              "d": torch.tensor([[7.0, 5.0]])}
    stats = SpeakerStatistics.from_pooled(pooled, {"a": "x", "b": "x", "c": "y", "d": "y"}, eps=0.0)
    # speaker x: mean (2, 4), unbiased std (sqrt 2, sqrt 8); speaker y: mean (6, 5), std (sqrt 2, 0)
    assert torch.allclose(stats.mean["x"], torch.tensor([[2.0, 4.0]]))
    assert torch.allclose(stats.std["x"], torch.tensor([[2.0 ** 0.5, 8.0 ** 0.5]]))
    assert torch.allclose(stats.mean["y"], torch.tensor([[6.0, 5.0]]))
    assert stats.n_clips == {"x": 2, "y": 2}
    mean, std = stats.for_ids(["c", "a"])
    assert torch.equal(mean[0], stats.mean["y"]) and torch.equal(std[1], stats.std["x"])


def test_each_speaker_is_z_scored_and_a_speaker_offset_changes_nothing():
    pooled, speaker_of = _pooled()
    ids = list(pooled)
    stats = SpeakerStatistics.from_pooled(pooled, speaker_of, eps=0.0)
    mean, std = stats.for_ids(ids)
    z = (torch.stack([pooled[i] for i in ids]) - mean) / std
    for s in range(3):
        rows = [n for n, i in enumerate(ids) if speaker_of[i] == f"spk{s}"]
        assert torch.allclose(z[rows].mean(0), torch.zeros(4, 6), atol=1e-5)
        assert torch.allclose(z[rows].std(0), torch.ones(4, 6), atol=1e-5)
    # a voice that shifts and scales every vector of a speaker alike is removed exactly
    moved = {i: v * 3.0 + 7.0 if speaker_of[i] == "spk1" else v for i, v in pooled.items()}
    m2, s2 = SpeakerStatistics.from_pooled(moved, speaker_of, eps=0.0).for_ids(ids)
    z2 = (torch.stack([moved[i] for i in ids]) - m2) / s2
    assert torch.allclose(z, z2, atol=1e-4)


def test_too_few_clips_and_unknown_clips_are_named():
    pooled, speaker_of = _pooled(per=1)
    with pytest.raises(ConfigError, match="at least 2 clips per speaker.*'spk0' has 1"):
        SpeakerStatistics.from_pooled(pooled, speaker_of)
    pooled, speaker_of = _pooled()
    stats = SpeakerStatistics.from_pooled(pooled, speaker_of)
    with pytest.raises(ConfigError, match="without speaker statistics, e.g. 'nope'"):
        stats.for_ids(["s0c0", "nope"])
    with pytest.raises(ConfigError, match="'ghost'.*no pooled outputs"):
        SpeakerStatistics.from_pooled(pooled, {**speaker_of, "ghost": "spk0"})


def test_save_load_round_trip(tmp_path):
    pooled, speaker_of = _pooled()
    stats = SpeakerStatistics.from_pooled(pooled, speaker_of)
    stats.save(tmp_path / "s.safetensors")
    back = SpeakerStatistics.load(tmp_path / "s.safetensors")
    assert back.speaker_of == stats.speaker_of and back.n_clips == stats.n_clips
    for s in stats.mean:
        assert torch.equal(back.mean[s], stats.mean[s]) and torch.equal(back.std[s], stats.std[s])
    with pytest.raises(RunFolderError, match="missing; this head normalises per speaker"):
        SpeakerStatistics.load(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("weighted", [True, False])
def test_head_reads_each_clips_speaker_statistics(weighted):
    pooled, speaker_of = _pooled(layers=3, d=8)
    stats = SpeakerStatistics.from_pooled(pooled, speaker_of)
    torch.manual_seed(0)
    kw = {"use_weighted_layer_sum": weighted, "n_hidden_states": 3, "normalize_layers": weighted}
    head = ClassificationHead(8, 4, proj_size=5, speaker_norm=True, **kw)
    plain = ClassificationHead(8, 4, proj_size=5, **kw)
    plain.load_state_dict({k: v for k, v in head.state_dict().items() if k in plain.state_dict()})
    ids = ["s2c1", "s0c3", "s1c0"]
    x = torch.stack([pooled[i] for i in ids])
    with pytest.raises(ConfigError, match="none were set for this batch"):
        head.classify(head.combine_layers(x))
    select_clips(head, stats, ids)
    got = head.classify(head.combine_layers(x))
    mean, std = stats.for_ids(ids)
    want = plain.classify(plain.combine_layers((x - mean) / std))
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ConfigError, match="set for 3 clips, the batch has 2"):
        head.classify(head.combine_layers(x[:2]))
    with pytest.raises(ConfigError, match="has no speaker statistics"):
        select_clips(head, None, ids)
    select_clips(plain, None, ids)  # a head without speaker_norm ignores it


def test_classifier_select_clips(tiny_whisper):
    from loralens.models.classifier import EmotionClassifier

    clf = EmotionClassifier(tiny_whisper.model.encoder, 4, proj_size=8, use_weighted_layer_sum=True,
                            normalize_layers=True, speaker_norm=True).eval()
    n = clf.runner.n_layers + 1
    d = clf.runner.d_model
    pooled = {f"c{i}": torch.randn(n, d) for i in range(4)}
    clf.speaker_statistics = SpeakerStatistics.from_pooled(pooled, {"c0": "a", "c1": "a", "c2": "b", "c3": "b"})
    feats = torch.randn(2, tiny_whisper.config.num_mel_bins, 2 * tiny_whisper.config.max_source_positions)
    clf.select_clips(["c0", "c3"])
    a = clf(feats)
    clf.select_clips(["c1", "c2"])  # same speakers, same statistics
    assert torch.equal(clf(feats), a)
    clf.select_clips(["c2", "c0"])  # speakers swapped: other statistics, other logits
    assert not torch.allclose(clf(feats), a)

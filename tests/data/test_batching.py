"""Batches: full / trim padding with each clip's own pad value, valid lengths, dataset, length-grouped sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from loralens.data.batching import (
    Batch,
    Collator,
    FeatureDataset,
    FeatureItem,
    LengthGroupedBatchSampler,
    collate,
    trim_frames,
)
from loralens.data.clips import Clip
from loralens.data.features import ClipFeatures, FeatureCache
from loralens.errors import ConfigError, CorpusError


def fake(n_mels: int, n_frames: int, stored: int, pad: float, start: float) -> ClipFeatures:
    """Features with recognisable values: frame t of bin m holds start + m + t / 1000."""
    mel = start + torch.arange(n_mels, dtype=torch.float32)[:, None] + torch.arange(stored, dtype=torch.float32) / 1000
    return ClipFeatures(mel=mel, n_frames=n_frames, pad_value=pad, n_samples=n_frames * 160)


@pytest.fixture
def items() -> list[FeatureItem]:
    return [
        FeatureItem("a", fake(3, n_frames=3, stored=4, pad=-1.25, start=10.0), label=2),
        FeatureItem("b", fake(3, n_frames=5, stored=7, pad=-0.5, start=20.0), label=0),
    ]


def test_trim_pads_to_longest_rounded_up_with_each_clips_pad_value(items):
    batch = collate(items, "trim")  # longest 5 valid frames -> 6
    assert batch.features.shape == (2, 3, 6) and batch.features.dtype == torch.float32
    a, b = batch.features
    assert torch.equal(a[:, :4], items[0].features.mel) and torch.all(a[:, 4:] == -1.25)
    # b stores 7 frames (two past its valid 5 still see audio): trim keeps the window's prefix
    assert torch.equal(b, items[1].features.mel[:, :6])
    assert batch.mel_lengths.tolist() == [3, 5] and batch.mel_lengths.dtype == torch.long
    assert batch.lengths.tolist() == [2, 3]  # (3 + 1) // 2, (5 + 1) // 2
    assert batch.labels.tolist() == [2, 0] and batch.labels.dtype == torch.long
    assert batch.ids == ["a", "b"] and len(batch) == 2

    assert collate(items, "trim", multiple=4).features.shape[-1] == 8
    assert collate(items, "trim", multiple=16).features.shape[-1] == 16


def test_full_pads_every_clip_to_3000_frames(items):
    batch = collate(items, "full")
    assert batch.features.shape == (2, 3, 3000)
    for row, it in zip(batch.features, items):
        assert torch.equal(row[:, : it.features.stored_frames], it.features.mel)
        assert torch.all(row[:, it.features.stored_frames :] == it.features.pad_value)
        assert torch.equal(row, it.features.full())
    # trim rows are prefixes of full rows
    trim = collate(items, "trim")
    assert torch.equal(trim.features, batch.features[:, :, : trim.features.shape[-1]])


def test_trim_frames_rounding_and_limits():
    assert [trim_frames(n) for n in (1, 2, 3, 394, 395)] == [2, 2, 4, 394, 396]
    assert trim_frames(395, multiple=32) == 416
    assert trim_frames(2999, multiple=2) == 3000
    assert trim_frames(2990, multiple=64) == 3000  # never beyond Whisper's 30 s window
    for bad in (0, 1, 3):
        with pytest.raises(ConfigError, match="even"):
            trim_frames(10, multiple=bad)


def test_unlabelled_and_invalid_batches(items):
    unlabelled = [FeatureItem(it.id, it.features) for it in items]
    assert collate(unlabelled).labels is None
    with pytest.raises(ConfigError, match="mixes"):
        collate([items[0], unlabelled[1]])
    with pytest.raises(ConfigError, match="window"):
        collate(items, "middle")
    with pytest.raises(ConfigError, match="empty"):
        collate([])
    with pytest.raises(ConfigError, match="mel bins"):
        collate([items[0], FeatureItem("c", fake(4, 3, 4, 0.0, 0.0), 1)])


def test_batch_to_device_copies_all_tensors(items):
    batch = collate(items, "trim")
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and moved is not batch
    assert torch.equal(moved.features, batch.features) and moved.ids == batch.ids
    assert moved.labels is not None and moved.mel_lengths.device.type == "cpu"
    if torch.cuda.is_available():
        on_gpu = batch.to("cuda")
        assert on_gpu.features.is_cuda and on_gpu.labels.is_cuda and on_gpu.mel_lengths.is_cuda


def test_trim_batch_runs_through_the_whisper_encoder_stem(tiny_whisper, items):
    # the stride-2 conv maps an even T onto exactly T / 2 encoder frames, what `lengths` counts in
    batch = collate([FeatureItem(it.id, fake(80, it.features.n_frames, it.features.stored_frames, -1.0, 0.1),
                                 it.label) for it in items])
    enc = tiny_whisper.model.encoder
    with torch.no_grad():
        x = enc.conv2(torch.nn.functional.gelu(enc.conv1(batch.features)))
    assert x.shape[-1] == batch.features.shape[-1] // 2
    assert int(batch.lengths.max()) <= x.shape[-1]


# --- dataset and sampler -------------------------------------------------------------------------


def write_clips(folder: Path, seconds: list[float], labels: list[str]) -> list[Clip]:
    clips = []
    for i, (s, label) in enumerate(zip(seconds, labels)):
        n = int(s * 16000)
        audio = (0.2 * np.sin(2 * np.pi * (150 + 40 * i) * np.arange(n) / 16000)).astype(np.float32)
        path = folder / f"clip{i}.flac"
        sf.write(path, audio, 16000, subtype="PCM_16")
        clips.append(Clip(id=f"clip{i}", path=path, label=label, speaker=f"s{i % 2}"))
    return clips


def test_dataset_with_dataloader_sampler_and_collator(tmp_path):
    seconds = [0.3, 1.0, 0.35, 0.95, 0.5, 0.55]
    clips = write_clips(tmp_path, seconds, ["sad", "happy", "sad", "angry", "happy", "sad"])
    cache = FeatureCache(tmp_path / "cache")
    ds = FeatureDataset(clips, cache, labels=("angry", "happy", "sad"))
    assert len(ds) == 6
    item = ds[1]
    assert item.id == "clip1" and item.label == 1 and item.features.n_frames == 100
    assert ds.mel_lengths() == [-(-int(s * 16000) // 160) for s in seconds]

    sampler = LengthGroupedBatchSampler(ds.mel_lengths(), batch_size=2, seed=3)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=Collator("trim"))
    batches = list(loader)
    assert len(batches) == len(sampler) == 3
    assert sorted(i for b in batches for i in b.ids) == sorted(c.id for c in clips)
    # similar lengths go together: the two ~1 s clips share a batch
    assert any(set(b.ids) == {"clip1", "clip3"} for b in batches)
    for b in batches:
        assert b.features.shape[-1] == trim_frames(int(b.mel_lengths.max()))
        assert all(ds.labels[l] == next(c.label for c in clips if c.id == i) for l, i in zip(b.labels.tolist(), b.ids))
    assert cache.computed == 6  # each clip once, though read three times

    unlabelled = FeatureDataset(clips, cache)
    assert unlabelled[0].label is None
    with pytest.raises(CorpusError, match="neutral"):
        FeatureDataset(clips + [Clip("x", clips[0].path, "neutral", "s0")], cache, labels=("angry", "happy", "sad"))


def test_length_grouped_sampler_is_deterministic_and_cuts_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(100, 1000, size=203).tolist()
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=7, group_batches=4)
    first = sampler.batches()
    assert first == LengthGroupedBatchSampler(lengths, batch_size=8, seed=7, group_batches=4).batches()
    assert sorted(i for b in first for i in b) == list(range(203))
    assert len(first) == len(sampler) == 26 and sum(len(b) < 8 for b in first) == 1
    sampler.set_epoch(1)
    second = sampler.batches()
    assert second != first and sorted(i for b in second for i in b) == list(range(203))
    assert LengthGroupedBatchSampler(lengths, batch_size=8, seed=8, group_batches=4).batches() != first

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    random_batches = [list(range(203))[i : i + 8] for i in range(0, 203, 8)]
    assert padding(first) < 0.5 * padding(random_batches)

    dropped = LengthGroupedBatchSampler(lengths, batch_size=8, seed=7, group_batches=4, drop_last=True)
    assert len(dropped) == 25 and all(len(b) == 8 for b in dropped)
    with pytest.raises(ConfigError):
        LengthGroupedBatchSampler(lengths, batch_size=0)

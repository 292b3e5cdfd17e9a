"""Batches of cached Whisper features: padding to the 30 s window (`full`) or to the longest clip (`trim`).

Each clip is padded with its own padding value, so a clip's row in a batch is always a prefix of the
extractor's 3000-frame output (the whole of it for `full`). Valid lengths travel with the batch:
`mel_lengths` in mel frames, `lengths = (mel_lengths + 1) // 2` in encoder frames (conv2 has stride 2).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from loralens.data.clips import Clip
from loralens.data.features import ClipFeatures, FeatureCache
from loralens.errors import ConfigError, CorpusError

Window = Literal["full", "trim"]
WINDOWS = ("full", "trim")


@dataclass
class FeatureItem:
    """One clip ready for batching: its id, cached features and class index (None when unlabelled)."""

    id: str
    features: ClipFeatures
    label: int | None = None


@dataclass
class Batch:
    """A batch of clips.

    features: `[batch, n_mels, T]` float32 log-mel (T = 3000 for `full`, the padded longest clip for `trim`).
    mel_lengths: `[batch]` long, valid mel frames of each clip. labels: `[batch]` long class indices, or None.
    ids: clip ids, in batch order.
    """

    features: torch.Tensor
    mel_lengths: torch.Tensor
    labels: torch.Tensor | None
    ids: list[str]

    @property
    def lengths(self) -> torch.Tensor:
        """`[batch]` long: valid encoder frames, `(mel_lengths + 1) // 2`."""
        return (self.mel_lengths + 1) // 2

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on `device`."""
        return Batch(
            features=self.features.to(device, non_blocking=non_blocking),
            mel_lengths=self.mel_lengths.to(device, non_blocking=non_blocking),
            labels=None if self.labels is None else self.labels.to(device, non_blocking=non_blocking),
            ids=list(self.ids),
        )

    def pin_memory(self) -> Batch:
        """Page-locked copy (DataLoader calls this when `pin_memory=True`)."""
        return Batch(
            features=self.features.pin_memory(),
            mel_lengths=self.mel_lengths.pin_memory(),
            labels=None if self.labels is None else self.labels.pin_memory(),
            ids=list(self.ids),
        )


def trim_frames(max_len: int, multiple: int = 2, max_frames: int = 3000) -> int:
    """Frames of a `trim` batch whose longest clip has `max_len` valid frames: rounded up to `multiple`,
    at most `max_frames` (Whisper's positional table ends at 1500 encoder frames)."""
    if multiple < 2 or multiple % 2:
        raise ConfigError(
            f"trim multiple={multiple} is not an even number >= 2",
            "use an even multiple, so the stride-2 conv maps mel frames onto encoder frames exactly",
        )
    return min(max(multiple, math.ceil(max_len / multiple) * multiple), max_frames)


def collate(
    items: Sequence[FeatureItem],
    window: Window = "trim",
    multiple: int = 2,
    max_frames: int = 3000,
) -> Batch:
    """Stack clips into a Batch.

    window="full": every clip padded to `max_frames` (3000 = 30 s) with its own padding value, exactly the
    extractor output (the paper's setting). window="trim": padded to the batch's longest `n_frames`
    rounded up to `multiple` (even), each row the prefix of that clip's `full` features.
    Labels are all given or all None.
    """
    if window not in WINDOWS:
        raise ConfigError(f"window={window!r} is not one of {WINDOWS}")
    if not items:
        raise ConfigError("cannot collate an empty batch")
    n_mels = {it.features.n_mels for it in items}
    if len(n_mels) != 1:
        raise ConfigError(f"clips with different mel bins {sorted(n_mels)} in one batch")
    mel_lengths = [it.features.n_frames for it in items]
    frames = max_frames if window == "full" else trim_frames(max(mel_lengths), multiple, max_frames)
    features = torch.empty((len(items), n_mels.pop(), frames), dtype=torch.float32)
    for row, it in zip(features, items):
        row.copy_(it.features.window(frames))
    labelled = [it.label is not None for it in items]
    if any(labelled) and not all(labelled):
        raise ConfigError(f"batch mixes labelled and unlabelled clips: {[it.id for it in items]}")
    labels = torch.tensor([it.label for it in items], dtype=torch.long) if all(labelled) else None
    return Batch(
        features=features,
        mel_lengths=torch.tensor(mel_lengths, dtype=torch.long),
        labels=labels,
        ids=[it.id for it in items],
    )


@dataclass(frozen=True)
class Collator:
    """`collate` with fixed settings, picklable for DataLoader workers:
    `DataLoader(..., collate_fn=Collator("trim"))`."""

    window: Window = "trim"
    multiple: int = 2
    max_frames: int = 3000

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ConfigError(f"window={self.window!r} is not one of {WINDOWS}")
        if self.window == "trim":
            trim_frames(1, self.multiple, self.max_frames)

    def __call__(self, items: Sequence[FeatureItem]) -> Batch:
        return collate(items, self.window, self.multiple, self.max_frames)


class FeatureDataset(Dataset):
    """Clips as `FeatureItem`s, their features read from (or computed into) a `FeatureCache`.

    labels: class names; a clip's class index is the position of `clip.label` in it (a Corpus' `labels`).
    None gives unlabelled items.
    """

    def __init__(self, clips: Sequence[Clip], cache: FeatureCache, labels: Sequence[str] | None = None) -> None:
        self.clips = list(clips)
        self.cache = cache
        self.labels = None if labels is None else tuple(labels)
        self._label_index: list[int] | None = None
        if self.labels is not None:
            index = {name: i for i, name in enumerate(self.labels)}
            unknown = sorted({c.label for c in self.clips if c.label not in index})
            if unknown:
                raise CorpusError(
                    f"clip labels {unknown} are not among the classes {list(self.labels)}",
                    "map the corpus labels onto the class set first",
                )
            self._label_index = [index[c.label] for c in self.clips]
        self._mel_lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> FeatureItem:
        clip = self.clips[i]
        label = None if self._label_index is None else self._label_index[i]
        return FeatureItem(id=clip.id, features=self.cache.get(clip), label=label)

    def mel_lengths(self) -> list[int]:
        """Valid mel frames of every clip (computes missing features; cached after the first call)."""
        if self._mel_lengths is None:
            self._mel_lengths = [self.cache.get(c).n_frames for c in self.clips]
        return list(self._mel_lengths)


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of clips of similar length, to cut `trim` padding; deterministic for a (seed, epoch).

    Each epoch: shuffle all indices with a generator seeded by (seed, epoch), cut the order into groups of
    `batch_size * group_batches` clips, sort each group by length (longest first), cut it into batches, and
    shuffle the batch order. Every clip appears once per epoch; with drop_last the last short batch is dropped.
    Call `set_epoch(epoch)` before each epoch (as with DistributedSampler).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        group_batches: int = 16,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1 or group_batches < 1:
            raise ConfigError(f"batch_size={batch_size} and group_batches={group_batches} must be >= 1")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.group_batches = int(group_batches)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self) -> list[list[int]]:
        """The batches of the current epoch (lists of dataset indices)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        group = self.batch_size * self.group_batches
        batches: list[list[int]] = []
        for start in range(0, len(order), group):
            chunk = order[start : start + group]
            # stable sort on -length keeps the shuffled order among equal lengths
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size))
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        n, bs = len(self.lengths), self.batch_size
        if self.drop_last:
            return n // bs
        # groups are whole multiples of batch_size except the last one
        group = bs * self.group_batches
        return (n // group) * self.group_batches + math.ceil((n % group) / bs)

__all__ = [
    "Batch",
    "Collator",
    "FeatureDataset",
    "FeatureItem",
    "LengthGroupedBatchSampler",
    "WINDOWS",
    "Window",
    "collate",
    "trim_frames",
]

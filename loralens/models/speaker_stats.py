"""Per-speaker statistics of the head's input, for speaker normalisation (`head.speaker_norm`).

A speaker's voice moves every pooled encoder vector of theirs by about the same offset, and on a few clips per
speaker that offset is a larger signal than emotion. Z-scoring each clip's pooled vectors with the mean and standard
deviation of ITS SPEAKER's clips removes it (the classic per-speaker feature normalisation of emotion recognition).
The statistics are those of the frozen encoder (so that they do not move while the adapter trains, and training and
testing read the same thing), computed over all clips of a speaker, labels unused. A test speaker's statistics come
from that speaker's own test clips: the model needs several clips of a speaker before it can classify any of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from loralens.errors import ConfigError, RunFolderError

MIN_CLIPS = 2  # a standard deviation needs two clips; docs/results.md 6f shows how many a speaker should have


@dataclass
class SpeakerStatistics:
    """speaker_of: clip id -> speaker. mean, std: speaker -> `[n_hidden_states, d_model]` float32 (std + eps).
    n_clips: speaker -> the number of clips the statistics come from."""

    speaker_of: dict[str, str]
    mean: dict[str, Tensor]
    std: dict[str, Tensor]
    n_clips: dict[str, int]

    @classmethod
    def from_pooled(cls, pooled: Mapping[str, Tensor], speaker_of: Mapping[str, str], eps: float = 1e-5,
                    min_clips: int = MIN_CLIPS) -> SpeakerStatistics:
        """Statistics of each speaker of `speaker_of` (clip id -> speaker) from the clips' pooled vectors
        `pooled[id]` `[n_hidden_states, d_model]`: mean and (unbiased) standard deviation over the speaker's clips,
        + `eps` so that a constant dimension stays finite."""
        by_speaker: dict[str, list[str]] = {}
        for clip, speaker in speaker_of.items():
            if clip not in pooled:
                raise ConfigError(f"speaker statistics: clip {clip!r} (speaker {speaker!r}) has no pooled outputs",
                                  "compute the frozen encoder's outputs of every clip first")
            by_speaker.setdefault(speaker, []).append(clip)
        few = {s: len(c) for s, c in by_speaker.items() if len(c) < min_clips}
        if few:
            raise ConfigError(f"speaker normalisation needs at least {min_clips} clips per speaker; "
                              f"{', '.join(f'{s!r} has {n}' for s, n in sorted(few.items()))}",
                              "give those speakers more clips, or set head.speaker_norm: false")
        mean, std = {}, {}
        for s, clips in by_speaker.items():
            x = torch.stack([pooled[c].float() for c in clips])
            mean[s], std[s] = x.mean(0), x.std(0) + eps
        return cls(dict(speaker_of), mean, std, {s: len(c) for s, c in by_speaker.items()})

    def for_ids(self, ids: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(mean, std) `[len(ids), n_hidden_states, d_model]`: each clip's speaker's statistics, in `ids` order."""
        missing = [i for i in ids if i not in self.speaker_of]
        if missing:
            raise ConfigError(f"speaker normalisation: {len(missing)} clip(s) without speaker statistics, e.g. "
                              f"{missing[0]!r}", "compute the statistics over every clip the model is run on")
        speakers = [self.speaker_of[i] for i in ids]
        return torch.stack([self.mean[s] for s in speakers]), torch.stack([self.std[s] for s in speakers])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics to a safetensors file (tensors `mean`, `std` `[speakers, n_hidden_states, d_model]`;
        metadata: speakers, clip counts, clip -> speaker), atomically."""
        from safetensors.torch import save_file

        from loralens.io import atomic_write_with

        speakers = sorted(self.mean)
        tensors = {"mean": torch.stack([self.mean[s] for s in speakers]),
                   "std": torch.stack([self.std[s] for s in speakers])}
        meta = {"speakers": json.dumps(speakers), "n_clips": json.dumps([self.n_clips[s] for s in speakers]),
                "speaker_of": json.dumps(self.speaker_of)}
        atomic_write_with(Path(path), lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                                                            metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SpeakerStatistics:
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise RunFolderError(f"{path}: missing; this head normalises per speaker and needs its statistics",
                                 "re-run the fold (loralens train resumes it)")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            mean, std = f.get_tensor("mean"), f.get_tensor("std")
        speakers = json.loads(meta["speakers"])
        return cls(json.loads(meta["speaker_of"]), dict(zip(speakers, mean)), dict(zip(speakers, std)),
                   dict(zip(speakers, json.loads(meta["n_clips"]))))


def select_clips(head, statistics: SpeakerStatistics | None, ids: Sequence[str]) -> None:
    """Give `head` (a `ClassificationHead`) the statistics of clips `ids` when it normalises per speaker (else
    nothing)."""
    if not getattr(head, "speaker_norm", False):
        return
    if statistics is None:
        raise ConfigError("this classifier's head normalises per speaker, and it has no speaker statistics",
                          "set classifier.speaker_statistics (SpeakerStatistics.from_pooled or .load) first")
    head.set_clip_statistics(*statistics.for_ids(ids))

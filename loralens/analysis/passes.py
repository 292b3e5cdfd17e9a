"""One forward pass per (model, split) that feeds every analysis reading activations of the same clips.

Layer contribution, the logit lens, probing and CKA all read the same clips through the same model. Each of them
states what it takes from a pass as an **observer**: pass-through edits that look at hook points while the encoder
runs (so one layer's activations are held at a time) and an update from the run's output; the observer reduces
what it sees to per-clip statistics at once, so memory is set by the batch, not by the number of clips. A pass runs
any set of observers together; `SharedPasses` (held by the `AnalysisContext`) runs, for each (model, split), one
pass with the observers of every analysis the suite will run, and hands each analysis its observer's result.

Observers register here by name (`register_observer`) from their analysis modules, so this module imports no
analysis. Erasure, patching and the LoRA gradient captures re-run the encoder with interventions or gradients and
keep their own passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from loralens.data.batching import Batch
from loralens.errors import ConfigError
from loralens.models.runner import encoder_lengths
from loralens.numerics.masking import frame_mask, masked_mean

Edit = Callable[[Tensor], Tensor]


class Observer(Protocol):
    """What an analysis takes from a pass. `edits(batch)`: pass-through edits (hook name -> function returning its
    argument unchanged) for this batch; `update(batch, out)`: after the batch ran (`out`: the classifier's
    `ClassifierOutput`); `result()`: the reduced result once every batch ran."""

    def edits(self, batch: Batch) -> Mapping[str, Edit]: ...

    def update(self, batch: Batch, out: Any) -> None: ...

    def result(self) -> Any: ...


#: name -> factory(classifier) -> Observer; filled by the analysis modules at import.
OBSERVERS: dict[str, Callable[[Any], Observer]] = {}


def register_observer(name: str, factory: Callable[[Any], Observer]) -> Callable[[Any], Observer]:
    """Make an observer available to shared passes under `name` (called at import by an analysis module)."""
    OBSERVERS[name] = factory
    return factory


def batches_with_progress(batches: Iterable[Batch], n_clips: int, desc: str | None) -> Iterator[Batch]:
    """Yield `batches`, showing a progress bar over clips (with ETA) named `desc`; no bar when desc is None."""
    if desc is None:
        yield from batches
        return
    from tqdm.auto import tqdm

    with tqdm(total=n_clips, desc=desc, unit="clip", leave=False) as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch.ids))


@torch.no_grad()
def run_pass(clf: Any, batches: Iterable[Batch], observers: Mapping[str, Observer],
             device: torch.device | str = "cpu", *, n_clips: int | None = None,
             desc: str | None = None) -> dict[str, Any]:
    """Run `clf` (an `EmotionClassifier`) once over `batches` with every observer attached; name -> its result.

    Two observers may not edit the same hook point (their pass-through edits would be chained in no defined order).
    """
    batches = list(batches)
    n = n_clips if n_clips is not None else sum(len(b.ids) for b in batches)
    for batch in batches_with_progress(batches, n, desc):
        b = batch.to(device)
        edits: dict[str, Edit] = {}
        for name, obs in observers.items():
            for point, fn in obs.edits(b).items():
                if point in edits:
                    raise ConfigError(f"observers of one pass both edit {point!r} ({name} and another)",
                                      "give each observer its own hook points, or run them in separate passes")
                edits[point] = fn
        clf.select_clips(b.ids)
        out = clf.run(b.features, b.mel_lengths, edits=edits)
        for obs in observers.values():
            obs.update(b, out)
    return {name: obs.result() for name, obs in observers.items()}


def valid_mask(mel_lengths: Tensor | None, batch: int, frames: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(valid `[batch, frames]` bool, lengths `[batch]`) of the encoder frames a hook point of a run with
    `mel_lengths` sees: the runner's own lengths (`models.runner.encoder_lengths`, at most `frames`; all frames
    without `mel_lengths`), for observers that reduce inside the pass, before `RunnerOutput.lengths` exists."""
    if mel_lengths is None:
        lengths = torch.full((batch,), frames, dtype=torch.long, device=device)
    else:
        lengths = torch.clamp(encoder_lengths(mel_lengths.to(device).long()), max=frames)
    return frame_mask(lengths, frames), lengths


@dataclass
class PooledHidden:
    """Every hidden state pooled over each clip's valid frames. per_layer: L + 1 arrays `[n_clips, d_model]` float32
    (index 0 the embeddings, L the final-normed output; clip order of the split). batch_sizes: clips per batch, so
    streamed statistics can be fed batch by batch as they would be during the pass."""

    per_layer: list
    batch_sizes: list[int]

    def batches(self) -> Iterator[list]:
        """Per batch: the L + 1 pooled arrays `[batch, d_model]` of that batch."""
        start = 0
        for size in self.batch_sizes:
            yield [x[start:start + size] for x in self.per_layer]
            start += size


class PooledHiddenObserver:
    """Observer "pooled_hidden": `masked_mean` of each hidden state over the clip's valid frames (float32)."""

    def __init__(self, clf: Any) -> None:
        self._chunks: list[list] = []
        self._sizes: list[int] = []

    def edits(self, batch: Batch) -> Mapping[str, Edit]:
        return {}

    def update(self, batch: Batch, out: Any) -> None:
        # the batched summation order of the masked mean: the pooled values probing and CKA have always used
        enc = out.encoder
        pooled = [masked_mean(h, enc.lengths, batched=True).float().cpu().numpy() for h in enc.hidden_states]
        if not self._chunks:
            self._chunks = [[] for _ in pooled]
        for l, x in enumerate(pooled):
            self._chunks[l].append(x)
        self._sizes.append(len(batch.ids))

    def result(self) -> PooledHidden:
        import numpy as np

        if not self._chunks:
            from loralens.numerics.inputs import AnalysisInputError

            raise AnalysisInputError("the split has no batches", hint="give the analysis at least one batch of clips")
        return PooledHidden([np.concatenate(c) for c in self._chunks], list(self._sizes))


def wanted_on(wanted: Iterable[str], split: str) -> list[str]:
    """The observer names of `wanted` (`name@split`, bare name = test) that apply to `split`."""
    out = []
    for w in wanted:
        name, _, on = w.partition("@")
        if (on or "test") == split:
            out.append(name)
    return out


@dataclass
class SharedPasses:
    """Memo of passes: for each (model, split) name, the results of the observers run on it.

    wanted: `observer@split` names (e.g. "lens@train"; a bare name means the test split) to run together in the
    first pass over a (model, split): the suite sets it to what the analyses it will run read. An observer asked for
    later and not yet run gets a pass of its own.
    progress: show a progress bar over clips for each pass.
    enabled: False runs a pass for every request and keeps nothing (each analysis on its own, as before passes were
    shared: for comparisons and benchmarks).
    """

    wanted: tuple[str, ...] = ()
    progress: bool = True
    enabled: bool = True
    results: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    passes_run: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)

    def get(self, observer: str, clf: Any, model: str, batches: Iterable[Batch], split: str,
            device: torch.device | str = "cpu", n_clips: int | None = None) -> Any:
        """The result of observer `observer` on model `model` (e.g. "adapted", run by `clf`) over split `split`
        ("test", "train"; its `batches`), running a pass when it is not there yet."""
        if observer not in OBSERVERS:
            raise ConfigError(f"no observer named {observer!r}", f"registered: {sorted(OBSERVERS)}")
        if not self.enabled:
            desc = f"{model} model, {split} clips ({observer})" if self.progress else None
            self.passes_run.append((model, split, (observer,)))
            return run_pass(clf, batches, {observer: OBSERVERS[observer](clf)}, device, n_clips=n_clips,
                            desc=desc)[observer]
        key = (model, split)
        done = self.results.setdefault(key, {})
        if observer not in done:
            observers = {observer: OBSERVERS[observer](clf)}
            for name in wanted_on(self.wanted, split):
                if name in OBSERVERS and name not in done and name not in observers:
                    try:
                        observers[name] = OBSERVERS[name](clf)
                    except ConfigError:
                        # not defined for this model: its analysis says so when it asks
                        continue
            names = tuple(observers)
            desc = f"{model} model, {split} clips ({', '.join(names)})" if self.progress else None
            done.update(run_pass(clf, batches, observers, device, n_clips=n_clips, desc=desc))
            self.passes_run.append((model, split, names))
        return done[observer]

    def clear(self) -> None:
        self.results.clear()


register_observer("pooled_hidden", PooledHiddenObserver)

__all__ = ["OBSERVERS", "Observer", "PooledHidden", "PooledHiddenObserver", "SharedPasses", "batches_with_progress",
           "register_observer", "run_pass", "valid_mask", "wanted_on"]

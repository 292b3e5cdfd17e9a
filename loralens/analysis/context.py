"""What every analysis receives: the adapted model, its frozen baseline, and the clips to look at, as batches.

An analysis is a function `run(ctx: AnalysisContext) -> dict` (JSON-serialisable) plus a plotting function
`plot(result: dict, out_dir: Path) -> list[Path]` and a plain reading `reading(result: dict) -> str`; see
`loralens.analysis.suite`. Analyses never read files: the run-folder loader builds the context.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from loralens.analysis.passes import SharedPasses
from loralens.data.batching import Batch
from loralens.errors import ConfigError
from loralens.models.classifier import EmotionClassifier


@dataclass
class SplitData:
    """The clips of one split, in fixed batches (features already padded, see `loralens.data.batching`).

    batches: the batches in order; their concatenated `ids` / `labels` give the clip order every per-clip
    array of an analysis follows. speakers: speaker of each clip, in that order.
    """

    batches: list[Batch]
    speakers: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def ids(self) -> list[str]:
        return [i for b in self.batches for i in b.ids]

    @property
    def labels(self) -> Tensor:
        """Class index of each clip `[n_clips]` int64."""
        if any(b.labels is None for b in self.batches):
            raise ConfigError("this split has unlabelled batches; analyses need labels")
        return torch.cat([b.labels for b in self.batches]).long()

    @property
    def n_clips(self) -> int:
        return sum(len(b.ids) for b in self.batches)


@dataclass
class AnalysisContext:
    """Inputs of an analysis.

    adapted: the fine-tuned classifier (LoRA, or full), eval mode. frozen: the baseline on the same fold (frozen
    encoder + its own trained head), or None. label_names: class names, index order. test: the fold's test clips
    (what results are reported on). train: the fold's training clips (fitted things: tuned lens, probes), or None.
    fold: fold name. seed: for sampling and bootstrap. n_boot: bootstrap resamples for confidence intervals.
    options: per-analysis options, `options[analysis_name][key]`.
    initial_adapter: the adapted run's LoRA weights before training (peft's initialisation, rebuilt from the run's
    seed), `{hook prefix: {"A": [r, d_in], "B": [d_out, r]}}`; None when unknown or not a LoRA run.
    precision: "fp32" (default) or "bf16": the analyses' forward passes under bf16 autocast (statistics are still
    accumulated in float64 where they were).
    passes: the shared forward passes (`loralens.analysis.passes`): what each analysis reads from a (model, split)
    is computed once for all of them.
    """

    adapted: EmotionClassifier
    frozen: EmotionClassifier | None
    label_names: tuple[str, ...]
    test: SplitData
    train: SplitData | None = None
    fold: str = "fold_0"
    seed: int = 0
    n_boot: int = 1000
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    initial_adapter: dict[str, dict[str, Tensor]] | None = None
    passes: SharedPasses = field(default_factory=SharedPasses)
    precision: str = "fp32"

    def autocast(self):
        """The numeric context analyses run in: bf16 autocast when `precision` is "bf16", else nothing (fp32)."""
        import contextlib

        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        if self.precision != "fp32":
            raise ConfigError(f"analysis precision {self.precision!r} is not fp32 or bf16", "use --precision fp32")
        return contextlib.nullcontext()

    def observed(self, observer: str, model: str, split: str = "test", analysis: str = "") -> Any:
        """The result of observer `observer` (see `loralens.analysis.passes`) on `model` ("adapted" or "frozen")
        over `split` ("test" or "train"), from the shared pass of that model and split."""
        if model not in ("adapted", "frozen") or split not in ("test", "train"):
            raise ConfigError(f"observed({observer!r}, {model!r}, {split!r}): model is adapted or frozen, split test "
                              "or train")
        clf = self.adapted if model == "adapted" else self.require_frozen(analysis or observer)
        data = self.test if split == "test" else self.require_train(analysis or observer)
        return self.passes.get(observer, clf, model, data.batches, split, self.device, data.n_clips)

    def option(self, analysis: str, key: str, default: Any) -> Any:
        return self.options.get(analysis, {}).get(key, default)

    @property
    def n_layers(self) -> int:
        return self.adapted.runner.n_layers

    def require_frozen(self, analysis: str) -> EmotionClassifier:
        if self.frozen is None:
            raise ConfigError(
                f"analysis {analysis!r} compares with the frozen baseline, and none was given",
                hint="train the frozen baseline on the same folds (loralens run does) or pass --baseline",
            )
        return self.frozen

    def require_train(self, analysis: str) -> SplitData:
        if self.train is None:
            raise ConfigError(f"analysis {analysis!r} fits on the training split, and none was given")
        return self.train

"""A trained run's fold models, loaded straight from the run folder: no corpus, no feature cache, no folds.

What a fold needs is all in the run folder: `config.yaml` (base model, method, head, window, padding mask),
`fold_k/metrics.json` (the class names, in class-index order, and the configuration hash that marks the fold
complete), the adapter (`lora`) or encoder weights (`full`) and the head. So loading takes the time of reading the
base model and the fold's files (seconds for `tiny.en` and `base`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from loralens.errors import RunFolderError
from loralens.models.classifier import EmotionClassifier, whisper_encoder
from loralens.training.config import TrainConfig
from loralens.training.run_folder import complete_folds, read_run_config
from loralens.training.trained import fold_classifier


@dataclass
class FoldModel:
    """One fold's trained classifier (eval mode, no gradients) and what it was trained on.

    metrics: the fold's `metrics.json` (test UAR/WAR/F1, sizes, speakers, selected epoch ...).
    """

    fold: int
    classifier: EmotionClassifier
    metrics: dict


@dataclass
class RunModels:
    """The fold models of a run that are used together (one fold, or every complete fold for an ensemble).

    labels: class names in class-index order (the same in every fold). window, mask_padding: how the run
    batched clips during training (`full` 30-s windows or `trim`; padded frames masked in attention or not).
    joined: other runs whose fold models `folds` also holds (an ensemble over seeds, `join_run_models`).
    """

    run_dir: Path
    config: TrainConfig
    labels: tuple[str, ...]
    folds: list[FoldModel]
    joined: list[Path] = field(default_factory=list)  # further runs whose folds are in `folds` (`join_run_models`)

    @property
    def window(self) -> str:
        return self.config.window

    @property
    def mask_padding(self) -> bool:
        from loralens.training.crossval import mask_padding_for

        return mask_padding_for(self.config)

    def to(self, device: torch.device | str) -> RunModels:
        for f in self.folds:
            f.classifier.to(device)
        return self


def load_run_models(run_dir: str | Path, fold: int | None = None) -> RunModels:
    """The model of fold `fold` of a training run, or (fold None) the models of every complete fold.

    Raises RunFolderError when the folder is not a run, the fold is not complete, no fold is, or the folds
    disagree on the class names.
    """
    from loralens.models.loading import load_whisper

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    done = complete_folds(run_dir, cfg)
    if fold is not None:
        if fold not in done:
            have = ", ".join(map(str, sorted(done))) or "none"
            raise RunFolderError(
                f"{run_dir}: fold {fold} is not a complete fold of this run (complete folds: {have})",
                f"pick a complete fold, or train it: loralens train --config {run_dir / 'config.yaml'} --fold {fold}",
            )
        chosen = {fold: done[fold]}
    else:
        if not done:
            raise RunFolderError(f"{run_dir}: no fold of this run is complete",
                                 "train the run first (loralens train / loralens run)")
        chosen = done
    labels = {tuple(m["labels"]) for m in chosen.values()}
    if len(labels) != 1:
        raise RunFolderError(f"{run_dir}: the folds were trained on different class lists {sorted(labels)}",
                             "predict with one fold (--fold k)")
    names = labels.pop()
    encoder = whisper_encoder(load_whisper(cfg.model))
    folds = [FoldModel(k, fold_classifier(run_dir, k, cfg, encoder, len(names)), m) for k, m in sorted(chosen.items())]
    return RunModels(run_dir, cfg, names, folds)


def join_run_models(runs: list[RunModels]) -> RunModels:
    """One ensemble of the fold models of several runs (e.g. one recipe trained with several seeds): the first
    run's `RunModels` with every run's folds. Raises RunFolderError when the runs do not classify alike: other
    class names, base model, window or padding mask."""
    first = runs[0]
    for other in runs[1:]:
        differ = [what for what, a, b in (
            ("class names", first.labels, other.labels), ("base model", first.config.model, other.config.model),
            ("window", first.window, other.window), ("padding mask", first.mask_padding, other.mask_padding))
            if a != b]
        if differ:
            raise RunFolderError(
                f"{other.run_dir}: differs from {first.run_dir} in {', '.join(differ)}: their probabilities cannot "
                "be averaged", "join runs of one recipe that differ only in what they learned (e.g. the seed)")
    return RunModels(first.run_dir, first.config, first.labels, [f for r in runs for f in r.folds],
                     [r.run_dir for r in runs[1:]])


__all__ = ["FoldModel", "RunModels", "complete_folds", "join_run_models", "load_run_models"]

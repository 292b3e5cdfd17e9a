"""A trained fold's classifier, rebuilt from its run folder: the base encoder (copied), the fold's adapter (`lora`) or
encoder weights (`full`), and its head. Used by the analyses (`analysis.loading`) and by `predict` / `export`
(`inference.fold_model`), which both stand above training."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file

from loralens.models.classifier import EmotionClassifier
from loralens.training.config import TrainConfig
from loralens.training.head_choice import fold_config
from loralens.training.run_folder import RunFolder


def fold_classifier(run_dir: str | Path, fold: int, cfg: TrainConfig, encoder: torch.nn.Module,
                    n_classes: int) -> EmotionClassifier:
    """The trained classifier of fold `fold` of run `run_dir` (trained under `cfg`) on a copy of the base
    `encoder` (a `WhisperEncoder`): the fold's adapter (lora) or encoder weights (full), and its head (on the hidden
    state the fold chose, with `hidden_state: auto`); eval mode, no gradients required."""
    from loralens.training.crossval import mask_padding_for

    folder = RunFolder(run_dir).fold(fold)
    cfg = fold_config(cfg, folder.root)
    clf = EmotionClassifier(
        copy.deepcopy(encoder),
        n_classes,
        proj_size=cfg.head.projector_dim,
        use_weighted_layer_sum=cfg.head.weighted_layer_sum, normalize_layers=cfg.head.layer_norm,
        mask_padding=mask_padding_for(cfg),
        hidden_state=cfg.head.hidden_state,
        standardize=cfg.head.standardize,
        speaker_norm=cfg.head.speaker_norm,
    )
    if cfg.method == "lora":
        clf.load_adapter(folder.adapter)
        clf.lora_settings = cfg.lora
    elif cfg.method == "full":
        clf.encoder.load_state_dict(load_file(str(folder.encoder)))
    clf.method = cfg.method
    clf.head.load_state_dict(load_file(str(folder.head)))
    if cfg.head.speaker_norm:
        from loralens.models.speaker_stats import SpeakerStatistics

        clf.speaker_statistics = SpeakerStatistics.load(folder.speaker_statistics)
    clf.requires_grad_(False)
    return clf.eval()

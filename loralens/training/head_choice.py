"""`head.hidden_state: auto`: which hidden state a fold's head reads, chosen before anything trains.

Emotion cues sit in different layers for different encoders and corpora (on the synthetic corpus `tiny.en`'s hidden
state 1; elsewhere deeper), so the choice is made per fold from data the fold may use: the frozen encoder's pooled
outputs of its training and validation clips, never its test clips. Each hidden state 1..L is scored by the UAR of a
standardised logistic regression (`numerics.probes`) under speaker-grouped cross-validation over those clips (up to
`n_splits` groups of speakers), which uses every training speaker rather than the 2 validation speakers whose UAR
anti-correlates with test across RAVDESS folds. The best-scoring hidden state wins (the earlier one on a tie: fewer
layers to run). The choice and every score are written to `fold_k/hidden_state.json` before training; a rerun reads
it back, and `fold_classifier` rebuilds the fold's model from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from loralens.errors import ConfigError, RunFolderError
from loralens.io import atomic_write_json, read_json
from loralens.training.config import TrainConfig

CHOICE_FILE = "hidden_state.json"


def choose_hidden_state(pooled: torch.Tensor, labels: Sequence[int], speakers: Sequence[str], *, n_splits: int = 4,
                        seed: int = 0) -> dict:
    """The hidden state (1..L) whose standardised linear probe scores the best speaker-grouped cross-validated UAR.

    pooled: per-layer pooled frozen outputs `[clips, L + 1, d_model]` (index 0, the embeddings, is not a candidate);
    labels: class index per clip; speakers: speaker per clip. Returns {"hidden_state", "candidates", "cv_uar"
    (mean UAR per candidate), "cv_uar_std", "n_splits", "clips", "speakers"}.
    """
    from sklearn.model_selection import GroupKFold

    from loralens.numerics.probes import probe_layers

    x = pooled.float().numpy()
    y, groups = np.asarray(labels), np.asarray(speakers)
    if x.ndim != 3 or x.shape[0] != len(y) or len(groups) != len(y):
        raise ConfigError(f"pooled outputs {tuple(x.shape)}, {len(y)} labels and {len(groups)} speakers do not match")
    n_speakers = len(set(groups.tolist()))
    if n_speakers < 2:
        raise ConfigError("head.hidden_state auto needs clips of at least 2 training speakers to cross-validate",
                          hint="set head.hidden_state to an index, or use folds with more training speakers")
    splits = min(n_splits, n_speakers)
    folds = list(GroupKFold(n_splits=splits).split(x[:, 0], y, groups))
    candidates = list(range(1, x.shape[1]))
    results = probe_layers([x[:, k] for k in candidates], y, folds, c=1.0, max_iter=1000, seed=seed)
    scores = [r.mean for r in results]
    best = candidates[int(np.argmax(scores))]
    return {"hidden_state": best, "candidates": candidates, "cv_uar": [round(s, 6) for s in scores],
            "cv_uar_std": [round(r.std, 6) for r in results], "n_splits": splits, "clips": int(len(y)),
            "speakers": n_speakers}


def with_hidden_state(cfg: TrainConfig, hidden_state: int) -> TrainConfig:
    """`cfg` whose head reads `hidden_state` (a fold's resolution of `auto`)."""
    return cfg.model_copy(update={"head": cfg.head.model_copy(update={"hidden_state": hidden_state})})


def fold_config(cfg: TrainConfig, fold_root: str | Path) -> TrainConfig:
    """The configuration fold `fold_root` trained under: `cfg` with `hidden_state: auto` replaced by the fold's
    choice (read from its `hidden_state.json`)."""
    if cfg.head.hidden_state != "auto":
        return cfg
    path = Path(fold_root) / CHOICE_FILE
    if not path.exists():
        raise RunFolderError(f"{path}: missing; the fold's head reads the hidden state chosen there (hidden_state: "
                             "auto)", "train the fold (loralens train resumes it), or restore the file")
    return with_hidden_state(cfg, int(read_json(path)["hidden_state"]))


def resolve_fold_head(cfg: TrainConfig, fold_root: Path, frozen_pooled: dict[str, torch.Tensor],
                      train_ids: Sequence[str], labels: Sequence[int], speakers: Sequence[str], *, write: bool,
                      echo=print) -> TrainConfig:
    """`fold_config`, choosing and writing the hidden state first (`choose_hidden_state` on the clips `train_ids`)
    when the fold has not chosen yet. `write`: this process writes the file (the main one)."""
    if cfg.head.hidden_state != "auto":
        return cfg
    path = fold_root / CHOICE_FILE
    if path.exists():
        return fold_config(cfg, fold_root)
    choice = choose_hidden_state(torch.stack([frozen_pooled[i] for i in train_ids]), labels, speakers, seed=cfg.seed)
    if write:
        atomic_write_json(path, choice)
        scores = ", ".join(f"{k}: {s:.3f}" for k, s in zip(choice["candidates"], choice["cv_uar"]))
        echo(f"{fold_root.name}: head reads hidden state {choice['hidden_state']} (speaker-grouped "
             f"{choice['n_splits']}-fold probe UAR {scores})")
    return with_hidden_state(cfg, choice["hidden_state"])

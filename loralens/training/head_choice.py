"""`head.hidden_state: auto` / `auto-all`: what a fold's head reads, chosen before anything trains.

Emotion cues sit in different layers for different encoders and corpora (on the synthetic corpus `tiny.en`'s hidden
state 1; on RAVDESS spread over many), so the choice is made per fold from data the fold may use: the frozen
encoder's pooled outputs of its training and validation clips, never its test clips. Each candidate is scored by the
UAR of a standardised logistic regression (`numerics.probes`) under speaker-grouped cross-validation over those clips
(up to `n_splits` groups of speakers), which uses every training speaker rather than the 2 validation speakers whose
UAR anti-correlates with test across RAVDESS folds. The candidates: hidden states 1..L (`auto`), and with `auto-all`
also `"all"`, the weighted layer sum's input at its start (each hidden state's vector normalised, then averaged with
equal weights). The features are those the head will read: z-scored per speaker with `head.speaker_norm`. The
best-scoring candidate wins (the earlier one on a tie: fewer layers to run); with `auto-all`, a hidden state wins over
the sum only by more than one standard error of its score (the standard deviation over the cross-validation splits
over their square root; the one-standard-error rule, with the sum as the default: on RAVDESS a head on one hidden
state trails the sum, and there `base` fold 2's best hidden state led it by 0.0008, docs/results.md 6g). The choice
and every score are written to `fold_k/hidden_state.json` before training; a rerun reads it back, and
`fold_classifier` rebuilds the fold's model from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from loralens.errors import ConfigError, RunFolderError
from loralens.io import atomic_write_json, read_json
from loralens.training.config import AUTO_HIDDEN_STATES, TrainConfig

CHOICE_FILE = "hidden_state.json"
AUTO = AUTO_HIDDEN_STATES
ALL = "all"  # the choice "the weighted sum of all hidden states"


def candidate_features(pooled: np.ndarray, with_sum: bool) -> dict[int | str, np.ndarray]:
    """Each candidate's features `[clips, d_model]` from per-layer pooled outputs `[clips, L + 1, d_model]`: hidden
    states 1..L as they are, and with `with_sum` `"all"`: every hidden state's vector normalised over its features
    (the head's per-layer LayerNorm) and averaged over the L + 1 hidden states (the weighted sum's uniform start)."""
    out: dict[int | str, np.ndarray] = {k: pooled[:, k] for k in range(1, pooled.shape[1])}
    if with_sum:
        x = pooled.astype(np.float64)
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
        out[ALL] = x.mean(1)
    return out


def choose_hidden_state(pooled: torch.Tensor, labels: Sequence[int], speakers: Sequence[str], *, n_splits: int = 4,
                        seed: int = 0, with_sum: bool = False) -> dict:
    """The candidate (hidden state 1..L, or with `with_sum` also `"all"`) whose standardised linear probe scores the
    best speaker-grouped cross-validated UAR.

    pooled: per-layer pooled frozen outputs `[clips, L + 1, d_model]` (index 0, the embeddings, is not a candidate
    alone), as the head reads them (z-scored per speaker when it does); labels: class index per clip; speakers:
    speaker per clip. Returns {"hidden_state", "candidates", "cv_uar" (mean UAR per candidate), "cv_uar_std",
    "n_splits", "clips", "speakers"}.
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
    features = candidate_features(x, with_sum)
    candidates = list(features)
    results = probe_layers([features[k] for k in candidates], y, folds, c=1.0, max_iter=1000, seed=seed)
    scores = [r.mean for r in results]
    i = int(np.argmax(scores))
    best = candidates[i]
    if with_sum and best != ALL and scores[-1] >= scores[i] - results[i].std / np.sqrt(splits):
        best = ALL  # the one-standard-error rule: one hidden state only when it beats the sum clearly
    return {"hidden_state": best, "candidates": candidates, "cv_uar": [round(s, 6) for s in scores],
            "cv_uar_std": [round(r.std, 6) for r in results], "n_splits": splits, "clips": int(len(y)),
            "speakers": n_speakers, "rule": "one-standard-error" if with_sum else "best"}


def with_hidden_state(cfg: TrainConfig, hidden_state: int | str) -> TrainConfig:
    """`cfg` whose head reads `hidden_state` (a fold's resolution of `auto`): one hidden state, or `"all"`, the
    weighted sum of every hidden state, each normalised."""
    if hidden_state == ALL:
        update = {"hidden_state": None, "weighted_layer_sum": True, "layer_norm": True}
    else:
        update = {"hidden_state": int(hidden_state)}
    return cfg.model_copy(update={"head": cfg.head.model_copy(update=update)})


def fold_config(cfg: TrainConfig, fold_root: str | Path) -> TrainConfig:
    """The configuration fold `fold_root` trained under: `cfg` with `hidden_state: auto` replaced by the fold's
    choice (read from its `hidden_state.json`)."""
    if cfg.head.hidden_state not in AUTO:
        return cfg
    path = Path(fold_root) / CHOICE_FILE
    if not path.exists():
        raise RunFolderError(f"{path}: missing; the fold's head reads the hidden state chosen there (hidden_state: "
                             f"{cfg.head.hidden_state})", "train the fold (loralens train resumes it), or restore "
                             "the file")
    return with_hidden_state(cfg, read_json(path)["hidden_state"])


def resolve_fold_head(cfg: TrainConfig, fold_root: Path, frozen_pooled: dict[str, torch.Tensor],
                      train_ids: Sequence[str], labels: Sequence[int], speakers: Sequence[str], *, write: bool,
                      echo=print) -> TrainConfig:
    """`fold_config`, choosing and writing the hidden state first (`choose_hidden_state` on the clips `train_ids`)
    when the fold has not chosen yet. With `head.speaker_norm` the candidates are scored on the clips' outputs
    z-scored with their speakers' statistics (as the head will read them). `write`: this process writes the file
    (the main one)."""
    if cfg.head.hidden_state not in AUTO:
        return cfg
    path = fold_root / CHOICE_FILE
    if path.exists():
        return fold_config(cfg, fold_root)
    x = torch.stack([frozen_pooled[i] for i in train_ids]).float()
    if cfg.head.speaker_norm:
        from loralens.models.speaker_stats import SpeakerStatistics

        stats = SpeakerStatistics.from_pooled(frozen_pooled, dict(zip(train_ids, speakers)))
        mean, std = stats.for_ids(train_ids)
        x = (x - mean) / std
    choice = choose_hidden_state(x, labels, speakers, seed=cfg.seed, with_sum=cfg.head.hidden_state == "auto-all")
    if write:
        atomic_write_json(path, choice)
        scores = ", ".join(f"{k}: {s:.3f}" for k, s in zip(choice["candidates"], choice["cv_uar"]))
        what = ("the weighted sum of all hidden states" if choice["hidden_state"] == ALL
                else f"hidden state {choice['hidden_state']}")
        echo(f"{fold_root.name}: head reads {what} (speaker-grouped {choice['n_splits']}-fold probe UAR {scores})")
    return with_hidden_state(cfg, choice["hidden_state"])

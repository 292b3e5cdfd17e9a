"""Linear probes on frozen features: standardise + multinomial logistic regression, scored by UAR.

A probe is `StandardScaler -> LogisticRegression` (lbfgs, multinomial softmax for more than two classes),
fitted on a fold's training examples only; the regularisation C is fixed or chosen by an inner
cross-validation over a small grid, again on the training split only (by groups, e.g. speakers, when
given). The score is UAR = balanced accuracy = mean per-class recall, on the fold's test examples.
Emotion probes use the caller's speaker-independent folds; the speaker-identity probe needs every
speaker in both train and test, so its folds split each speaker's clips (`within_speaker_folds`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from loralens.numerics.arrays import ArrayLike
from loralens.numerics.inputs import AnalysisInputError

IndexFolds = Sequence[tuple[Sequence[int] | np.ndarray, Sequence[int] | np.ndarray]]


class _FoldLike(Protocol):
    train: list[str]
    validation: list[str]
    test: list[str]


@dataclass
class ProbeResult:
    """UAR of a probe on each fold, their mean and standard deviation (numpy's, ddof=0), the C chosen per fold."""

    uar_per_fold: list[float]
    mean: float
    std: float
    c_per_fold: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"uar_per_fold": self.uar_per_fold, "mean": self.mean, "std": self.std, "c_per_fold": self.c_per_fold}


def make_probe(c: float = 1.0, class_weight: str | None = "balanced", max_iter: int = 2000, seed: int = 0) -> Pipeline:
    """The probe pipeline: StandardScaler then LogisticRegression(C=c) (multinomial with lbfgs)."""
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=c, class_weight=class_weight, max_iter=max_iter, random_state=seed),
    )


def fit_probe(
    x_train: ArrayLike,
    y_train: ArrayLike,
    c: float | Sequence[float] = 1.0,
    groups: ArrayLike | None = None,
    inner_folds: int = 3,
    class_weight: str | None = "balanced",
    max_iter: int = 2000,
    seed: int = 0,
) -> tuple[Pipeline, float]:
    """Fit a probe on training data only; returns (fitted pipeline, C used).

    With a grid of C values, C is chosen by `inner_folds`-fold CV on the training data scored by balanced
    accuracy: GroupKFold over `groups` (e.g. speakers, keeps the inner CV speaker independent) when given,
    otherwise shuffled StratifiedKFold(seed).
    """
    x, y = _features(x_train), np.asarray(y_train)
    base = make_probe(1.0, class_weight, max_iter, seed)
    with warnings.catch_warnings():
        # An unconverged lbfgs still yields a usable probe; the UAR is what we report.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if isinstance(c, (int, float)):
            probe = clone(base).set_params(logisticregression__C=float(c)).fit(x, y)
            return probe, float(c)
        grid = [float(v) for v in c]
        if not grid:
            raise AnalysisInputError("empty C grid", hint="pass a float or a non-empty list of C values")
        cv = (
            GroupKFold(n_splits=inner_folds)
            if groups is not None
            else StratifiedKFold(n_splits=inner_folds, shuffle=True, random_state=seed)
        )
        search = GridSearchCV(base, {"logisticregression__C": grid}, scoring="balanced_accuracy", cv=cv, refit=True)
        search.fit(x, y, groups=None if groups is None else np.asarray(groups))
        return search.best_estimator_, float(search.best_params_["logisticregression__C"])


def _features(x: ArrayLike) -> np.ndarray:
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    a = a.astype(np.float64, copy=False)
    if a.ndim != 2:
        raise AnalysisInputError(f"features have shape {a.shape}, expected [n_examples, dim]")
    if not np.isfinite(a).all():
        raise AnalysisInputError("features hold NaN or infinite values", hint="check the captured activations")
    return a


def _check_folds(folds: IndexFolds, n: int, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    if len(folds) == 0:
        raise AnalysisInputError("no folds given", hint="pass a list of (train_indices, test_indices)")
    for k, (tr, te) in enumerate(folds):
        tr, te = np.asarray(tr, dtype=np.int64), np.asarray(te, dtype=np.int64)
        if tr.size == 0 or te.size == 0:
            raise AnalysisInputError(f"fold {k} has an empty train or test split")
        if tr.min() < 0 or te.min() < 0 or tr.max() >= n or te.max() >= n:
            raise AnalysisInputError(f"fold {k} holds indices outside 0..{n - 1}")
        if np.intersect1d(tr, te).size:
            raise AnalysisInputError(f"fold {k}: {np.intersect1d(tr, te).size} examples are in both train and test")
        if np.unique(y[tr]).size < 2:
            raise AnalysisInputError(f"fold {k}: the training split holds a single class")
        out.append((tr, te))
    return out


def linear_probe_cv(
    features: ArrayLike,
    labels: ArrayLike,
    folds: IndexFolds,
    c: float | Sequence[float] = 1.0,
    groups: ArrayLike | None = None,
    inner_folds: int = 3,
    class_weight: str | None = "balanced",
    max_iter: int = 2000,
    seed: int = 0,
) -> ProbeResult:
    """Probe `features [n, d]` for `labels [n]` on each fold `(train_indices, test_indices)`; UAR per fold.

    `groups [n]` (speakers) only serves the inner CV of a C grid. Classes absent from a test split do not
    enter its UAR (balanced accuracy averages the recall of the classes present in y_true).
    """
    x, y = _features(features), np.asarray(labels)
    if y.shape != (x.shape[0],):
        raise AnalysisInputError(f"labels have shape {y.shape}, expected [{x.shape[0]}]")
    g = None if groups is None else np.asarray(groups)
    uars, cs = [], []
    for tr, te in _check_folds(folds, x.shape[0], y):
        probe, c_used = fit_probe(
            x[tr], y[tr], c, None if g is None else g[tr], inner_folds, class_weight, max_iter, seed
        )
        uars.append(float(balanced_accuracy_score(y[te], probe.predict(x[te]))))
        cs.append(c_used)
    return ProbeResult(uars, float(np.mean(uars)), float(np.std(uars)), cs)


def probe_layers(
    layers: Sequence[ArrayLike] | Mapping[str, ArrayLike],
    labels: ArrayLike,
    folds: IndexFolds,
    **kwargs: Any,
) -> list[ProbeResult] | dict[str, ProbeResult]:
    """`linear_probe_cv` on each layer's features `[n, d]` (a list, or a mapping layer name -> features)."""
    if isinstance(layers, Mapping):
        return {name: linear_probe_cv(x, labels, folds, **kwargs) for name, x in layers.items()}
    return [linear_probe_cv(x, labels, folds, **kwargs) for x in layers]


def folds_to_indices(
    folds: Sequence[_FoldLike],
    clip_ids: Sequence[str],
    train_splits: tuple[str, ...] = ("train", "validation"),
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_indices, test_indices) into `clip_ids` (the row order of the features) for `loralens.data.folds.Fold`s.

    A probe has no early stopping, so by default it trains on the fold's train and validation clips.
    Clips of a fold that are not in `clip_ids` raise.
    """
    pos = {cid: i for i, cid in enumerate(clip_ids)}
    out = []
    for fold in folds:
        parts = {"train": fold.train, "validation": fold.validation, "test": fold.test}
        missing = [cid for s in (*train_splits, "test") for cid in parts[s] if cid not in pos]
        if missing:
            raise AnalysisInputError(
                f"fold {getattr(fold, 'name', '?')}: {len(missing)} clips have no features, e.g. {missing[:3]}",
                hint="capture features for every clip of the folds",
            )
        train = np.array([pos[cid] for s in train_splits for cid in parts[s]], dtype=np.int64)
        test = np.array([pos[cid] for cid in fold.test], dtype=np.int64)
        out.append((train, test))
    return out


def within_speaker_folds(speakers: ArrayLike, n_folds: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds for the speaker-identity probe: each speaker's clips are split over `n_folds` folds.

    Speaker identity can only be probed for speakers seen in training, so unlike the emotion folds
    these are NOT speaker independent: every speaker appears in the train and the test split of every
    fold (StratifiedKFold on speaker labels, shuffled with `seed`). Each speaker needs >= n_folds clips.
    """
    s = np.asarray(speakers)
    names, counts = np.unique(s, return_counts=True)
    if names.size < 2:
        raise AnalysisInputError("the speaker probe needs at least 2 speakers")
    if counts.min() < n_folds:
        raise AnalysisInputError(
            f"speaker {names[counts.argmin()]!r} has {counts.min()} clips, fewer than n_folds={n_folds}",
            hint="lower n_folds or drop speakers with few clips",
        )
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in skf.split(np.zeros(s.size), s)]


def speaker_probe_cv(
    features: ArrayLike,
    speakers: ArrayLike,
    n_folds: int = 5,
    c: float | Sequence[float] = 1.0,
    seed: int = 0,
    **kwargs: Any,
) -> ProbeResult:
    """Speaker-identity probe: `linear_probe_cv` with speakers as labels on `within_speaker_folds`;
    chance = 1 / n_speakers."""
    folds = within_speaker_folds(speakers, n_folds, seed)
    return linear_probe_cv(features, speakers, folds, c=c, seed=seed, **kwargs)

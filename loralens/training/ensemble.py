"""Seed ensembles: the test predictions of several training runs that differ only in their seed, averaged.

Each complete fold of a run writes `predictions.json` with the softmax class probabilities of its test clips
(`crossval.run_fold`). Averaging the probabilities of runs trained with different seeds on the same folds (and
taking the arg-max) is the ensemble `loralens predict` makes of several run folders; here it is scored on the
folds' test clips with the same metrics as a single run (`metrics.classification_metrics`), so a user sees what
the extra seeds buy: the ensemble's UAR / WAR / macro-F1 over folds (mean ± sample std), the members' mean UAR,
and the paired gain of the ensemble over the mean single seed per fold.

No model is loaded: only config.yaml, metrics.json and predictions.json are read (torch-free).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loralens.errors import RunFolderError
from loralens.io import read_json
from loralens.training.config import TrainConfig, seedless_settings
from loralens.training.metrics import aggregate_folds, classification_metrics, mean_std
from loralens.training.run_folder import RunFolder, complete_folds, read_run_config


def ensemble_fold(predictions: Sequence[Mapping[str, Any]], source: str = "predictions") -> dict[str, Any]:
    """Metrics of the mean class probabilities of several runs' `predictions.json` contents for one fold.

    Each item has `ids`, `true` (class indices), `labels` and `probabilities` (n_clips x n_classes, rows summing
    to 1). Returns uar, war, macro_f1, per_class_recall, confusion (of the arg-max of the mean), n_test and
    members_uar (each run's own UAR, from the arg-max of its probabilities). Raises RunFolderError when the runs'
    test clips, truths or labels differ, or probabilities are missing (`source` names the fold in the message).
    """
    if len(predictions) < 1:
        raise ValueError("ensemble_fold needs at least one run's predictions")
    first = predictions[0]
    for p in predictions:
        if "probabilities" not in p:
            raise RunFolderError(f"{source}: a predictions.json without class probabilities (written by an older "
                                 "loralens)", "retrain that fold to average it with others")
        for key in ("ids", "true", "labels"):
            if p[key] != first[key]:
                raise RunFolderError(f"{source}: the runs' test predictions differ in `{key}`",
                                     "average only runs trained on the same folds and classes")
    labels = list(first["labels"])
    probs = [np.asarray(p["probabilities"], dtype=np.float64) for p in predictions]
    shape = (len(first["ids"]), len(labels))
    if any(a.shape != shape for a in probs):
        raise RunFolderError(f"{source}: probabilities of shape {[a.shape for a in probs]}, expected {shape}",
                             "retrain the fold whose predictions.json is damaged")
    mean = np.mean(probs, axis=0)
    m = classification_metrics(first["true"], mean.argmax(1).tolist(), labels)
    return {"uar": m.uar, "war": m.war, "macro_f1": m.macro_f1, "per_class_recall": m.per_class_recall,
            "confusion": m.confusion, "n_test": len(first["ids"]),
            "members_uar": [classification_metrics(first["true"], a.argmax(1).tolist(), labels).uar for a in probs]}


def check_seed_runs(run_dirs: Sequence[str | os.PathLike[str]]) -> list[TrainConfig]:
    """The runs' configurations, after checking that they differ in their seed and in nothing else that changes
    results (RunFolderError naming the first difference otherwise)."""
    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 2:
        raise RunFolderError(f"a seed ensemble needs at least two runs, got {len(dirs)}",
                             "name two or more run folders of one recipe trained with different seeds")
    cfgs = [read_run_config(d) for d in dirs]
    ref = seedless_settings(cfgs[0])
    for d, c in zip(dirs[1:], cfgs[1:]):
        other = seedless_settings(c)
        diff = [k for k in ref if ref[k] != other.get(k)]
        if diff:
            raise RunFolderError(f"{d}: differs from {dirs[0]} in {', '.join(diff)}, not only in seed",
                                 "average only runs of one recipe that differ in their seed")
    seeds = [c.seed for c in cfgs]
    if len(set(seeds)) != len(seeds):
        raise RunFolderError(f"the runs' seeds repeat ({seeds}): {', '.join(map(str, dirs))}",
                             "average runs trained with different seeds")
    return cfgs


def seed_ensemble(run_dirs: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """The seed ensemble of training runs of one recipe (see the module docstring) on the folds complete in all.

    Returns `runs`, `seeds`, `labels`, `folds` (fold name -> ensemble_fold's metrics plus `index`),
    `missing_folds` (indices complete in some runs only), `mean_std` (the ensemble's test metrics over folds,
    as in a run's summary.json), `members_uar` (mean ± std over folds of the members' mean UAR) and `gain`
    (ensemble minus the members' mean UAR per fold: mean ± std, folds better / worse).
    """
    dirs = [Path(d) for d in run_dirs]
    cfgs = check_seed_runs(dirs)
    done = [complete_folds(d, c) for d, c in zip(dirs, cfgs)]
    common = sorted(set.intersection(*(set(x) for x in done)))
    every = sorted(set.union(*(set(x) for x in done)))
    per_fold: dict[str, dict[str, Any]] = {}
    labels: list[str] = []
    for k in common:
        preds = [read_json(RunFolder(d).fold(k).predictions) for d in dirs]
        row = ensemble_fold(preds, source=f"fold {k} of {', '.join(map(str, dirs))}")
        labels = list(preds[0]["labels"])
        per_fold[str(done[0][k].get("name", f"fold_{k}"))] = {"index": k, **row}
    single = np.array([np.mean(r["members_uar"]) for r in per_fold.values()])
    ens = np.array([r["uar"] for r in per_fold.values()])
    return {"runs": [str(d) for d in dirs], "seeds": [c.seed for c in cfgs], "labels": labels, "folds": per_fold,
            "missing_folds": [k for k in every if k not in common],
            "mean_std": aggregate_folds(per_fold, labels) if per_fold else None,
            "members_uar": mean_std(single.tolist()),
            "gain": {**mean_std((ens - single).tolist()), "better": int((ens > single).sum()),
                     "worse": int((ens < single).sum())},
            "std": "sample standard deviation over folds (ddof=1); None with one fold"}


__all__ = ["check_seed_runs", "ensemble_fold", "seed_ensemble"]

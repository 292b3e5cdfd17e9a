"""Build an `AnalysisContext` from training run folders: the adapted run and its frozen baseline, one fold."""

from __future__ import annotations

import contextlib
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loralens.analysis.context import AnalysisContext, SplitData
from loralens.data.batching import Collator, FeatureDataset
from loralens.data.clips import Clip
from loralens.errors import ConfigError, RunFolderError
from loralens.io import read_json
from loralens.models.classifier import EmotionClassifier
from loralens.models.lora import ADAPTER, lora_modules
from loralens.training.config import TrainConfig, config_hash
from loralens.training.crossval import Prepared, build_classifier, make_accelerator, prepare
from loralens.training.head_choice import fold_config
from loralens.training.run_folder import RunFolder, read_run_config


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device; None or "auto": CUDA when available, else the CPU. Raises ConfigError for
    "cuda" without CUDA."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r}: CUDA is not available here", "use --device cpu (or auto)")
    return dev


def completed_fold(run_dir: str | Path, fold: int, cfg: TrainConfig) -> Path:
    """The folder of fold `fold` of a run, checked complete (metrics.json written under this configuration)."""
    folder = RunFolder(run_dir).fold(fold)
    if folder.completed(config_hash(cfg)) is None:
        raise RunFolderError(
            f"{folder.root}: fold {fold} of this run is not complete (no metrics.json for its configuration)",
            "train it first: loralens train --config <run>/config.yaml --fold " + str(fold),
        )
    return folder.root


def load_fold_classifier(run_dir: str | Path, fold: int, prep: Prepared,
                         cfg: TrainConfig | None = None) -> EmotionClassifier:
    """The trained classifier of one fold: a copy of the base encoder, the fold's adapter (lora) or encoder weights
    (full), and its head; eval mode, no gradients required."""
    from loralens.training.trained import fold_classifier

    cfg = cfg or read_run_config(run_dir)
    completed_fold(run_dir, fold, cfg)
    return fold_classifier(run_dir, fold, cfg, prep.whisper_encoder, len(prep.labels))


@contextlib.contextmanager
def _global_rng_kept() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's (CPU and CUDA) global random states on exit: `build_classifier`
    reseeds them, and loading a context must not change what later code draws."""
    py, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)


def initial_adapter(cfg: TrainConfig, prep: Prepared) -> dict[str, dict[str, torch.Tensor]] | None:
    """The LoRA weights every fold of a `lora` run started from (None for other methods), keyed by hook prefix
    (`blocks.{l}.attn.v_proj`): {"A": `[r, d_in]`, "B": `[d_out, r]`}, CPU tensors.

    Training builds each fold's classifier with `build_classifier(cfg, ...)`, which seeds every generator with
    `cfg.seed` before the head is made and the adapters are injected, so the same call reproduces peft's
    initialisation exactly (A kaiming-uniform with a = sqrt(5), B = 0), given the same peft version. The global
    random states are left as they were.
    """
    if cfg.method != "lora":
        return None
    with _global_rng_kept():
        clf = build_classifier(cfg, prep.whisper_encoder, len(prep.labels))
    return {p: {"A": m.lora_A[ADAPTER].weight.detach().cpu().clone(),
                "B": m.lora_B[ADAPTER].weight.detach().cpu().clone()}
            for p, m in lora_modules(clf.encoder).items()}


def _check_initial_matches(initial: dict[str, dict[str, torch.Tensor]], adapted: EmotionClassifier,
                           run_dir: str | Path) -> None:
    """The reconstructed initial adapter must have the trained adapter's modules and shapes."""
    trained = {p: (tuple(m.lora_A[ADAPTER].weight.shape), tuple(m.lora_B[ADAPTER].weight.shape))
               for p, m in lora_modules(adapted.encoder).items()}
    rebuilt = {p: (tuple(w["A"].shape), tuple(w["B"].shape)) for p, w in initial.items()}
    if rebuilt != trained:
        raise RunFolderError(
            f"{run_dir}: the adapter rebuilt from config.yaml ({rebuilt}) does not match the saved one ({trained})",
            "the run was trained with other LoRA settings or another loralens version; retrain it",
        )


def _fold_test_ids(run: RunFolder, fold: int) -> list[str] | None:
    if not run.folds.exists():
        return None
    folds = read_json(run.folds).get("folds")
    if not isinstance(folds, list) or fold >= len(folds):
        return None
    return sorted(folds[fold].get("test", []))


def _check_same_folds(a: RunFolder, b: RunFolder, fold: int) -> None:
    ta, tb = _fold_test_ids(a, fold), _fold_test_ids(b, fold)
    if ta is None or ta != tb:
        raise RunFolderError(
            f"{a.folds} and {b.folds}: fold {fold} has different test clips",
            "train the baseline on the same folds (pass --folds-file <run>/folds.json)",
        )


def balanced_sample(clips: Sequence[Clip], per_class: int | None, seed: int) -> list[Clip]:
    """At most `per_class` clips of each class, chosen by `seed`, in their original order (all when None)."""
    if per_class is None:
        return list(clips)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(clips):
        by_label[c.label].append(i)
    rng = random.Random(seed)
    keep: set[int] = set()
    for idx in by_label.values():
        keep.update(rng.sample(idx, min(per_class, len(idx))))
    return [c for i, c in enumerate(clips) if i in keep]


def split_data(clips: Sequence[Clip], prep: Prepared, window: str, batch_size: int) -> SplitData:
    """Clips as fixed batches, sorted by length so trimmed batches carry little padding."""
    ds = FeatureDataset(clips, prep.feature_cache, prep.labels)
    lengths = ds.mel_lengths()
    order = sorted(range(len(clips)), key=lambda i: lengths[i])
    collate = Collator(window)
    batches = [collate([ds[i] for i in order[s : s + batch_size]]) for s in range(0, len(order), batch_size)]
    return SplitData(batches=batches, speakers=[clips[i].speaker for i in order])


def context_from_runs(
    run_dir: str | Path,
    fold: int = 0,
    baseline_dir: str | Path | None = None,
    *,
    batch_size: int = 16,
    test_per_class: int | None = None,
    train_per_class: int | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    options: dict[str, dict[str, Any]] | None = None,
    device: str | torch.device | None = None,
) -> AnalysisContext:
    """The context for analysing fold `fold` of the adapted run `run_dir` against the frozen run `baseline_dir`.

    test_per_class / train_per_class: class-balanced caps on the clips used (None = all); the test split is what
    results are reported on, the training split is what tuned lenses and probes are fitted on.
    device: where the models run ("cpu", "cuda", ...; None or "auto" = CUDA when available); batches stay on the
    CPU and analyses move them.
    """
    dev = resolve_device(device)
    cfg = read_run_config(run_dir)
    accelerator = make_accelerator("fp32")
    prep = prepare(cfg, accelerator, write=False)
    if not 0 <= fold < len(prep.folds):
        raise RunFolderError(f"{run_dir}: fold {fold} does not exist (the run has folds 0..{len(prep.folds) - 1})",
                             "pick a fold index in that range")
    adapted = load_fold_classifier(run_dir, fold, prep, cfg)
    initial = initial_adapter(fold_config(cfg, RunFolder(run_dir).fold(fold).root), prep)
    if initial is not None:
        _check_initial_matches(initial, adapted, run_dir)
    frozen = None
    if baseline_dir is not None:
        base_cfg = read_run_config(baseline_dir)
        if base_cfg.method != "frozen":
            raise RunFolderError(f"{baseline_dir}: the baseline run is method {base_cfg.method!r}, not 'frozen'",
                                 "pass the frozen baseline's run folder (train/frozen of a loralens run)")
        same = ("model", "corpus", "label_set", "window")
        if any(getattr(base_cfg, f) != getattr(cfg, f) for f in same):
            theirs = "/".join(str(getattr(base_cfg, f)) for f in same)
            ours = "/".join(str(getattr(cfg, f)) for f in same)
            raise RunFolderError(
                f"{baseline_dir}: baseline {'/'.join(same)} is {theirs}, the run's is {ours}",
                "compare runs on the same model, corpus, label set and window",
            )
        _check_same_folds(RunFolder(run_dir), RunFolder(baseline_dir), fold)
        frozen = load_fold_classifier(baseline_dir, fold, prep, base_cfg)
    by_id = prep.corpus.by_id()
    f = prep.folds[fold]
    test_clips = balanced_sample([by_id[i] for i in f.test], test_per_class, seed)
    train_clips = balanced_sample([by_id[i] for i in f.train], train_per_class, seed)
    return AnalysisContext(
        adapted=adapted.to(dev),
        frozen=frozen.to(dev) if frozen is not None else None,
        label_names=tuple(prep.labels),
        test=split_data(test_clips, prep, cfg.window, batch_size),
        train=split_data(train_clips, prep, cfg.window, batch_size),
        fold=f"fold_{fold}",
        seed=seed,
        n_boot=n_boot,
        device=dev,
        options=options or {},
        initial_adapter=initial,
    )

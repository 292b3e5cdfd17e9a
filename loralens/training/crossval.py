"""The cross-validation driver: `train(config) -> summary` trains every fold (or one) of a corpus into a run folder.

Per fold: build the classifier from the same seed, fit on the training split with model selection on the
validation split only, evaluate the selected weights once on the test split, and write the fold folder
(`run_folder.py` lists the files). A fold whose `metrics.json` carries the run's configuration hash is skipped;
a fold with checkpoints resumes from the latest one. Works under `accelerate launch` (every process runs this;
the main process writes).
"""

from __future__ import annotations

import copy
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from loralens.data.clips import Clip, Corpus
from loralens.errors import ConfigError, RunFolderError
from loralens.io import atomic_write_json, atomic_write_text, read_json
from loralens.training.checkpoint import save_safetensors
from loralens.training.config import TrainConfig, config_hash
from loralens.training.corpus_prep import load_configured_corpus, run_folds, screen_corpus
from loralens.training.head_choice import ALL, AUTO
from loralens.training.loop import Split, epoch_batches, evaluate, fit, kept_batches, loop_settings, step_groups
from loralens.training.metrics import aggregate_folds
from loralens.training.precision import PrecisionChoice, resolve_precision
from loralens.training.run_folder import FoldFolder, RunFolder, read_log


def default_feature_cache() -> Path:
    """`$LORALENS_CACHE/features`, default `~/.cache/loralens/features`: shared by all runs."""
    return Path(os.environ.get("LORALENS_CACHE", "~/.cache/loralens")).expanduser() / "features"


def make_accelerator(precision: str | PrecisionChoice = "auto"):
    """An `accelerate.Accelerator` with bf16 autocast when `precision` (a config value, resolved by
    `resolve_precision`, or an already resolved `PrecisionChoice`) comes out as bf16, fp32 otherwise.
    Under `accelerate launch` it picks up the launcher's processes."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    choice = precision if isinstance(precision, PrecisionChoice) else resolve_precision(precision)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", choice.accelerate_mixed_precision) != choice.accelerate_mixed_precision:
        # accelerate keeps one process-wide state and refuses a second Accelerator with another precision; `loralens
        # run` trains (maybe bf16) and then analyses (fp32) in one process. Only the precision part is dropped; the
        # process group (PartialState) stays.
        AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True without CUDA: under a multi-process launcher this selects gloo (MULTI_CPU) instead of a GPU backend
    return Accelerator(mixed_precision=choice.accelerate_mixed_precision, cpu=not torch.cuda.is_available())


def run_precision(requested: str, run: RunFolder) -> PrecisionChoice:
    """The precision of a run in `run`: what its `precision.json` recorded when it started (so a resumed run
    computes as it began, even on other hardware), else `requested` resolved for this machine. A run folder
    started before precision was recorded (fold folders but no `precision.json`) resolved `auto` to fp32 on a
    CPU, and keeps it."""
    if run.precision.exists():
        saved = read_json(run.precision)
        if saved.get("requested") == requested and saved.get("resolved") in ("fp32", "bf16"):
            return PrecisionChoice(requested, saved["resolved"], saved.get("reason", "") + " (recorded when the run "
                                   "started)")
    choice = resolve_precision(requested)
    if (requested == "auto" and choice.mode == "bf16" and not torch.cuda.is_available() and not run.precision.exists()
            and run.fold_indices()):
        return PrecisionChoice(requested, "fp32", "auto: fp32, as this run folder was started (before bf16 on CPUs)")
    return choice


def peak_memory(device: torch.device | None = None) -> dict[str, float | None]:
    """Peak memory so far in MiB: CPU resident set of this process (`ru_maxrss`, the high-water mark since the
    process started) and CUDA `max_memory_allocated` since the last reset (None without CUDA)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss / 1024 if sys.platform != "darwin" else rss / 2**20
    cuda = None
    if device is not None and device.type == "cuda":
        cuda = torch.cuda.max_memory_allocated(device) / 2**20
    return {"cpu_rss_peak_mib": round(rss_mib, 1), "cuda_max_allocated_mib": None if cuda is None else round(cuda, 1)}


# ------------------------------------------------------------------------------------------------ data
@dataclass
class Prepared:
    """What the folds of a run share: the corpus (bad clips left out), the folds, the feature cache, the base model."""

    corpus: Corpus
    folds: list
    scheme: str
    feature_cache: Any
    whisper_encoder: torch.nn.Module
    labels: list[str]
    bad: list = field(default_factory=list)
    scheme_note: str = ""


def _folds(corpus: Corpus, cfg: TrainConfig, run: RunFolder) -> tuple[list, str, str]:
    """The folds of the training run folder `run` (`corpus_prep.run_folds` with its `folds.json`)."""
    return run_folds(corpus, cfg, run.folds)


def prepare(cfg: TrainConfig, accelerator, *, write: bool, echo: Callable[[str], None] | None = None) -> Prepared:
    """Corpus, screen, folds, feature cache and base encoder of a run."""
    from loralens.data.features import FeatureCache, FeatureSettings
    from loralens.models.classifier import whisper_encoder
    from loralens.models.loading import load_feature_extractor, load_whisper

    run = RunFolder(cfg.run_dir)
    say = echo if echo is not None and accelerator.is_main_process else (lambda _t: None)
    corpus = load_configured_corpus(cfg, lambda t: say(f"warning: {t}"))
    if write:
        # the main process screens and writes bad_files.json; the others then read it instead of decoding again
        if accelerator.is_main_process:
            corpus_ok, bad = screen_corpus(corpus, cfg, run.bad_files, write=True, progress=True)
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            corpus_ok, bad = screen_corpus(corpus, cfg, run.bad_files, write=False, progress=True)
        corpus = corpus_ok
    else:
        corpus, bad = screen_corpus(corpus, cfg, run.bad_files, write=False, progress=True)
    folds, scheme, scheme_note = _folds(corpus, cfg, run)
    from loralens.data.folds import require_sane_folds

    fresh = cfg.folds_file is None and not run.folds.exists()  # warnings of given folds were shown where made
    require_sane_folds(folds, corpus, scheme=scheme, seed=cfg.seed,
                       echo=echo if accelerator.is_main_process and fresh else None)
    if cfg.fold is not None and cfg.fold >= len(folds):
        raise ConfigError(f"fold={cfg.fold}: the corpus has {len(folds)} folds (0..{len(folds) - 1})",
                          "pick an index in that range, or leave fold unset to run all")
    settings = FeatureSettings.from_extractor(load_feature_extractor(cfg.model))
    cache = FeatureCache(cfg.feature_cache or default_feature_cache(), settings)
    encoder = whisper_encoder(load_whisper(cfg.model))
    return Prepared(corpus, folds, scheme, cache, encoder, list(corpus.labels), bad, scheme_note)


def _feature_split(clips: Sequence[Clip], prep: Prepared, window: str, augment=None, seed: int = 0) -> Split:
    """A split of cached features; with `augment` (an `AugmentConfig` that acts on audio or features: the training
    split only) its items are augmented per (seed, epoch, clip)."""
    from loralens.data.batching import Collator, FeatureDataset

    ds = FeatureDataset(clips, prep.feature_cache, prep.labels)
    labels = [prep.labels.index(c.label) for c in clips]
    lengths = ds.mel_lengths()
    if augment is not None and augment.on_audio:
        from loralens.data.augment import AugmentedFeatureDataset, AugmentSettings

        ds = AugmentedFeatureDataset(ds, AugmentSettings.from_config(augment), seed)
    return Split(ds, Collator(window), lengths, labels, [c.id for c in clips])


def mask_padding_for(cfg: TrainConfig) -> bool:
    """Padding mask in self-attention: as configured, else off for `full` (the paper: Whisper attends to its 30-s
    padding) and on for `trim` (a clip's encoding must not depend on its batch)."""
    return cfg.mask_padding if cfg.mask_padding is not None else cfg.window == "trim"


def build_classifier(cfg: TrainConfig, encoder: torch.nn.Module, n_classes: int):
    """A fresh `EmotionClassifier` on a copy of `encoder`, prepared for `cfg.method`, initialised from `cfg.seed`.
    `head.hidden_state: auto` not yet resolved for a fold (`head_choice`) builds the uncut encoder (the frozen pass
    that the choice is made from, the plan)."""
    from accelerate.utils import set_seed

    from loralens.models.classifier import EmotionClassifier

    hidden_state = cfg.head.hidden_state if isinstance(cfg.head.hidden_state, int) else None
    set_seed(cfg.seed)
    clf = EmotionClassifier(copy.deepcopy(encoder), n_classes, proj_size=cfg.head.projector_dim,
                            use_weighted_layer_sum=cfg.head.weighted_layer_sum, normalize_layers=cfg.head.layer_norm,
                            mask_padding=mask_padding_for(cfg), hidden_state=hidden_state,
                            standardize=cfg.head.standardize, speaker_norm=cfg.head.speaker_norm)
    lora = cfg.lora if cfg.method == "lora" else None
    clf.prepare_for(cfg.method, lora, gradient_checkpointing=cfg.gradient_checkpointing)
    return clf


# ------------------------------------------------------------------------------------------------ plan
def plan(cfg: TrainConfig, prep: Prepared, accelerator=None) -> dict:
    """The folds to run, their sizes, optimiser steps and the trainable parameters, without training."""
    clf = build_classifier(cfg, prep.whisper_encoder, len(prep.labels))
    counts = clf.parameter_counts()
    by_id = prep.corpus.by_id()
    world = accelerator.num_processes if accelerator is not None else 1
    run = RunFolder(cfg.run_dir)
    h = config_hash(cfg)
    folds = []
    for k, fold in enumerate(prep.folds):
        if cfg.fold is not None and k != cfg.fold:
            continue
        n_train = len(fold.train)
        lengths = [1] * n_train
        steps = len(step_groups(len(kept_batches(epoch_batches(lengths, cfg.batch_size, cfg.seed, 0), world)),
                                cfg.grad_accum))
        folds.append({
            "index": k, "name": fold.name,
            "train": n_train, "validation": len(fold.validation), "test": len(fold.test),
            "speakers": {s: len({by_id[i].speaker for i in fold.split(s)}) for s in ("train", "validation", "test")},
            "steps_per_epoch": steps,
            "status": "complete" if run.fold(k).completed(h) else
                      ("resumable" if (run.fold(k).checkpoints / "latest.json").exists() else "to run"),
        })
    return {"corpus": prep.corpus.name, "clips": len(prep.corpus.clips), "labels": prep.labels,
            "bad_files": len(prep.bad), "scheme": prep.scheme, "scheme_note": prep.scheme_note or prep.scheme,
            "n_folds": len(prep.folds), "method": cfg.method,
            "model": cfg.model, "trainable_params": counts.trainable, "total_params": counts.total,
            "config_hash": h, "run_dir": str(cfg.run_dir), "schedule": schedule_line(cfg), "folds": folds}


def schedule_line(cfg: TrainConfig) -> str:
    """One line saying how a fold trains, e.g. "schedule: head alone 20 epochs on the frozen encoder (LP-FT), then
    3 epochs at most, lr 3e-04 adapters / 1e-03 head, batch 8, selection on validation uar, early stop after 3 epochs
    without improvement"."""
    trains = {"lora": "adapters", "full": "encoder", "frozen": None}[cfg.method]
    lp = ""
    if cfg.lp_ft and trains:
        lp = ("head fitted as a logistic regression on the frozen encoder (LP-FT), then " if cfg.lp_fit == "logistic"
              else f"head alone {cfg.lp_ft_epochs} epochs on the frozen encoder (LP-FT), then ")
    lr = f"lr {cfg.lr_encoder:.0e} {trains} / {cfg.lr_head:.0e} head" if trains else f"lr {cfg.lr_head:.0e} head"
    stop = f", early stop after {cfg.patience} epochs without improvement" if cfg.patience else ""
    avg = f", mean of the last {cfg.average_last} epochs' weights" if cfg.average_last > 1 else ""
    if cfg.select_on == "last":
        epochs, select = f"{cfg.epochs} epochs", "the last epoch kept (no selection)"
    else:
        epochs, select = f"{cfg.epochs} epochs at most", f"selection on validation {cfg.select_on}{stop}"
    return f"schedule: {lp}{epochs}, {lr}, batch {cfg.batch_size}, {select}{avg}{_head_reads(cfg)}"


def _head_reads(cfg: TrainConfig) -> str:
    """"; head on hidden state 2 (encoder cut there), z-scored input" and the like; "" for the last-layer head."""
    h = cfg.head
    where = {None: "", "auto": "; head on the hidden state each fold chooses (speaker-grouped probe on the frozen "
             "outputs; encoder cut there)",
             "auto-all": "; head on the hidden state or the weighted sum of all hidden states, whichever each fold "
             "chooses (speaker-grouped probe on the frozen outputs)"}.get(
        h.hidden_state, f"; head on hidden state {h.hidden_state} (encoder cut there)")
    if h.weighted_layer_sum:
        where = "; head on the weighted sum of all hidden states" + (" (each normalised)" if h.layer_norm else "")
    if h.speaker_norm:
        where = (where or "; head") + ", input z-scored per speaker"
    elif h.standardize:
        where = (where or "; head") + ", z-scored input"
    return where


def format_plan(p: dict) -> str:
    lines = [
        f"corpus {p['corpus']}: {p['clips']} clips, classes {', '.join(p['labels'])}"
        + (f" ({p['bad_files']} bad audio file(s) left out: {Path(p['run_dir']) / 'bad_files.json'})"
           if p["bad_files"] else ""),
        f"folds: {p['n_folds']}, {p.get('scheme_note') or p['scheme']}; running {len(p['folds'])}",
        f"model {p['model']}, method {p['method']}: {p['trainable_params']:,} trainable of {p['total_params']:,} "
        f"parameters ({100 * p['trainable_params'] / max(p['total_params'], 1):.2f}%)",
        *([p["schedule"]] if p.get("schedule") else []),
        f"run folder {p['run_dir']} (config hash {p['config_hash']})",
        "",
        f"{'fold':<8}{'train':>7}{'val':>6}{'test':>6}   speakers (train/val/test)   steps/epoch   status",
    ]
    for f in p["folds"]:
        s = f["speakers"]
        lines.append(f"{f['name']:<8}{f['train']:>7}{f['validation']:>6}{f['test']:>6}   "
                     f"{s['train']:>4}/{s['validation']}/{s['test']:<17}   {f['steps_per_epoch']:>11}   {f['status']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ folds
def _linear_probe_head(cfg: TrainConfig, clf, prep: Prepared, fold, k: int, accelerator, lp_pooled: dict,
                      folder: FoldFolder, echo: Callable[[str], None]) -> dict:
    """LP-FT's first stage: fit `clf.head` alone on the frozen encoder's cached pooled outputs of fold `k`, as a
    logistic regression (`lp_fit: logistic`) or for `cfg.lp_ft_epochs` epochs of the loop (validation selection as
    configured, no augmentation), leaving the head in `clf.head`. The head is stored in `fold_k/lp/head.safetensors`
    (+ `result.json`) and reused on a rerun."""
    from safetensors.torch import load_file

    from loralens.training.frozen_cache import pooled_split

    lp_dir = folder.root / "lp"
    head_file, result_file = lp_dir / "head.safetensors", lp_dir / "result.json"
    if head_file.exists() and result_file.exists():
        clf.head.load_state_dict(load_file(str(head_file)))
        return read_json(result_file)
    by_id = prep.corpus.by_id()
    splits = {}
    for name in ("train", "validation"):
        clips = [by_id[i] for i in fold.split(name)]
        splits[name] = pooled_split(lp_pooled, [c.id for c in clips], [prep.labels.index(c.label) for c in clips])
    if cfg.lp_fit == "logistic":
        info = _logistic_head(cfg, clf, prep, k, accelerator, splits, lp_pooled)
    else:
        info = _gradient_head(cfg, clf, prep, k, accelerator, splits, lp_dir)
    if accelerator.is_main_process:
        save_safetensors(head_file, clf.head.state_dict())
        atomic_write_json(result_file, info)
        shutil.rmtree(lp_dir / "checkpoints", ignore_errors=True)
        how = ("fitted as a logistic regression" if cfg.lp_fit == "logistic"
               else f"selected at epoch {info['selected_epoch'] + 1}")
        echo(f"fold {k}: linear-probe head {how}, validation UAR {info['validation'].get('uar', float('nan')):.4f}")
    accelerator.wait_for_everyone()
    return info


def _logistic_head(cfg: TrainConfig, clf, prep: Prepared, k: int, accelerator, splits: dict,
                   lp_pooled: dict) -> dict:
    """`lp_fit: logistic`: `clf.head` set to the logistic regression of the training clips' labels on the head's
    own inputs (`logistic_head`, from the pooled frozen outputs `lp_pooled`); returns the stage's record (validation
    metrics, fit time)."""
    from loralens.training.frozen_cache import PooledHead
    from loralens.training.logistic_head import PROBE_C, fit_logistic_head

    t0 = time.perf_counter()
    model = PooledHead(clf.head, clf.speaker_statistics)
    train = splits["train"]
    pooled = torch.stack([lp_pooled[i] for i in train.ids])
    fit_logistic_head(model, pooled, list(train.ids), list(train.labels), seed=cfg.seed)
    val, _ = evaluate(model, splits["validation"], accelerator, prep.labels, cfg.eval_batch_size or cfg.batch_size,
                      desc=f"fold {k} linear probe")
    return {"fit": "logistic", "c": PROBE_C, "epochs": 0, "selected_epoch": None,
            "validation": {"uar": val.uar, "war": val.war, "macro_f1": val.macro_f1},
            "train_time_s": round(time.perf_counter() - t0, 2)}


def _gradient_head(cfg: TrainConfig, clf, prep: Prepared, k: int, accelerator, splits: dict, lp_dir: Path) -> dict:
    """`lp_fit: gradient`: `clf.head` trained alone for `cfg.lp_ft_epochs` epochs on the pooled splits, the epoch
    of best validation UAR (or as configured) kept; returns the stage's record."""
    from dataclasses import replace

    from loralens.training.frozen_cache import PooledHead

    settings = replace(loop_settings(cfg), epochs=cfg.lp_ft_epochs, average_last=1, mixup_alpha=0.0,
                       label_smoothing=0.0, select_on="uar" if cfg.select_on == "last" else cfg.select_on)
    threads = torch.get_num_threads()
    if accelerator.device.type == "cpu":
        torch.set_num_threads(1)  # the head alone is too small for intra-op threads (see run_fold)
    try:
        result = fit(PooledHead(clf.head, clf.speaker_statistics), splits["train"], splits["validation"], settings,
                     accelerator, lp_dir,
                     prep.labels, desc=f"fold {k} linear probe")
    finally:
        torch.set_num_threads(threads)
    return {"epochs": cfg.lp_ft_epochs, "selected_epoch": result.best_epoch, "validation": result.best_validation,
            "train_time_s": round(result.train_time_s, 2)}


def _no_frozen_outputs(needed_by: str) -> ConfigError:
    """The error of `run_fold` called without the frozen encoder's outputs that `needed_by` (a setting) reads."""
    return ConfigError(f"{needed_by}: the frozen encoder's outputs were not computed",
                       "call train(cfg), which computes them, rather than run_fold alone")


FEW_CLIPS = 10  # below this many clips a speaker's statistics cost accuracy (docs/results.md 6f)


def _standardize_head(clf, fold, frozen_pooled: dict | None, speaker_of: dict[str, str], folder: FoldFolder,
                      write: bool, echo: Callable[[str], None] = print) -> None:
    """Fix the head's z-scoring statistics from the frozen encoder's pooled outputs: those of the fold's training
    clips, or with `speaker_norm` each speaker's over all their clips of the fold (stored in the fold folder)."""
    if frozen_pooled is None:
        raise _no_frozen_outputs("head.standardize")
    if clf.head.speaker_norm:
        from loralens.models.speaker_stats import SpeakerStatistics

        ids = [*fold.split("train"), *fold.split("validation"), *fold.split("test")]
        clf.speaker_statistics = SpeakerStatistics.from_pooled(frozen_pooled, {i: speaker_of[i] for i in ids})
        if write:
            clf.speaker_statistics.save(folder.speaker_statistics)
            few = sorted((n, s) for s, n in clf.speaker_statistics.n_clips.items() if n < FEW_CLIPS)
            if few:
                listed = ", ".join(f"{s}: {n}" for n, s in few)
                echo(f"warning: speaker normalisation with few clips per speaker ({listed}); statistics from "
                     f"under {FEW_CLIPS} clips cost accuracy (docs/results.md 6f); "
                     "consider --no-speaker-norm")
        return
    clf.head.set_standardization(torch.stack([frozen_pooled[i] for i in fold.split("train")]))


def _resolve_hidden_state(cfg: TrainConfig, prep: Prepared, fold, folder: FoldFolder, pooled: dict | None,
                          lp_pooled: dict | None, accelerator, echo: Callable[[str], None]):
    """(the fold's configuration with `hidden_state: auto` resolved, `pooled` and `lp_pooled` cut to the hidden
    states up to the chosen one). The choice is made on the frozen outputs of the fold's training and validation
    clips (`head_choice.choose_hidden_state`)."""
    from loralens.training.head_choice import resolve_fold_head

    frozen = pooled if pooled is not None else lp_pooled
    if frozen is None:
        raise _no_frozen_outputs("head.hidden_state auto")
    by_id = prep.corpus.by_id()
    ids = [*fold.split("train"), *fold.split("validation")]
    fold_cfg = resolve_fold_head(cfg, folder.root, frozen, ids, [prep.labels.index(by_id[i].label) for i in ids],
                                 [by_id[i].speaker for i in ids], write=accelerator.is_main_process, echo=echo)
    k = fold_cfg.head.hidden_state
    if k is None:  # the weighted sum of all hidden states (auto-all): nothing to cut
        return fold_cfg, pooled, lp_pooled

    def cut(d: dict | None) -> dict | None:
        return None if d is None else {i: v[: k + 1] for i, v in d.items()}

    return fold_cfg, cut(pooled), cut(lp_pooled)


def run_fold(cfg: TrainConfig, prep: Prepared, k: int, accelerator, pooled: dict | None = None,
             echo: Callable[[str], None] = print, stop_after_steps: int | None = None,
             lp_pooled: dict | None = None) -> dict | None:
    """Train, select and test fold `k`; write its folder; return its metrics (None when stopped early for tests).
    lp_pooled: the frozen encoder's pooled outputs for LP-FT's head stage (`cfg.lp_ft_epochs > 0`) and the head's
    standardisation (`cfg.head.standardize`)."""
    from loralens.training.frozen_cache import PooledHead, pooled_split

    fold = prep.folds[k]
    folder = RunFolder(cfg.run_dir).fold(k)
    h = config_hash(cfg)
    done = folder.completed(h)
    if done is not None:
        if accelerator.is_main_process:
            shutil.rmtree(folder.checkpoints, ignore_errors=True)  # left when killed right after metrics.json
            echo(f"fold {k} ({fold.name}): complete, skipped (test UAR {done['test']['uar']:.4f})")
        return done
    if folder.metrics.exists():
        raise RunFolderError(f"{folder.metrics}: written under another configuration",
                             "use a new run folder (--run-dir)")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        folder.root.mkdir(parents=True, exist_ok=True)
    device = accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()

    by_id = prep.corpus.by_id()
    fold_cfg = cfg
    if cfg.head.hidden_state in AUTO:
        fold_cfg, pooled, lp_pooled = _resolve_hidden_state(cfg, prep, fold, folder, pooled, lp_pooled, accelerator,
                                                            echo)
    clf = build_classifier(fold_cfg, prep.whisper_encoder, len(prep.labels))
    counts = clf.parameter_counts()
    splits = {}
    for name in ("train", "validation", "test"):
        clips = [by_id[i] for i in fold.split(name)]
        if pooled is not None:
            splits[name] = pooled_split(pooled, [c.id for c in clips], [prep.labels.index(c.label) for c in clips])
        else:
            splits[name] = _feature_split(clips, prep, cfg.window, cfg.augment if name == "train" else None,
                                          seed=cfg.seed)
    if cfg.head.standardize:
        _standardize_head(clf, fold, pooled if pooled is not None else lp_pooled,
                          {i: c.speaker for i, c in by_id.items()}, folder, accelerator.is_main_process, echo)
    model = PooledHead(clf.head, clf.speaker_statistics) if pooled is not None else clf
    settings = loop_settings(cfg)
    lp_info = None
    lp_earlier_s = 0.0  # the probe stage's training time when it ran in an earlier session
    if cfg.lp_ft and pooled is None:
        if lp_pooled is None:
            raise _no_frozen_outputs(f"lp_ft_epochs={cfg.lp_ft_epochs}, lp_fit={cfg.lp_fit}")
        lp_result = folder.root / "lp" / "result.json"
        if (folder.checkpoints / "latest.json").exists():
            lp_info = read_json(lp_result)  # the adapted fit's checkpoint holds the head
        else:
            earlier = lp_result.exists()
            lp_info = _linear_probe_head(cfg, clf, prep, fold, k, accelerator, lp_pooled, folder, echo)
            if not earlier:
                lp_earlier_s = -lp_info["train_time_s"]  # already inside this session's set-up time
        lp_earlier_s += lp_info["train_time_s"]
        from accelerate.utils import set_seed

        set_seed(cfg.seed)  # the adapted fit starts from the same RNG state whether or not the probe ran now
    threads = torch.get_num_threads()
    if pooled is not None and accelerator.device.type == "cpu":
        # the head alone is far too small for intra-op threads: on a busy CPU they made a RAVDESS fold 25x slower
        torch.set_num_threads(1)
    t_fit = time.perf_counter()
    try:
        result = fit(model, splits["train"], splits["validation"], settings, accelerator, folder.root, prep.labels,
                     desc=f"fold {k}", stop_after_steps=stop_after_steps)
    finally:
        torch.set_num_threads(threads)
    t_fit_end = time.perf_counter()
    if result.interrupted:
        return None
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    test, test_logits = evaluate(model, splits["test"], accelerator, prep.labels, eval_bs, cfg.num_workers,
                                 desc="test")
    pred = test_logits.argmax(axis=1)
    # a resumed fold counts the training time of its earlier sessions too (kept in the checkpoints)
    wall = (t_fit - t0) + result.train_time_s + (time.perf_counter() - t_fit_end) + lp_earlier_s
    metrics = {
        "fold": k, "name": fold.name, "config_hash": h, "method": cfg.method, "model": cfg.model,
        "labels": prep.labels,
        "selected_epoch": result.best_epoch, "epochs_trained": result.epochs_trained,
        "stopped_early": result.stopped_early, "steps": result.steps,
        "validation": result.averaged["validation"] if result.averaged else result.best_validation,
        "test": test.to_dict(),
        "sizes": {s: len(splits[s]) for s in splits},
        "speakers": {s: sorted({by_id[i].speaker for i in fold.split(s)}) for s in ("train", "validation", "test")},
        "trainable_params": counts.trainable, "total_params": counts.total,
        "wall_time_s": round(wall, 2), "processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "precision": read_json(RunFolder(cfg.run_dir).precision) if RunFolder(cfg.run_dir).precision.exists() else None,
        "peak_memory": peak_memory(device),
    }
    if result.averaged:
        metrics["averaged_epochs"] = result.averaged["epochs"]
        metrics["selected_validation"] = result.best_validation
    if lp_info is not None:
        metrics["linear_probe"] = lp_info
    if cfg.head.hidden_state is not None:
        metrics["hidden_state"] = fold_cfg.head.hidden_state if fold_cfg.head.hidden_state is not None else ALL
    if accelerator.is_main_process:
        if cfg.method == "lora":
            clf.save_adapter(folder.adapter)
        elif cfg.method == "full":
            save_safetensors(folder.encoder, clf.encoder.state_dict())
        save_safetensors(folder.head, clf.head.state_dict())
        atomic_write_json(folder.predictions, {
            "ids": list(splits["test"].ids), "true": [int(y) for y in splits["test"].labels],
            "pred": [int(p) for p in pred], "labels": prep.labels,
            # softmax probabilities, so that predictions of several runs (seeds) can be averaged afterwards
            "probabilities": [[round(x, 6) for x in row]
                              for row in torch.softmax(torch.from_numpy(test_logits).double(), dim=1).tolist()]})
        _fold_figures(folder, metrics)
        atomic_write_json(folder.metrics, metrics)  # last: marks the fold complete
        shutil.rmtree(folder.checkpoints, ignore_errors=True)
        kept = "last epoch" if fold_cfg.select_on == "last" else "selected epoch"
        echo(f"fold {k} ({fold.name}): {kept} {result.best_epoch + 1}, validation UAR "
             f"{result.best_validation.get('uar', float('nan')):.4f}, test UAR {test.uar:.4f}, WAR {test.war:.4f}, "
             f"macro-F1 {test.macro_f1:.4f} ({wall:.1f} s)")
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    return metrics


def _fold_figures(folder: FoldFolder, metrics: dict) -> None:
    from loralens.plots.confusion import confusion_figure
    from loralens.plots.training import training_curve

    title = f"{metrics['name']} ({metrics['method']})"
    if folder.log.exists():
        training_curve(read_log(folder.log), folder.figures, title=title, best_epoch=metrics["selected_epoch"])
    confusion_figure(metrics["test"]["confusion"], metrics["labels"], folder.figures,
                     title=f"{title}: test UAR {metrics['test']['uar']:.3f}")


# ------------------------------------------------------------------------------------------------ summary
def summarize(cfg: TrainConfig, prep: Prepared) -> dict:
    """`summary.json` content: test metrics of every complete fold and their mean ± std (ddof=1)."""
    run = RunFolder(cfg.run_dir)
    h = config_hash(cfg)
    per_fold, missing = {}, []
    for k, fold in enumerate(prep.folds):
        m = run.fold(k).completed(h)
        if m is None:
            missing.append(fold.name)
            continue
        per_fold[fold.name] = {**{key: m["test"][key] for key in ("uar", "war", "macro_f1", "per_class_recall")},
                               "validation_uar": m["validation"].get("uar"), "selected_epoch": m["selected_epoch"],
                               "wall_time_s": m["wall_time_s"], "trainable_params": m["trainable_params"],
                               "peak_memory": m["peak_memory"], "n_test": m["sizes"]["test"]}
    return {"corpus": prep.corpus.name, "method": cfg.method, "model": cfg.model, "config_hash": h,
            "scheme": prep.scheme, "labels": prep.labels, "folds": per_fold, "missing_folds": missing,
            "skipped": [{k: b.get(k) for k in ("id", "path", "reason")} for b in prep.bad],
            "mean_std": aggregate_folds(per_fold, prep.labels) if per_fold else None,
            "std": "sample standard deviation over folds (ddof=1); None with one fold"}


def _pm(d: dict | None) -> str:
    if not d or d.get("mean") is None:
        return "–"
    return f"{100 * d['mean']:.2f}" + (f" ± {100 * d['std']:.2f}" if d.get("std") is not None else "")


def summary_markdown(s: dict) -> str:
    """A readable `summary.md`: a table of the folds and the mean ± std (percent)."""
    lines = [f"# Training summary: {s['corpus']}, {s['method']} on {s['model']}", "",
             f"Folds: {s['scheme']}; config hash `{s['config_hash']}`. Test metrics in percent; model selection on "
             "the validation split only; mean ± sample std over folds (ddof=1).", "",
             "| fold | test UAR | test WAR | test macro-F1 | val UAR | epoch | time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, f in s["folds"].items():
        lines.append(f"| {name} | {100 * f['uar']:.2f} | {100 * f['war']:.2f} | {100 * f['macro_f1']:.2f} | "
                     f"{100 * (f['validation_uar'] or 0):.2f} | {f['selected_epoch'] + 1} | {f['wall_time_s']:.1f} |")
    ms = s["mean_std"]
    if ms:
        lines.append(f"| **mean ± std** | {_pm(ms['uar'])} | {_pm(ms['war'])} | {_pm(ms['macro_f1'])} | | | |")
        lines += ["", "Per-class recall (mean ± std over folds):", "",
                  "| class | recall |", "|---|---:|"]
        lines += [f"| {lab} | {_pm(ms['per_class_recall'][lab])} |" for lab in s["labels"]]
    if s["missing_folds"]:
        lines += ["", f"Not yet complete: {', '.join(s['missing_folds'])}."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ entry
def train(cfg: TrainConfig, *, dry_run: bool = False, echo: Callable[[str], None] = print,
          accelerator=None, stop_after_steps: int | None = None) -> dict:
    """Run the cross-validation of `cfg` (all folds, or `cfg.fold`) into `cfg.run_dir`; return the summary
    (`summary.json`'s content). dry_run: return (and print) the plan instead of training."""
    if accelerator is None:
        choice = run_precision(cfg.precision, RunFolder(cfg.run_dir))
        accelerator = make_accelerator(choice)
    else:
        choice = PrecisionChoice(cfg.precision, "bf16" if accelerator.mixed_precision == "bf16" else "fp32",
                                 "the accelerator given by the caller")
    if dry_run or not accelerator.is_main_process:
        return _train(cfg, choice, dry_run=dry_run, echo=echo, accelerator=accelerator,
                      stop_after_steps=stop_after_steps)
    from loralens.training.run_folder import RunLock

    with RunLock(cfg.run_dir, echo=echo):  # the main process holds the folder for the whole command
        return _train(cfg, choice, dry_run=dry_run, echo=echo, accelerator=accelerator,
                      stop_after_steps=stop_after_steps)


def _train(cfg: TrainConfig, choice: PrecisionChoice, *, dry_run: bool, echo: Callable[[str], None], accelerator,
           stop_after_steps: int | None) -> dict:
    run = RunFolder(cfg.run_dir)
    main = accelerator.is_main_process
    if main:
        echo(f"precision: {choice.mode} ({choice.reason})")
    if dry_run:
        run.check_claim(cfg)  # the real run would refuse a folder of other settings: say so now
    elif main:
        run.claim(cfg)
        if not run.precision.exists():
            atomic_write_json(run.precision, choice.to_dict())
    accelerator.wait_for_everyone()
    prep = prepare(cfg, accelerator, write=not dry_run, echo=echo)
    if dry_run:
        p = plan(cfg, prep, accelerator)
        if main:
            echo(format_plan(p))
        return p
    if main:
        if not run.folds.exists():
            from loralens.data.folds import save_folds

            save_folds(run.folds, prep.folds, prep.corpus, scheme=prep.scheme, seed=cfg.seed)
        echo(format_plan(plan(cfg, prep, accelerator)))
    selected = [cfg.fold] if cfg.fold is not None else list(range(len(prep.folds)))
    h = config_hash(cfg)
    pending = [k for k in selected if run.fold(k).completed(h) is None]
    in_folds = {i for f in prep.folds for i in (*f.train, *f.validation, *f.test)}
    clips = [c for c in prep.corpus.clips if c.id in in_folds]
    if pending and main:
        prep.feature_cache.prefetch(clips)
    accelerator.wait_for_everyone()
    pooled = lp_pooled = None
    if cfg.method == "frozen" and pending:
        pooled = _frozen_outputs(cfg, prep, accelerator, clips)
    needs_frozen = cfg.lp_ft or cfg.head.standardize or cfg.head.hidden_state in AUTO
    if needs_frozen and pooled is None and pending:
        lp_pooled = _frozen_outputs(cfg.model_copy(update={"method": "frozen", "gradient_checkpointing": False,
                                                           "lp_ft_epochs": 0}), prep, accelerator, clips)
    for k in selected:
        m = run_fold(cfg, prep, k, accelerator, pooled=pooled, echo=echo, stop_after_steps=stop_after_steps,
                     lp_pooled=lp_pooled)
        if m is None:
            return {}
    summary = summarize(cfg, prep)
    if main:
        atomic_write_json(run.summary_json, summary)
        atomic_write_text(run.summary_md, summary_markdown(summary))
        ms = summary["mean_std"]
        if ms:
            echo(f"test UAR {_pm(ms['uar'])} %, WAR {_pm(ms['war'])} %, macro-F1 {_pm(ms['macro_f1'])} % "
                 f"over {ms['uar']['n']} fold(s); {run.summary_md}")
    accelerator.wait_for_everyone()
    return summary


def _frozen_outputs(cfg: TrainConfig, prep: Prepared, accelerator, clips: list[Clip]) -> dict:
    """The frozen encoder's per-layer pooled outputs of `clips` (`frozen_cache.pooled_outputs`), cached in the run
    folder. A head on an earlier hidden state k runs the encoder cut after layer k-1; when the uncut encoder's
    outputs are already cached there (e.g. shared from the frozen baseline of the same run), their first k + 1
    hidden states are those of the cut encoder (the same operations on the same inputs) and are read instead."""
    from loralens.training.frozen_cache import cache_key, pooled_outputs

    split = _feature_split(clips, prep, cfg.window)
    root = RunFolder(cfg.run_dir).encoder_cache
    k = cfg.head.hidden_state
    if isinstance(k, int) and k < len(prep.whisper_encoder.layers):
        full = build_classifier(cfg.model_copy(update={"head": cfg.head.model_copy(update={"hidden_state": None,
                                                                                          "standardize": False})}),
                                prep.whisper_encoder, len(prep.labels))
        key = cache_key(full, window=cfg.window, feature_key=prep.feature_cache.settings_key, ids=split.ids,
                        precision=accelerator.mixed_precision)
        if (root / f"{key}.safetensors").exists():
            pooled = pooled_outputs(full, split, root, key, accelerator)
            return {i: v[: k + 1] for i, v in pooled.items()}
    clf = build_classifier(cfg, prep.whisper_encoder, len(prep.labels))
    key = cache_key(clf, window=cfg.window, feature_key=prep.feature_cache.settings_key, ids=split.ids,
                    precision=accelerator.mixed_precision)
    return pooled_outputs(clf, split, root, key, accelerator,
                          batch_size=cfg.eval_batch_size or cfg.batch_size, num_workers=cfg.num_workers)

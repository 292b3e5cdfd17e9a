"""The fit / evaluate loop on `accelerate.Accelerator` (CPU, CUDA with bf16 autocast, DDP under `accelerate launch`).

Determinism and resume: the batches of an epoch are a pure function of (seed, epoch) (`epoch_batches`); each
process takes its share of every global batch (`shard`), so the global batch does not depend on the number of
processes; the loss of a micro-batch is the sum of its per-clip losses divided by the clips of the whole optimiser
step (all processes, all accumulated micro-batches) and multiplied by the number of processes (DDP averages
gradients), so a step's gradient is the mean over its clips whatever the process count or padding. A checkpoint
stores the position in the epoch; resuming skips the batches already seen and restores every RNG state, so a
resumed run takes exactly the steps the uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from loralens.errors import ConfigError
from loralens.io import atomic_write_text
from loralens.training.checkpoint import CheckpointStore
from loralens.training.metrics import ClassificationMetrics, classification_metrics


@dataclass
class Split:
    """The clips of one split, ready for the loop.

    dataset: item i = clip i; collate: list of items -> a batch with `.features`, `.mel_lengths`, `.labels`
    (`[batch]` long) and `.to(device)`; lengths: a length per clip (for length-grouped batches);
    labels: class index per clip; ids: clip ids.
    """

    dataset: Dataset
    collate: Callable[[list], Any]
    lengths: Sequence[int]
    labels: Sequence[int]
    ids: Sequence[str]

    def __len__(self) -> int:
        return len(self.ids)


def _from_config(path: str) -> Any:
    """A `LoopSettings` field read from `TrainConfig` field `path` (dotted, e.g. "augment.mixup_alpha"): its default
    is that field's default under the default method (`method_default`), `loop_settings` reads its value there. The
    config declares the setting once."""
    from loralens.training.config import field_default, method_default

    return field(default=method_default(path, field_default("method")), metadata={"config": path})


@dataclass
class LoopSettings:
    """Optimisation settings of one fit: the `TrainConfig` fields the loop reads (meaning, default and validation
    live there; `loop_settings(cfg)` builds them from a configuration), plus `group_batches`, which is not a
    configuration setting. Tests and the LP-FT head stage build or change them directly."""

    epochs: int = _from_config("epochs")
    batch_size: int = _from_config("batch_size")
    eval_batch_size: int | None = _from_config("eval_batch_size")
    grad_accum: int = _from_config("grad_accum")
    lr_head: float = _from_config("lr_head")
    lr_encoder: float = _from_config("lr_encoder")
    weight_decay: float = _from_config("weight_decay")
    warmup_ratio: float = _from_config("warmup_ratio")
    schedule: str = _from_config("schedule")
    grad_clip: float | None = _from_config("grad_clip")
    patience: int | None = _from_config("patience")
    seed: int = _from_config("seed")
    checkpoint_every: int = _from_config("checkpoint_every")
    log_every: int = _from_config("log_every")
    num_workers: int = _from_config("num_workers")
    group_batches: int = 16  # batches per length group of the sampler (`epoch_batches`); not configurable
    select_on: str = _from_config("select_on")
    average_last: int = _from_config("average_last")
    mixup_alpha: float = _from_config("augment.mixup_alpha")
    label_smoothing: float = _from_config("augment.label_smoothing")


def loop_settings(cfg) -> LoopSettings:
    """The loop's settings of a `TrainConfig`: each field read from the config field named in its metadata."""
    from dataclasses import fields

    from loralens.training.config import field_value

    return LoopSettings(**{f.name: field_value(cfg, f.metadata["config"]) for f in fields(LoopSettings)
                           if "config" in f.metadata})


@dataclass
class FitResult:
    """What `fit` found: the validation-selected epoch (0-based) and its validation metrics, the epochs trained,
    whether early stopping ended the fit, the optimiser steps taken."""

    best_epoch: int
    best_validation: dict
    epochs_trained: int
    stopped_early: bool
    steps: int
    history: list[dict] = field(default_factory=list)
    interrupted: bool = False
    train_time_s: float = 0.0  # seconds in `fit`, summed over the sessions of a resumed fit
    averaged: dict | None = None  # with average_last > 1: {"epochs": [...], "validation": metrics of the mean weights}


# ------------------------------------------------------------------------------------------ batch order
def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                  group_batches: int = 16) -> list[list[int]]:
    """Global batches (lists of split indices) of `epoch`: a pure function of (lengths, batch_size, seed, epoch).
    Shuffled, length-grouped within groups of `group_batches` batches, batch order shuffled."""
    from loralens.data.batching import LengthGroupedBatchSampler

    sampler = LengthGroupedBatchSampler(lengths, batch_size, seed=seed, group_batches=group_batches)
    sampler.set_epoch(epoch)
    return sampler.batches()


def shard(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process' part of each global batch (`batch[rank::world]`); global batches smaller than `world` are
    dropped under several processes so that every process always has work (DDP needs every rank in each step)."""
    if world == 1:
        return batches
    return [b[rank::world] for b in batches if len(b) >= world]


def kept_batches(batches: list[list[int]], world: int) -> list[list[int]]:
    return batches if world == 1 else [b for b in batches if len(b) >= world]


def step_groups(n_batches: int, grad_accum: int) -> list[range]:
    """Micro-batch index ranges of each optimiser step of an epoch (the last step may have fewer)."""
    return [range(i, min(i + grad_accum, n_batches)) for i in range(0, n_batches, grad_accum)]


# ---------------------------------------------------------------------------------------------- optimiser
def param_groups(model: torch.nn.Module, lr_head: float, lr_encoder: float, weight_decay: float,
                 is_head: Callable[[str], bool]) -> list[dict]:
    """AdamW parameter groups: head / encoder (adapters) with their learning rates; weight decay on matrices only
    (biases, norms and layer weights are not decayed)."""
    groups: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = ("head" if is_head(name) else "encoder", p.ndim >= 2)
        groups.setdefault(key, []).append(p)
    out = []
    for (part, decay), params in sorted(groups.items()):
        out.append({"params": params, "lr": lr_head if part == "head" else lr_encoder,
                    "weight_decay": weight_decay if decay else 0.0, "name": f"{part}{'' if decay else '_no_decay'}"})
    if not out:
        raise ConfigError("the model has no trainable parameters", "check the training method (lora, frozen, full)")
    return out


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float, schedule: str):
    """Linear warm-up over `warmup_ratio * total_steps` steps, then cosine or linear decay to 0 (transformers')."""
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    warmup = int(round(warmup_ratio * total_steps))
    if schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    if schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    raise ConfigError(f"schedule {schedule!r} is not 'cosine' or 'linear'")


# --------------------------------------------------------------------------------------------- evaluation
class _Indexed(Dataset):
    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        return i, self.split.dataset[i]


class _IndexedCollate:
    def __init__(self, collate) -> None:
        self.collate = collate

    def __call__(self, items):
        return torch.tensor([i for i, _ in items], dtype=torch.long), self.collate([it for _, it in items])


def select_batch(model: torch.nn.Module, batch, accelerator) -> None:
    """Tell `model` (possibly wrapped by accelerate) which clips the next batch holds, for a head that normalises
    per speaker (`select_clips`); models without it are left alone."""
    select = getattr(accelerator.unwrap_model(model), "select_clips", None)
    if select is not None:
        select(batch.ids)


@torch.no_grad()
def predict(model: torch.nn.Module, split: Split, accelerator, batch_size: int, num_workers: int = 0,
            desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """Logits `[n_clips, n_classes]` (float32) and split indices `[n_clips]` of every clip, gathered from all
    processes with `gather_for_metrics` (the duplicates that pad the last batch are dropped), in split order."""
    from tqdm.auto import tqdm

    loader = DataLoader(_Indexed(split), batch_size=batch_size, shuffle=False,
                        collate_fn=_IndexedCollate(split.collate),
                        num_workers=num_workers)
    loader = accelerator.prepare_data_loader(loader, device_placement=False)
    was_training = model.training
    model.eval()
    logits_all, idx_all = [], []
    for idx, batch in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        batch = batch.to(accelerator.device)
        select_batch(model, batch, accelerator)
        logits = model(batch.features, batch.mel_lengths).float()
        logits, idx = accelerator.gather_for_metrics((logits, idx.to(accelerator.device)))
        logits_all.append(logits.cpu())
        idx_all.append(idx.cpu())
    model.train(was_training)
    logits = torch.cat(logits_all).numpy() if logits_all else np.zeros((0, 0), np.float32)
    idx = torch.cat(idx_all).numpy() if idx_all else np.zeros(0, np.int64)
    order = np.argsort(idx, kind="stable")
    return logits[order], idx[order]


def evaluate(model: torch.nn.Module, split: Split, accelerator, labels: Sequence[str], batch_size: int,
             num_workers: int = 0, desc: str = "eval") -> tuple[ClassificationMetrics, np.ndarray]:
    """Metrics of `model` on `split` and the logits of every clip `[clips, n_classes]` float32 (split order; the
    predicted class is their argmax)."""
    logits, idx = predict(model, split, accelerator, batch_size, num_workers, desc)
    if len(idx) != len(split) or (len(idx) and not np.array_equal(idx, np.arange(len(split)))):
        raise RuntimeError(f"evaluation gathered {len(idx)} predictions for {len(split)} clips")
    if not len(idx):
        logits = np.zeros((0, len(labels)), np.float32)
    pred = logits.argmax(axis=1)
    return classification_metrics(list(split.labels), pred.tolist(), labels), logits


def validate(model: torch.nn.Module, split: Split, accelerator, labels: Sequence[str], batch_size: int,
             num_workers: int = 0) -> tuple[ClassificationMetrics, float]:
    """Metrics of `model` on `split` and its mean cross-entropy (nats per clip, no label smoothing)."""
    logits, idx = predict(model, split, accelerator, batch_size, num_workers, desc="validation")
    if len(idx) != len(split) or (len(idx) and not np.array_equal(idx, np.arange(len(split)))):
        raise RuntimeError(f"evaluation gathered {len(idx)} predictions for {len(split)} clips")
    y = torch.as_tensor(list(split.labels), dtype=torch.long)
    loss = float(F.cross_entropy(torch.from_numpy(logits).double(), y).item()) if len(idx) else float("nan")
    pred = logits.argmax(axis=1) if len(idx) else np.zeros(0, np.int64)
    return classification_metrics(list(split.labels), pred.tolist(), labels), loss


def average_weights(files: Sequence[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean (in float64, returned as float32 or the stored dtype) of safetensors files holding the
    same tensors."""
    from safetensors.torch import load_file

    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for f in files:
        for name, t in load_file(str(f)).items():
            dtypes[name] = t.dtype
            total[name] = total[name] + t.double() if name in total else t.double()
    return {n: (t / len(files)).to(dtypes[n]) for n, t in total.items()}


def _epoch_weights(root: Path, epoch: int) -> Path:
    return root / f"epoch-{epoch:04d}.safetensors"


# -------------------------------------------------------------------------------------------------- fit
class JsonlLog:
    """Append-only JSONL log (main process only); `truncate(n)` keeps the first n lines (used on resume)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.lines = 0
        if enabled and self.path.exists():
            self.lines = len(self.path.read_text(encoding="utf-8").splitlines())

    def truncate(self, n: int) -> None:
        if not self.enabled:
            return
        if self.path.exists():
            kept = self.path.read_text(encoding="utf-8").splitlines()[:n]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self.lines = n

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.lines += 1


def _metrics_brief(m: ClassificationMetrics, loss: float | None = None) -> dict:
    out = {"uar": m.uar, "war": m.war, "macro_f1": m.macro_f1}
    if loss is not None:
        out["loss"] = loss
    return out


@dataclass
class TrainState:
    """Where a fit stands, saved in every checkpoint as its `progress` dict (`to_progress` / `from_progress`: the
    same keys, in the same order, as the checkpoints of earlier versions).

    epoch: the epoch being trained (0-based; = epochs trained once it ends); batch: the next global batch of that
    epoch; step: optimiser steps taken. best_uar / best_loss / best_epoch / best_validation: the selected epoch so
    far (best_loss is absent from the dict until a first epoch is selected); bad_epochs: epochs since, for early
    stopping; done, stopped_early: the fit has ended (early). log_lines: lines of log.jsonl written; elapsed:
    seconds trained (all sessions); history: per-epoch records. interval_loss / epoch_loss: [sum of clip losses,
    clips] since the last step record / of the epoch so far.
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best_uar: float = -1.0
    best_epoch: int = -1
    best_validation: dict | None = None
    bad_epochs: int = 0
    done: bool = False
    log_lines: int = 0
    elapsed: float = 0.0
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    interval_loss: list[float] = field(default_factory=lambda: [0.0, 0.0])
    epoch_loss: list[float] = field(default_factory=lambda: [0.0, 0.0])
    best_loss: float | None = None

    def to_progress(self) -> dict[str, Any]:
        """The checkpoint's `progress` dict."""
        progress = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "best_loss"}
        if self.best_loss is not None:
            progress["best_loss"] = self.best_loss
        return progress

    @classmethod
    def from_progress(cls, progress: Mapping[str, Any]) -> TrainState:
        """The state of a checkpoint's `progress` dict."""
        return cls(**progress)


def fit(
    model: torch.nn.Module,
    train: Split,
    validation: Split,
    settings: LoopSettings,
    accelerator,
    out_dir: str | os.PathLike[str],
    labels: Sequence[str],
    *,
    is_head: Callable[[str], bool] = lambda name: name.startswith("head."),
    desc: str = "train",
    stop_after_steps: int | None = None,
) -> FitResult:
    """Train `model` (its trainable parameters) on `train`, select the epoch of best validation UAR (or lowest
    validation loss, `settings.select_on`), and leave the model holding the weights of that epoch (or the mean of
    the `settings.average_last` epochs ending with it).

    Augmentation: a `train.dataset` with `set_epoch` is told the epoch before each epoch's DataLoader is made;
    `settings.mixup_alpha` mixes each micro-batch (weights and permutation from (seed, epoch, batch index, rank)),
    `settings.label_smoothing` smooths the training targets.

    model: `model(features, mel_lengths) -> logits [batch, n_classes]`, requires_grad set on what trains.
    out_dir: the fold folder; `log.jsonl` and `checkpoints/` are written there. When `checkpoints/latest.json`
    exists the fit resumes from it. stop_after_steps: end (as if killed) after that many optimiser steps; tests.
    """
    run = _Fit(model, train, validation, settings, accelerator, Path(out_dir), labels, is_head, desc)
    state = run.resume()
    while not state.done and state.epoch < settings.epochs:
        if not run.train_epoch(state, stop_after_steps):
            return FitResult(state.best_epoch, state.best_validation or {}, state.epoch, False, state.step,
                             state.history, interrupted=True, train_time_s=run.elapsed())
        run.end_epoch(state)
    return run.finish(state)


class _Fit:
    """The parts of one `fit` call (model, optimiser, scheduler, checkpoints, log) and its steps, each acting on a
    `TrainState`: resume, train an epoch (optimiser steps of micro-batches), end an epoch (validation, selection,
    early stopping, checkpoint), finish (best or averaged weights)."""

    def __init__(self, model: torch.nn.Module, train: Split, validation: Split, settings: LoopSettings, accelerator,
                 out_dir: Path, labels: Sequence[str], is_head: Callable[[str], bool], desc: str) -> None:
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        if settings.batch_size < self.world:
            raise ConfigError(f"batch_size={settings.batch_size} is smaller than the {self.world} processes",
                              "batch_size is the global batch; make it at least the number of processes")
        self.train, self.validation, self.settings, self.accelerator = train, validation, settings, accelerator
        self.out_dir, self.labels, self.desc = out_dir, labels, desc
        self.store = CheckpointStore(out_dir / "checkpoints", rank=self.rank, is_main=accelerator.is_main_process,
                                     barrier=accelerator.wait_for_everyone)
        self.log = JsonlLog(out_dir / "log.jsonl", enabled=accelerator.is_main_process)
        total_steps = sum(len(step_groups(len(self.epoch_batches(e)), settings.grad_accum))
                          for e in range(settings.epochs))
        self.unwrapped = model
        self.optimizer = torch.optim.AdamW(param_groups(model, settings.lr_head, settings.lr_encoder,
                                                        settings.weight_decay, is_head))
        self.scheduler = make_scheduler(self.optimizer, total_steps, settings.warmup_ratio, settings.schedule)
        self.model = accelerator.prepare_model(model)
        self.eval_bs = settings.eval_batch_size or settings.batch_size
        self.t_start = time.perf_counter()

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of `epoch` every process keeps."""
        s = self.settings
        return kept_batches(epoch_batches(self.train.lengths, s.batch_size, s.seed, epoch, s.group_batches),
                            self.world)

    def elapsed(self) -> float:
        """Seconds trained, earlier sessions of a resumed fit included."""
        return time.perf_counter() - self.t_start

    def checkpoint(self, state: TrainState) -> None:
        state.elapsed = self.elapsed()
        state.log_lines = self.log.lines
        self.store.save(state.step, self.unwrapped, self.optimizer, self.scheduler, state.to_progress())

    # ----------------------------------------------------------------------------------------------- resume
    def resume(self) -> TrainState:
        """The state of the latest checkpoint (model, optimiser, scheduler and RNGs restored, the log cut back to
        it), or a fresh state (a log without a checkpoint is emptied)."""
        state = TrainState()
        if self.store.latest() is not None:
            state = TrainState.from_progress(self.store.load(self.unwrapped, self.optimizer, self.scheduler))
            self.log.truncate(state.log_lines)
            if self.accelerator.is_main_process:
                print(f"resuming {self.out_dir.name} from step {state.step} (epoch {state.epoch + 1}, "
                      f"batch {state.batch})", flush=True)
        elif self.accelerator.is_main_process and self.log.lines:
            self.log.truncate(0)  # a log without a checkpoint belongs to a run that never reached one
        self.t_start = time.perf_counter() - state.elapsed
        return state

    # ------------------------------------------------------------------------------------------ train an epoch
    def train_epoch(self, state: TrainState, stop_after_steps: int | None) -> bool:
        """Optimiser steps from `state.batch` to the end of epoch `state.epoch`, with step records and mid-epoch
        checkpoints; False when `stop_after_steps` ended the fit (as if killed)."""
        from tqdm.auto import tqdm

        s, epoch = self.settings, state.epoch
        batches = self.epoch_batches(epoch)
        groups = step_groups(len(batches), s.grad_accum)
        start = state.batch
        gen = torch.Generator().manual_seed(s.seed * 1_000_003 + epoch)
        if hasattr(self.train.dataset, "set_epoch"):
            self.train.dataset.set_epoch(epoch)
        loader = DataLoader(self.train.dataset, batch_sampler=shard(batches, self.rank, self.world)[start:],
                            collate_fn=self.train.collate, num_workers=s.num_workers, generator=gen)
        self.model.train()
        bar = tqdm(total=len(groups), initial=start // s.grad_accum, desc=f"{self.desc} epoch {epoch + 1}/{s.epochs}",
                   unit="step", disable=not self.accelerator.is_local_main_process, dynamic_ncols=True)
        it = iter(loader)
        for g_index in range(start // s.grad_accum, len(groups)):
            self.optimizer_step(state, it, batches, groups[g_index])
            bar.update(1)
            last_of_epoch = g_index == len(groups) - 1
            if state.step % s.log_every == 0 or last_of_epoch:
                self.log_step(state, bar)
            if not last_of_epoch and state.step % s.checkpoint_every == 0:
                self.checkpoint(state)
            if stop_after_steps is not None and state.step >= stop_after_steps:
                bar.close()
                return False
        bar.close()
        return True

    def optimizer_step(self, state: TrainState, it: Iterator, batches: list[list[int]], group: range) -> None:
        """One optimiser step over the micro-batches `group` (indices into the epoch's global `batches`, read from
        `it`): gradients synchronised on the last one only, clipped, optimiser and scheduler stepped; the loss sums
        of all processes added to the state."""
        s, accelerator = self.settings, self.accelerator
        n_step = sum(len(batches[i]) for i in group)  # clips in this optimiser step, all processes
        step_loss = torch.zeros(2, dtype=torch.float64)  # sum of clip losses, clips (this process)
        for j, i in enumerate(group):
            batch = next(it).to(accelerator.device)
            sync = j == len(group) - 1
            ctx = accelerator.no_sync(self.model) if (not sync and self.world > 1) else contextlib.nullcontext()
            with ctx:
                losses = self.clip_losses(batch, state.epoch, i)
                accelerator.backward(losses.sum() * (self.world / n_step))
            step_loss += torch.tensor([losses.detach().sum().item(), len(losses)], dtype=torch.float64)
        if s.grad_clip is not None:
            accelerator.clip_grad_norm_(self.model.parameters(), s.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        tot = accelerator.reduce(step_loss.to(accelerator.device), reduction="sum").cpu().tolist()
        state.interval_loss = [state.interval_loss[0] + tot[0], state.interval_loss[1] + tot[1]]
        state.epoch_loss = [state.epoch_loss[0] + tot[0], state.epoch_loss[1] + tot[1]]
        state.step += 1
        state.batch = group[-1] + 1

    def clip_losses(self, batch, epoch: int, index: int) -> torch.Tensor:
        """Per-clip training losses `[batch]` (float32) of micro-batch `index` of `epoch`: cross-entropy with label
        smoothing, of the mixed-up batch with `mixup_alpha > 0`."""
        s = self.settings
        select_batch(self.model, batch, self.accelerator)
        if s.mixup_alpha > 0:
            from loralens.data.augment import clip_rng, mixup_batch

            feats, lens, y_a, y_b, lam = mixup_batch(batch.features, batch.mel_lengths, batch.labels, s.mixup_alpha,
                                                     clip_rng(s.seed, epoch, index, 1 + self.rank))
            logits = self.model(feats, lens).float()
            return (lam * F.cross_entropy(logits, y_a, reduction="none", label_smoothing=s.label_smoothing)
                    + (1 - lam) * F.cross_entropy(logits, y_b, reduction="none", label_smoothing=s.label_smoothing))
        logits = self.model(batch.features, batch.mel_lengths)
        return F.cross_entropy(logits.float(), batch.labels, reduction="none", label_smoothing=s.label_smoothing)

    def learning_rates(self) -> dict[str, float]:
        return {g["name"].split("_")[0]: g["lr"] for g in self.optimizer.param_groups}

    def log_step(self, state: TrainState, bar) -> None:
        """A step record: mean loss since the last one, learning rates, time."""
        lr = self.learning_rates()
        mean = state.interval_loss[0] / max(state.interval_loss[1], 1)
        self.log.write({"type": "step", "epoch": state.epoch, "step": state.step, "loss": mean, "lr": lr,
                        "time": self.elapsed()})
        bar.set_postfix(loss=f"{mean:.4f}", lr=f"{max(lr.values()):.2e}")
        state.interval_loss = [0.0, 0.0]

    # -------------------------------------------------------------------------------------------- end an epoch
    def end_epoch(self, state: TrainState) -> None:
        """Validation, model selection, the epoch record, early stopping, a checkpoint."""
        from tqdm.auto import tqdm

        s, epoch = self.settings, state.epoch
        train_loss = state.epoch_loss[0] / max(state.epoch_loss[1], 1)
        state.epoch_loss = [0.0, 0.0]
        val, val_loss = validate(self.model, self.validation, self.accelerator, self.labels, self.eval_bs,
                                 s.num_workers)
        improved = self.select(state, val, val_loss)
        record = {"type": "epoch", "epoch": epoch, "step": state.step, "train_loss": train_loss,
                  "validation": _metrics_brief(val, val_loss), "best_epoch": state.best_epoch,
                  "lr": self.learning_rates(), "time": self.elapsed()}
        self.log.write(record)
        state.history.append({k: record[k] for k in ("epoch", "step", "train_loss", "validation")})
        if self.accelerator.is_main_process:
            tqdm.write(f"{self.desc} epoch {epoch + 1}: train loss {train_loss:.4f}, validation UAR {val.uar:.4f}"
                       f"{' (best)' if improved else ''}")
        state.epoch = epoch + 1
        state.batch = 0
        if s.patience is not None and state.bad_epochs >= s.patience:
            state.done = True
            state.stopped_early = True
        if state.epoch >= s.epochs:
            state.done = True
        self.checkpoint(state)
        self.prune_epoch_weights(state)

    def select(self, state: TrainState, val: ClassificationMetrics, val_loss: float) -> bool:
        """Whether epoch `state.epoch` is the best so far (higher UAR, lower loss with `select_on="loss"`, always
        with `select_on="last"`); if so it becomes the state's best and its weights `best.safetensors`. With
        `average_last > 1` the epoch's trainable weights are saved too."""
        epoch = state.epoch
        if self.settings.select_on == "last":
            improved = True  # no selection: every epoch replaces the previous one, so the final epoch is kept
        elif self.settings.select_on == "loss":
            improved = state.best_loss is None or val_loss < state.best_loss
        else:
            improved = val.uar > state.best_uar
        if improved:
            state.best_uar, state.best_loss, state.best_epoch = val.uar, val_loss, epoch
            state.best_validation = {**val.to_dict(), "loss": val_loss}
            state.bad_epochs = 0
            self.store.save_best(self.unwrapped, {"epoch": epoch, "step": state.step, "validation": val.to_dict()})
        else:
            state.bad_epochs += 1
        if self.settings.average_last > 1 and self.accelerator.is_main_process:
            from loralens.training.checkpoint import save_safetensors, trainable_state

            save_safetensors(_epoch_weights(self.store.root, epoch), trainable_state(self.unwrapped))
        return improved

    def prune_epoch_weights(self, state: TrainState) -> None:
        """With `average_last > 1`: delete saved epoch weights before the averaging window of the best epoch (a later
        best is never earlier than this one, so they are no longer needed)."""
        if self.settings.average_last > 1 and self.accelerator.is_main_process:
            for old in self.store.root.glob("epoch-*.safetensors"):
                if int(old.stem.split("-")[1]) < state.best_epoch - self.settings.average_last + 1:
                    old.unlink(missing_ok=True)

    # -------------------------------------------------------------------------------------------------- finish
    def finish(self, state: TrainState) -> FitResult:
        """Load the best epoch's weights (or the mean of the `average_last` epochs ending with it, validated and
        logged once) and the result of the fit."""
        self.store.load_best(self.unwrapped)
        averaged = self.average(state.best_epoch) if self.settings.average_last > 1 else None
        return FitResult(best_epoch=state.best_epoch, best_validation=state.best_validation or {},
                         epochs_trained=state.epoch, stopped_early=state.stopped_early, steps=state.step,
                         history=state.history, train_time_s=self.elapsed(), averaged=averaged)

    def average(self, best: int) -> dict:
        """Load the mean trainable weights of the `average_last` epochs ending with `best`; their epochs and
        validation metrics."""
        from loralens.training.checkpoint import load_trainable

        epochs = list(range(max(0, best - self.settings.average_last + 1), best + 1))
        self.accelerator.wait_for_everyone()
        files = [_epoch_weights(self.store.root, e) for e in epochs]
        load_trainable(self.unwrapped, average_weights(files), f"{self.store.root} (epochs {epochs})")
        val, val_loss = validate(self.model, self.validation, self.accelerator, self.labels, self.eval_bs,
                                 self.settings.num_workers)
        if not log_has_average(self.log):
            self.log.write({"type": "average", "epochs": epochs, "validation": _metrics_brief(val, val_loss),
                            "time": self.elapsed()})
        return {"epochs": epochs, "validation": {**val.to_dict(), "loss": val_loss}}


def log_has_average(log: JsonlLog) -> bool:
    """Whether the log already ends with the averaging record (a fit finished earlier, called again)."""
    if not log.enabled or not log.path.exists():
        return False
    lines = log.path.read_text(encoding="utf-8").splitlines()
    return bool(lines) and json.loads(lines[-1]).get("type") == "average"


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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    is that field's default, `loop_settings` reads its value there. The config declares the setting once."""
    from loralens.training.config import field_default

    return field(default=field_default(path), metadata={"config": path})


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
    """Metrics of `model` on `split` and the predicted class of every clip (split order)."""
    logits, idx = predict(model, split, accelerator, batch_size, num_workers, desc)
    if len(idx) != len(split) or (len(idx) and not np.array_equal(idx, np.arange(len(split)))):
        raise RuntimeError(f"evaluation gathered {len(idx)} predictions for {len(split)} clips")
    pred = logits.argmax(axis=1) if len(idx) else np.zeros(0, np.int64)
    return classification_metrics(list(split.labels), pred.tolist(), labels), pred


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
    out_dir = Path(out_dir)
    world, rank = accelerator.num_processes, accelerator.process_index
    if settings.batch_size < world:
        raise ConfigError(f"batch_size={settings.batch_size} is smaller than the {world} processes",
                          "batch_size is the global batch; make it at least the number of processes")
    store = CheckpointStore(out_dir / "checkpoints", rank=rank, is_main=accelerator.is_main_process,
                            barrier=accelerator.wait_for_everyone)
    log = JsonlLog(out_dir / "log.jsonl", enabled=accelerator.is_main_process)

    n_batches = [len(kept_batches(epoch_batches(train.lengths, settings.batch_size, settings.seed, e,
                                                settings.group_batches), world)) for e in range(settings.epochs)]
    steps_per_epoch = [len(step_groups(n, settings.grad_accum)) for n in n_batches]
    total_steps = sum(steps_per_epoch)

    unwrapped = model
    optimizer = torch.optim.AdamW(param_groups(unwrapped, settings.lr_head, settings.lr_encoder,
                                               settings.weight_decay, is_head))
    scheduler = make_scheduler(optimizer, total_steps, settings.warmup_ratio, settings.schedule)
    model = accelerator.prepare_model(model)

    progress: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "best_uar": -1.0, "best_epoch": -1,
                                "best_validation": None, "bad_epochs": 0, "done": False, "log_lines": 0,
                                "elapsed": 0.0, "history": [], "stopped_early": False,
                                "interval_loss": [0.0, 0.0], "epoch_loss": [0.0, 0.0]}
    if store.latest() is not None:
        progress = store.load(unwrapped, optimizer, scheduler)
        log.truncate(progress["log_lines"])
        if accelerator.is_main_process:
            print(f"resuming {out_dir.name} from step {progress['step']} (epoch {progress['epoch'] + 1}, "
                  f"batch {progress['batch']})", flush=True)
    elif accelerator.is_main_process and log.lines:
        log.truncate(0)  # a log without a checkpoint belongs to a run that never reached one

    from tqdm.auto import tqdm

    t_start = time.perf_counter() - progress["elapsed"]
    eval_bs = settings.eval_batch_size or settings.batch_size

    def elapsed() -> float:
        return time.perf_counter() - t_start

    def checkpoint() -> None:
        progress["elapsed"] = elapsed()
        progress["log_lines"] = log.lines
        store.save(progress["step"], unwrapped, optimizer, scheduler, progress)

    while not progress["done"] and progress["epoch"] < settings.epochs:
        epoch = progress["epoch"]
        batches = kept_batches(epoch_batches(train.lengths, settings.batch_size, settings.seed, epoch,
                                             settings.group_batches), world)
        local = shard(batches, rank, world)
        groups = step_groups(len(batches), settings.grad_accum)
        start = progress["batch"]
        gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
        if hasattr(train.dataset, "set_epoch"):
            train.dataset.set_epoch(epoch)
        loader = DataLoader(train.dataset, batch_sampler=local[start:], collate_fn=train.collate,
                            num_workers=settings.num_workers, generator=gen)
        model.train()
        bar = tqdm(total=len(groups), initial=start // settings.grad_accum,
                   desc=f"{desc} epoch {epoch + 1}/{settings.epochs}",
                   unit="step", disable=not accelerator.is_local_main_process, dynamic_ncols=True)
        it = iter(loader)
        for g_index in range(start // settings.grad_accum, len(groups)):
            group = groups[g_index]
            n_step = sum(len(batches[i]) for i in group)  # clips in this optimiser step, all processes
            step_loss = torch.zeros(2, dtype=torch.float64)  # sum of clip losses, clips (this process)
            for j, i in enumerate(group):
                batch = next(it).to(accelerator.device)
                sync = j == len(group) - 1
                ctx = accelerator.no_sync(model) if (not sync and world > 1) else contextlib.nullcontext()
                with ctx:
                    if settings.mixup_alpha > 0:
                        from loralens.data.augment import clip_rng, mixup_batch

                        feats, lens, y_a, y_b, lam = mixup_batch(batch.features, batch.mel_lengths, batch.labels,
                                                                 settings.mixup_alpha,
                                                                 clip_rng(settings.seed, epoch, i, 1 + rank))
                        logits = model(feats, lens).float()
                        losses = (lam * F.cross_entropy(logits, y_a, reduction="none",
                                                        label_smoothing=settings.label_smoothing)
                                  + (1 - lam) * F.cross_entropy(logits, y_b, reduction="none",
                                                                label_smoothing=settings.label_smoothing))
                    else:
                        logits = model(batch.features, batch.mel_lengths)
                        losses = F.cross_entropy(logits.float(), batch.labels, reduction="none",
                                                 label_smoothing=settings.label_smoothing)
                    accelerator.backward(losses.sum() * (world / n_step))
                step_loss += torch.tensor([losses.detach().sum().item(), len(losses)], dtype=torch.float64)
            if settings.grad_clip is not None:
                accelerator.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            tot = accelerator.reduce(step_loss.to(accelerator.device), reduction="sum").cpu().tolist()
            for key in ("interval_loss", "epoch_loss"):
                progress[key] = [progress[key][0] + tot[0], progress[key][1] + tot[1]]
            progress["step"] += 1
            progress["batch"] = group[-1] + 1
            bar.update(1)
            last_of_epoch = g_index == len(groups) - 1
            if progress["step"] % settings.log_every == 0 or last_of_epoch:
                lr = {g["name"].split("_")[0]: g["lr"] for g in optimizer.param_groups}
                mean = progress["interval_loss"][0] / max(progress["interval_loss"][1], 1)
                log.write({"type": "step", "epoch": epoch, "step": progress["step"], "loss": mean, "lr": lr,
                           "time": elapsed()})
                bar.set_postfix(loss=f"{mean:.4f}", lr=f"{max(lr.values()):.2e}")
                progress["interval_loss"] = [0.0, 0.0]
            if not last_of_epoch and progress["step"] % settings.checkpoint_every == 0:
                checkpoint()
            if stop_after_steps is not None and progress["step"] >= stop_after_steps:
                bar.close()
                return FitResult(progress["best_epoch"], progress["best_validation"] or {}, epoch, False,
                                 progress["step"], progress["history"], interrupted=True, train_time_s=elapsed())
        bar.close()
        # epoch end: validation, model selection, early stopping, checkpoint
        train_loss = progress["epoch_loss"][0] / max(progress["epoch_loss"][1], 1)
        progress["epoch_loss"] = [0.0, 0.0]
        val, val_loss = validate(model, validation, accelerator, labels, eval_bs, settings.num_workers)
        if settings.select_on == "loss":
            best_loss = progress.get("best_loss")
            improved = best_loss is None or val_loss < best_loss
        else:
            improved = val.uar > progress["best_uar"]
        if improved:
            progress.update(best_uar=val.uar, best_loss=val_loss, best_epoch=epoch,
                            best_validation={**val.to_dict(), "loss": val_loss}, bad_epochs=0)
            store.save_best(unwrapped, {"epoch": epoch, "step": progress["step"], "validation": val.to_dict()})
        else:
            progress["bad_epochs"] += 1
        if settings.average_last > 1 and accelerator.is_main_process:
            from loralens.training.checkpoint import save_safetensors, trainable_state

            save_safetensors(_epoch_weights(store.root, epoch), trainable_state(unwrapped))
        record = {"type": "epoch", "epoch": epoch, "step": progress["step"], "train_loss": train_loss,
                  "validation": _metrics_brief(val, val_loss), "best_epoch": progress["best_epoch"],
                  "lr": {g["name"].split("_")[0]: g["lr"] for g in optimizer.param_groups}, "time": elapsed()}
        log.write(record)
        progress["history"].append({k: record[k] for k in ("epoch", "step", "train_loss", "validation")})
        if accelerator.is_main_process:
            tqdm.write(f"{desc} epoch {epoch + 1}: train loss {train_loss:.4f}, validation UAR {val.uar:.4f}"
                       f"{' (best)' if improved else ''}")
        progress["epoch"] = epoch + 1
        progress["batch"] = 0
        if settings.patience is not None and progress["bad_epochs"] >= settings.patience:
            progress["done"] = True
            progress["stopped_early"] = True
        if progress["epoch"] >= settings.epochs:
            progress["done"] = True
        checkpoint()
        if settings.average_last > 1 and accelerator.is_main_process:
            # a later best is never earlier than this one, so epochs before its window are no longer needed
            for old in store.root.glob("epoch-*.safetensors"):
                if int(old.stem.split("-")[1]) < progress["best_epoch"] - settings.average_last + 1:
                    old.unlink(missing_ok=True)

    store.load_best(unwrapped)
    averaged = None
    if settings.average_last > 1:
        from loralens.training.checkpoint import load_trainable

        best = progress["best_epoch"]
        epochs = list(range(max(0, best - settings.average_last + 1), best + 1))
        accelerator.wait_for_everyone()
        files = [_epoch_weights(store.root, e) for e in epochs]
        load_trainable(unwrapped, average_weights(files), f"{store.root} (epochs {epochs})")
        val, val_loss = validate(model, validation, accelerator, labels, eval_bs, settings.num_workers)
        averaged = {"epochs": epochs, "validation": {**val.to_dict(), "loss": val_loss}}
        if not log_has_average(log):
            log.write({"type": "average", "epochs": epochs, "validation": _metrics_brief(val, val_loss),
                       "time": elapsed()})
    return FitResult(best_epoch=progress["best_epoch"], best_validation=progress["best_validation"] or {},
                     epochs_trained=progress["epoch"], stopped_early=progress["stopped_early"], steps=progress["step"],
                     history=progress["history"], train_time_s=elapsed(), averaged=averaged)


def log_has_average(log: JsonlLog) -> bool:
    """Whether the log already ends with the averaging record (a fit finished earlier, called again)."""
    if not log.enabled or not log.path.exists():
        return False
    lines = log.path.read_text(encoding="utf-8").splitlines()
    return bool(lines) and json.loads(lines[-1]).get("type") == "average"


"""Training checkpoints in safetensors + JSON (no pickles), written atomically, and their restore.

Layout under a fold's `checkpoints/` folder:

    step-00000120/                 one complete checkpoint (folder renamed into place only once complete)
        trainable.safetensors      parameters with requires_grad (names as in the unwrapped model)
        optimizer.safetensors      optimizer state tensors, keys `state.{param_index}.{name}`
        state.json                 optimizer param groups and non-tensor state, scheduler state, progress
        rng-{rank}.json            RNG states of python, numpy, torch (CPU and CUDA) of each process
    latest.json                    {"dir": "step-00000120"}: the checkpoint to resume from (replaced atomically)
    best.safetensors, best.json    trainable parameters of the best validation epoch so far

A crash at any point leaves `latest.json` naming a complete checkpoint (or no `latest.json` at all).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from loralens.errors import RunFolderError
from loralens.io import atomic_write_json, atomic_write_with, read_json

LATEST = "latest.json"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters with requires_grad, detached, contiguous, on CPU (names as in `model.named_parameters()`)."""
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy `tensors` into the trainable parameters of `model`; every trainable parameter must be present."""
    params = dict(model.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    missing = wanted - set(tensors)
    unknown = set(tensors) - set(params)
    if missing or unknown:
        raise RunFolderError(
            f"{source}: parameters do not match the model (missing {sorted(missing)[:3]}, unknown "
            f"{sorted(unknown)[:3]})",
            "the checkpoint belongs to another model or method; use a new run folder")
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


def save_safetensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors file written atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _optimizer_split(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt_state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt_state["param_groups"]]
    return tensors, {"param_groups": groups, "scalar_state": scalars}


def _optimizer_join(tensors: Mapping[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    for idx, d in meta["scalar_state"].items():
        state.setdefault(int(idx), {}).update(d)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_state() -> dict:
    """RNG states of python, numpy and torch (CPU and every CUDA device) as JSON-able values."""
    np_state = np.random.get_state()
    py = random.getstate()
    out = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    return out


def set_rng_state(state: Mapping) -> None:
    """Restore RNG states saved by `rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """The checkpoints of one fold. Under several processes every rank calls `save` (each writes its RNG state);
    `barrier` is the processes' synchronisation (accelerator.wait_for_everyone), `is_main` the writing process."""

    def __init__(self, root: str | os.PathLike[str], rank: int = 0, is_main: bool = True, barrier=None) -> None:
        self.root = Path(root)
        self.rank = rank
        self.is_main = is_main
        self.barrier = barrier or (lambda: None)

    # ---- full training state -------------------------------------------------------------------------
    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
             progress: Mapping[str, Any]) -> Path:
        """Write checkpoint `step-{step}` (all processes call this) and point `latest.json` at it."""
        name = f"step-{step:08d}"
        tmp = self.root / f".tmp-{name}"
        final = self.root / name
        if self.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self.barrier()
        atomic_write_json(tmp / f"rng-{self.rank}.json", rng_state(), indent=0)
        if self.is_main:
            opt_tensors, opt_meta = _optimizer_split(optimizer.state_dict())
            save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
            save_file({k: v.contiguous() for k, v in opt_tensors.items()}, str(tmp / "optimizer.safetensors"))
            atomic_write_json(tmp / "state.json", {
                "step": step, "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "progress": dict(progress),
            })
        self.barrier()
        if self.is_main:
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.root)
            atomic_write_json(self.root / LATEST, {"dir": name})
            for old in self.root.glob("step-*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
            for old in self.root.glob(".tmp-step-*"):
                shutil.rmtree(old, ignore_errors=True)
        self.barrier()
        return final

    def latest(self) -> Path | None:
        """The folder of the checkpoint to resume from, or None."""
        p = self.root / LATEST
        if not p.exists():
            return None
        d = self.root / read_json(p)["dir"]
        if not (d / "state.json").exists():
            raise RunFolderError(f"{p}: names {d}, which is incomplete", f"delete {self.root} to start this fold again")
        return d

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> dict:
        """Restore the latest checkpoint into model/optimizer/scheduler and this process' RNG; return its progress."""
        d = self.latest()
        if d is None:
            raise RunFolderError(f"{self.root}: no checkpoint to resume from")
        state = read_json(d / "state.json")
        load_trainable(model, load_file(str(d / "trainable.safetensors")), str(d))
        opt = _optimizer_join(load_file(str(d / "optimizer.safetensors")), state["optimizer"])
        optimizer.load_state_dict(opt)
        scheduler.load_state_dict(state["scheduler"])
        rng_file = d / f"rng-{self.rank}.json"
        if not rng_file.exists():
            raise RunFolderError(f"{rng_file}: missing; the checkpoint was written by fewer processes",
                                 "resume with the same number of processes, or delete the checkpoints folder")
        set_rng_state(read_json(rng_file))
        return state["progress"]

    # ---- best weights --------------------------------------------------------------------------------
    def save_best(self, model: torch.nn.Module, info: Mapping[str, Any]) -> None:
        if self.is_main:
            save_safetensors(self.root / "best.safetensors", trainable_state(model))
            atomic_write_json(self.root / "best.json", dict(info))
        self.barrier()

    def load_best(self, model: torch.nn.Module) -> dict:
        p = self.root / "best.safetensors"
        if not p.exists():
            raise RunFolderError(f"{p}: not found", "the fold never finished an epoch; run training again")
        load_trainable(model, load_file(str(p)), str(p))
        return read_json(self.root / "best.json")

    def clear(self) -> None:
        """Remove the resumable checkpoints (kept: best weights) once a fold is complete."""
        if self.is_main:
            (self.root / LATEST).unlink(missing_ok=True)
            for d in list(self.root.glob("step-*")) + list(self.root.glob(".tmp-step-*")):
                shutil.rmtree(d, ignore_errors=True)
        self.barrier()

"""Which op makes bf16 autocast cost LoRA training accuracy? (issue 10: "find why before giving up on bf16")

From one realistic LoRA state (base, r=32 on v_proj, fine-tuned in fp32 for `--warm-steps` steps on RAVDESS fold 0
training clips), the same training batches are run under variants of bf16 autocast in which one part of the model
is kept in fp32 (autocast off inside it, inputs cast up). For each variant:

- gradient error of one step against fp32, per parameter group (LoRA A, LoRA B, head): relative L2 error,
  cosine, and the fraction of elements whose sign differs (what Adam's first steps follow);
- trajectory divergence: `--steps` AdamW steps (the recipe's lrs, same batches) from the same state, then the
  distance of the trained LoRA + head parameters from the fp32 trajectory's, relative to how far fp32 moved;
- the loss of the trained state on held-out clips (the fold's validation speakers) against fp32's.

The variant that closes most of the gap names the op. Prints a table and writes JSON.

    python bench/precision_ops.py --root ../shared/data/ravdess --out bench/results/precision_ops.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loralens.io import atomic_write_json  # noqa: E402


def _autocast(on: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


def keep_fp32(modules: list[torch.nn.Module]) -> Callable[[], None]:
    """Run `modules` with autocast off and floating inputs cast to fp32; returns the function that undoes it."""
    originals = []
    for m in modules:
        fwd = m.forward

        def wrapped(*args: Any, __fwd=fwd, **kwargs: Any) -> Any:
            up = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
            kw = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in kwargs.items()}
            with torch.autocast("cpu", enabled=False):
                return __fwd(*up, **kw)

        originals.append((m, fwd))
        m.forward = wrapped

    def undo() -> None:
        for m, fwd in originals:
            m.forward = fwd

    return undo


SEED_VARIANT = "fp32, other dropout masks (noise yardstick)"


def variants(clf: Any) -> dict[str, Callable[[], list[torch.nn.Module]] | None]:
    """Name -> the modules kept in fp32 (None: plain fp32, no autocast)."""
    from loralens.models.lora import ADAPTER, lora_modules

    layers = list(clf.encoder.layers)
    lora = list(lora_modules(clf.encoder).values())
    return {
        "fp32": None,
        # the yardstick: fp32 again with other LoRA-dropout masks, i.e. what training's own randomness moves
        SEED_VARIANT: None,
        "bf16 (as trained now)": lambda: [],
        "bf16, LoRA branch fp32": lambda: [m.lora_A[ADAPTER] for m in lora] + [m.lora_B[ADAPTER] for m in lora],
        "bf16, adapted v_proj fp32 (base + LoRA)": lambda: lora,
        # the classifier calls the head's parts and the runner the layers' parts directly (not their forward), so
        # those parts are what is kept in fp32
        "bf16, head fp32 (projector, classifier)": lambda: [clf.head.projector, clf.head.classifier],
        "bf16, attention fp32": lambda: [layer.self_attn for layer in layers],
        "bf16, MLP fp32": lambda: [m for layer in layers for m in (layer.fc1, layer.fc2)],
        "bf16, conv front end fp32": lambda: [clf.encoder.conv1, clf.encoder.conv2],
        "bf16, last 2 layers fp32": lambda: [m for layer in layers[-2:] for m in
                                             (layer.self_attn, layer.fc1, layer.fc2)],
    }


@contextlib.contextmanager
def variant(clf: Any, name: str, table: dict) -> Iterator[bool]:
    pick = table[name]
    undo = keep_fp32(pick()) if pick is not None else (lambda: None)
    try:
        yield pick is not None
    finally:
        undo()


def groups(clf: Any) -> dict[str, list[torch.nn.Parameter]]:
    out: dict[str, list[torch.nn.Parameter]] = {"lora_A": [], "lora_B": [], "head": []}
    for n, p in clf.named_parameters():
        if not p.requires_grad:
            continue
        out["lora_A" if "lora_A" in n else "lora_B" if "lora_B" in n else "head"].append(p)
    return out


def flat(ps: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float() for p in ps])


def grads(clf: Any, batches: list, bf16: bool, seed: int = 1234) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # the same dropout masks in every variant
    clf.zero_grad(set_to_none=True)
    for b in batches:
        with _autocast(bf16):
            logits = clf(b.features, b.mel_lengths)
        (F.cross_entropy(logits.float(), b.labels) / len(batches)).backward()
    return {g: flat([p.grad if p.grad is not None else torch.zeros_like(p) for p in ps])
            for g, ps in groups(clf).items()}


def make_opt(clf: Any, lr_encoder: float, lr_head: float) -> torch.optim.Optimizer:
    g = groups(clf)
    return torch.optim.AdamW([{"params": g["lora_A"] + g["lora_B"], "lr": lr_encoder},
                              {"params": g["head"], "lr": lr_head}], weight_decay=0.01)


def train_steps(clf: Any, batches: list, bf16: bool, lr_encoder: float, lr_head: float, seed: int = 4321) -> None:
    torch.manual_seed(seed)
    opt = make_opt(clf, lr_encoder, lr_head)
    params = [p for p in clf.parameters() if p.requires_grad]
    for b in batches:
        with _autocast(bf16):
            logits = clf(b.features, b.mel_lengths)
        F.cross_entropy(logits.float(), b.labels).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)


@torch.no_grad()
def eval_loss(clf: Any, batches: list) -> tuple[float, float]:
    """fp32 cross-entropy and accuracy on `batches`."""
    tot, correct, n = 0.0, 0, 0
    for b in batches:
        logits = clf(b.features, b.mel_lengths).float()
        tot += float(F.cross_entropy(logits, b.labels, reduction="sum"))
        correct += int((logits.argmax(-1) == b.labels).sum())
        n += len(b.labels)
    return tot / n, correct / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("../shared/data/ravdess"))
    ap.add_argument("--model", default="base")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--warm-steps", type=int, default=40, help="fp32 steps that make the starting state")
    ap.add_argument("--grad-batches", type=int, default=6, help="batches of the one-step gradient comparison")
    ap.add_argument("--steps", type=int, default=40, help="AdamW steps of the trajectory comparison")
    ap.add_argument("--eval-clips", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr-encoder", type=float, default=3e-4)
    ap.add_argument("--lr-head", type=float, default=1e-3)
    ap.add_argument("--only", default=None, help="semicolon-separated variant names (default all)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/precision_ops.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    from loralens.data.batching import Collator, FeatureDataset
    from loralens.training.config import make_config
    from loralens.training.crossval import build_classifier, make_accelerator, prepare

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config({"corpus": "ravdess", "corpus_root": str(args.root), "model": args.model,
                           "folds": "ravdess6", "method": "lora", "window": "trim", "precision": "fp32",
                           "feature_cache": str(REPO / "runs" / "feature_cache-precision-ops"), "run_dir": tmp})
        prep = prepare(cfg, make_accelerator("fp32"), write=False)
        clf = build_classifier(cfg, prep.whisper_encoder, len(prep.labels)).train()
    by_id = prep.corpus.by_id()
    fold = prep.folds[args.fold]
    rng = random.Random(0)
    train_clips = [by_id[i] for i in fold.train]
    rng.shuffle(train_clips)
    held = [by_id[i] for i in (fold.validation or fold.test)][: args.eval_clips]
    collate = Collator("trim")

    def batches_of(clips: list) -> list:
        ds = FeatureDataset(clips, prep.feature_cache, prep.labels)
        return [collate([ds[i] for i in range(s, min(s + args.batch_size, len(clips)))])
                for s in range(0, len(clips), args.batch_size)]

    bs = args.batch_size
    need = (args.warm_steps + args.grad_batches + args.steps) * bs
    pool = batches_of(train_clips[:need])
    warm, gb, steps = (pool[: args.warm_steps], pool[args.warm_steps: args.warm_steps + args.grad_batches],
                       pool[args.warm_steps + args.grad_batches:])
    held_b = batches_of(held)
    print(f"state: {args.warm_steps} fp32 steps of {bs} clips ...", flush=True)
    train_steps(clf, warm, False, args.lr_encoder, args.lr_head)
    start = copy.deepcopy(clf.state_dict())
    ref_start = {k: flat(ps) for k, ps in groups(clf).items()}

    table = variants(clf)
    names = [n for n in table if args.only is None or n in args.only.split(";") or n == "fp32"]
    ref_g = grads(clf, gb, False)
    results: dict[str, dict] = {}
    ref_end: dict[str, torch.Tensor] = {}
    for name in names:
        clf.load_state_dict(start)
        t = time.perf_counter()
        with variant(clf, name, table) as bf16:
            shift = 1 if name == SEED_VARIANT else 0
            g = grads(clf, gb, bf16, seed=1234 + shift)
            clf.load_state_dict(start)
            train_steps(clf, steps, bf16, args.lr_encoder, args.lr_head, seed=4321 + shift)
        end = {k: flat(ps) for k, ps in groups(clf).items()}
        loss, acc = eval_loss(clf, held_b)
        if name == "fp32":
            ref_end = end
        row: dict[str, Any] = {"held_loss": loss, "held_acc": acc, "wall_s": time.perf_counter() - t}
        for k in ref_g:
            a, b = g[k], ref_g[k]
            row[f"grad_relerr_{k}"] = float((a - b).norm() / b.norm().clamp_min(1e-30))
            row[f"grad_cos_{k}"] = float(F.cosine_similarity(a, b, dim=0))
            row[f"grad_signflip_{k}"] = float(((a.sign() != b.sign()) & (b != 0)).float().mean())
            moved = (ref_end[k] - ref_start[k]).norm().clamp_min(1e-30)
            row[f"traj_div_{k}"] = float((end[k] - ref_end[k]).norm() / moved)
        results[name] = row
        print(f"{name:<46} grad relerr A {row['grad_relerr_lora_A']:.4f} B {row['grad_relerr_lora_B']:.4f} "
              f"head {row['grad_relerr_head']:.4f} | traj div A {row['traj_div_lora_A']:.4f} "
              f"B {row['traj_div_lora_B']:.4f} head {row['traj_div_head']:.4f} | held loss {loss:.4f} "
              f"acc {acc:.3f} ({row['wall_s']:.0f} s)", flush=True)

    lines = ["| variant | grad rel. err. A / B / head | sign flips A / B | trajectory divergence A / B / head "
             "| held-out loss | held-out acc |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['grad_relerr_lora_A']:.4f} / {r['grad_relerr_lora_B']:.4f} / "
                     f"{r['grad_relerr_head']:.4f} | {r['grad_signflip_lora_A']:.3f} / {r['grad_signflip_lora_B']:.3f}"
                     f" | {r['traj_div_lora_A']:.4f} / {r['traj_div_lora_B']:.4f} / {r['traj_div_head']:.4f} | "
                     f"{r['held_loss']:.4f} | {r['held_acc']:.3f} |")
    print("\n".join(lines))
    atomic_write_json(args.out, {"benchmark": "precision_ops", "args": {k: str(v) for k, v in vars(args).items()},
                                 "machine": platform.platform(), "wall_s": time.perf_counter() - t0,
                                 "results": results, "table": "\n".join(lines)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `frozen` method's shortcut: the encoder does not train, so its outputs are computed once per clip and only the
head trains, on them (seconds instead of hours).

The head pools each hidden state over the valid frames before weighting layers or projecting (both affine), so the
per-layer masked means `[n_hidden_states, d_model]` of a clip are all the head ever needs: `PooledHead` on them gives
the same logits as `EmotionClassifier` on the features (same operations in the same order).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from loralens.data.batching import Batch
from loralens.errors import RunFolderError
from loralens.models.head import ClassificationHead
from loralens.models.speaker_stats import SpeakerStatistics, select_clips
from loralens.numerics.masking import masked_mean
from loralens.training.checkpoint import save_safetensors
from loralens.training.loop import Split


class PooledHead(nn.Module):
    """A `ClassificationHead` fed with per-layer pooled encoder outputs: forward(pooled `[batch, n_hidden_states,
    d_model]`, ignored) -> logits `[batch, n_classes]`. Parameter names are `head.*`, as in `EmotionClassifier`."""

    def __init__(self, head: ClassificationHead, speaker_statistics: SpeakerStatistics | None = None) -> None:
        super().__init__()
        self.head = head
        self.speaker_statistics = speaker_statistics

    def select_clips(self, ids: Sequence[str]) -> None:
        """As `EmotionClassifier.select_clips`."""
        select_clips(self.head, self.speaker_statistics, ids)

    def forward(self, pooled: Tensor, _lengths: Tensor | None = None) -> Tensor:
        return self.head.classify(self.head.combine_layers(pooled))


@torch.no_grad()
def pool_layers(classifier, features: Tensor, mel_lengths: Tensor) -> Tensor:
    """Masked means of every hidden state of `classifier`'s encoder (eval mode): `[batch, n_layers + 1, d_model]`."""
    out = classifier.runner(features, mel_lengths)
    return torch.stack([masked_mean(h, out.lengths) for h in out.hidden_states], dim=1)


def encoder_fingerprint(encoder: nn.Module) -> str:
    """sha256 of the encoder's weights (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(classifier, *, window: str, feature_key: str, ids: Sequence[str], precision: str = "no") -> str:
    """Name of the cached pooled outputs: encoder weights, padding mask, window, feature settings, clips, and the
    autocast precision ("no" or "bf16"; named in the key only when not "no", so fp32 caches keep their names)."""
    material = {
        "encoder": encoder_fingerprint(classifier.encoder),
        "mask_padding": classifier.runner.mask_padding,
        "window": window,
        "features": feature_key,
        "ids": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
    }
    if precision != "no":
        material["precision"] = precision
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:20]


def pooled_outputs(classifier, split: Split, root: str | os.PathLike[str], key: str, accelerator,
                   batch_size: int = 8, num_workers: int = 0) -> dict[str, Tensor]:
    """Per-layer pooled encoder outputs of every clip of `split`, id -> `[n_layers + 1, d_model]` float32, read from
    `root/{key}.safetensors` or computed (main process; others wait) and stored there."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    path = Path(root) / f"{key}.safetensors"
    if accelerator.is_main_process and not path.exists():
        classifier.eval().to(accelerator.device)
        loader = DataLoader(split.dataset, batch_size=batch_size, collate_fn=split.collate, num_workers=num_workers)
        chunks = []
        for batch in tqdm(loader, desc="encoder outputs (frozen)", unit="batch"):
            batch = batch.to(accelerator.device)
            with accelerator.autocast():
                chunks.append(pool_layers(classifier, batch.features, batch.mel_lengths).float().cpu())
        pooled = torch.cat(chunks)
        save_safetensors(path, {"pooled": pooled}, metadata={"ids": json.dumps(list(split.ids))})
    accelerator.wait_for_everyone()
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        ids = json.loads((f.metadata() or {}).get("ids", "[]"))
    pooled = load_file(str(path))["pooled"]
    if ids != list(split.ids) or pooled.shape[0] != len(ids):
        raise RunFolderError(f"{path}: holds other clips than this run's", f"delete {path} and run again")
    return {i: pooled[n] for n, i in enumerate(ids)}


def share_encoder_cache(sources: Sequence[str | os.PathLike[str]], dst: str | os.PathLike[str]) -> int:
    """Hard-link (else copy) into folder `dst` the cached frozen encoder outputs (`*.safetensors`) of the folders
    `sources` that `dst` lacks; returns how many were added. The files are content-keyed (`cache_key`: encoder
    weights, window, features, clips, precision), so a file serves whichever run asks for its name: the LoRA
    variants' LP-FT stage and the frozen baseline of one `loralens run` compute the frozen pass once."""
    import shutil

    dst = Path(dst)
    added = 0
    for src in map(Path, sources):
        if not src.is_dir() or src.resolve() == dst.resolve():
            continue
        for f in sorted(src.glob("*.safetensors")):
            target = dst / f.name
            if target.exists():
                continue
            dst.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, target)
            except OSError:  # another file system, or links not allowed: copy, then rename (never half a file)
                tmp = target.with_suffix(".tmp")
                shutil.copy2(f, tmp)
                os.replace(tmp, target)
            added += 1
    return added


class PooledDataset(torch.utils.data.Dataset):
    """Items (pooled `[n_layers + 1, d_model]`, class index, id) of clips whose pooled outputs are known."""

    def __init__(self, pooled: dict[str, Tensor], ids: Sequence[str], labels: Sequence[int]) -> None:
        self.items = [(pooled[i], int(y), i) for i, y in zip(ids, labels)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def collate_pooled(items) -> Batch:
    """Batch whose `features` are pooled outputs `[batch, n_layers + 1, d_model]` (mel_lengths unused: ones)."""
    return Batch(features=torch.stack([x for x, _, _ in items]), mel_lengths=torch.ones(len(items), dtype=torch.long),
                 labels=torch.tensor([y for _, y, _ in items], dtype=torch.long), ids=[i for _, _, i in items])


def pooled_split(pooled: dict[str, Tensor], ids: Sequence[str], labels: Sequence[int]) -> Split:
    return Split(PooledDataset(pooled, ids, labels), collate_pooled, [1] * len(ids), list(labels), list(ids))

"""Hook-point names, capture and intervention specs on top of `EncoderRunner`.

Names are TransformerLens-style (`blocks.{l}.hook_resid_post`, `blocks.{l}.attn.v_proj.hook_lora_b`, ...; see
docs/runner.md). Interventions are plain `edits` mappings name -> function of the tensor, built here.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from loralens.errors import ConfigError
from loralens.models.runner import (
    BLOCK_HOOKS,
    LN_FINAL,
    LORA_A,
    LORA_B,
    EncoderRunner,
    check_hook_names,
    hook_layer,
    hook_names,
)
from loralens.numerics.masking import masked_mean

Edit = Callable[[Tensor], Tensor]

__all__ = [
    "BLOCK_HOOKS",
    "LN_FINAL",
    "HookPoint",
    "add_vector",
    "capture_pooled",
    "expand",
    "hook_layer",
    "hook_names",
    "layer_names",
    "mean_ablation",
    "parse_hook_name",
    "patch_from",
    "remove_adapters",
    "scale",
    "zero_ablation",
]

_LORA_RE = re.compile(
    r"^blocks\.(\d+)\.(?:attn\.(?P<attn>q_proj|k_proj|v_proj|out_proj)|mlp\.(?P<mlp>fc1|fc2))\.(?P<kind>hook_lora_[ab])$"
)
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(hook_\w+)$")


@dataclass(frozen=True)
class HookPoint:
    """A parsed hook name. layer: None for `ln_final.hook_out`; kind: `hook_resid_pre` ... / `hook_lora_a|b` /
    `hook_out`; module: the adapted module (`v_proj`, `fc1`, ...) for LoRA points, else None."""

    name: str
    layer: int | None
    kind: str
    module: str | None = None

    @property
    def is_lora(self) -> bool:
        return self.kind in (LORA_A, LORA_B)

    @property
    def prefix(self) -> str | None:
        """`blocks.{l}.attn.v_proj` for LoRA points (the key of `lora_modules`), else None."""
        return self.name.rsplit(".", 1)[0] if self.is_lora else None


def parse_hook_name(name: str) -> HookPoint:
    """Parse a hook name's syntax (not whether it exists in a given model: see `hook_names`)."""
    if name == LN_FINAL:
        return HookPoint(name, None, "hook_out")
    m = _LORA_RE.match(name)
    if m:
        return HookPoint(name, int(m.group(1)), m.group("kind"), m.group("attn") or m.group("mlp"))
    m = _BLOCK_RE.match(name)
    if m and m.group(2) in BLOCK_HOOKS:
        return HookPoint(name, int(m.group(1)), m.group(2))
    raise ConfigError(
        f"{name!r} is not a hook-point name",
        hint="blocks.{l}.hook_{resid_pre,attn_out,resid_mid,mlp_out,resid_post}, ln_final.hook_out, "
        "blocks.{l}.attn.{q,k,v,out}_proj.hook_lora_{a,b}, blocks.{l}.mlp.fc{1,2}.hook_lora_{a,b}",
    )


def layer_names(n_layers: int, kind: str = "hook_resid_post") -> list[str]:
    """`blocks.{l}.{kind}` for every layer, e.g. every layer's output."""
    if kind not in BLOCK_HOOKS:
        raise ConfigError(f"{kind!r} is not a per-layer hook kind", hint=f"choose among {list(BLOCK_HOOKS)}")
    return [f"blocks.{l}.{kind}" for l in range(n_layers)]


def expand(patterns: Iterable[str], valid: Sequence[str]) -> list[str]:
    """Glob patterns (`blocks.*.hook_resid_post`, `*.hook_lora_b`) -> the valid names they match, in `valid`'s
    (run) order. A pattern that matches nothing is an error naming it."""
    patterns = list(patterns)
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [n for n in valid if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            n_layers = sum(1 for n in valid if n.endswith(".hook_resid_pre"))
            check_hook_names([pattern], list(valid), n_layers, "hook-point pattern")
        chosen.update(hits)
    return [n for n in valid if n in chosen]


# ----------------------------------------------------------------------------- edits
def zero_ablation() -> Edit:
    """Replace the activation by zeros (for `hook_lora_b`: remove the adapter's contribution)."""
    return torch.zeros_like


def mean_ablation(mean: Tensor) -> Edit:
    """Replace every frame by `mean` (`[d]`, e.g. the activation's mean over a reference set)."""

    def edit(t: Tensor) -> Tensor:
        return mean.to(dtype=t.dtype, device=t.device).expand_as(t).clone()

    return edit


def scale(factor: float) -> Edit:
    """Multiply the activation by `factor` (0 ablates, 1 is identity)."""
    return lambda t: t * factor


def add_vector(vector: Tensor, frames: slice | Tensor | None = None) -> Edit:
    """Add `vector` (`[d]`) to the activation, on all frames or on `frames` (a slice or boolean `[frames]`)."""

    def edit(t: Tensor) -> Tensor:
        v = vector.to(dtype=t.dtype, device=t.device)
        if frames is None:
            return t + v
        out = t.clone()
        out[:, frames] = out[:, frames] + v
        return out

    return edit


def patch_from(source: Tensor, frames: slice | Tensor | None = None) -> Edit:
    """Activation patching: replace the activation by `source` (same shape, e.g. captured on another input),
    on all frames or only on `frames` (a slice or boolean `[frames]`)."""

    def edit(t: Tensor) -> Tensor:
        if source.shape != t.shape:
            raise ConfigError(f"patch source has shape {tuple(source.shape)}, the activation {tuple(t.shape)}")
        src = source.to(dtype=t.dtype, device=t.device)
        if frames is None:
            return src.clone()
        out = t.clone()
        out[:, frames] = src[:, frames]
        return out

    return edit


def remove_adapters(runner: EncoderRunner, layers: Iterable[int] | None = None) -> dict[str, Edit]:
    """Edits zeroing the `hook_lora_b` of every adapted module (of `layers`, None = all): the run is then the base
    model's on those layers."""
    wanted = None if layers is None else {int(l) for l in layers}
    edits = {
        f"{prefix}.{LORA_B}": zero_ablation()
        for prefix in runner.lora_modules()
        if wanted is None or hook_layer(prefix) in wanted
    }
    if not edits:
        raise ConfigError(
            f"no LoRA adapters to remove (layers {sorted(wanted) if wanted else 'all'})",
            hint="this encoder has no adapters on those layers",
        )
    return edits


# ----------------------------------------------------------------------------- captures
@torch.no_grad()
def capture_pooled(
    runner: EncoderRunner,
    features: Tensor,
    mel_lengths: Tensor | None,
    names: Iterable[str],
    *,
    edits: Mapping[str, Edit] | None = None,
    **runner_kwargs: object,
) -> dict[str, Tensor]:
    """Run once and return each hook point's mean over each clip's valid frames: name -> `[batch, d]` (float32, on
    the features' device). Names may be glob patterns (see `expand`). Runs under no_grad."""
    chosen = expand(names, runner.hook_names)
    out = runner(features, mel_lengths, capture=chosen, edits=edits, **runner_kwargs)
    return {name: masked_mean(out.captured[name], out.lengths).float() for name in chosen}

"""LoRA on Whisper's encoder through peft: settings, injection, adapter save/load, per-module access.

Adapters are peft's own `LoraLayer`s injected in place into the transformers modules of a `WhisperEncoder`
(`layers.{l}.self_attn.v_proj` becomes a `lora.Linear` wrapping the original `nn.Linear`), so the encoder object
stays the parameter container the runner drives, and adapters save/load in peft's format
(`adapter_config.json` + `adapter_model.safetensors`, loadable with `peft.PeftModel.from_pretrained`).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from loralens.errors import ConfigError, LoralensError, WeightsError
from loralens.models.lora_settings import MODULE_HOOK_PREFIX, TARGETABLE, LoraSettings

__all__ = ["ADAPTER", "MODULE_HOOK_PREFIX", "TARGETABLE", "LoraSettings", "ParameterCounts", "apply_lora",
           "count_parameters", "delta_weight", "hook_prefix", "load_adapter", "lora_modules", "lora_parameters",
           "lora_variant", "refuse_lora_variants", "save_adapter"]

ADAPTER = "default"


def _unwrap(model: nn.Module) -> nn.Module:
    """The `WhisperEncoder` inside a `PeftModel` (or the module itself)."""
    if isinstance(model, PeftModel):
        return model.get_base_model()
    return model


def apply_lora(encoder: nn.Module, settings: LoraSettings) -> PeftModel:
    """Inject LoRA adapters into `encoder` (a transformers `WhisperEncoder`) IN PLACE and return the `PeftModel`
    that wraps it (use it to save adapters; keep running the encoder itself through `EncoderRunner`).

    Base weights are frozen (requires_grad False), adapter weights trainable.
    """
    encoder = _unwrap(encoder)
    n_layers = len(encoder.layers)
    if settings.layers is not None:
        bad = [l for l in settings.layers if l >= n_layers]
        if bad:
            raise ConfigError(
                f"LoRA layers {bad} do not exist: the encoder has {n_layers} layers",
                hint=f"use indices in 0..{n_layers - 1}",
            )
    if lora_modules(encoder):
        raise ConfigError("the encoder already has LoRA adapters", hint="apply LoRA once, to a fresh encoder")
    was_training = encoder.training
    with warnings.catch_warnings():  # peft 0.21 calls a transformers method deprecated in 5.x
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(encoder, settings.peft_config())
    encoder.train(was_training)  # the injected dropout modules are created in training mode
    return peft_model


def save_adapter(peft_model: PeftModel, out_dir: str | os.PathLike[str]) -> Path:
    """Write the adapter in peft's format (`adapter_config.json`, `adapter_model.safetensors`) to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # write into a temporary sibling folder, then move each file in place: no half-written adapter file
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        for path in sorted(Path(tmp).iterdir()):
            os.replace(path, out / path.name)
    return out


def load_adapter(encoder: nn.Module, adapter_dir: str | os.PathLike[str], *, trainable: bool = False) -> PeftModel:
    """Load a saved adapter into `encoder` (a fresh transformers `WhisperEncoder`, modified in place)."""
    path = Path(adapter_dir)
    if not (path / "adapter_config.json").is_file():
        raise WeightsError(
            f"{path}: no adapter_config.json", hint="point to a folder written by save_adapter / peft save_pretrained"
        )
    encoder = _unwrap(encoder)
    was_training = encoder.training
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = PeftModel.from_pretrained(encoder, str(path), is_trainable=trainable)
    encoder.train(was_training)
    try:
        refuse_lora_variants(lora_modules(encoder), f"adapter {path}", WeightsError)
    except WeightsError:
        peft_model.unload()  # leave the encoder as it was given: without the refused adapter
        raise
    return peft_model


def hook_prefix(module_name: str) -> str | None:
    """`layers.3.self_attn.v_proj` -> `blocks.3.attn.v_proj`, `layers.0.fc1` -> `blocks.0.mlp.fc1`; None when the
    name is not an adaptable encoder module."""
    parts = module_name.split(".")
    if len(parts) < 3 or parts[-1] not in MODULE_HOOK_PREFIX:
        return None
    if parts[-2] == "self_attn":
        idx_part = parts[-3]
        head = parts[:-3]
    else:
        idx_part = parts[-2]
        head = parts[:-2]
    if not idx_part.isdigit() or not head or head[-1] != "layers":
        return None
    return f"blocks.{int(idx_part)}.{MODULE_HOOK_PREFIX[parts[-1]]}"


def lora_modules(encoder: nn.Module) -> dict[str, LoraLayer]:
    """Every peft `LoraLayer` in the encoder, keyed by hook prefix (`blocks.{l}.attn.v_proj`, `blocks.{l}.mlp.fc1`),
    in layer order."""
    found: dict[str, LoraLayer] = {}
    for name, module in _unwrap(encoder).named_modules():
        if isinstance(module, LoraLayer):
            prefix = hook_prefix(name)
            if prefix is None:
                raise ConfigError(f"LoRA module {name!r} is not an encoder attention/MLP projection")
            found[prefix] = module
    return found


def lora_variant(module: LoraLayer, adapter: str = ADAPTER) -> str | None:
    """The peft LoRA variant of `adapter` in `module`, named by the LoraConfig field that selects it and its class
    (e.g. `use_dora (DoraLinearVariant)`), or None for plain LoRA, which adds `B(A(dropout(x))) * scaling` to the
    base output: the only form loralens' LoRA taps (`hook_lora_b` divides peft's scaling back out) and weight
    analyses (`delta_weight = scaling * B @ A`) read correctly."""
    variant = getattr(module, "lora_variant", {}).get(adapter)  # peft >= 0.16: DoRA and the other variants
    if variant is not None:
        fields = [k for k, cls in getattr(module, "lora_variants", {}).items() if k and cls is type(variant)]
        return f"{'+'.join(fields[0]) if fields else 'unknown field'} ({type(variant).__name__})"
    if getattr(module, "use_dora", {}).get(adapter):  # earlier peft: DoRA was the only variant
        return "use_dora (DoRA)"
    return None


def refuse_lora_variants(modules: Mapping[str, LoraLayer], source: str,
                         error: type[LoralensError] = ConfigError) -> None:
    """Raise `error` naming `source`, the adapted module and the variant when one of `modules` (hook prefix ->
    LoraLayer, as `lora_modules` returns them) holds a peft LoRA variant (DoRA and others): loralens reads plain
    LoRA only (see `lora_variant`)."""
    for prefix, module in modules.items():
        variant = lora_variant(module)
        if variant is not None:
            raise error(
                f"{source}: the LoRA adapter on {prefix} is the peft variant {variant}; loralens reads plain LoRA "
                "only (B A x * scaling added to the base projection): its LoRA hook points and weight analyses "
                "would be silently wrong",
                hint="use a plain LoRA adapter (peft LoraConfig without use_dora or another variant), or merge "
                "this one into the base weights (PeftModel.merge_and_unload()) and use the merged model as the base",
            )


def delta_weight(module: LoraLayer, adapter: str = ADAPTER) -> torch.Tensor:
    """The adapter's weight update `scaling * B @ A`, `[d_out, d_in]` (peft's `get_delta_weight`)."""
    return module.get_delta_weight(adapter)


@dataclass(frozen=True)
class ParameterCounts:
    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def count_parameters(module: nn.Module) -> ParameterCounts:
    """Trainable and total parameter counts (shared parameters counted once)."""
    seen: set[int] = set()
    trainable = total = 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return ParameterCounts(trainable=trainable, total=total)


def lora_parameters(encoder: nn.Module) -> Iterable[nn.Parameter]:
    """The adapter parameters (A and B of every LoRA module)."""
    for module in lora_modules(encoder).values():
        yield from module.lora_A.parameters()
        yield from module.lora_B.parameters()

"""Which numeric precision a run computes in, and why: `precision: auto` resolved for the hardware at hand.

bf16 autocast pays where the hardware has bf16 matrix units: CUDA devices that report bf16 support, and CPUs with
AMX tiles or AVX512-BF16 (on this project's 2-core AVX512-BF16 CPU a LoRA step on `base` runs about 2x faster).
Elsewhere bf16 would be emulated and slower than fp32, so `auto` keeps fp32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

Requested = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class PrecisionChoice:
    """The resolved precision. mode: "bf16" (autocast) or "fp32". requested: what the config said.
    reason: one sentence on why, printed at the start of a run and saved with its metrics."""

    requested: str
    mode: Literal["fp32", "bf16"]
    reason: str

    @property
    def accelerate_mixed_precision(self) -> str:
        """The value of `accelerate.Accelerator(mixed_precision=...)`: "bf16" or "no"."""
        return "bf16" if self.mode == "bf16" else "no"

    def to_dict(self) -> dict[str, str]:
        return {"requested": self.requested, "resolved": self.mode, "reason": self.reason}


def _cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = path.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_bf16_features() -> tuple[str, ...]:
    """The CPU's bf16 matrix features among ("amx", "avx512_bf16"), as torch reports them (its own CPU probe,
    with /proc/cpuinfo as a fallback for torch builds without it)."""
    found = []
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    avx = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    flags = _cpuinfo_flags() if amx is None or avx is None else set()
    if (amx() if amx is not None else "amx_bf16" in flags):
        found.append("amx")
    if (avx() if avx is not None else "avx512_bf16" in flags):
        found.append("avx512_bf16")
    return tuple(found)


def resolve_precision(requested: str, device_type: str | None = None,
                      cpu_features: tuple[str, ...] | None = None, cuda_bf16: bool | None = None) -> PrecisionChoice:
    """Resolve `requested` ("auto", "fp32", "bf16") for a device of type `device_type` ("cpu", "cuda"; default:
    "cuda" when CUDA is available). `cpu_features` and `cuda_bf16` override the hardware probes (tests simulate
    other machines with them)."""
    if requested not in ("auto", "fp32", "bf16"):
        from loralens.errors import ConfigError

        raise ConfigError(f"precision {requested!r} is not one of auto, fp32, bf16", "set precision: auto")
    if requested == "fp32":
        return PrecisionChoice(requested, "fp32", "fp32 as configured")
    if requested == "bf16":
        return PrecisionChoice(requested, "bf16", "bf16 autocast as configured")
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher in ("no", "bf16"):
        # under `accelerate launch` (or its config) the user has said which precision: auto follows it
        mode = "bf16" if launcher == "bf16" else "fp32"
        return PrecisionChoice(requested, mode, f"auto: as the accelerate launcher says (ACCELERATE_MIXED_PRECISION="
                               f"{launcher})")
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        ok = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        if ok:
            return PrecisionChoice(requested, "bf16", "auto: the CUDA device supports bf16")
        return PrecisionChoice(requested, "fp32", "auto: the CUDA device has no bf16 support")
    if device_type == "cpu":
        feats = cpu_bf16_features() if cpu_features is None else tuple(cpu_features)
        if feats:
            return PrecisionChoice(requested, "bf16", f"auto: the CPU has {' and '.join(feats).upper()} (bf16 matrix "
                                   "instructions)")
        return PrecisionChoice(requested, "fp32", "auto: the CPU has neither AMX nor AVX512-BF16, so bf16 would be "
                               "emulated (slower than fp32)")
    return PrecisionChoice(requested, "fp32", f"auto: fp32 on a {device_type} device")


__all__ = ["PrecisionChoice", "cpu_bf16_features", "resolve_precision"]

"""LoRA settings: the one class of LoRA hyper-parameters (torch-free, so that `TrainConfig` and the CLI's --help do
not import torch). `loralens.models.lora` applies them with peft and re-exports `LoraSettings`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loralens.errors import ConfigError

#: encoder module name (inside a `WhisperEncoderLayer`) -> hook-point prefix inside `blocks.{l}`
MODULE_HOOK_PREFIX: dict[str, str] = {
    "q_proj": "attn.q_proj",
    "k_proj": "attn.k_proj",
    "v_proj": "attn.v_proj",
    "out_proj": "attn.out_proj",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
}
TARGETABLE = tuple(MODULE_HOOK_PREFIX)


class LoraSettings(BaseModel):
    """LoRA hyper-parameters: the one LoRA settings class, the `lora:` section of `TrainConfig` and what
    `apply_lora` takes. Defaults are the paper's: rank 32, alpha 64 (scale alpha / r = 2), dropout 0.1 on the
    adapter input, adapters on `v_proj` of every encoder layer; B is initialised to zero (peft's default), so an
    adapted model starts exactly at the base model.

    target_modules: among "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2".
    layers: encoder layer indices to adapt; None = all.

    Immutable. Built directly (`LoraSettings(r=8)`), invalid values raise `ConfigError`; inside a `TrainConfig`
    they are reported with the configuration's other errors (`lora.r: ...`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(32, ge=1, description="LoRA rank")
    alpha: float = Field(64, gt=0, description="LoRA alpha (the update is scaled by alpha / r)")
    dropout: float = Field(0.1, ge=0, lt=1, description="LoRA dropout on the adapter input")
    target_modules: tuple[str, ...] = Field(("v_proj",), description="encoder modules to adapt (q_proj, k_proj, "
                                            "v_proj, out_proj, fc1, fc2; comma-separated on the command line)")
    layers: tuple[int, ...] | None = Field(None, description="encoder layers to adapt (indices, comma-separated on "
                                           "the command line); None = all")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                                 for err in e.errors())
            raise ConfigError(f"LoRA settings {data} invalid: {problems}",
                              hint=f"rank r >= 1, dropout in [0, 1), target_modules among {list(TARGETABLE)}, "
                              "layers a non-empty list of indices >= 0 or unset") from None

    # Direct construction only: inside a TrainConfig the section is validated without this __init__ (marked as
    # pydantic's own), so its errors are listed with the configuration's others (`lora.r: ...`).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @field_validator("target_modules")
    @classmethod
    def _known_modules(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in v if m not in TARGETABLE]
        if unknown or not v:
            raise ValueError(f"LoRA target_modules {list(v)} invalid (unknown: {unknown}): choose among "
                             f"{list(TARGETABLE)}, at least one, e.g. v_proj")
        return v

    @field_validator("layers")
    @classmethod
    def _layer_indices(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (not v or any(int(i) < 0 for i in v)):
            raise ValueError(f"LoRA layers {list(v)} must be a non-empty list of indices >= 0, or unset (all)")
        return v

    @property
    def scaling(self) -> float:
        """peft's scale of the B output: alpha / r."""
        return self.alpha / self.r

    def peft_config(self):
        """The equivalent `peft.LoraConfig` (B = 0 init, no bias)."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            layers_to_transform=None if self.layers is None else sorted(int(l) for l in self.layers),
            layers_pattern=None if self.layers is None else "layers",
            bias="none",
            init_lora_weights=True,
        )

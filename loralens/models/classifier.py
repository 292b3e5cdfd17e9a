"""`EmotionClassifier`: Whisper's encoder (the original transformers modules, possibly with peft LoRA layers) run
by `EncoderRunner`, followed by `ClassificationHead`.

State-dict names: `encoder.*` (transformers' names, with peft's `base_layer` / `lora_A.default` / `lora_B.default`
once adapted) and `head.*` (`WhisperForAudioClassification`'s `projector`, `classifier`, `layer_weights`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from loralens.errors import ConfigError
from loralens.models.head import ClassificationHead
from loralens.models.lora import (
    LoraSettings,
    ParameterCounts,
    _unwrap,
    apply_lora,
    count_parameters,
    load_adapter,
    lora_modules,
    lora_parameters,
    save_adapter,
)
from loralens.models.runner import EncoderRunner, RunnerOutput
from loralens.models.speaker_stats import SpeakerStatistics, select_clips

Method = Literal["lora", "frozen", "full"]
METHODS: tuple[str, ...] = ("lora", "frozen", "full")


@dataclass
class ClassifierOutput:
    """logits `[batch, n_classes]`; pooled `[batch, d_model]` (input of the projector); encoder: the runner's output
    (hidden states, captured hook points, valid lengths)."""

    logits: Tensor
    pooled: Tensor
    encoder: RunnerOutput


def whisper_encoder(model: nn.Module) -> nn.Module:
    """The `WhisperEncoder` of a `WhisperForConditionalGeneration`, `WhisperModel`, `WhisperForAudioClassification`,
    a peft-wrapped encoder, or the encoder itself."""
    model = _unwrap(model)
    if hasattr(model, "layers") and hasattr(model, "conv1"):
        return model
    for path in ("model.encoder", "encoder"):
        obj: Any = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
        if obj is not None and hasattr(obj, "conv1"):
            return obj
    raise ConfigError(
        f"{type(model).__name__} holds no Whisper encoder",
        hint="pass a WhisperForConditionalGeneration, WhisperModel, WhisperForAudioClassification or WhisperEncoder",
    )


def cut_encoder(encoder: nn.Module, hidden_state: int) -> nn.Module:
    """Cut a `WhisperEncoder` in place so that its output is its hidden state `hidden_state` (transformers' index: the
    output of layer `hidden_state - 1`, before any final LayerNorm): the layers above are dropped, the final
    LayerNorm becomes an identity and the config's `encoder_layers` follows. `hidden_state` = the number of layers
    leaves the encoder as it is (its last hidden state is final-normed). Returns the encoder."""
    n = len(encoder.layers)
    if not 1 <= hidden_state <= n:
        raise ConfigError(f"head.hidden_state={hidden_state}: the encoder has hidden states 1..{n} after its "
                          "embeddings", hint=f"choose a hidden state in 1..{n}, or leave it unset for the last")
    if hidden_state < n:
        encoder.layers = encoder.layers[:hidden_state]
        encoder.layer_norm = nn.Identity()
        if hasattr(encoder, "config"):
            encoder.config.encoder_layers = hidden_state
    return encoder


class EmotionClassifier(nn.Module):
    """Whisper encoder + classification head.

    encoder: a transformers `WhisperEncoder` (kept as is: its modules are the parameter containers).
    n_classes: number of emotion classes. proj_size: projector width (256 as transformers).
    use_weighted_layer_sum: learned softmax weighting of all hidden states before pooling (SUPERB style).
    normalize_layers: with the weighted sum, LayerNorm (no parameters) of each layer's pooled vector first.
    mask_padding: default of the runner's padding mask (True for trimmed batches; the paper's `full` window
        setting is mask_padding=False, with Whisper attending to its 30-s padding).
    hidden_state: read the encoder's hidden state k instead of the last one: `encoder` is cut after layer k-1 (in
        place, `cut_encoder`), so the classifier has k layers and no final LayerNorm.
    standardize: the head z-scores its input (`ClassificationHead.set_standardization`).
    speaker_norm: the head z-scores with each clip's speaker's statistics (`speaker_statistics`, a
        `SpeakerStatistics`; `select_clips(ids)` before each batch).
    """

    def __init__(
        self,
        encoder: nn.Module,
        n_classes: int,
        *,
        proj_size: int = 256,
        use_weighted_layer_sum: bool = False,
        normalize_layers: bool = False,
        mask_padding: bool = True,
        hidden_state: int | None = None,
        standardize: bool = False,
        speaker_norm: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = whisper_encoder(encoder)
        if hidden_state is not None:
            if use_weighted_layer_sum:
                raise ConfigError("hidden_state and use_weighted_layer_sum exclude each other",
                                  hint="read one hidden state or the weighted sum of all")
            cut_encoder(self.encoder, hidden_state)
        self.hidden_state = hidden_state
        self.runner = EncoderRunner(self.encoder, mask_padding=mask_padding)
        self.head = ClassificationHead(
            self.runner.d_model,
            n_classes,
            proj_size=proj_size,
            use_weighted_layer_sum=use_weighted_layer_sum,
            n_hidden_states=self.runner.n_layers + 1,
            normalize_layers=normalize_layers,
            standardize=standardize,
            speaker_norm=speaker_norm,
        )
        self.speaker_statistics: SpeakerStatistics | None = None
        self.gradient_checkpointing = False
        self.method: str | None = None
        self.lora_settings: LoraSettings | None = None
        # the PeftModel wrapping self.encoder, kept out of the module tree (its parameters are the encoder's)
        self.__dict__["peft_model"] = None

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_whisper(
        cls, model_or_source: nn.Module | str | os.PathLike[str], n_classes: int, *,
        dtype: torch.dtype = torch.float32, **kwargs: Any
    ) -> EmotionClassifier:
        """A classifier on the encoder of a Whisper model (decoder dropped) or of a source `load_whisper` accepts
        (embedded name, HF folder, `.pt`, CTranslate2 folder). kwargs go to `EmotionClassifier`."""
        if isinstance(model_or_source, (str, os.PathLike)):
            from loralens.models.loading import load_whisper

            model_or_source = load_whisper(model_or_source, dtype=dtype)
        return cls(whisper_encoder(model_or_source), n_classes, **kwargs)

    @classmethod
    def from_audio_classification(cls, model: nn.Module, **kwargs: Any) -> EmotionClassifier:
        """A classifier sharing the encoder and copying the head weights of a transformers
        `WhisperForAudioClassification` (same `projector`, `classifier`, `layer_weights`)."""
        config = model.config
        clf = cls(
            model.encoder,
            config.num_labels,
            proj_size=config.classifier_proj_size,
            use_weighted_layer_sum=config.use_weighted_layer_sum,
            **kwargs,
        )
        head_keys = set(clf.head.state_dict())
        clf.head.load_state_dict({k: v for k, v in model.state_dict().items() if k in head_keys})
        return clf

    # ----------------------------------------------------------------- training setups
    def prepare_for(
        self, method: Method, lora: LoraSettings | None = None, *, gradient_checkpointing: bool = False
    ) -> EmotionClassifier:
        """Set which weights train.

        frozen: head only. full: every encoder weight (but the fixed sinusoidal positions, frozen as in
        transformers) + head. lora: inject adapters (`lora`, default `LoraSettings()`) unless present, train
        adapters + head, base encoder frozen. gradient_checkpointing: recompute layers in backward while training.
        """
        if method not in METHODS:
            raise ConfigError(f"unknown fine-tuning method {method!r}", hint=f"choose among {list(METHODS)}")
        adapted = bool(lora_modules(self.encoder))
        if method != "lora":
            if lora is not None:
                raise ConfigError(f"LoRA settings given for method {method!r}", hint="use method='lora'")
            if adapted:
                raise ConfigError(
                    f"method {method!r} on an encoder that has LoRA adapters",
                    hint="build the classifier from a fresh encoder",
                )
        if method == "lora":
            settings = lora or self.lora_settings or LoraSettings()
            if not adapted:
                self.__dict__["peft_model"] = apply_lora(self.encoder, settings)
                self.lora_settings = settings
            elif self.lora_settings is not None and lora is not None and lora != self.lora_settings:
                raise ConfigError(
                    f"the encoder already has adapters with {self.lora_settings}, asked for {lora}",
                    hint="build the classifier from a fresh encoder",
                )
            self.encoder.requires_grad_(False)
            for p in lora_parameters(self.encoder):
                p.requires_grad_(True)
        elif method == "frozen":
            self.encoder.requires_grad_(False)
        else:
            self.encoder.requires_grad_(True)
            self.encoder.embed_positions.requires_grad_(False)
        self.head.requires_grad_(True)
        self.method = method
        self.gradient_checkpointing = gradient_checkpointing
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_counts(self) -> ParameterCounts:
        """Trainable and total parameters (encoder + head)."""
        return count_parameters(self)

    # ----------------------------------------------------------------- adapters
    def save_adapter(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write the LoRA adapter in peft's format (`adapter_config.json`, `adapter_model.safetensors`)."""
        if self.peft_model is None:
            raise ConfigError("this classifier has no LoRA adapter to save", hint="prepare_for('lora') first")
        return save_adapter(self.peft_model, out_dir)

    def load_adapter(self, adapter_dir: str | os.PathLike[str], *, trainable: bool = False) -> None:
        """Inject a saved peft adapter into this (not yet adapted) classifier's encoder."""
        if lora_modules(self.encoder):
            raise ConfigError("the encoder already has LoRA adapters", hint="load into a fresh classifier")
        self.__dict__["peft_model"] = load_adapter(self.encoder, adapter_dir, trainable=trainable)
        self.method = "lora"

    # ----------------------------------------------------------------- forward
    def select_clips(self, ids: Sequence[str]) -> None:
        """Before running a batch of clips `ids`: give a speaker-normalising head (`speaker_norm`) their speakers'
        statistics; nothing for other heads."""
        select_clips(self.head, self.speaker_statistics, ids)

    def run(self, features: Tensor | None, mel_lengths: Tensor | None = None, **runner_kwargs: Any) -> ClassifierOutput:
        """Logits, pooled representation and the runner's output. runner_kwargs: `EncoderRunner.__call__`'s
        (capture, grad_capture, edits, skip_layers, stop_after, start_at, mask_padding, ...)."""
        runner_kwargs.setdefault("gradient_checkpointing", self.gradient_checkpointing and self.training)
        out = self.runner(features, mel_lengths, **runner_kwargs)
        hidden = out.hidden_states if self.head.use_weighted_layer_sum else out.last_hidden_state
        pooled = self.head.pool(hidden, out.lengths)
        return ClassifierOutput(logits=self.head.classify(pooled), pooled=pooled, encoder=out)

    def forward(self, features: Tensor, mel_lengths: Tensor | None = None, **runner_kwargs: Any) -> Tensor:
        """Logits `[batch, n_classes]` from log-mel features `[batch, n_mels, mel_frames]` and valid mel frames
        `[batch]` (None: every frame valid, pooled over the whole window as transformers does)."""
        return self.run(features, mel_lengths, **runner_kwargs).logits

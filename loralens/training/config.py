"""The training configuration: one validated pydantic model, read from YAML, overridden by command-line flags.

A snapshot is written as `config.yaml` in the run folder; `config_hash` fingerprints the fields that change the
results, so a completed fold is skipped only when it was trained under the same settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loralens.errors import ConfigError
from loralens.models.lora_settings import LoraSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


#: the `head.hidden_state` values that let each fold choose (`training/head_choice.py`)
AUTO_HIDDEN_STATES = ("auto", "auto-all")


class HeadConfig(_Strict):
    """Classification head: masked mean pooling, optional learned weighted sum of the hidden states (embeddings and
    every layer), a projector of `projector_dim` units, a linear classifier. `layer_norm` (with the weighted sum
    only): normalise each layer's pooled vector (LayerNorm without parameters) before weighting. `standardize`: z-score
    the pooled vector(s) with fixed mean and std of the fold's training clips. `hidden_state`:
    read an earlier hidden state instead of the last; the encoder is cut after the layer that produces it, so the
    model (and LoRA, and every analysis) has that many layers. `auto`: each fold chooses its hidden state before
    training (`fold_k/hidden_state.json`).

    Defaults (`head_defaults`, the recipe search of docs/results.md sections 6c, 6f and 6g): `hidden_state: auto-all`
    when neither it nor `weighted_layer_sum` is given: each fold reads the weighted sum of every hidden state (each
    normalised) or one hidden state, whichever a speaker-grouped probe prefers; the input z-scored with each clip's
    speaker's statistics (`speaker_norm`). A head on one hidden state drops the per-layer normalisation, and is
    z-scored (per speaker) unless it reads the last, final-normed state; `weighted_layer_sum: true` (or
    `hidden_state: null`) asks for the weighted sum on every fold, `hidden_state: last` for the last-layer head."""

    projector_dim: int = Field(256, ge=1, description="projector width of the head")
    weighted_layer_sum: bool = Field(True, description="learned weighted sum of all hidden states (else one: the "
                                     "last, or hidden_state); default on unless hidden_state is set")
    layer_norm: bool = Field(True, description="with the weighted layer sum: normalise each layer's pooled vector "
                             "before weighting; default on with the weighted sum")
    hidden_state: int | Literal["auto", "auto-all"] | None = Field(
        None, description="read hidden state k (transformers' index: k = the output of encoder layer k-1; the layers "
        "above are cut and the final LayerNorm is not applied); auto: chosen per fold by speaker-grouped "
        "cross-validation of a linear probe on the training clips' frozen outputs; auto-all: the same choice with the "
        "weighted sum of all hidden states (each normalised) as one more candidate; last (or unset) = the last, "
        "final-normed")
    speaker_norm: bool = Field(True, description="z-score the head's input with each clip's speaker's statistics "
                               "under the frozen encoder (over all of that speaker's clips, labels unused) instead "
                               "of the training clips'; a speaker needs several clips of mixed emotions, also to "
                               "predict (docs/results.md 6f); default on whenever the head z-scores")
    standardize: bool = Field(True, description="z-score the head's input with the training clips' statistics "
                              "under the frozen encoder (needs the frozen encoder's outputs: computed once per run); "
                              "default on unless the head reads the last hidden state alone")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return head_defaults(data) if isinstance(data, Mapping) else data

    @field_validator("hidden_state", mode="before")
    @classmethod
    def _hidden_state(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if v == "last":
            return None
        if v is None or v in AUTO_HIDDEN_STATES or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"{v!r} is not a hidden state: give an index >= 1 (1 = the output of the first layer), "
                         "auto, auto-all, or last")

    @model_validator(mode="after")
    def _layer_norm_needs_sum(self) -> HeadConfig:
        if self.layer_norm and not self.weighted_layer_sum:
            raise ValueError("head.layer_norm applies to the weighted layer sum only: set head.weighted_layer_sum "
                             "too, or drop head.layer_norm")
        if self.speaker_norm and not self.standardize:
            raise ValueError("head.speaker_norm z-scores the head's input per speaker: it needs head.standardize "
                             "(drop head.standardize: false)")
        if self.hidden_state is not None and self.weighted_layer_sum:
            raise ValueError("head.hidden_state reads one hidden state, head.weighted_layer_sum all of them: set "
                             "one of the two")
        return self


def head_defaults(head: Mapping[str, Any]) -> dict[str, Any]:
    """A head section with the fields it does not give (absent or None) filled by the rule of `HeadConfig`: the
    weighted layer sum unless one hidden state is asked for, per-layer normalisation with it, and z-scoring unless
    the head reads the last (final-normed) hidden state alone."""
    out = dict(head)
    if "hidden_state" not in out and out.get("weighted_layer_sum") is None and out.get("layer_norm") is None:
        # where the head reads is not said (a snapshot says it, hidden_state null included): each fold chooses
        out["hidden_state"] = "auto-all"
    state = out.get("hidden_state")
    if out.get("weighted_layer_sum") is None:
        out["weighted_layer_sum"] = state is None  # hidden_state "last" asks for the last-layer head
    if out.get("layer_norm") is None:
        out["layer_norm"] = bool(out["weighted_layer_sum"])
    if out.get("standardize") is None:
        out["standardize"] = bool(out["weighted_layer_sum"]) or state not in (None, "last")
    if out.get("speaker_norm") is None:
        out["speaker_norm"] = bool(out["standardize"])
    return out


class AugmentConfig(_Strict):
    """Training-time augmentation (the training split only; validation and test clips are never altered). Every
    random choice is a pure function of (seed, epoch, clip) or (seed, epoch, batch), so a resumed run repeats it.
    All off by default.

    spec_time_masks / spec_freq_masks: SpecAugment-style masks per clip on the log-mel (`spec_time_width` mel
    frames of 10 ms at most each, `spec_freq_width` mel bins at most each), filled with the clip's mean log-mel.
    speed: speed-perturbation factors (e.g. [0.9, 1.0, 1.1]); each clip draws one per epoch; the audio is resampled
    (tempo and pitch change together) and the features of each factor are cached (content key of the perturbed audio).
    noise_snr_db: [low, high]: white noise added with probability `noise_prob` at an SNR drawn uniformly in that range
    (features then computed on the fly). mixup_alpha: mixup of log-mels (or pooled outputs) and targets within a
    batch, weight ~ Beta(alpha, alpha). label_smoothing: of the training loss (validation loss is plain CE).
    """

    spec_time_masks: int = Field(0, ge=0)
    spec_time_width: int = Field(40, ge=1)
    spec_freq_masks: int = Field(0, ge=0)
    spec_freq_width: int = Field(10, ge=1)
    speed: tuple[float, ...] = ()
    noise_snr_db: tuple[float, float] | None = None
    noise_prob: float = Field(0.5, ge=0, le=1)
    mixup_alpha: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)

    @field_validator("speed")
    @classmethod
    def _speeds(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.5 <= f <= 2.0 for f in v):
            raise ValueError("speed factors must lie in 0.5..2.0, e.g. [0.9, 1.0, 1.1]")
        return v

    @field_validator("noise_snr_db")
    @classmethod
    def _snr(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and v[0] > v[1]:
            raise ValueError("noise_snr_db is [low, high] in dB with low <= high, e.g. [10, 30]")
        return v

    @property
    def on_audio(self) -> bool:
        """Whether clips need other features than the cached ones (speed, noise or masks)."""
        return bool(self.spec_time_masks or self.spec_freq_masks or (self.speed and set(self.speed) != {1.0})
                    or self.noise_snr_db is not None)


#: The default recipe of `method: lora` (the default method), from the recipe search of issue 11 (docs/results.md,
#: sections 6, 6c and 6g): LP-FT (the head fitted on the frozen encoder's cached outputs first, 20 epochs, selected on
#: validation UAR; `lp_fit: logistic`, a logistic regression instead, measured level or worse, section 6g), then 3
#: epochs of LoRA and head at adapter learning rate 3e-4, the last epoch kept (validation from two speakers
#: anti-correlates with test across folds, so selecting on it picks noise). A field that a configuration does not give
#: takes this value when the method is lora; with frozen and full, and wherever a configuration gives the field, the
#: field's own default or the given value holds. Keys are top-level field names.
LORA_RECIPE: dict[str, Any] = {"epochs": 3, "lr_encoder": 3e-4, "lp_ft_epochs": 20, "select_on": "last"}


def method_default(path: str, method: str) -> Any:
    """The default of field `path` (dotted, as `field_default`) under `method`: the lora recipe's value where it has
    one, else the field's default."""
    if method == "lora" and path in LORA_RECIPE:
        return LORA_RECIPE[path]
    return field_default(path)


class TrainConfig(_Strict):
    """Everything a training run depends on. Paths may be relative to the working directory. Fields not given take
    their defaults, those of `LORA_RECIPE` when the method is lora."""

    # data
    corpus: str = Field("ravdess", description="corpus name (ravdess, crema-d, emodb, tess, iemocap, manifest, hf)")
    corpus_root: Path | None = Field(None, description="folder of the corpus, or the manifest file (.csv / .jsonl)")
    label_set: str | None = Field(None, description="label set (e.g. 4class, all) or comma-separated labels in "
                                  "class order; None = the corpus default")
    label_map: dict[str, str] = Field(default_factory=dict,
                                      description="labels renamed before the label set (raw label -> label; on the "
                                      "command line anger=angry,hap=happy)")
    on_unknown_label: Literal["error", "skip"] = Field(
        "error", description="manifest labels that look like mistakes or lie outside the label set: stop or leave out")
    corpus_options: dict[str, str] = Field(
        default_factory=dict, description="options of the corpus parser: the column names of the hf corpus")
    folds: str = Field("auto", description="fold scheme (auto, ravdess6, leave-one-speaker-out, "
                       "leave-one-session-out, speaker-kfold) or a folds JSON file")
    folds_file: Path | None = Field(None, description="folds JSON file (overrides folds)")
    folds_k: int | None = Field(None, ge=2, description="number of folds of the speaker-kfold scheme")
    fold: int | None = Field(None, ge=0, description="train only this fold (index); None = all folds")
    window: Literal["full", "trim"] = Field(
        "trim", description="trim: batches padded to their longest clip (default); full: every clip padded to 30 s, "
        "the paper's setting (about 7x slower on 3-5 s clips, no measured gain)")
    on_bad_audio: Literal["stop", "skip"] = Field(
        "stop", description="a clip that fails the audio checks: stop, or leave it out (listed in bad_files.json and "
        "the report)")
    feature_cache: Path | None = Field(None, description="feature cache folder; None = $LORALENS_CACHE/features")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    # model
    model: str = Field("base", description="Whisper weights: tiny.en, base, a Hugging Face id or folder, a .pt, a "
                       "CTranslate2 folder")
    method: Literal["lora", "frozen", "full"] = Field(
        "lora", description="what trains besides the head: LoRA adapters, nothing (frozen) or the whole encoder (full)")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    head: HeadConfig = Field(default_factory=HeadConfig)
    gradient_checkpointing: bool = Field(False, description="recompute activations to save memory")
    mask_padding: bool | None = Field(
        None, description="mask padded frames in self-attention; None = off for window full (the paper), on for trim")
    # optimisation
    batch_size: int = Field(8, ge=1, description="global batch per optimiser micro-step (all processes together)")
    eval_batch_size: int | None = Field(None, ge=1, description="batch of evaluation; None = batch_size")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimiser step")
    epochs: int = Field(10, ge=1, description="maximum epochs")
    lr_head: float = Field(1e-3, gt=0, description="learning rate of the head")
    lr_encoder: float = Field(1e-4, gt=0, description="learning rate of the LoRA adapters (lora) or encoder (full)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="share of the optimiser steps warming up")
    schedule: Literal["cosine", "linear"] = Field("cosine", description="learning-rate decay after warm-up")
    grad_clip: float | None = Field(1.0, gt=0, description="maximum gradient norm; None = no clipping")
    patience: int | None = Field(3, ge=1, description="early stopping: epochs without a better validation score "
                                 "before stopping; None = off")
    # recipe levers (issue 11); off by default, hashed only when set
    validation_speakers: int | None = Field(
        None, ge=1, description="validation speakers per fold, taken from the training speakers (gender-stratified); "
        "None = the scheme's default (10 % of the training speakers, at least one per gender: 2 for ravdess6)")
    select_on: Literal["uar", "loss", "last"] = Field(
        "uar", description="model selection and early stopping on validation UAR (higher) or validation loss "
        "(lower); last = no selection: the final epoch's weights, no early stopping (LP-FT's head stage still "
        "selects on validation UAR)")
    lp_ft_epochs: int = Field(
        0, ge=0, description="LP-FT: first fit the head alone on the frozen encoder's cached outputs for this many "
        "epochs (with selection), then train adapters / encoder + head from that head; 0 = off (unless lp_fit is "
        "logistic)")
    lp_fit: Literal["gradient", "logistic"] = Field(
        "gradient", description="how LP-FT fits the head on the frozen outputs: gradient = lp_ft_epochs epochs of "
        "the training loop; logistic = the head set to an L2 logistic regression on its own inputs (a convex fit, "
        "no epochs, no selection; lp_ft_epochs then unused)")
    average_last: int = Field(
        1, ge=1, description="final weights = mean of the trainable weights at the end of the k epochs ending with "
        "the selected one (1 = the selected epoch's weights)")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    seed: int = Field(0, description="seed of the folds, initialisation and data order")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="numeric precision (auto: bf16 on CPUs with AMX/AVX512-BF16 and on bf16 GPUs, else fp32; "
        "printed and saved in the run)")
    # bookkeeping
    run_dir: Path = Field(Path("runs/train"), description="run folder (results, checkpoints)")
    checkpoint_every: int = Field(200, ge=1, description="optimiser steps between mid-epoch checkpoints")
    log_every: int = Field(10, ge=1, description="optimiser steps between log lines")

    @model_validator(mode="before")
    @classmethod
    def _lora_recipe(cls, data: Any) -> Any:
        """Fill the fields of `LORA_RECIPE` that `data` does not give (absent or None) when the method is lora."""
        if not isinstance(data, Mapping) or data.get("method", "lora") != "lora":
            return data
        return {**data, **{k: v for k, v in LORA_RECIPE.items() if data.get(k) is None}}

    @model_validator(mode="after")
    def _check_method(self) -> TrainConfig:
        if self.method == "frozen" and self.gradient_checkpointing:
            raise ValueError("gradient_checkpointing has no effect with method 'frozen' (the encoder does not train)")
        if self.method == "frozen" and self.augment.on_audio:
            raise ValueError("augment: speed, noise and spectrogram masks need the encoder to run on every clip; "
                             "method 'frozen' trains on cached encoder outputs (mixup and label smoothing work)")
        if self.method == "frozen" and self.lp_ft:
            raise ValueError("lp_ft_epochs and lp_fit: logistic apply to methods lora and full (frozen is the "
                             "linear-probe stage itself)")
        return self

    @property
    def lp_ft(self) -> bool:
        """Whether the head is fitted on the frozen encoder before the adapters / encoder train (LP-FT)."""
        return bool(self.lp_ft_epochs) or self.lp_fit == "logistic"


def field_default(path: str, model: type[BaseModel] | None = None) -> Any:
    """The default of a configuration field named by its dotted path in `model` (default `TrainConfig`), e.g.
    `field_default("lora.r") == 32`; sections with a default factory are built to read their fields."""
    cls: type[BaseModel] = model or TrainConfig
    value: Any = None
    parts = path.split(".")
    for n, part in enumerate(parts):
        if part not in cls.model_fields:
            raise ConfigError(f"{path!r}: {cls.__name__} has no field {part!r}", "name a field of the configuration")
        value = cls.model_fields[part].get_default(call_default_factory=True)
        if n < len(parts) - 1:
            cls = type(value)
    return value


def field_value(cfg: BaseModel, path: str) -> Any:
    """The value of the field at dotted `path` of a configuration object, e.g. `field_value(cfg, "lora.r")`."""
    value: Any = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value


# Fields that do not change what a fold learns: where things live, how fast, which folds run now.
_NOT_HASHED = {"corpus_root", "fold", "feature_cache", "num_workers", "run_dir", "checkpoint_every", "log_every",
               "eval_batch_size", "folds_file"}
# Fields added after runs existed: hashed only when they differ from this value (the behaviour before they existed),
# so that folds trained earlier stay complete under the new code.
# A section all of whose fields are at their default disappears from the hashed material.
_HASHED_WHEN_SET: dict[tuple[str, ...], Any] = {
    ("head", "layer_norm"): False,
    ("head", "hidden_state"): None,
    ("head", "standardize"): False,
    ("head", "speaker_norm"): False,
    ("label_map",): {},
    ("on_unknown_label",): "error",
    ("validation_speakers",): None,
    ("select_on",): "uar",
    ("lp_ft_epochs",): 0,
    ("lp_fit",): "gradient",
    ("average_last",): 1,
    **{("augment", name): AugmentConfig().model_dump(mode="json")[name] for name in AugmentConfig.model_fields},
}
_SECTIONS_ADDED = ("augment",)


def config_from_snapshot(data: Any) -> TrainConfig:
    """Validate a run folder's `config.yaml` snapshot (a mapping). A field the snapshot lacks was added after it was
    written and takes the value that reproduces the code of then (the `_HASHED_WHEN_SET` value, e.g. no LP-FT), not
    today's default: the lora recipe's defaults (`LORA_RECIPE`) apply to new configurations only."""
    if not isinstance(data, Mapping):
        return TrainConfig.model_validate(data or {})  # a ValidationError names what is there instead
    d = json.loads(json.dumps(dict(data), default=str))
    for path, before in _HASHED_WHEN_SET.items():
        owner, key = _owner(d, path, create=True)
        owner.setdefault(key, before)
    return TrainConfig.model_validate(d)


def _owner(d: dict, path: tuple[str, ...], create: bool = False) -> tuple[dict, str]:
    """(the mapping that holds the field at `path` in a configuration mapping `d`, its key); missing sections are
    made when `create`."""
    *sections, key = path
    for part in sections:
        if create and not isinstance(d.get(part), dict):
            d[part] = {}
        d = d[part]
    return d, key


def seedless_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The result-changing fields of `cfg` except its seed (JSON types): equal for runs of one recipe that differ
    only in their seed (a seed ensemble's members)."""
    return cfg.model_dump(mode="json", exclude=_NOT_HASHED | {"seed"})


def config_hash(cfg: TrainConfig) -> str:
    """sha256 (16 hex digits) of the result-changing fields of `cfg`."""
    d = cfg.model_dump(mode="json", exclude=_NOT_HASHED)
    if not d.get("corpus_options"):  # added after runs existed: hashed only when set
        d.pop("corpus_options", None)
    for path, before in _HASHED_WHEN_SET.items():
        owner, key = _owner(d, path)
        if owner[key] == before:
            del owner[key]
    for section in _SECTIONS_ADDED:
        if not d[section]:
            del d[section]
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


#: Levers that the `frozen` method cannot take: it trains on cached encoder outputs (no audio to augment) and is the
#: linear-probe stage of LP-FT itself.
_NOT_FOR_FROZEN = {"lp_ft_epochs": 0, "augment": ("spec_time_masks", "spec_freq_masks", "speed", "noise_snr_db")}


def frozen_section(train: Mapping[str, Any]) -> dict:
    """A copy of a training section (a mapping as in YAML, e.g. `loralens run`'s `train:`) without the levers that do
    not apply to `method: frozen` (LP-FT, augmentation of audio or spectrograms); mixup, label smoothing, selection,
    averaging and validation speakers stay. For the frozen baseline trained beside adapted variants."""
    out = json.loads(json.dumps(dict(train), default=str))
    out.pop("lp_ft_epochs", None)
    out.pop("lp_fit", None)
    augment = out.get("augment")
    if isinstance(augment, dict):
        for key in _NOT_FOR_FROZEN["augment"]:
            augment.pop(key, None)
    return out


def _format_error(e: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{loc}: {msg} (got {err.get('input')!r})" if err["type"] != "extra_forbidden"
                     else f"{loc}: {msg}")
    fields = ", ".join(".".join(str(p) for p in err["loc"]) for err in e.errors())
    return ConfigError(f"{source}: invalid training configuration field(s) {fields}:\n  " + "\n  ".join(lines),
                       "fix the named field(s); `loralens train --help` lists every option")


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section", "use a field path like lora.r")
        cur = nxt
    cur[parts[-1]] = value


def make_config(base: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None,
                source: str = "configuration") -> TrainConfig:
    """Validate `base` (a mapping as read from YAML) with `overrides` (dotted keys, e.g. `"lora.r": 8`) on top.
    Overrides whose value is None are ignored (a flag that was not given)."""
    d = json.loads(json.dumps(dict(base or {}), default=str))
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(d, key, value)
    try:
        return TrainConfig.model_validate(d)
    except ValidationError as e:
        raise _format_error(e, source) from None


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read a YAML training config (or start from the defaults when `path` is None) and apply `overrides`."""
    from loralens.io import read_yaml_mapping

    base: dict = {} if path is None else read_yaml_mapping(path, "docs/training.md")
    src = "configuration" if path is None else str(path)
    return make_config(base, overrides, source=src)


def config_to_yaml(cfg: TrainConfig) -> str:
    """The YAML text of `cfg` (every field, defaults included), as saved in the run folder."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

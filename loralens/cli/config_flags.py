"""Command-line options generated from configuration fields: one table row per flag, naming the field it sets.

The field declares the setting once (type, default, constraints, description in `TrainConfig`, `RunConfig` or
`AnalysisSettings`); a row adds only what the command line needs besides: the flag's spelling, how its text
becomes the field's value, and words for a default that the field's value does not say. From the row come the
click option (type from the field's annotation: `Literal` -> a choice, int, float; help = the field's
description; `[default: ...]` = the field's default) and the dotted override that `make_config` /
`load_run_config` validate.

    @click.command(cls=Command)
    @config_options(TRAIN_FLAGS)
    def train(config_file, dry_run, **flags):
        cfg = load_config(config_file, config_overrides(TRAIN_FLAGS, flags))
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import BaseModel

from loralens.cli.options import config_default
from loralens.training.config import TrainConfig


def _field(model: type[BaseModel], path: str) -> Any:
    """The pydantic `FieldInfo` at dotted `path` of `model`, None when the path goes through a mapping field
    (`corpus_options.audio_column`)."""
    cls: Any = model
    info = None
    for part in path.split("."):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None
        info = cls.model_fields[part]
        cls = info.annotation
    return info


def _without_none(annotation: Any) -> Any:
    """`X | None` -> X (any other annotation as it is)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def click_type(annotation: Any) -> Any:
    """The click type of a field annotation: `Literal[...]` -> a choice of its values, int, float and Path as
    themselves; anything else (str, lists, mappings) is read as text (None: click's string)."""
    annotation = _without_none(annotation)
    if typing.get_origin(annotation) is Literal:
        return click.Choice([str(v) for v in typing.get_args(annotation)])
    if annotation in (int, float):
        return annotation
    if annotation is Path:
        return click.Path(path_type=Path)
    return None


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "."


@dataclass(frozen=True)
class ConfigFlag:
    """One command-line flag that sets one configuration field.

    flag: the option's spelling, `--lora-r`; a pair `--x/--no-x` for a yes/no field (not given = the config's).
    field: the field's dotted path in `model` (`lora.r`); `key` is the override key (`train.lora.r` under
        `loralens run`; default `field`).
    name: the command function's parameter (default: click's, from the flag).
    type: a click type where the field's annotation does not give the right one (e.g. a folder, not a file).
    parse: the flag's value -> the field's value (comma lists, label maps); default: as given (paths as text).
    show_default: words for the default when the field's value does not say it ("all folds", "--batch-size").
    help: the help text when the flag means more than the field says (a 0 that switches off); default: the
        field's description.
    zero_is_off: the flag's 0 sets the field to None (off) after validation.
    switch: a plain flag (`--no-report`) that, given, sets the field to this value.
    """

    flag: str
    field: str
    model: type[BaseModel] = TrainConfig
    key: str | None = None
    name: str | None = None
    type: Any = None
    parse: Callable[[Any], Any] | None = None
    show_default: str | None = None
    help: str | None = None
    zero_is_off: bool = False
    switch: Any = None

    def __post_init__(self) -> None:
        info = _field(self.model, self.field)
        if info is None and (self.help is None or (self.show_default is None and self.switch is None)):
            raise ValueError(f"{self.flag}: {self.field!r} is not a field of {self.model.__name__}; give help and "
                             "show_default")
        if info is not None and self.help is None and not info.description:
            raise ValueError(f"{self.flag}: {self.model.__name__}.{self.field} has no description (its help)")

    @property
    def override_key(self) -> str:
        return self.key or self.field

    @property
    def param(self) -> str:
        """The command function's parameter name."""
        return self.name or self.flag.split("/")[0].lstrip("-").replace("-", "_")

    def under(self, section: str) -> ConfigFlag:
        """The same flag setting `<section>.<field>` (e.g. `train.window` in `loralens run`'s configuration)."""
        return replace(self, key=f"{section}.{self.field}")

    def option(self) -> Callable[[Callable], Callable]:
        """The click option of this flag."""
        info = _field(self.model, self.field)
        help_text = _sentence(self.help if self.help is not None else info.description)
        decls = [self.flag] if self.name is None else [self.flag, self.name]
        if self.switch is not None:
            return click.option(*decls, is_flag=True, help=help_text)
        shown = self.show_default if self.show_default is not None else config_default(self.field, self.model)
        if "/" in self.flag:
            return click.option(*decls, default=None, show_default=shown, help=help_text)
        kind = self.type if self.type is not None else click_type(info.annotation) if info is not None else None
        return click.option(*decls, type=kind, show_default=shown, help=help_text)

    def value(self, given: Any) -> Any:
        """The override value of what the flag received (None: the flag was not given)."""
        if self.switch is not None:
            return self.switch if given else None
        if given is None or (self.zero_is_off and given == 0):
            return None
        if self.parse is not None:
            return self.parse(given)
        return str(given) if isinstance(given, Path) else given


def config_options(flags: Sequence[ConfigFlag]) -> Callable[[Callable], Callable]:
    """A decorator adding the click option of every flag, in table order in --help."""

    def decorate(f: Callable) -> Callable:
        for flag in reversed(flags):
            f = flag.option()(f)
        return f

    return decorate


def config_overrides(flags: Sequence[ConfigFlag], values: dict[str, Any]) -> dict[str, Any]:
    """Dotted override key -> value of every flag given (None for those not given: `make_config` skips them)."""
    return {f.override_key: f.value(values[f.param]) for f in flags}


def switched_off(flags: Sequence[ConfigFlag], values: dict[str, Any]) -> list[str]:
    """Fields (dotted) whose flag was given 0 meaning off: set to None once the configuration is validated."""
    return [f.field for f in flags if f.zero_is_off and values[f.param] == 0]


# ------------------------------------------------------------------------------------------------ parsers
def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _layer_list(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated layer indices, e.g. 0,1,2") from None


def _int_list(value: str) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers, e.g. 8,32,64") from None


def _label_map(value: str) -> dict[str, str]:
    from loralens.data.corpora import parse_label_map

    return parse_label_map(value)


def _target_sets(value: str) -> list[list[str]] | None:
    # "v_proj;q_proj,v_proj" -> [["v_proj"], ["q_proj", "v_proj"]]
    if not value:
        return None
    return [[m.strip() for m in group.split(",") if m.strip()] for group in value.split(";") if group.strip()]


def _names(value: str) -> list[str] | None:
    return [n.strip() for n in value.split(",")] if value else None


def _analysis_folds(value: str) -> list[int] | str | None:
    if not value:
        return None
    return "all" if value.strip() == "all" else _int_list(value)


# ------------------------------------------------------------------------------------------------ tables
def _hf_column(name: str, shown: str) -> ConfigFlag:
    return ConfigFlag(f"--{name}-column", f"corpus_options.{name}_column", help=f"for the hf corpus: the {name} column",
                      show_default=shown)


_FOLDER = click.Path(file_okay=False, path_type=Path)

#: `loralens train`: every TrainConfig setting that has a flag, in --help order.
TRAIN_FLAGS: tuple[ConfigFlag, ...] = (
    ConfigFlag("--corpus", "corpus"),
    ConfigFlag("--corpus-root", "corpus_root"),
    ConfigFlag("--label-set", "label_set", show_default="the corpus default"),
    ConfigFlag("--label-map", "label_map", parse=_label_map),
    ConfigFlag("--on-unknown-label", "on_unknown_label"),
    _hf_column("audio", "audio"),
    _hf_column("label", "label"),
    _hf_column("speaker", "speaker"),
    _hf_column("session", "session, when present"),
    ConfigFlag("--folds", "folds"),
    ConfigFlag("--folds-file", "folds_file", type=click.Path(dir_okay=False, path_type=Path)),
    ConfigFlag("--folds-k", "folds_k", show_default="auto: 5, fewer with few speakers"),
    ConfigFlag("--fold", "fold", show_default="all folds"),
    ConfigFlag("--model", "model"),
    ConfigFlag("--method", "method"),
    ConfigFlag("--lora-r", "lora.r"),
    ConfigFlag("--lora-alpha", "lora.alpha"),
    ConfigFlag("--lora-dropout", "lora.dropout"),
    ConfigFlag("--lora-targets", "lora.target_modules", parse=_csv),
    ConfigFlag("--lora-layers", "lora.layers", parse=_layer_list, show_default="all"),
    ConfigFlag("--projector-dim", "head.projector_dim"),
    ConfigFlag("--weighted-layer-sum/--last-layer", "head.weighted_layer_sum",
               show_default="weighted layer sum, unless --hidden-state"),
    ConfigFlag("--layer-norm/--no-layer-norm", "head.layer_norm", show_default="on with the weighted layer sum"),
    ConfigFlag("--hidden-state", "head.hidden_state", show_default="all (the weighted layer sum)"),
    ConfigFlag("--standardize/--no-standardize", "head.standardize",
               show_default="on, except for the last-layer head"),
    ConfigFlag("--speaker-norm/--no-speaker-norm", "head.speaker_norm"),
    ConfigFlag("--window", "window"),
    ConfigFlag("--mask-padding/--no-mask-padding", "mask_padding", show_default="on for trim, off for full"),
    ConfigFlag("--batch-size", "batch_size"),
    ConfigFlag("--eval-batch-size", "eval_batch_size", show_default="--batch-size"),
    ConfigFlag("--grad-accum", "grad_accum"),
    ConfigFlag("--epochs", "epochs"),
    ConfigFlag("--lr-head", "lr_head"),
    ConfigFlag("--lr-encoder", "lr_encoder"),
    ConfigFlag("--weight-decay", "weight_decay"),
    ConfigFlag("--warmup-ratio", "warmup_ratio"),
    ConfigFlag("--schedule", "schedule"),
    ConfigFlag("--grad-clip", "grad_clip", zero_is_off=True, help="maximum gradient norm; 0 = no clipping"),
    ConfigFlag("--patience", "patience", zero_is_off=True,
               help="early stopping patience in epochs on the validation score; 0 = off"),
    ConfigFlag("--lp-ft-epochs", "lp_ft_epochs", help="LP-FT: epochs of the head alone on the frozen encoder's "
               "cached outputs before the adapters train (lora, full); 0 = off"),
    ConfigFlag("--lp-fit", "lp_fit", help="LP-FT's head stage: gradient (--lp-ft-epochs epochs of the loop) or "
               "logistic (the head set to a logistic regression on the frozen outputs)"),
    ConfigFlag("--select-on", "select_on"),
    ConfigFlag("--validation-speakers", "validation_speakers", show_default="the scheme's"),
    ConfigFlag("--average-last", "average_last"),
    ConfigFlag("--seed", "seed"),
    ConfigFlag("--precision", "precision"),
    ConfigFlag("--gradient-checkpointing/--no-gradient-checkpointing", "gradient_checkpointing"),
    ConfigFlag("--num-workers", "num_workers"),
    ConfigFlag("--feature-cache", "feature_cache", type=_FOLDER, show_default="$LORALENS_CACHE/features"),
    ConfigFlag("--run-dir", "run_dir", type=_FOLDER),
    ConfigFlag("--on-bad-audio", "on_bad_audio"),
    ConfigFlag("--checkpoint-every", "checkpoint_every"),
    ConfigFlag("--log-every", "log_every"),
)

_TRAIN = {f.flag: f for f in TRAIN_FLAGS}


def _run_flags() -> tuple[ConfigFlag, ...]:
    from loralens.pipeline import RunConfig

    def train(flag: str) -> ConfigFlag:
        return _TRAIN[flag].under("train")

    def run(flag: str, field: str, **kw: Any) -> ConfigFlag:
        return ConfigFlag(flag, field, model=RunConfig, **kw)

    return (
        run("--out", "out", type=_FOLDER),
        *(train(f) for f in ("--corpus", "--corpus-root", "--label-set", "--label-map", "--on-unknown-label",
                             "--on-bad-audio", "--model", "--window", "--folds", "--folds-k", "--fold", "--epochs",
                             "--seed", "--batch-size", "--lr-encoder", "--lp-ft-epochs")),
        run("--method", "method"),
        run("--ranks", "ranks", parse=_int_list, show_default=config_default("lora.r")),
        run("--lora-targets", "target_modules", name="targets", parse=_target_sets,
            show_default=config_default("lora.target_modules")),
        run("--seeds", "seeds", parse=_int_list, show_default="--seed"),
        run("--full/--no-full", "full"),
        run("--baseline/--no-baseline", "baseline"),
        run("--analyses", "analysis.names", parse=_names, show_default="all"),
        run("--analysis-folds", "analysis.folds", parse=_analysis_folds),
        run("--test-per-class", "analysis.test_per_class", show_default="all"),
        run("--train-per-class", "analysis.train_per_class", show_default="all"),
        run("--n-boot", "analysis.n_boot"),
        train("--precision"),
        run("--analysis-precision", "analysis.precision"),
        run("--no-report", "report", switch=False, help="skip building report.html"),
    )


#: `loralens run`: the TrainConfig flags shared by every variant (under `train.`), then the RunConfig settings.
RUN_FLAGS: tuple[ConfigFlag, ...] = _run_flags()

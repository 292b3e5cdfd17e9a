"""What every command shares: one flag vocabulary (old spellings kept as hidden aliases), defaults shown in
`--help`, examples after the options.

The vocabulary (docs/corpora.md lists it for users):

    --corpus           corpus name                     --corpus-root    corpus folder or manifest file (old: --root)
    --label-set        label set name or a,b,c list    --label-map      FROM=TO,... onto the shared vocabulary
    --on-unknown-label error | skip (manifest labels)  --on-bad-audio   stop | skip
    --folds            scheme name or folds JSON file (old: --scheme)
    --folds-k          folds of speaker-kfold (old: --k)
    --lora-targets     LoRA target modules (old: --targets)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

try:  # click >= 8.3 marks "no default given" with a sentinel rather than None
    from click._utils import UNSET as _UNSET
except ImportError:  # pragma: no cover - older click
    _UNSET = None

#: Old spelling -> the flag it now is. Accepted by every command that has the new flag, never shown in --help.
ALIASES: dict[str, str] = {"--root": "--corpus-root", "--k": "--folds-k", "--scheme": "--folds",
                           "--targets": "--lora-targets"}

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 110}


def rewrite_aliases(args: Sequence[str], known: set[str]) -> list[str]:
    """`args` with each old spelling (`--root x`, `--root=x`) replaced by its new flag when the command has it.
    Stops at `--` (what follows is positional)."""
    out: list[str] = []
    for i, a in enumerate(args):
        if a == "--":
            return out + list(args[i:])
        name, eq, value = a.partition("=")
        new = ALIASES.get(name)
        out.append(f"{new}{eq}{value}" if new is not None and new in known else a)
    return out


class Option(click.Option):
    """An option whose default given as text (`show_default="base"`) shows as `[default: base]`, not
    `[default: (base)]`: the text is the value a flag left out stands for."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is not None and isinstance(self.show_default, str):
            record = (record[0], record[1].replace(f"default: ({self.show_default})", f"default: {self.show_default}"))
        return record


class Command(click.Command):
    """A click command with the shared context (defaults shown), hidden old flag spellings and an examples
    epilog: `@click.command(cls=Command, examples=["loralens data folds --corpus ravdess ..."])`."""

    def __init__(self, *args: Any, examples: Sequence[str] = (), **kwargs: Any) -> None:
        settings = dict(CONTEXT)
        settings.update(kwargs.pop("context_settings", None) or {})
        super().__init__(*args, context_settings=settings, **kwargs)
        self.examples = list(examples)
        for p in self.params:
            if type(p) is click.Option:  # @click.option makes plain Options; Option only changes the help text
                p.__class__ = Option
            if (isinstance(p, click.Option) and not p.is_flag and not p.required and p.default in (None, _UNSET)
                    and not isinstance(p.show_default, str) and p.name not in ("help", "config_file")):
                p.show_default = "none"  # left out = not used / not written; said rather than left blank

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        known = {o for p in self.params for o in (*p.opts, *p.secondary_opts)}
        return super().parse_args(ctx, rewrite_aliases(args, known))

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.examples:
            formatter.write_paragraph()
            formatter.write_text("Examples:")
            with formatter.indentation():
                for e in self.examples:
                    formatter.write_text("\b\n" + e)
        super().format_epilog(ctx, formatter)


def config_default(path: str, model: Any = None) -> str:
    """The default of a configuration field (dotted path in `model`, default `TrainConfig`, e.g. "lora.r") as
    --help shows it ("none" for None), read from the model, so that help follows the configuration's defaults; a
    field of the lora recipe (`LORA_RECIPE`) shows both defaults."""
    from loralens.training.config import LORA_RECIPE, TrainConfig, field_default

    if model in (None, TrainConfig) and path in LORA_RECIPE:
        return f"{_show(LORA_RECIPE[path])} with method lora, else {_show(field_default(path))}"
    return _show(field_default(path, model))


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)

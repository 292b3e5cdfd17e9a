"""convert(): a standard HF folder that from_pretrained loads with no missing or unexpected keys."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from loralens.errors import WeightsError
from loralens.models.convert import convert
from loralens.models.loading import load_feature_extractor, load_tokenizer, load_whisper


@pytest.fixture(scope="session")
def tiny_en_hf(tmp_path_factory) -> Path:
    start = time.perf_counter()
    out = convert("tiny.en", tmp_path_factory.mktemp("convert") / "tiny.en")
    print(f"\nconversion time tiny.en -> HF folder: {time.perf_counter() - start:.2f} s")
    return out


def test_folder_content(tiny_en_hf):
    names = {p.name for p in tiny_en_hf.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json",
            "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(n.startswith(".") for n in names)
    assert not any(p.name.startswith(".tiny.en") for p in tiny_en_hf.parent.iterdir())


def test_from_pretrained_loads_every_key(tiny_en_hf):
    from transformers import WhisperForConditionalGeneration

    model, info = WhisperForConditionalGeneration.from_pretrained(tiny_en_hf, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ref = load_whisper("tiny.en")
    got, want = model.state_dict(), ref.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert model.generation_config.no_timestamps_token_id == 50362
    assert model.generation_config.suppress_tokens == ref.generation_config.suppress_tokens


def test_side_files_load(tiny_en_hf):
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    assert WhisperFeatureExtractor.from_pretrained(tiny_en_hf).feature_size == 80
    tok = WhisperTokenizer.from_pretrained(tiny_en_hf)
    assert tok.decode(tok("Dogs are sitting by the door.").input_ids, skip_special_tokens=True) == (
        "Dogs are sitting by the door."
    )


def test_converted_folder_is_itself_a_source(tiny_en_hf):
    model = load_whisper(tiny_en_hf, dtype=torch.bfloat16)
    assert model.model.encoder.layers[0].fc1.weight.dtype == torch.bfloat16
    assert model.generation_config.no_timestamps_token_id == 50362
    assert load_tokenizer(tiny_en_hf).decode([17476, 389, 3375]) == " Kids are talking"
    assert load_feature_extractor(tiny_en_hf).feature_size == 80


def test_existing_output_and_overwrite(tiny_whisper, tmp_path):
    src = tmp_path / "src"
    tiny_whisper.save_pretrained(src)
    out = tmp_path / "out"
    convert(src, out)
    assert not (out / "tokenizer.json").exists()  # the source has no tokenizer
    with pytest.raises(WeightsError, match="already exists"):
        convert(src, out)
    (out / "stale.txt").write_text("old")
    convert(src, out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_failed_conversion_leaves_nothing(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.bin").write_bytes(b"\x06\x00\x00\x00garbage")
    with pytest.raises(WeightsError):
        convert(tmp_path / "src", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_float16_output(tiny_whisper, tmp_path):
    from safetensors import safe_open

    tiny_whisper.save_pretrained(tmp_path / "src")
    convert(tmp_path / "src", tmp_path / "out", dtype=torch.float16)
    with safe_open(tmp_path / "out" / "model.safetensors", "pt") as f:
        assert f.get_tensor("model.encoder.conv1.weight").dtype == torch.float16

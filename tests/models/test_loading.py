"""load_whisper / load_config / load_feature_extractor / load_tokenizer over every source kind."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from loralens.errors import WeightsError
from loralens.models import loading
from loralens.models.loading import (
    load_config,
    load_feature_extractor,
    load_tokenizer,
    load_whisper,
    resolve,
    special_tokens,
)
from loralens.models.registry import embedded_files


@pytest.fixture(scope="session")
def tiny_en():
    return load_whisper("tiny.en")


@pytest.fixture
def hf_folder(tiny_whisper, tmp_path) -> Path:
    tiny_whisper.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def _assert_same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_tiny_en_config(tiny_en):
    c = tiny_en.config
    assert (c.encoder_layers, c.decoder_layers, c.d_model, c.encoder_attention_heads, c.encoder_ffn_dim) == \
        (4, 4, 384, 6, 1536)
    assert (c.num_mel_bins, c.vocab_size, c.max_source_positions, c.max_target_positions) == (80, 51864, 1500, 448)
    assert (c.decoder_start_token_id, c.eos_token_id, c.pad_token_id) == (50257, 50256, 50256)
    assert c.suppress_tokens[:3] == [1, 2, 7] and c.begin_suppress_tokens == [220, 50256]
    assert not tiny_en.training
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in tiny_en.parameters())
    assert tiny_en.proj_out.weight.data_ptr() == tiny_en.model.decoder.embed_tokens.weight.data_ptr()


def test_bfloat16():
    model = load_whisper("tiny.en", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


def test_generation_config_english_only(tiny_en):
    g = tiny_en.generation_config
    assert g.is_multilingual is False and not hasattr(g, "lang_to_id")
    assert (g.decoder_start_token_id, g.eos_token_id, g.no_timestamps_token_id, g.prev_sot_token_id) == (
        50257, 50256, 50362, 50360)
    assert g.alignment_heads[0] == [1, 0]
    assert g.suppress_tokens == tiny_en.config.suppress_tokens


def test_base_config_and_generation_config():
    model = load_whisper("base")
    c, g = model.config, model.generation_config
    assert (c.encoder_layers, c.d_model, c.encoder_attention_heads, c.vocab_size) == (6, 512, 8, 51865)
    assert g.is_multilingual is True
    assert (g.decoder_start_token_id, g.eos_token_id, g.no_timestamps_token_id) == (50258, 50257, 50363)
    assert g.lang_to_id["<|en|>"] == 50259 and g.lang_to_id["<|de|>"] == 50261 and len(g.lang_to_id) == 99
    assert g.task_to_id == {"transcribe": 50359, "translate": 50358}
    side = json.loads((embedded_files("base").folder / "config.json").read_text())
    assert g.suppress_tokens == side["suppress_ids"] and g.begin_suppress_tokens == side["suppress_ids_begin"]


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_special_token_layout_matches_the_tokenizer(name):
    folder = embedded_files(name).folder
    vocab = 51864 if name == "tiny.en" else 51865
    from_files = special_tokens(vocab, loading._token_ids(folder))
    by_layout = special_tokens(vocab)
    # The layout names Hebrew <|he|> where some tokenizers (tiny.en's) say <|iw|>; the ids agree.
    assert list(by_layout.languages.values()) == list(from_files.languages.values())
    assert from_files.languages.get("<|iw|>", from_files.languages.get("<|he|>")) == by_layout.languages["<|he|>"]
    assert dataclasses.replace(by_layout, languages={}) == dataclasses.replace(from_files, languages={})
    vocabulary_txt = {t: i for i, t in enumerate((folder / "vocabulary.txt").read_text().split("\n"))}
    assert from_files.notimestamps == vocabulary_txt["<|notimestamps|>"]


def test_special_tokens_large_v3_layout():
    # Known ids of openai/whisper-large-v3 (100 languages).
    t = special_tokens(51866)
    assert (t.eot, t.sot, t.translate, t.transcribe, t.startofprev, t.notimestamps) == (
        50257, 50258, 50359, 50360, 50362, 50364)
    assert t.languages["<|yue|>"] == 50358
    with pytest.raises(WeightsError, match="does not fit"):
        special_tokens(128)


def test_resolve_dispatches_on_format(tmp_path, hf_folder):
    assert resolve("tiny.en").format == "ctranslate2"
    assert resolve(embedded_files("tiny.en").parts[0]).format == "ctranslate2"
    assert resolve(embedded_files("tiny.en").folder).format == "ctranslate2"
    assert resolve(hf_folder).format == "huggingface"
    base = resolve("base")
    assert base.parts == embedded_files("base").parts and base.folder == embedded_files("base").folder
    with pytest.raises(WeightsError, match="no such file or folder, and not an embedded model"):
        resolve(tmp_path / "nothing-here")
    with pytest.raises(WeightsError, match="not an embedded model"):
        resolve("tiny")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(WeightsError, match="not a recognised Whisper checkpoint"):
        load_whisper(tmp_path / "notes.txt")


def test_hub_id_goes_through_the_download(monkeypatch, hf_folder, tiny_whisper):
    seen = []
    monkeypatch.setattr(loading, "_download_hub", lambda repo: seen.append(repo) or hf_folder)
    model = load_whisper("someone/whisper-tiny-test")
    assert seen == ["someone/whisper-tiny-test"]
    _assert_same_weights(model, tiny_whisper)


def test_hub_download_fetches_only_needed_files(monkeypatch, tiny_whisper, tmp_path):
    import fnmatch
    import shutil

    import huggingface_hub

    hub = tmp_path / "hub"
    tiny_whisper.save_pretrained(hub / "a")
    (hub / "a" / "model.fp32-00001-of-00002.safetensors").write_bytes(b"variant")
    (hub / "a" / "flax_model.msgpack").write_bytes(b"flax")
    (hub / "b").mkdir()
    tiny_whisper.config.save_pretrained(hub / "b")
    torch.save(tiny_whisper.state_dict(), hub / "b" / "pytorch_model.bin")
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns):
        calls.append((repo_id, tuple(allow_patterns)))
        out = tmp_path / "cache" / repo_id.replace("/", "--")
        out.mkdir(parents=True, exist_ok=True)
        for f in (hub / repo_id.split("/")[1]).iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in allow_patterns):
                shutil.copy(f, out / f.name)
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    _assert_same_weights(load_whisper("org/a"), tiny_whisper)
    assert sorted(p.name for p in (tmp_path / "cache" / "org--a").iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors"]
    assert len(calls) == 1
    _assert_same_weights(load_whisper("org/b"), tiny_whisper)
    assert len(calls) == 3 and "pytorch_model.bin" in calls[2][1]


def test_hf_folder_safetensors(hf_folder, tiny_whisper):
    _assert_same_weights(load_whisper(hf_folder), tiny_whisper)
    assert load_config(hf_folder).d_model == 64


def test_hf_folder_sharded_and_pytorch_bin(tiny_whisper, tmp_path):
    tiny_whisper.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    _assert_same_weights(load_whisper(tmp_path / "sharded"), tiny_whisper)

    folder = tmp_path / "bin"
    folder.mkdir()
    tiny_whisper.config.save_pretrained(folder)
    sd = {k: v for k, v in tiny_whisper.state_dict().items() if k != "proj_out.weight"}
    torch.save(sd, folder / "pytorch_model.bin")
    _assert_same_weights(load_whisper(folder), tiny_whisper)

    # A bare WhisperModel checkpoint (no "model." prefix, no output projection).
    torch.save({k.removeprefix("model."): v for k, v in sd.items()}, folder / "pytorch_model.bin")
    _assert_same_weights(load_whisper(folder), tiny_whisper)


def test_hf_folder_bad_content(hf_folder):
    from safetensors.torch import load_file, save_file

    sd = load_file(hf_folder / "model.safetensors")
    sd.pop("model.encoder.layers.1.fc1.bias")
    save_file(sd, hf_folder / "model.safetensors")
    with pytest.raises(WeightsError, match=r"1 missing \(model\.encoder\.layers\.1\.fc1\.bias\)"):
        load_whisper(hf_folder)
    (hf_folder / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="cannot read the weights"):
        load_whisper(hf_folder)
    (hf_folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(WeightsError, match="not a Whisper config|not Whisper"):
        load_whisper(hf_folder)


def test_no_partial_model_is_built(tiny_whisper):
    state = dict(tiny_whisper.state_dict())
    state["model.encoder.layers.0.fc1.weight"] = state["model.encoder.layers.0.fc1.weight"][:5]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"src: weights do not fit .*1 unexpected \(extra\.weight\)"
                                           r".*fc1\.weight: \(5, 64\) instead of \(128, 64\)"):
        loading.build_model(tiny_whisper.config, state, "src")


def test_feature_extractor():
    fe = load_feature_extractor("tiny.en")
    assert (fe.feature_size, fe.sampling_rate, fe.hop_length, fe.n_samples) == (80, 16000, 160, 480000)
    assert load_feature_extractor("base").feature_size == 80


def test_tokenizers():
    tok = load_tokenizer("tiny.en")
    ids = tok("Kids are talking by the door.").input_ids
    assert ids[:2] == [50257, 50362] and ids[-1] == 50256
    assert tok.decode(ids, skip_special_tokens=True) == "Kids are talking by the door."
    base = load_tokenizer("base")
    assert base.convert_tokens_to_ids("<|notimestamps|>") == 50363
    assert base.convert_tokens_to_ids("<|en|>") == 50259

"""CTranslate2 model.bin reader: real embedded files, files written by CTranslate2's own converter, bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from loralens.errors import WeightsError
from loralens.models import ctranslate2 as ct2
from loralens.models.loading import load_whisper
from loralens.models.registry import embedded_files
from tests.conftest import tiny_whisper_config

_TYPE_IDS = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
             np.dtype("float16"): 4, np.dtype("uint16"): 5}


def write_model_bin(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str],
                    spec: str = "WhisperSpec", version: int = 6) -> None:
    """An independent writer of the binary layout (as ctranslate2.specs.ModelSpec._serialize writes it)."""

    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", version), string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, value in variables.items():
        out += [string(name), struct.pack("<B", value.ndim), struct.pack(f"<{value.ndim}I", *value.shape),
                struct.pack("<BI", _TYPE_IDS[value.dtype], value.nbytes), np.ascontiguousarray(value).tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [string(alias), string(target)]
    path.write_bytes(b"".join(out))


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random 2-layer Whisper with the English-only vocabulary size, saved as an HF folder."""
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(
        tiny_whisper_config(vocab_size=51864, pad_token_id=50256, bos_token_id=50257, eos_token_id=50256,
                            decoder_start_token_id=50257)
    ).eval()
    # Non-trivial biases and norms, so a mixed-up mapping cannot hide behind zeros and ones.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("hf") / "tiny"
    model.save_pretrained(folder)
    return folder, {k: v.clone() for k, v in model.state_dict().items()}


def _ct2_convert(hf_folder: Path, out: Path, quantization: str) -> Path:
    converters = pytest.importorskip("ctranslate2.converters")
    converters.TransformersConverter(str(hf_folder)).convert(str(out), quantization=quantization, force=True)
    return out


@pytest.fixture(scope="module")
def tiny_ct2_f32(tiny_hf, tmp_path_factory) -> Path:
    return _ct2_convert(tiny_hf[0], tmp_path_factory.mktemp("ct2") / "f32", "float32")


@pytest.mark.parametrize("quantization", ["float32", "float16", "bfloat16", "int8"])
def test_reads_what_ctranslate2_converter_writes(tiny_hf, tmp_path, quantization):
    folder, ref = tiny_hf
    out = _ct2_convert(folder, tmp_path / quantization, quantization)
    dims, state = ct2.read_ctranslate2(out)
    assert dims == dict(num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=51864,
                        max_source_positions=1500, max_target_positions=64)
    assert set(state) == set(ref)
    for key, want in ref.items():
        got = state[key]
        assert got.shape == want.shape, key
        if quantization == "float32":
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=key)
        elif quantization == "float16":
            torch.testing.assert_close(got, want.half().float(), rtol=0, atol=0, msg=key)
        elif quantization == "bfloat16":
            torch.testing.assert_close(got, want.bfloat16().float(), rtol=0, atol=0, msg=key)
        else:
            # int8: per output row, |error| <= amax_row / 254 (rounding to 1/scale with scale = 127 / amax).
            if want.dim() >= 2 and "embed_positions" not in key:
                amax = want.reshape(want.shape[0], -1).abs().amax(dim=1)
                err = (got - want).reshape(want.shape[0], -1).abs().amax(dim=1)
                assert torch.all(err <= amax / 254 * 1.001 + 1e-7), key
            else:
                torch.testing.assert_close(got, want, rtol=0, atol=0, msg=key)
    # The tied output projection is the same tensor as the token embeddings.
    assert state["proj_out.weight"] is state["model.decoder.embed_tokens.weight"]


def test_loaded_model_matches_reference_outputs(tiny_hf, tiny_ct2_f32):
    from transformers import WhisperForConditionalGeneration

    ref = WhisperForConditionalGeneration.from_pretrained(tiny_hf[0]).eval()
    model = load_whisper(tiny_ct2_f32)
    feats = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[50257, 50362, 400, 500]])
    with torch.no_grad():
        want = ref(input_features=feats, decoder_input_ids=ids).logits
        got = model(input_features=feats, decoder_input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_embedded_tiny_en_header():
    files = embedded_files("tiny.en")
    index, _ = ct2.read_index(files.parts)
    assert (index.version, index.spec, index.revision) == (6, "WhisperSpec", 3)
    assert index.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert index.variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert index.variables["encoder/layer_0/self_attention/linear_0/weight"].shape == (3 * 384, 384)
    assert index.variables["decoder/layer_0/attention/linear_1/weight"].shape == (2 * 384, 384)
    assert index.variables["decoder/embeddings/weight"].dtype == "float16"


def test_hf_names_split_fused_projections():
    assert ct2.hf_names("encoder/layer_3/self_attention/linear_0/weight") == [
        "model.encoder.layers.3.self_attn.q_proj.weight",
        "model.encoder.layers.3.self_attn.k_proj.weight",
        "model.encoder.layers.3.self_attn.v_proj.weight",
    ]
    assert ct2.hf_names("decoder/layer_0/attention/linear_1/bias") == [
        "", "model.decoder.layers.0.encoder_attn.v_proj.bias"
    ]
    assert ct2.hf_names("decoder/layer_1/ffn/layer_norm/gamma") == ["model.decoder.layers.1.final_layer_norm.weight"]
    assert ct2.hf_names("encoder/layer_0/something/else") is None


def _split(model_bin: Path, folder: Path, n: int) -> list[Path]:
    data = model_bin.read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    cuts = np.linspace(0, len(data), n + 1).astype(int)
    paths = []
    for k in range(n):
        p = folder / f"model.bin.part{k + 1}"
        p.write_bytes(data[cuts[k] : cuts[k + 1]])
        paths.append(p)
    return paths


def test_split_parts_read_like_the_whole(tiny_ct2_f32, tmp_path):
    _, whole = ct2.read_ctranslate2(tiny_ct2_f32)
    parts = _split(tiny_ct2_f32 / "model.bin", tmp_path / "split", 3)
    assert ct2.model_parts(tmp_path / "split") == parts
    assert ct2.model_parts(parts[1]) == parts
    _, state = ct2.read_ctranslate2(parts[2])
    assert set(state) == set(whole)
    for k in whole:
        assert torch.equal(state[k], whole[k]), k


def test_missing_part(tiny_ct2_f32, tmp_path):
    parts = _split(tiny_ct2_f32 / "model.bin", tmp_path / "split", 3)
    parts[1].unlink()
    with pytest.raises(WeightsError, match="part2 missing"):
        ct2.read_ctranslate2(tmp_path / "split")
    parts[2].unlink()  # only part1 left: the file ends early
    with pytest.raises(WeightsError, match="ends early"):
        load_whisper(tmp_path / "split")


def test_reordered_parts(tiny_ct2_f32, tmp_path):
    parts = _split(tiny_ct2_f32 / "model.bin", tmp_path / "split", 3)
    a, b = parts[1].read_bytes(), parts[2].read_bytes()
    parts[1].write_bytes(b)
    parts[2].write_bytes(a)
    with pytest.raises(WeightsError, match=r"model\.bin\.part1 \(\+2 more parts\)"):
        load_whisper(tmp_path / "split")
    # Part 2 first: the header is not a CTranslate2 one.
    with pytest.raises(WeightsError, match="not a CTranslate2 model"):
        ct2.read_ctranslate2([parts[2], parts[0], parts[1]])


@pytest.mark.parametrize("cut", [3, 100, 5000, -1000, -4])
def test_truncated_file(tiny_ct2_f32, tmp_path, cut):
    data = (tiny_ct2_f32 / "model.bin").read_bytes()
    bad = tmp_path / "model.bin"
    bad.write_bytes(data[:cut])
    with pytest.raises(WeightsError, match=str(bad)):
        load_whisper(bad)


def test_truncated_real_file(tmp_path):
    src = embedded_files("tiny.en").parts[0]
    bad = tmp_path / "model.bin"
    with open(src, "rb") as f:
        bad.write_bytes(f.read(src.stat().st_size - 10_000))
    with pytest.raises(WeightsError,
                       match=r"ends early while reading the data of encoder/position_encodings/encodings"):
        ct2.read_ctranslate2(bad)


def test_trailing_bytes(tiny_ct2_f32, tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes((tiny_ct2_f32 / "model.bin").read_bytes() + b"\0" * 16)
    with pytest.raises(WeightsError, match="16 unread bytes"):
        ct2.read_ctranslate2(bad)


def test_non_whisper_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsError, match="not a CTranslate2 model"):
        load_whisper(tmp_path / "a")
    (tmp_path / "b").mkdir()
    write_model_bin(tmp_path / "b" / "model.bin", {"x": np.zeros(3, np.float32)}, {}, spec="TransformerSpec")
    with pytest.raises(WeightsError, match="spec 'TransformerSpec'"):
        load_whisper(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "model.bin").write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        load_whisper(tmp_path / "c")


def _rewrite(src: Path, dst: Path, edit) -> Path:
    index, buf = ct2.read_index(ct2.model_parts(src))
    variables = dict(ct2.raw_arrays(index, buf))
    aliases = dict(index.aliases)
    edit(variables, aliases)
    dst.mkdir(parents=True)
    write_model_bin(dst / "model.bin", variables, aliases)
    return dst


def test_rewritten_file_reads_the_same(tiny_ct2_f32, tmp_path):
    # Checks the test writer itself against the converter's file.
    out = _rewrite(tiny_ct2_f32, tmp_path / "same", lambda v, a: None)
    assert (out / "model.bin").read_bytes() == (tiny_ct2_f32 / "model.bin").read_bytes()


def test_unknown_variable(tiny_ct2_f32, tmp_path):
    out = _rewrite(tiny_ct2_f32, tmp_path / "x",
                   lambda v, a: v.update({"encoder/layer_0/self_attention/rotary/inv_freq": np.ones(4, np.float32)}))
    with pytest.raises(WeightsError, match="unknown variable encoder/layer_0/self_attention/rotary/inv_freq"):
        load_whisper(out)


def test_missing_variable(tiny_ct2_f32, tmp_path):
    out = _rewrite(tiny_ct2_f32, tmp_path / "x", lambda v, a: v.pop("encoder/layer_1/ffn/linear_1/weight"))
    with pytest.raises(WeightsError, match=r"1 missing \(model\.encoder\.layers\.1\.fc2\.weight\)"):
        load_whisper(out)


def test_wrong_shape(tiny_ct2_f32, tmp_path):
    def edit(v, a):
        v["encoder/layer_0/ffn/linear_1/weight"] = v["encoder/layer_0/ffn/linear_1/weight"][:, :100].copy()

    out = _rewrite(tiny_ct2_f32, tmp_path / "x", edit)
    with pytest.raises(WeightsError,
                       match=r"model\.encoder\.layers\.0\.fc2\.weight: \(64, 100\) instead of \(64, 128\)"):
        load_whisper(out)


def test_unsupported_setting(tiny_ct2_f32, tmp_path):
    out = _rewrite(tiny_ct2_f32, tmp_path / "x", lambda v, a: v.update({"decoder/pre_norm": np.array(0, np.int8)}))
    with pytest.raises(WeightsError, match="decoder/pre_norm = 0"):
        load_whisper(out)


def test_alias_to_unknown_target(tiny_ct2_f32, tmp_path):
    out = _rewrite(tiny_ct2_f32, tmp_path / "x", lambda v, a: a.update({"decoder/projection/weight": "nowhere"}))
    with pytest.raises(WeightsError, match="alias decoder/projection/weight points to unknown variable nowhere"):
        load_whisper(out)


def test_untied_projection(tiny_ct2_f32, tmp_path):
    def edit(v, a):
        a.pop("decoder/projection/weight")
        v["decoder/projection/weight"] = v["decoder/embeddings/weight"] * 2

    out = _rewrite(tiny_ct2_f32, tmp_path / "x", edit)
    with pytest.raises(WeightsError, match="decoder/projection/weight differs from the token embeddings"):
        load_whisper(out)


def test_embedded_base_parts_concatenate_in_order():
    files = embedded_files("base")
    assert [p.name for p in files.parts] == ["model.bin.part1", "model.bin.part2"]
    with pytest.raises(WeightsError):
        ct2.read_ctranslate2(files.parts[::-1])
    with pytest.raises(WeightsError, match="ends early"):
        ct2.read_ctranslate2(files.parts[:1])


def test_large_v3_shapes_128_mels_and_100_languages(tmp_path):
    """A large-v3-shaped model (128 mel bins, 51866 tokens) converted by CTranslate2: config, extractor, tokens."""
    from transformers import WhisperForConditionalGeneration

    from loralens.models.loading import load_feature_extractor

    torch.manual_seed(0)
    ref = WhisperForConditionalGeneration(
        tiny_whisper_config(num_mel_bins=128, vocab_size=51866, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64,
                            pad_token_id=50257, bos_token_id=50257, eos_token_id=50257, decoder_start_token_id=50258)
    ).eval()
    ref.save_pretrained(tmp_path / "hf")
    out = _ct2_convert(tmp_path / "hf", tmp_path / "ct2", "float16")
    model = load_whisper(out)
    assert model.config.num_mel_bins == 128 and model.model.encoder.conv1.weight.shape == (32, 128, 3)
    assert load_feature_extractor(out).feature_size == 128
    g = model.generation_config
    assert (g.decoder_start_token_id, g.eos_token_id, g.no_timestamps_token_id) == (50258, 50257, 50364)
    assert len(g.lang_to_id) == 100 and g.task_to_id == {"transcribe": 50360, "translate": 50359}
    torch.testing.assert_close(model.model.encoder.conv1.weight, ref.model.encoder.conv1.weight.half().float(),
                               rtol=0, atol=0)

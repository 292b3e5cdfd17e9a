"""openai-whisper .pt reader: name mapping both ways, a realistic checkpoint written from tiny.en, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loralens.errors import WeightsError
from loralens.models import openai_pt
from loralens.models.loading import load_config, load_feature_extractor, load_tokenizer, load_whisper


@pytest.fixture(scope="session")
def tiny_en():
    return load_whisper("tiny.en")


@pytest.fixture(scope="session")
def tiny_en_pt(tiny_en, tmp_path_factory) -> Path:
    """tiny.en written as openai-whisper writes its checkpoints: float16, {"dims", "model_state_dict"}."""
    return openai_pt.save_openai_pt(tiny_en, tmp_path_factory.mktemp("pt") / "tiny.en.pt")


def test_checkpoint_looks_like_openai(tiny_en_pt):
    ckpt = torch.load(tiny_en_pt, weights_only=True)
    assert ckpt["dims"] == dict(n_mels=80, n_vocab=51864, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6,
                                n_audio_layer=4, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)
    sd = ckpt["model_state_dict"]
    for key in ("encoder.blocks.0.attn.query.weight", "encoder.blocks.0.attn.key.weight",
                "encoder.blocks.0.mlp.0.weight",
                "encoder.blocks.3.mlp.2.bias", "encoder.positional_embedding", "encoder.ln_post.weight",
                "decoder.token_embedding.weight", "decoder.positional_embedding",
                "decoder.blocks.3.cross_attn.value.bias",
                "decoder.blocks.0.cross_attn_ln.weight", "decoder.ln.bias"):
        assert key in sd, key
    assert "encoder.blocks.0.attn.key.bias" not in sd
    assert len(sd) == 4 * 15 + 4 * 24 + 11  # 15 per encoder block, 24 per decoder block, 11 outside blocks
    assert sd["decoder.token_embedding.weight"].dtype == torch.float16


def test_round_trip_is_exact(tiny_en, tiny_en_pt):
    # tiny.en is stored in float16, so writing the .pt in float16 loses nothing.
    model = load_whisper(tiny_en_pt)
    ref = tiny_en.state_dict()
    got = model.state_dict()
    assert set(got) == set(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    assert model.generation_config.no_timestamps_token_id == 50362
    assert model.generation_config.decoder_start_token_id == 50257
    assert model.generation_config.is_multilingual is False


def test_name_mapping_is_a_bijection(tiny_en):
    keys = [k for k in tiny_en.state_dict() if k != "proj_out.weight"]
    names = [openai_pt.hf_to_openai_name(k) for k in keys]
    assert None not in names and len(set(names)) == len(names)
    assert [openai_pt.openai_to_hf_name(n) for n in names] == keys
    assert openai_pt.openai_to_hf_name("decoder.blocks.2.cross_attn.key.weight") == (
        "model.decoder.layers.2.encoder_attn.k_proj.weight"
    )
    assert openai_pt.openai_to_hf_name("encoder.blocks.0.attn.key.bias") is None


def test_sinusoids_match_the_stored_encoder_positions(tiny_en):
    stored = tiny_en.model.encoder.embed_positions.weight
    torch.testing.assert_close(openai_pt.sinusoids(1500, 384), stored, rtol=0, atol=1e-3)


def test_missing_positional_embedding_is_recomputed(tiny_en, tiny_en_pt, tmp_path):
    ckpt = torch.load(tiny_en_pt, weights_only=True)
    del ckpt["model_state_dict"]["encoder.positional_embedding"]
    torch.save(ckpt, tmp_path / "nopos.pt")
    model = load_whisper(tmp_path / "nopos.pt")
    torch.testing.assert_close(model.model.encoder.embed_positions.weight, openai_pt.sinusoids(1500, 384))


def test_config_and_extractor_without_loading(tiny_en_pt):
    config = load_config(tiny_en_pt)
    assert (config.encoder_layers, config.d_model, config.num_mel_bins, config.vocab_size) == (4, 384, 80, 51864)
    assert load_feature_extractor(tiny_en_pt).feature_size == 80
    with pytest.raises(WeightsError, match="no tokenizer.json"):
        load_tokenizer(tiny_en_pt)


def test_wrong_keys(tiny_en_pt, tmp_path):
    ckpt = torch.load(tiny_en_pt, weights_only=True)
    sd = ckpt["model_state_dict"]
    sd["encoder.blocks.0.attn.qkv.weight"] = sd.pop("encoder.blocks.0.attn.query.weight")
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=r"bad\.pt: unknown key 'encoder\.blocks\.0\.attn\.qkv\.weight'"):
        load_whisper(tmp_path / "bad.pt")


def test_missing_key(tiny_en_pt, tmp_path):
    ckpt = torch.load(tiny_en_pt, weights_only=True)
    del ckpt["model_state_dict"]["decoder.blocks.1.mlp_ln.bias"]
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=r"missing \(model\.decoder\.layers\.1\.final_layer_norm\.bias\)"):
        load_whisper(tmp_path / "bad.pt")


def test_dims_disagree_with_weights(tiny_en_pt, tmp_path):
    ckpt = torch.load(tiny_en_pt, weights_only=True)
    ckpt["dims"]["n_audio_layer"] = 6
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=r"missing \(model\.encoder\.layers\.4\."):
        load_whisper(tmp_path / "bad.pt")


def test_not_a_whisper_checkpoint(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not an openai-whisper checkpoint"):
        load_whisper(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"definitely not a zip or pickle")
    with pytest.raises(WeightsError, match=r"junk\.pt: cannot be read as a PyTorch checkpoint"):
        load_whisper(tmp_path / "junk.pt")
    torch.save({"dims": {"n_mels": 80}, "model_state_dict": {}}, tmp_path / "dims.pt")
    with pytest.raises(WeightsError, match="'dims' lacks"):
        load_whisper(tmp_path / "dims.pt")

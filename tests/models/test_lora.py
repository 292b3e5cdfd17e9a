"""LoRA through peft: exact identity at initialisation, peft-format save/load, layer subsets, counts."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import WhisperForConditionalGeneration

from loralens.errors import ConfigError, WeightsError
from loralens.models.lora import (
    LoraSettings,
    apply_lora,
    count_parameters,
    delta_weight,
    hook_prefix,
    load_adapter,
    lora_modules,
    save_adapter,
)
from loralens.models.runner import EncoderRunner

from ..conftest import tiny_whisper_config


def _fresh_encoder():
    torch.manual_seed(0)
    return WhisperForConditionalGeneration(tiny_whisper_config()).eval().model.encoder


def _features(frames: int = 200) -> torch.Tensor:
    return torch.randn(2, 80, frames, generator=torch.Generator().manual_seed(1))


def test_settings_defaults_and_validation():
    s = LoraSettings()
    assert (s.r, s.alpha, s.dropout, s.target_modules, s.layers, s.scaling) == (32, 64, 0.1, ("v_proj",), None, 2.0)
    config = s.peft_config()
    assert config.r == 32 and config.lora_alpha == 64 and config.init_lora_weights is True
    for bad in (dict(r=0), dict(dropout=1.0), dict(target_modules=("w_proj",)), dict(target_modules=()),
                dict(layers=())):
        with pytest.raises(ConfigError):
            LoraSettings(**bad)
    with pytest.raises(ConfigError, match="do not exist"):
        apply_lora(_fresh_encoder(), LoraSettings(layers=(5,)))


def test_init_is_exactly_the_base_model():
    encoder = _fresh_encoder()
    x = _features()
    runner = EncoderRunner(encoder)
    with torch.no_grad():
        base = runner(x).last_hidden_state
    peft_model = apply_lora(encoder, LoraSettings(target_modules=("q_proj", "v_proj", "out_proj", "fc1", "fc2")))
    assert isinstance(peft_model, PeftModel) and peft_model.get_base_model() is encoder
    modules = lora_modules(encoder)
    assert len(modules) == 10
    names = [f"{p}.hook_lora_b" for p in modules]
    with torch.no_grad():
        out = runner(x, capture=names)
    assert torch.equal(out.last_hidden_state, base)
    for name in names:
        assert torch.count_nonzero(out.captured[name]) == 0
    for module in modules.values():
        assert torch.count_nonzero(delta_weight(module)) == 0
    # training mode: LoRA dropout is active, B = 0 still gives the base output exactly
    encoder.train()
    encoder.dropout = 0.0
    assert torch.equal(runner(x).last_hidden_state.detach(), base)


def test_delta_weight_is_scaled_b_times_a():
    encoder = _fresh_encoder()
    apply_lora(encoder, LoraSettings(r=4, alpha=12))
    module = lora_modules(encoder)["blocks.1.attn.v_proj"]
    with torch.no_grad():
        module.lora_B["default"].weight.normal_()
    expected = module.lora_B["default"].weight @ module.lora_A["default"].weight * 3.0
    torch.testing.assert_close(delta_weight(module), expected)
    assert delta_weight(module).shape == (64, 64)


def test_save_load_round_trip_in_peft_format(tmp_path):
    encoder = _fresh_encoder()
    peft_model = apply_lora(encoder, LoraSettings(r=8, alpha=16, target_modules=("v_proj", "fc1"), layers=(1,)))
    with torch.no_grad():
        for module in lora_modules(encoder).values():
            module.lora_B["default"].weight.normal_()
    x = _features()
    with torch.no_grad():
        adapted = EncoderRunner(encoder)(x).last_hidden_state
    out = save_adapter(peft_model, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["layers_to_transform"] == [1] and \
        set(config["target_modules"]) == {"v_proj", "fc1"}

    # with our loader
    fresh = _fresh_encoder()
    load_adapter(fresh, out)
    assert set(lora_modules(fresh)) == {"blocks.1.attn.v_proj", "blocks.1.mlp.fc1"}
    with torch.no_grad():
        assert torch.equal(EncoderRunner(fresh)(x).last_hidden_state, adapted)
    # with peft's own API
    other = PeftModel.from_pretrained(_fresh_encoder(), str(out))
    with torch.no_grad():
        assert torch.equal(EncoderRunner(other)(x).last_hidden_state, adapted)
    with pytest.raises(WeightsError, match="adapter_config.json"):
        load_adapter(_fresh_encoder(), tmp_path / "nothing")


def test_layer_subset_adapts_only_those_layers():
    encoder = _fresh_encoder()
    apply_lora(encoder, LoraSettings(layers=(0,), target_modules=("k_proj", "fc2")))
    assert list(lora_modules(encoder)) == ["blocks.0.attn.k_proj", "blocks.0.mlp.fc2"]
    assert "blocks.1" not in "".join(n for n, p in encoder.named_parameters() if p.requires_grad)


def test_trainable_counts():
    encoder = _fresh_encoder()
    total = count_parameters(encoder).total
    apply_lora(encoder, LoraSettings())  # r=32 on v_proj (64 -> 64) of 2 layers: 2 * (32*64 + 64*32)
    counts = count_parameters(encoder)
    assert counts.trainable == 2 * (32 * 64 + 64 * 32) == 8192
    assert counts.total == total + 8192
    assert counts.fraction == pytest.approx(8192 / counts.total)


def test_hook_prefix_mapping():
    assert hook_prefix("layers.3.self_attn.v_proj") == "blocks.3.attn.v_proj"
    assert hook_prefix("base_model.model.layers.0.fc2") == "blocks.0.mlp.fc2"
    assert hook_prefix("layers.0.self_attn_layer_norm") is None
    assert hook_prefix("conv1") is None


def test_the_config_section_is_the_settings_class():
    from loralens.training.config import TrainConfig, make_config

    assert isinstance(TrainConfig().lora, LoraSettings) and TrainConfig().lora == LoraSettings()
    cfg = make_config({"lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}})
    assert cfg.lora == LoraSettings(r=8, alpha=16, target_modules=("q_proj", "v_proj"))
    with pytest.raises(ConfigError, match="lora.target_modules"):
        make_config({"lora": {"target_modules": ["w_proj"]}})

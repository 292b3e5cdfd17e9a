"""peft LoRA variants (DoRA and others) are refused: at adapter loading and where the runner taps lora_A / lora_B.

The runner's `hook_lora_b` reads peft's `lora_B` output times `scaling` and divides an edited value by `scaling`
again; that is what a plain LoRA adapter adds to its base projection, not what a variant (DoRA rescales the whole
weight by a learned magnitude) does, so reading such an adapter would be silently wrong.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import WhisperForConditionalGeneration

from loralens.errors import ConfigError, WeightsError
from loralens.models.lora import LoraSettings, apply_lora, load_adapter, lora_modules, lora_variant
from loralens.models.runner import EncoderRunner

from ..conftest import tiny_whisper_config


def _fresh_encoder():
    torch.manual_seed(0)
    return WhisperForConditionalGeneration(tiny_whisper_config()).eval().model.encoder


def _features(frames: int = 200) -> torch.Tensor:
    return torch.randn(2, 80, frames, generator=torch.Generator().manual_seed(1))


def _dora(encoder):
    """peft's own DoRA (`use_dora=True`) on v_proj, B made non-zero so the adapter changes the output."""
    peft_model = get_peft_model(encoder, LoraConfig(r=4, lora_alpha=8, target_modules=["v_proj"], use_dora=True))
    with torch.no_grad():
        for module in lora_modules(encoder).values():
            module.lora_B["default"].weight.normal_()
    return peft_model


def test_plain_lora_has_no_variant():
    encoder = _fresh_encoder()
    apply_lora(encoder, LoraSettings(r=4, target_modules=("v_proj", "fc1")))
    assert [lora_variant(m) for m in lora_modules(encoder).values()] == [None] * 4


def test_dora_adapter_is_refused_at_loading_and_the_encoder_left_as_given(tmp_path):
    peft_model = _dora(_fresh_encoder())
    peft_model.save_pretrained(str(tmp_path / "dora"))
    fresh = _fresh_encoder()
    with torch.no_grad():
        before = EncoderRunner(fresh)(_features()).last_hidden_state
    with pytest.raises(WeightsError) as err:
        load_adapter(fresh, tmp_path / "dora")
    text = str(err.value)
    assert str(tmp_path / "dora") in text and "blocks.0.attn.v_proj" in text  # the adapter and the module
    assert "use_dora" in text and "DoraLinearVariant" in text  # the variant found
    assert "plain LoRA" in err.value.hint and "merge_and_unload" in err.value.hint  # what to do
    assert lora_modules(fresh) == {}  # the refused adapter was taken out again
    with torch.no_grad():
        assert torch.equal(EncoderRunner(fresh)(_features()).last_hidden_state, before)


def test_runner_refuses_lora_taps_on_dora_but_runs_it_untapped():
    encoder = _fresh_encoder()
    _dora(encoder)
    assert lora_variant(lora_modules(encoder)["blocks.1.attn.v_proj"]) == "use_dora (DoraLinearVariant)"
    runner = EncoderRunner(encoder)
    x = _features()
    with torch.no_grad():
        # without taps the runner only calls peft's modules: DoRA's own forward, equal to transformers' encoder
        full = _features(frames=3000)
        assert torch.equal(runner(full).last_hidden_state, encoder(full).last_hidden_state)
        assert not torch.equal(runner(full).last_hidden_state, EncoderRunner(_fresh_encoder())(full).last_hidden_state)
        for point in ("hook_lora_a", "hook_lora_b"):
            with pytest.raises(ConfigError, match=r"blocks\.0\.attn\.v_proj.*use_dora \(DoraLinearVariant\)"):
                runner(x, capture=[f"blocks.0.attn.v_proj.{point}"])
        with pytest.raises(ConfigError, match="DoraLinearVariant"):
            runner(x, edits={"blocks.1.attn.v_proj.hook_lora_b": torch.zeros_like})

"""Hook-name parsing and expansion, intervention builders and pooled captures on the tiny model."""

from __future__ import annotations

import pytest
import torch

from loralens.analysis.capture import (
    add_vector,
    capture_pooled,
    expand,
    layer_names,
    mean_ablation,
    parse_hook_name,
    patch_from,
    remove_adapters,
    scale,
    zero_ablation,
)
from loralens.errors import ConfigError
from loralens.models.lora import LoraSettings, apply_lora, lora_modules
from loralens.models.runner import EncoderRunner, hook_names
from loralens.numerics.masking import masked_mean


def _features(batch: int = 2, frames: int = 120, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 80, frames, generator=torch.Generator().manual_seed(seed))


def test_parse_hook_name():
    p = parse_hook_name("blocks.11.attn.v_proj.hook_lora_b")
    assert (p.layer, p.kind, p.module, p.is_lora, p.prefix) == (11, "hook_lora_b", "v_proj", True,
                                                                "blocks.11.attn.v_proj")
    p = parse_hook_name("blocks.0.hook_resid_mid")
    assert (p.layer, p.kind, p.module, p.is_lora, p.prefix) == (0, "hook_resid_mid", None, False, None)
    assert parse_hook_name("ln_final.hook_out").layer is None
    for bad in ("blocks.0.hook_resid", "blocks.x.hook_resid_pre", "blocks.0.mlp.v_proj.hook_lora_a"):
        with pytest.raises(ConfigError, match="not a hook-point name"):
            parse_hook_name(bad)
    assert all(parse_hook_name(n).name == n for n in hook_names(3, ["blocks.2.mlp.fc2", "blocks.0.attn.q_proj"]))


def test_expand_and_layer_names():
    valid = hook_names(3, ["blocks.1.attn.v_proj", "blocks.2.attn.v_proj"])
    assert expand(["blocks.*.hook_resid_post"], valid) == layer_names(3)
    assert expand(["*.hook_lora_b", "blocks.0.hook_resid_pre"], valid) == [
        "blocks.0.hook_resid_pre",
        "blocks.1.attn.v_proj.hook_lora_b",
        "blocks.2.attn.v_proj.hook_lora_b",
    ]
    with pytest.raises(ConfigError, match="blocks.*.hook_resid_psot"):
        expand(["blocks.*.hook_resid_psot"], valid)
    with pytest.raises(ConfigError, match="per-layer"):
        layer_names(3, "hook_out")


def test_edit_builders_known_answers():
    t = torch.arange(12.0).reshape(1, 3, 4)
    assert torch.count_nonzero(zero_ablation()(t)) == 0
    assert torch.equal(scale(0.5)(t), t / 2)
    assert torch.equal(mean_ablation(torch.tensor([1.0, 2, 3, 4]))(t), torch.tensor([1.0, 2, 3, 4]).expand(1, 3, 4))
    added = add_vector(torch.ones(4), frames=slice(1, 2))(t)
    assert torch.equal(added[:, 1], t[:, 1] + 1) and torch.equal(added[:, [0, 2]], t[:, [0, 2]])
    src = -t
    patched = patch_from(src, frames=torch.tensor([True, False, True]))(t)
    assert torch.equal(patched[:, 0], -t[:, 0]) and torch.equal(patched[:, 1], t[:, 1])
    assert torch.equal(patch_from(src)(t), src)
    with pytest.raises(ConfigError, match="patch source"):
        patch_from(src[:, :2])(t)


def test_remove_adapters_gives_the_base_model(tiny_whisper):
    encoder = tiny_whisper.model.encoder
    runner = EncoderRunner(encoder)
    x = _features()
    with torch.no_grad():
        base = runner(x).last_hidden_state
    with pytest.raises(ConfigError, match="no LoRA adapters"):
        remove_adapters(runner)
    apply_lora(encoder, LoraSettings(r=4, target_modules=("v_proj", "fc1")))
    with torch.no_grad():
        for module in lora_modules(encoder).values():
            module.lora_B["default"].weight.normal_()
        adapted = runner(x).last_hidden_state
        removed = runner(x, edits=remove_adapters(runner)).last_hidden_state
        removed_layer1 = runner(x, edits=remove_adapters(runner, layers=[1]), capture=["blocks.1.hook_resid_pre"])
        adapted_run = runner(x, capture=["blocks.1.hook_resid_pre"])
    assert not torch.allclose(adapted, base)
    torch.testing.assert_close(removed, base, rtol=0, atol=1e-6)
    # layer 0 keeps its adapter: layer 1's input is the adapted one
    assert torch.equal(removed_layer1.captured["blocks.1.hook_resid_pre"],
                       adapted_run.captured["blocks.1.hook_resid_pre"])
    assert set(remove_adapters(runner, layers=[1])) == {"blocks.1.attn.v_proj.hook_lora_b",
                                                        "blocks.1.mlp.fc1.hook_lora_b"}


def test_capture_pooled_is_masked_mean_of_captures(tiny_whisper):
    runner = EncoderRunner(tiny_whisper.model.encoder)
    x = _features()
    mel_lengths = torch.tensor([120, 61])
    pooled = capture_pooled(runner, x, mel_lengths, ["blocks.*.hook_resid_post", "ln_final.hook_out"])
    assert list(pooled) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "ln_final.hook_out"]
    with torch.no_grad():
        out = runner(x, mel_lengths, capture=["blocks.1.hook_resid_post"])
    assert out.lengths.tolist() == [60, 31]
    assert torch.equal(pooled["blocks.1.hook_resid_post"],
                       masked_mean(out.captured["blocks.1.hook_resid_post"], out.lengths))
    assert pooled["ln_final.hook_out"].shape == (2, 64)

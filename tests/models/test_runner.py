"""The encoder runner against transformers' own WhisperEncoder, and its hook points and interventions."""

from __future__ import annotations

import pytest
import torch

from loralens.errors import ConfigError, MissingExtraError
from loralens.models.lora import LoraSettings, apply_lora, lora_modules
from loralens.models.runner import EncoderRunner, hook_names, padding_mask


@pytest.fixture
def encoder(tiny_whisper):
    return tiny_whisper.model.encoder


def _features(batch: int = 2, frames: int = 3000, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 80, frames, generator=g)


def _randomise_lora(encoder, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in lora_modules(encoder).values():
            module.lora_B["default"].weight.copy_(0.1 * torch.randn(module.lora_B["default"].weight.shape, generator=g))


def test_runner_equals_transformers_encoder_on_30s(encoder):
    x = _features()
    with torch.no_grad():
        ref = encoder(x, output_hidden_states=True)
        out = EncoderRunner(encoder)(x)
    assert torch.equal(out.last_hidden_state, ref.last_hidden_state)
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for ours, theirs in zip(out.hidden_states, ref.hidden_states):
        assert torch.equal(ours, theirs)
    assert out.lengths.tolist() == [1500, 1500]


def test_runner_equals_transformers_with_lora_and_padding_lengths_full(encoder):
    apply_lora(encoder, LoraSettings(target_modules=("q_proj", "v_proj", "fc2")))
    _randomise_lora(encoder)
    x = _features()
    with torch.no_grad():
        ref = encoder(x).last_hidden_state
        # all 3000 mel frames valid: the padding mask is not used, the result is transformers' bit for bit
        out = EncoderRunner(encoder)(x, torch.tensor([3000, 3000]), mask_padding=True).last_hidden_state
    assert torch.equal(out, ref)


@pytest.mark.slow
def test_runner_equals_real_tiny_en():
    from loralens.models import loading

    try:
        model = loading.load_whisper("tiny.en")
    except MissingExtraError as err:  # only a missing optional package skips; any other failure is a regression
        pytest.skip(f"tiny.en not installed here: {err}")
    encoder = model.model.encoder.eval()
    x = _features(batch=1, seed=5) * 0.5
    with torch.no_grad():
        ref = encoder(x, output_hidden_states=True)
        out = EncoderRunner(encoder)(x)
    assert torch.equal(out.last_hidden_state, ref.last_hidden_state)
    for ours, theirs in zip(out.hidden_states, ref.hidden_states):
        assert torch.equal(ours, theirs)


def test_short_window_runs_with_sliced_positions(encoder):
    x = _features(frames=3000)
    runner = EncoderRunner(encoder)
    with torch.no_grad():
        out = runner(x[:, :, :400], capture=["blocks.0.hook_resid_pre"])
        emb = torch.nn.functional.gelu(encoder.conv2(torch.nn.functional.gelu(encoder.conv1(x[:, :, :400]))))
    assert out.last_hidden_state.shape == (2, 200, 64)
    expected = emb.permute(0, 2, 1) + encoder.embed_positions.weight[:200]
    assert torch.equal(out.captured["blocks.0.hook_resid_pre"], expected)
    with pytest.raises(ConfigError, match="positions"):
        runner(_features(batch=1, frames=3002))


def test_identity_edits_change_nothing(encoder):
    apply_lora(encoder, LoraSettings(target_modules=("v_proj", "fc1")))
    _randomise_lora(encoder)
    runner = EncoderRunner(encoder)
    x = _features(frames=300)
    names = runner.hook_names
    assert "blocks.1.mlp.fc1.hook_lora_b" in names and "blocks.0.attn.v_proj.hook_lora_a" in names
    with torch.no_grad():
        plain = runner(x)
        edited = runner(x, edits={n: (lambda t: t.clone()) for n in names}, capture=names)
    assert torch.equal(plain.last_hidden_state, edited.last_hidden_state)
    assert set(edited.captured) == set(names)


def test_skip_of_zero_update_layer_changes_nothing(encoder):
    layer = encoder.layers[1]
    with torch.no_grad():
        for lin in (layer.self_attn.out_proj, layer.fc2):
            lin.weight.zero_()
            lin.bias.zero_()
    runner = EncoderRunner(encoder)
    x = _features(frames=300)
    with torch.no_grad():
        full = runner(x, capture=["blocks.1.hook_mlp_out"])
        skipped = runner(x, skip_layers=[1])
        skip0 = runner(x, skip_layers=[0])
    assert torch.count_nonzero(full.captured["blocks.1.hook_mlp_out"]) == 0
    assert torch.equal(full.last_hidden_state, skipped.last_hidden_state)
    assert not torch.allclose(full.last_hidden_state, skip0.last_hidden_state)  # layer 0's update is not zero
    with pytest.raises(ConfigError, match="not computed"):
        runner(x, skip_layers=[1], capture=["blocks.1.hook_attn_out"])


def test_start_at_and_stop_after_reproduce_the_full_run(encoder):
    runner = EncoderRunner(encoder)
    x = _features(frames=300)
    lengths = torch.tensor([300, 180])
    with torch.no_grad():
        full = runner(x, lengths, capture=["blocks.1.hook_resid_pre", "blocks.0.hook_resid_post"])
        resumed = runner(None, lengths, start_at=(1, full.captured["blocks.1.hook_resid_pre"]))
        stopped = runner(x, lengths, stop_after=0)
        stopped_normed = runner(x, lengths, stop_after=0, final_norm=True)
    assert torch.equal(resumed.last_hidden_state, full.last_hidden_state)
    assert torch.equal(stopped.last_hidden_state, full.captured["blocks.0.hook_resid_post"])
    assert torch.equal(stopped_normed.last_hidden_state, encoder.layer_norm(stopped.last_hidden_state))
    assert len(stopped.hidden_states) == 2 and len(resumed.hidden_states) == 2
    with pytest.raises(ConfigError, match="not computed"):
        runner(None, lengths, start_at=(1, full.captured["blocks.1.hook_resid_pre"]),
               capture=["blocks.0.hook_attn_out"])


def test_edit_patches_a_hook_point(encoder):
    runner = EncoderRunner(encoder)
    a, b = _features(batch=1, frames=200, seed=1), _features(batch=1, frames=200, seed=2)
    with torch.no_grad():
        cache_b = runner(b, capture=["blocks.1.hook_resid_pre"]).captured["blocks.1.hook_resid_pre"]
        patched = runner(a, edits={"blocks.1.hook_resid_pre": lambda t: cache_b})
        run_b = runner(b)
        zeroed = runner(a, edits={"blocks.0.hook_attn_out": torch.zeros_like}, capture=["blocks.0.hook_attn_out"])
    assert torch.equal(patched.last_hidden_state, run_b.last_hidden_state)
    assert torch.count_nonzero(zeroed.captured["blocks.0.hook_attn_out"]) == 0
    with pytest.raises(ConfigError, match="shape"):
        runner(a, edits={"blocks.0.hook_mlp_out": lambda t: t[:, :5]})


def test_grad_capture_matches_explicit_autograd(encoder):
    runner = EncoderRunner(encoder)
    x = _features(frames=200)
    out = runner(x, grad_capture=["blocks.0.hook_resid_post"])
    out.last_hidden_state.pow(2).mean().backward()
    got = out.captured["blocks.0.hook_resid_post"].grad
    assert got is not None and got.abs().max() > 0
    # explicit: the same function of layer 0's output, differentiated by autograd
    with torch.no_grad():
        h0 = runner(x, stop_after=0).last_hidden_state
    h0 = h0.clone().requires_grad_(True)
    loss = runner(None, start_at=(1, h0)).last_hidden_state.pow(2).mean()
    (expected,) = torch.autograd.grad(loss, h0)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_lora_points_known_answer_and_grads(encoder):
    apply_lora(encoder, LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=("v_proj", "fc2")))
    _randomise_lora(encoder)
    runner = EncoderRunner(encoder)
    x = _features(frames=200)
    names = ["blocks.0.hook_resid_pre", "blocks.0.attn.v_proj.hook_lora_a", "blocks.0.attn.v_proj.hook_lora_b"]
    with torch.no_grad():
        out = runner(x, capture=names)
    v = encoder.layers[0].self_attn.v_proj
    ln_in = encoder.layers[0].self_attn_layer_norm(out.captured["blocks.0.hook_resid_pre"])
    a_out = ln_in @ v.lora_A["default"].weight.T
    torch.testing.assert_close(out.captured["blocks.0.attn.v_proj.hook_lora_a"], a_out)
    assert a_out.shape == (2, 100, 4)
    torch.testing.assert_close(out.captured["blocks.0.attn.v_proj.hook_lora_b"],
                               a_out @ v.lora_B["default"].weight.T * 2.0)

    # d loss / d (fc2 adapter output) equals d loss / d mlp_out: mlp_out = fc2 base output + adapter output
    g = ["blocks.1.mlp.fc2.hook_lora_b", "blocks.1.hook_mlp_out", "blocks.1.mlp.fc2.hook_lora_a"]
    out = runner(x, grad_capture=g)
    out.last_hidden_state.sum().backward()
    grad_b = out.captured[g[0]].grad
    assert grad_b.abs().max() > 0
    torch.testing.assert_close(grad_b, out.captured[g[1]].grad)
    fc2 = encoder.layers[1].fc2
    torch.testing.assert_close(out.captured[g[2]].grad, grad_b @ fc2.lora_B["default"].weight * 2.0)


def test_padding_mask_makes_encoding_independent_of_batch(encoder):
    runner = EncoderRunner(encoder)
    short, long = _features(batch=1, frames=240, seed=1), _features(batch=1, frames=400, seed=2)
    mel_lengths = torch.tensor([240, 400])
    with torch.no_grad():
        alone = runner(short).last_hidden_state[0]
        for value in (0.0, -0.7, float("nan")):  # whatever the batch pads with
            batch = torch.cat([torch.nn.functional.pad(short, (0, 160), value=value), long])
            masked = runner(batch, mel_lengths).last_hidden_state[0, :120]
            torch.testing.assert_close(masked, alone, rtol=1e-5, atol=1e-5)
        batch = torch.cat([torch.nn.functional.pad(short, (0, 160), value=-0.7), long])
        unmasked = runner(batch, mel_lengths, mask_padding=False).last_hidden_state[0, :120]
        long_alone = runner(long, torch.tensor([400])).last_hidden_state  # nothing padded: the mask is not used
    assert (unmasked - alone).abs().max() > 1e-3
    assert torch.equal(long_alone, runner(long).last_hidden_state)
    mask = padding_mask(torch.tensor([2, 3]), 3, torch.float32)
    assert mask.shape == (2, 1, 1, 3)
    assert mask[0, 0, 0].tolist() == [0.0, 0.0, torch.finfo(torch.float32).min] and mask[1].abs().sum() == 0


def test_gradient_checkpointing_gives_same_gradients(encoder):
    apply_lora(encoder, LoraSettings(r=4, dropout=0.0))
    _randomise_lora(encoder)
    encoder.train()
    runner = EncoderRunner(encoder)
    x = _features(frames=200)
    grads = []
    for ckpt in (False, True):
        encoder.zero_grad()
        runner(x, torch.tensor([200, 150]), gradient_checkpointing=ckpt,
               capture=["blocks.1.hook_resid_post"]).last_hidden_state.sum().backward()
        grads.append([p.grad.clone() for p in encoder.parameters() if p.requires_grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        runner(x, grad_capture=["blocks.0.hook_resid_post"], gradient_checkpointing=True)


def test_hook_names_and_unknown_name_error(encoder):
    names = hook_names(2, ["blocks.1.mlp.fc1", "blocks.0.attn.v_proj"])
    assert names[:4] == ["blocks.0.hook_resid_pre", "blocks.0.attn.v_proj.hook_lora_a",
                         "blocks.0.attn.v_proj.hook_lora_b", "blocks.0.hook_attn_out"]
    assert "blocks.1.mlp.fc1.hook_lora_b" in names and names[-1] == "ln_final.hook_out"
    assert len(hook_names(4)) == 4 * 5 + 1
    with pytest.raises(ConfigError, match="beyond"):
        hook_names(1, ["blocks.1.attn.v_proj"])
    runner = EncoderRunner(encoder)
    with pytest.raises(ConfigError, match=r"did you mean \['blocks.0.hook_resid_post'") as err:
        runner(_features(frames=20), capture=["blocks.0.hook_resid_psot"])
    assert "ln_final.hook_out" in err.value.hint
    with pytest.raises(ConfigError, match="hook_lora"):
        runner(_features(frames=20), capture=["blocks.0.attn.v_proj.hook_lora_a"])
    with pytest.raises(ConfigError, match="mel bins"):
        runner(torch.zeros(1, 40, 20))
    with pytest.raises(ConfigError, match="mel_lengths"):
        runner(_features(frames=20), torch.tensor([21, 3]))


def test_plan_resolves_a_call_without_running_it(encoder):
    apply_lora(encoder, LoraSettings(r=4, target_modules=("v_proj", "fc1")))
    runner = EncoderRunner(encoder)
    x = _features(frames=200)
    h1 = torch.zeros(2, 100, runner.d_model)
    plan = runner.plan(None, torch.tensor([200, 150]), start_at=(1, h1), capture=["blocks.1.mlp.fc1.hook_lora_a"],
                       grad_capture=["blocks.1.hook_resid_post"], edits={"blocks.1.hook_attn_out": torch.neg})
    assert (plan.first, plan.last, plan.final_norm, list(plan.layers)) == (1, 1, True, [1])
    assert plan.resid is h1 and plan.frames == 100 and plan.lengths.tolist() == [100, 75]
    assert plan.mask.shape == (2, 1, 1, 100)
    assert plan.capture == {"blocks.1.mlp.fc1.hook_lora_a", "blocks.1.hook_resid_post"}
    assert plan.grad == {"blocks.1.hook_resid_post"} and set(plan.edits) == {"blocks.1.hook_attn_out"}
    assert plan.rewire == {"blocks.1.hook_resid_post", "blocks.1.hook_attn_out"}
    assert [p for p, _ in plan.lora_taps[1]] == ["blocks.1.mlp.fc1"] and 0 not in plan.lora_taps
    whole = runner.plan(x)
    assert whole.mask is None and whole.resid is None and whole.lora_taps == {} and list(whole.layers) == [0, 1]
    with torch.no_grad():
        assert torch.equal(runner.run(whole, x).last_hidden_state, runner(x).last_hidden_state)
    with pytest.raises(ConfigError, match="not computed"):
        runner.plan(x, stop_after=0, capture=["blocks.1.hook_resid_pre"])

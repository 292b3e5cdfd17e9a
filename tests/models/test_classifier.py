"""EmotionClassifier: transformers equivalence, trim/full agreement, training setups, adapters."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import WhisperForAudioClassification

from loralens.errors import ConfigError
from loralens.models.classifier import EmotionClassifier
from loralens.models.lora import LoraSettings, lora_modules

from ..conftest import tiny_whisper_config


def _features(batch: int = 2, frames: int = 3000, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 80, frames, generator=torch.Generator().manual_seed(seed))


def _step(clf: EmotionClassifier, x: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
    clf.train()
    opt = torch.optim.SGD(clf.trainable_parameters(), lr=0.5)
    loss = torch.nn.functional.cross_entropy(clf(x, lengths), torch.tensor([0, 1]))
    loss.backward()
    opt.step()


@pytest.mark.parametrize("weighted", [False, True])
def test_logits_equal_whisper_for_audio_classification(weighted):
    config = tiny_whisper_config(num_labels=4, use_weighted_layer_sum=weighted)
    torch.manual_seed(0)
    hf = WhisperForAudioClassification(config).eval()
    if weighted:
        with torch.no_grad():
            hf.layer_weights.copy_(torch.tensor([0.3, -1.0, 0.5]))
    clf = EmotionClassifier.from_audio_classification(hf, mask_padding=False).eval()
    assert clf.encoder is hf.encoder and clf.head.projector.out_features == 256
    x = _features()
    with torch.no_grad():
        ref = hf(x).logits
        ours = clf(x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_from_whisper_drops_decoder_and_trim_full_agree_on_full_clip(tiny_whisper):
    clf = EmotionClassifier.from_whisper(tiny_whisper, n_classes=8).eval()
    assert clf.encoder is tiny_whisper.model.encoder
    assert not any(n.startswith(("decoder", "model.decoder")) for n, _ in clf.named_parameters())
    x = _features(batch=1)
    with torch.no_grad():
        trim = clf.run(x, torch.tensor([3000]), mask_padding=True)  # a clip filling the window, trimmed batch
        full = clf.run(x, None, mask_padding=False)  # the paper's full window
    assert torch.equal(trim.logits, full.logits)
    assert trim.logits.shape == (1, 8) and trim.pooled.shape == (1, 64)
    assert trim.encoder.lengths.tolist() == [1500]


def test_padding_does_not_change_logits_with_mask(tiny_whisper):
    clf = EmotionClassifier.from_whisper(tiny_whisper, n_classes=3).eval()
    a, b = _features(batch=1, frames=300, seed=2), _features(batch=1, frames=500, seed=3)
    batch = torch.cat([torch.nn.functional.pad(a, (0, 200), value=-0.7), b])
    with torch.no_grad():
        alone = clf(a)
        batched = clf(batch, torch.tensor([300, 500]))
    torch.testing.assert_close(batched[0:1], alone, rtol=1e-5, atol=1e-5)


def test_frozen_step_changes_no_encoder_weight(tiny_whisper):
    clf = EmotionClassifier.from_whisper(tiny_whisper, n_classes=2).prepare_for("frozen")
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    _step(clf, _features(frames=200), torch.tensor([200, 120]))
    after = clf.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("head.") for k in changed)
    counts = clf.parameter_counts()
    assert counts.trainable == sum(p.numel() for p in clf.head.parameters())


def test_lora_step_changes_only_adapters_and_head(tiny_whisper):
    settings = LoraSettings(r=4, alpha=8, target_modules=("v_proj", "fc1"))
    clf = EmotionClassifier.from_whisper(tiny_whisper, n_classes=2).prepare_for("lora", settings)
    assert set(lora_modules(clf.encoder)) == {"blocks.0.attn.v_proj", "blocks.1.attn.v_proj", "blocks.0.mlp.fc1",
                                              "blocks.1.mlp.fc1"}
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    for _ in range(2):  # B starts at 0: A moves from the second step on
        _step(clf, _features(frames=200))
    after = clf.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.startswith("head.") or ".lora_A." in k or ".lora_B." in k}


def test_full_trains_all_encoder_weights_but_positions(tiny_whisper):
    clf = EmotionClassifier.from_whisper(tiny_whisper, n_classes=2).prepare_for("full", gradient_checkpointing=True)
    frozen = [n for n, p in clf.named_parameters() if not p.requires_grad]
    assert frozen == ["encoder.embed_positions.weight"]
    before = clf.encoder.layers[0].fc1.weight.clone()
    _step(clf, _features(frames=200))
    assert not torch.equal(before, clf.encoder.layers[0].fc1.weight)


def test_adapter_save_load_through_classifier(tmp_path, tiny_whisper):
    from transformers import WhisperForConditionalGeneration

    clf = EmotionClassifier.from_whisper(tiny_whisper, n_classes=2).prepare_for("lora", LoraSettings(r=4))
    _step(clf, _features(frames=200))
    _step(clf, _features(frames=200))
    clf.eval()
    clf.save_adapter(tmp_path / "adapter")
    torch.manual_seed(0)
    fresh = EmotionClassifier.from_whisper(WhisperForConditionalGeneration(tiny_whisper_config()), n_classes=2).eval()
    fresh.load_adapter(tmp_path / "adapter")
    fresh.head.load_state_dict(clf.head.state_dict())
    x = _features(frames=200, seed=9)
    with torch.no_grad():
        assert torch.equal(fresh(x), clf(x))


def test_setup_errors(tiny_whisper):
    clf = EmotionClassifier.from_whisper(tiny_whisper, n_classes=2)
    with pytest.raises(ConfigError, match="unknown fine-tuning method"):
        clf.prepare_for("prefix")
    with pytest.raises(ConfigError, match="LoRA settings given"):
        clf.prepare_for("frozen", LoraSettings())
    with pytest.raises(ConfigError, match="no LoRA adapter"):
        clf.save_adapter("/nonexistent")
    clf.prepare_for("lora")
    with pytest.raises(ConfigError, match="has LoRA adapters"):
        clf.prepare_for("full")
    with pytest.raises(ConfigError, match="holds no Whisper encoder"):
        EmotionClassifier.from_whisper(torch.nn.Linear(2, 2), n_classes=2)


def test_hidden_state_head_reads_the_cut_encoders_output(tiny_whisper):
    # hidden state 1 of a 2-layer encoder: the output of layer 0, before any final LayerNorm, as transformers numbers it
    full = EmotionClassifier.from_whisper(copy.deepcopy(tiny_whisper), 3).eval()
    cut = EmotionClassifier.from_whisper(copy.deepcopy(tiny_whisper), 3, hidden_state=1).eval()  # cuts in place
    assert cut.runner.n_layers == 1 and full.runner.n_layers == 2
    assert isinstance(cut.encoder.layer_norm, torch.nn.Identity) and cut.encoder.config.encoder_layers == 1
    cut.head.load_state_dict(full.head.state_dict())
    x, lengths = _features(frames=400), torch.tensor([400, 250])
    with torch.no_grad():
        window = _features()  # transformers' encoder takes 30-s windows only
        hf = tiny_whisper.model.encoder(window, output_hidden_states=True).hidden_states
        assert torch.allclose(cut(window), full.head(hf[1]), atol=1e-5)  # transformers' hidden state 1
        out = full.runner(x, lengths)
        ref = full.head(out.hidden_states[1], out.lengths)
        got = cut(x, lengths)
    assert torch.allclose(got, ref, atol=1e-6)
    # the last hidden state named explicitly is the default head (nothing cut, final LayerNorm kept)
    last = EmotionClassifier.from_whisper(copy.deepcopy(tiny_whisper), 3, hidden_state=2).eval()
    last.head.load_state_dict(full.head.state_dict())
    with torch.no_grad():
        assert torch.equal(last(x, lengths), full(x, lengths))


def test_hidden_state_errors_and_lora_on_the_layers_below(tiny_whisper):
    with pytest.raises(ConfigError, match="hidden states 1..2"):  # checked before anything is cut
        EmotionClassifier.from_whisper(tiny_whisper, 3, hidden_state=3)
    with pytest.raises(ConfigError, match="exclude"):
        EmotionClassifier.from_whisper(tiny_whisper, 3, hidden_state=1, use_weighted_layer_sum=True)
    clf = EmotionClassifier.from_whisper(copy.deepcopy(tiny_whisper), 3, hidden_state=1)
    assert sorted(lora_modules(clf.prepare_for("lora", LoraSettings(r=2)).encoder)) == ["blocks.0.attn.v_proj"]
    with pytest.raises(ConfigError, match="do not exist"):
        EmotionClassifier.from_whisper(tiny_whisper, 3, hidden_state=1).prepare_for("lora", LoraSettings(layers=(1,)))

"""Tiny analysis contexts for tests: an adapted LoRA classifier whose B weights are perturbed (so it differs from
its base), a frozen classifier on the same base encoder weights with its own head, and splits of random batches.

Everything is seeded: the same arguments give the same models and batches.
"""

from __future__ import annotations

import copy

import pytest
import torch

from loralens.analysis.context import AnalysisContext, SplitData
from loralens.data.batching import Batch
from loralens.models.classifier import EmotionClassifier
from loralens.models.lora import ADAPTER, LoraSettings, lora_modules

LABEL_NAMES_4 = ("angry", "happy", "neutral", "sad")


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One intra-op thread during a test module (restored after; module scope so that it also covers module-scoped
    fixtures). Import it into a test module to apply it there: on a
    shared, loaded CPU, tiny models run ~20x faster with 1 thread than with 2 fighting for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_encoder(n_layers: int = 2, seed: int = 0):
    """A random tiny `WhisperEncoder` (d_model 64, 4 heads, ffn 128, 80 mel bins; see tests/conftest.py)."""
    from transformers import WhisperForConditionalGeneration

    from tests.conftest import tiny_whisper_config

    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(tiny_whisper_config(encoder_layers=n_layers))
    return model.model.encoder.eval()


def perturb_lora_b(clf: EmotionClassifier, std: float = 0.2, seed: int = 1) -> None:
    """Replace every LoRA B matrix by N(0, std^2) entries (peft initialises B = 0, i.e. no change)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in lora_modules(clf.encoder).values():
            w = module.lora_B[ADAPTER].weight
            w.copy_(torch.randn(w.shape, generator=gen) * std)


def tiny_classifiers(
    n_layers: int = 2,
    n_classes: int = 4,
    *,
    lora: LoraSettings | None = None,
    b_std: float = 0.2,
    seed: int = 0,
    use_weighted_layer_sum: bool = False,
    head: dict | None = None,
) -> tuple[EmotionClassifier, EmotionClassifier]:
    """(adapted, frozen), both in eval mode.

    adapted: LoRA (default r=4, alpha=8, v_proj of every layer) with B perturbed by `b_std` Gaussian noise.
    frozen: a copy of the same base encoder (before adapters) with its own randomly initialised head.
    head: more `EmotionClassifier` head arguments for both (e.g. hidden_state, standardize); a standardising head
    gets statistics of its own random clips.
    """
    encoder = tiny_encoder(n_layers, seed)
    base = copy.deepcopy(encoder)
    torch.manual_seed(seed + 100)
    head = head or {}
    adapted = EmotionClassifier(encoder, n_classes, proj_size=32, use_weighted_layer_sum=use_weighted_layer_sum,
                                **head)
    adapted.prepare_for("lora", lora or LoraSettings(r=4, alpha=8, dropout=0.0))
    if b_std:
        perturb_lora_b(adapted, b_std, seed + 1)
    torch.manual_seed(seed + 200)
    frozen = EmotionClassifier(base, n_classes, proj_size=32, use_weighted_layer_sum=use_weighted_layer_sum, **head)
    frozen.prepare_for("frozen")
    for clf in (adapted, frozen):
        if head.get("standardize"):
            with torch.no_grad():
                x = torch.randn(12, 80, 200, generator=torch.Generator().manual_seed(seed + 300))
                clf.eval().head.set_standardization(torch.stack(clf.run(x).encoder.hidden_states, 1).mean(2))
    return adapted.eval(), frozen.eval()


def random_split(
    n_batches: int = 3,
    batch_size: int = 4,
    n_classes: int = 4,
    *,
    mel_frames: int = 200,
    n_speakers: int = 4,
    seed: int = 0,
    prefix: str = "clip",
) -> SplitData:
    """`n_batches` batches of `batch_size` random log-mel clips `[batch, 80, mel_frames]` with varied valid lengths
    (the first clip of each batch is full length, the others between half and full), labels cycling over the
    classes (then shuffled), and speakers cycling over `n_speakers`."""
    gen = torch.Generator().manual_seed(seed)
    n = n_batches * batch_size
    labels = torch.arange(n) % n_classes
    labels = labels[torch.randperm(n, generator=gen)]
    batches = []
    for b in range(n_batches):
        feats = torch.randn(batch_size, 80, mel_frames, generator=gen)
        lengths = torch.randint(mel_frames // 2, mel_frames + 1, (batch_size,), generator=gen)
        lengths[0] = mel_frames
        ids = [f"{prefix}_{b * batch_size + i:03d}" for i in range(batch_size)]
        batches.append(Batch(feats, lengths.long(), labels[b * batch_size : (b + 1) * batch_size].clone(), ids))
    speakers = [f"spk{i % n_speakers}" for i in range(n)]
    return SplitData(batches, speakers)


def tiny_context(
    n_layers: int = 2,
    n_classes: int = 4,
    *,
    frozen: bool = True,
    train: bool = True,
    n_boot: int = 50,
    seed: int = 0,
    b_std: float = 0.2,
    lora: LoraSettings | None = None,
    use_weighted_layer_sum: bool = False,
    head: dict | None = None,
    options: dict | None = None,
    test_batches: int = 3,
    train_batches: int = 4,
    batch_size: int = 4,
) -> AnalysisContext:
    """A complete `AnalysisContext` on tiny random models: test split (3 x 4 clips by default) and, when `train`,
    a training split (4 x 4 clips) drawn with another seed."""
    adapted, frozen_clf = tiny_classifiers(
        n_layers, n_classes, lora=lora, b_std=b_std, seed=seed, use_weighted_layer_sum=use_weighted_layer_sum,
        head=head,
    )
    names = LABEL_NAMES_4 if n_classes == 4 else tuple(f"class{i}" for i in range(n_classes))
    return AnalysisContext(
        adapted=adapted,
        frozen=frozen_clf if frozen else None,
        label_names=names,
        test=random_split(test_batches, batch_size, n_classes, seed=seed + 10, prefix="test"),
        train=random_split(train_batches, batch_size, n_classes, seed=seed + 20, prefix="train") if train else None,
        seed=seed,
        n_boot=n_boot,
        options=options or {},
    )

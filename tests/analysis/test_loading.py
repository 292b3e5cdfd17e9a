"""Building the analysis context from run folders (the tiny run of tests/test_pipeline.py): the trained weights are
the saved ones, the loaded models reproduce the fold's saved test predictions, batches are sorted by length and
class-balanced caps hold; runs that do not fit together are refused; the initial adapter rebuilt from the run's seed
is the one training started from."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file

from loralens.analysis.loading import balanced_sample, context_from_runs, read_run_config
from loralens.errors import RunFolderError
from loralens.io import atomic_write_json, read_json


@pytest.fixture(scope="module")
def run(pipeline_run):
    return pipeline_run[0]


@pytest.fixture(scope="module")
def ctx(run):
    t = run / "train"
    return context_from_runs(t / "lora_r4", 0, t / "frozen", batch_size=5, train_per_class=1, seed=0, n_boot=10)


@dataclass(frozen=True)
class _Clip:
    id: str
    label: str


def test_balanced_sample_caps_each_class_and_keeps_order():
    clips = [_Clip(f"c{i:02d}", "ab"[i % 2] if i < 10 else "c") for i in range(13)]  # a: 5, b: 5, c: 3
    picked = balanced_sample(clips, 4, seed=1)
    assert Counter(c.label for c in picked) == {"a": 4, "b": 4, "c": 3}
    assert picked == sorted(picked, key=lambda c: c.id)
    assert balanced_sample(clips, 4, seed=1) == picked
    assert {tuple(balanced_sample(clips, 2, seed=s)) for s in range(6)} != {tuple(balanced_sample(clips, 2, seed=0))}
    assert balanced_sample(clips, None, seed=0) == clips


def test_loaded_weights_are_the_saved_ones(run, ctx):
    fold = run / "train" / "lora_r4" / "fold_0"
    saved = load_file(str(fold / "adapter" / "adapter_model.safetensors"))
    params = {n.replace(".default", ""): p for n, p in ctx.adapted.named_parameters() if "lora_" in n}
    assert len(params) == len(saved) == 4  # A and B of v_proj in 2 layers
    for name, value in saved.items():
        (match,) = [p for n, p in params.items() if n.endswith(name.removeprefix("base_model.model."))]
        assert torch.equal(match, value)
    for variant, model in (("lora_r4", ctx.adapted), ("frozen", ctx.frozen)):
        head = load_file(str(run / "train" / variant / "fold_0" / "head.safetensors"))
        assert all(torch.equal(model.head.state_dict()[k], v) for k, v in head.items())
    # the frozen baseline's encoder is the base model's, and nothing requires gradients
    from loralens.models.loading import load_whisper

    base = load_whisper(read_run_config(run / "train" / "frozen").model).model.encoder.state_dict()
    enc = ctx.frozen.encoder.state_dict()
    assert all(torch.equal(enc[k], v) for k, v in base.items() if k in enc) and len(enc) >= len(base) - 1
    assert not any(p.requires_grad for p in [*ctx.adapted.parameters(), *ctx.frozen.parameters()])


def test_models_reproduce_the_saved_test_predictions(run, ctx):
    assert ctx.test.n_clips == 16 and ctx.fold == "fold_0" and ctx.label_names == ("neutral", "happy", "sad", "angry")
    for variant, model in (("lora_r4", ctx.adapted), ("frozen", ctx.frozen)):
        saved = read_json(run / "train" / variant / "fold_0" / "predictions.json")
        truth = dict(zip(saved["ids"], saved["true"]))
        expected = dict(zip(saved["ids"], saved["pred"]))
        pred = {}
        with torch.no_grad():
            for b in ctx.test:
                model.select_clips(b.ids)  # the default head z-scores each clip with its speaker's statistics
                pred.update({i: int(p) for i, p in zip(b.ids, model(b.features, b.mel_lengths).argmax(-1))})
        assert pred == expected
        assert dict(zip(ctx.test.ids, ctx.test.labels.tolist())) == truth


def test_batches_sorted_by_length_with_speakers(run, ctx):
    lengths = [int(n) for b in ctx.test for n in b.mel_lengths]
    assert lengths == sorted(lengths) and [len(b) for b in ctx.test] == [5, 5, 5, 1]
    assert ctx.test.speakers == [i.split("/")[0] for i in ctx.test.ids]
    folds = read_json(run / "folds.json")["folds"][0]
    assert sorted(ctx.test.ids) == sorted(folds["test"])
    assert Counter(ctx.train.labels.tolist()) == {0: 1, 1: 1, 2: 1, 3: 1} and set(ctx.train.ids) <= set(folds["train"])


def test_mismatched_runs_are_refused(run, tmp_path):
    t = run / "train"
    frozen = shutil.copytree(t / "frozen", tmp_path / "frozen")
    doc = read_json(frozen / "folds.json")
    doc["folds"][0]["test"] = doc["folds"][0]["test"][1:]
    atomic_write_json(frozen / "folds.json", doc)
    with pytest.raises(RunFolderError, match="fold 0 has different test clips"):
        context_from_runs(t / "lora_r4", 0, frozen)
    with pytest.raises(RunFolderError, match="not 'frozen'"):
        context_from_runs(t / "lora_r4", 0, t / "lora_r4")
    with pytest.raises(RunFolderError, match="fold 2 does not exist"):
        context_from_runs(t / "lora_r4", 2)
    lora = shutil.copytree(t / "lora_r4", tmp_path / "lora")
    (lora / "fold_1" / "metrics.json").unlink()
    with pytest.raises(RunFolderError, match="fold 1 of this run is not complete"):
        context_from_runs(lora, 1)


def test_unreadable_config_names_the_file(tmp_path):
    with pytest.raises(RunFolderError, match="config.yaml: not found"):
        read_run_config(tmp_path)
    (tmp_path / "config.yaml").write_text("epochs: 0\n")
    with pytest.raises(RunFolderError, match="config.yaml: unreadable configuration snapshot"):
        read_run_config(tmp_path)


def test_device_resolution(ctx):
    from loralens.analysis.loading import resolve_device
    from loralens.errors import ConfigError

    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto") == auto and resolve_device("cpu") == torch.device("cpu")
    assert ctx.device == auto and next(ctx.adapted.parameters()).device.type == auto.type
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def _adapter_file_by_prefix(path) -> dict[str, dict[str, torch.Tensor]]:
    """A saved peft adapter's weights keyed like `lora_modules`: {prefix: {"A": ..., "B": ...}}."""
    from loralens.models.lora import hook_prefix

    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in load_file(str(path)).items():
        module, kind = name.removeprefix("base_model.model.").rsplit(".lora_", 1)
        out.setdefault(hook_prefix(module), {})[kind.removesuffix(".weight")] = value
    return out


def test_initial_adapter_is_peft_init_and_close_to_the_trained_one(run, ctx):
    import math

    initial = ctx.initial_adapter
    trained = _adapter_file_by_prefix(run / "train" / "lora_r4" / "fold_0" / "adapter" / "adapter_model.safetensors")
    assert set(initial) == set(trained) == {"blocks.0.attn.v_proj", "blocks.1.attn.v_proj"}
    for p, w in initial.items():
        a0, a1 = w["A"], trained[p]["A"]
        assert a0.shape == a1.shape and a0.shape[0] == 4 and w["B"].shape == trained[p]["B"].shape
        assert torch.count_nonzero(w["B"]) == 0 and torch.count_nonzero(trained[p]["B"]) > 0
        # kaiming-uniform with a = sqrt(5): U(-1/sqrt(d_in), 1/sqrt(d_in))
        bound = 1 / math.sqrt(a0.shape[1])
        assert float(a0.abs().max()) <= bound and float(a0.abs().max()) > 0.9 * bound
        # one epoch of a few AdamW steps moves A a little, and only a little
        rel = float(torch.linalg.norm(a1 - a0) / torch.linalg.norm(a0))
        assert 0 < rel < 0.05, rel  # 0.0103 measured


def test_initial_adapter_is_what_training_started_from(run, tmp_path, monkeypatch):
    """run_fold's own classifier, saved right after it was built (before any optimiser step), equals the
    reconstruction bit for bit; reconstructing leaves the global random generators as they were."""
    import random

    import numpy as np

    from loralens.analysis.loading import initial_adapter
    from loralens.training import crossval
    from loralens.training.head_choice import fold_config
    from loralens.training.loop import FitResult

    cfg = read_run_config(run / "train" / "lora_r4")
    prep = crossval.prepare(cfg, crossval.make_accelerator("fp32"), write=False)

    def save_then_stop(model, *args, **kwargs):
        model.save_adapter(tmp_path / "adapter_at_start")
        return FitResult(-1, {}, 0, False, 0, interrupted=True)

    monkeypatch.setattr(crossval, "fit", save_then_stop)
    # run_fold alone cannot run the LP-FT stage nor z-score the head (train() computes the frozen outputs both read);
    # the adapter is built before either, so the fresh run skips them and `initial_adapter` gets the run's own config
    assert cfg.lp_ft and cfg.head.standardize
    fold_cfg = fold_config(cfg, run / "train" / "lora_r4" / "fold_0")  # the input fold 0 chose (auto-all)
    fresh = fold_cfg.model_copy(update={"run_dir": tmp_path / "fresh", "lp_ft_epochs": 0, "lp_fit": "gradient",
                                        "head": fold_cfg.head.model_copy(update={"standardize": False})})
    assert crossval.run_fold(fresh, prep, 0, crossval.make_accelerator("fp32"), echo=lambda s: None) is None
    at_start = _adapter_file_by_prefix(tmp_path / "adapter_at_start" / "adapter_model.safetensors")

    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    rebuilt = initial_adapter(cfg, prep)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
    assert set(rebuilt) == set(at_start)
    for p, w in rebuilt.items():
        assert torch.equal(w["A"], at_start[p]["A"]) and torch.equal(w["B"], at_start[p]["B"])
    assert initial_adapter(cfg.model_copy(update={"method": "frozen"}), prep) is None
    other_seed = initial_adapter(cfg.model_copy(update={"seed": cfg.seed + 1}), prep)
    assert not any(torch.equal(w["A"], other_seed[p]["A"]) for p, w in rebuilt.items())

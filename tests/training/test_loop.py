"""The fit / evaluate loop and checkpoints on a small stand-in model and in-memory data (fast, no Whisper)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from loralens.data.batching import Batch
from loralens.training.checkpoint import CheckpointStore, rng_state, set_rng_state
from loralens.training.loop import LoopSettings, Split, epoch_batches, evaluate, fit, shard, step_groups
from tests.training.conftest import strip_times

LABELS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


class StandIn(torch.nn.Module):
    """features [b, 8, T] -> mean over valid frames -> encoder Linear + ReLU + dropout -> head Linear."""

    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(8, 16)
        self.drop = torch.nn.Dropout(0.2)
        self.head = torch.nn.Linear(16, n_classes)

    def forward(self, features, mel_lengths):
        mask = (torch.arange(features.shape[-1])[None, :] < mel_lengths[:, None]).float()
        pooled = (features * mask[:, None, :]).sum(-1) / mel_lengths[:, None]
        return self.head(self.drop(torch.relu(self.encoder(pooled))))


def _collate(items):
    frames = max(x.shape[-1] for x, _, _ in items)
    feats = torch.zeros(len(items), 8, frames)
    for row, (x, _, _) in zip(feats, items):
        row[:, : x.shape[-1]] = x
    return Batch(feats, torch.tensor([x.shape[-1] for x, _, _ in items]), torch.tensor([y for _, y, _ in items]),
                 [i for _, _, i in items])


def make_split(n: int, seed: int, separation: float = 2.0) -> Split:
    """Class c: frames centred on a class-specific direction; lengths 10-30 frames."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 8, generator=torch.Generator().manual_seed(99)) * separation
    items = []
    for i in range(n):
        y = i % 3
        t = int(torch.randint(10, 31, (1,), generator=g))
        items.append((centres[y][:, None] + torch.randn(8, t, generator=g), y, f"clip{i}"))
    return Split(items, _collate, [x.shape[-1] for x, _, _ in items], [y for _, y, _ in items],
                 [i for _, _, i in items])


def test_epoch_batches_are_a_function_of_seed_and_epoch():
    lengths = list(range(10, 47))
    b = epoch_batches(lengths, 4, seed=1, epoch=0)
    assert b == epoch_batches(lengths, 4, seed=1, epoch=0)
    assert b != epoch_batches(lengths, 4, seed=1, epoch=1) and b != epoch_batches(lengths, 4, seed=2, epoch=0)
    assert sorted(i for batch in b for i in batch) == list(range(len(lengths)))
    assert max(len(x) for x in b) == 4


def test_shard_splits_each_global_batch():
    batches = [[0, 1, 2, 3], [4, 5, 6], [7]]
    assert shard(batches, 0, 1) == batches
    assert shard(batches, 0, 2) == [[0, 2], [4, 6]]  # the 1-clip batch is dropped under 2 processes
    assert shard(batches, 1, 2) == [[1, 3], [5]]
    assert [list(g) for g in step_groups(5, 2)] == [[0, 1], [2, 3], [4]]


def test_fit_learns_and_keeps_best_epoch(accelerator, tmp_path):
    torch.manual_seed(0)
    model = StandIn()
    train, val = make_split(60, 0), make_split(30, 1)
    settings = LoopSettings(epochs=6, batch_size=8, lr_head=2e-2, lr_encoder=2e-2, warmup_ratio=0.1, log_every=3,
                            checkpoint_every=4, patience=None, seed=0, select_on="uar")
    result = fit(model, train, val, settings, accelerator, tmp_path, LABELS)
    assert result.best_validation["uar"] >= 0.9
    # the model holds the selected epoch's weights: re-evaluating gives its validation metrics
    again, _ = evaluate(model, val, accelerator, LABELS, batch_size=7)
    assert again.uar == pytest.approx(result.best_validation["uar"])
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in log if r["type"] == "epoch"]
    assert len(epochs) == 6 and result.steps == 6 * 8  # 60 clips / 8 = 8 batches a step each
    assert max(range(6), key=lambda e: (epochs[e]["validation"]["uar"], -e)) == result.best_epoch
    steps = [r for r in log if r["type"] == "step"]
    assert all({"loss", "lr", "time"} <= set(r) for r in steps) and set(steps[0]["lr"]) == {"head", "encoder"}
    assert epochs[-1]["lr"]["head"] == pytest.approx(0.0, abs=1e-12)  # cosine decay to 0 at the last step
    assert epochs[0]["train_loss"] > epochs[-1]["train_loss"]


def test_resume_after_interruption_is_exact(accelerator, tmp_path):
    train, val = make_split(30, 0), make_split(12, 1)
    settings = LoopSettings(epochs=3, batch_size=4, grad_accum=2, log_every=1, checkpoint_every=3, patience=None,
                            select_on="uar")

    def fresh():
        torch.manual_seed(5)
        return StandIn()

    whole = fresh()
    fit(whole, train, val, settings, accelerator, tmp_path / "a", LABELS)
    part = fresh()
    r = fit(part, train, val, settings, accelerator, tmp_path / "b", LABELS, stop_after_steps=7)
    assert r.interrupted and r.steps == 7
    torch.manual_seed(1234)  # the resumed run restores every RNG state from the checkpoint (step 6, mid-epoch 2)
    random.seed(1)
    np.random.seed(1)
    resumed = StandIn()
    rr = fit(resumed, train, val, settings, accelerator, tmp_path / "b", LABELS)
    for (n, p), (_, q) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(p, q), n
    # training time counts both sessions: at least the elapsed time of the last log line, which carries the first
    # session's time from the checkpoint
    times = [json.loads(line)["time"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert r.train_time_s > 0 and rr.train_time_s >= max(times) > 0
    assert strip_times(tmp_path / "a" / "log.jsonl") == strip_times(tmp_path / "b" / "log.jsonl")


def test_early_stopping(accelerator, tmp_path):
    torch.manual_seed(0)
    settings = LoopSettings(epochs=20, batch_size=8, lr_head=1e-9, lr_encoder=1e-9, patience=2, select_on="uar")
    r = fit(StandIn(), make_split(24, 0), make_split(12, 1), settings, accelerator, tmp_path, LABELS)
    assert r.stopped_early and r.epochs_trained == 3 and r.best_epoch == 0  # no better UAR after epoch 0


def test_evaluate_returns_every_clip_in_order(accelerator):
    torch.manual_seed(0)
    model = StandIn().eval()
    split = make_split(13, 2)
    m, logits = evaluate(model, split, accelerator, LABELS, batch_size=4)
    with torch.no_grad():
        direct = model(*(lambda b: (b.features, b.mel_lengths))(_collate(list(split.dataset))))
    assert logits.shape == (13, len(LABELS)) and logits.dtype == np.float32
    assert np.allclose(logits, direct.numpy(), atol=1e-6)
    assert logits.argmax(1).tolist() == direct.argmax(-1).tolist()
    assert m.n == 13 and sum(map(sum, m.confusion)) == 13


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = StandIn()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    from loralens.training.loop import make_scheduler

    sched = make_scheduler(opt, 10, 0.2, "linear")
    for _ in range(3):
        model(torch.randn(2, 8, 5), torch.tensor([5, 3])).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    store = CheckpointStore(tmp_path)
    store.save(3, model, opt, sched, {"epoch": 1, "batch": 2})
    expected_draw = (torch.rand(3), np.random.rand(), random.random())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()

    torch.manual_seed(7)
    model2 = StandIn()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    sched2 = make_scheduler(opt2, 10, 0.2, "linear")
    progress = store.load(model2, opt2, sched2)
    assert progress == {"epoch": 1, "batch": 2}
    assert torch.equal(torch.rand(3), expected_draw[0]) and np.random.rand() == expected_draw[1]
    assert random.random() == expected_draw[2]
    for k, v in model2.state_dict().items():
        assert torch.equal(v, state[k])
    s2 = opt2.state_dict()
    for idx, st in opt_state["state"].items():
        for name, v in st.items():
            assert torch.equal(s2["state"][idx][name], v)
    assert sched2.state_dict() == sched.state_dict() and sched2.get_last_lr() == sched.get_last_lr()
    # layout: no pickles, a pointer to the one complete checkpoint
    assert json.loads((tmp_path / "latest.json").read_text()) == {"dir": "step-00000003"}
    files = sorted(p.name for p in (tmp_path / "step-00000003").iterdir())
    assert files == ["optimizer.safetensors", "rng-0.json", "state.json", "trainable.safetensors"]
    store.save(5, model, opt, sched, {"epoch": 1, "batch": 4})
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000005"]


def test_rng_state_is_json(tmp_path):
    s = rng_state()
    json.dumps(s)
    a = torch.rand(2)
    set_rng_state(s)
    assert torch.equal(torch.rand(2), a)


def test_train_state_is_the_checkpoint_progress_dict():
    from loralens.training.loop import TrainState

    keys = ["epoch", "batch", "step", "best_uar", "best_epoch", "best_validation", "bad_epochs", "done", "log_lines",
            "elapsed", "history", "stopped_early", "interval_loss", "epoch_loss"]
    fresh = TrainState().to_progress()
    assert list(fresh) == keys  # the 14 keys of the checkpoints' progress dict, in their order
    assert fresh["best_uar"] == -1.0 and fresh["best_epoch"] == -1 and fresh["interval_loss"] == [0.0, 0.0]
    state = TrainState(epoch=2, step=9, best_loss=0.5, history=[{"epoch": 0}])
    progress = json.loads(json.dumps(state.to_progress()))
    assert list(progress) == [*keys, "best_loss"]  # written once an epoch has been selected
    assert TrainState.from_progress(progress) == state


def test_loop_settings_are_read_from_the_config():
    from dataclasses import asdict, fields

    from loralens.training.config import TrainConfig, field_value, make_config
    from loralens.training.loop import loop_settings

    defaults = TrainConfig()
    for f in fields(LoopSettings):
        if "config" in f.metadata:  # every default is the config field's default
            assert getattr(LoopSettings(), f.name) == field_value(defaults, f.metadata["config"]), f.name
    cfg = make_config({"epochs": 3, "grad_accum": 2, "augment": {"mixup_alpha": 0.2, "label_smoothing": 0.1}})
    s = loop_settings(cfg)
    assert (s.epochs, s.grad_accum, s.mixup_alpha, s.label_smoothing) == (3, 2, 0.2, 0.1)
    assert asdict(loop_settings(defaults)) == asdict(LoopSettings())

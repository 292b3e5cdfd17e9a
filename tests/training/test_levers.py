"""The recipe levers of the loop (issue 11) on the stand-in model of test_loop: selection on validation loss,
weight averaging of the last epochs, label smoothing and mixup (known answers with a zero learning rate), and exact
resume with all of them on."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from loralens.data.augment import clip_rng, mixup_batch
from loralens.training.checkpoint import trainable_state
from loralens.training.loop import LoopSettings, average_weights, epoch_batches, fit
from tests.training.conftest import strip_times
from tests.training.test_loop import LABELS, StandIn, accelerator, make_split  # noqa: F401 - fixture

BASE = LoopSettings(epochs=5, batch_size=8, lr_head=2e-2, lr_encoder=2e-2, log_every=1, checkpoint_every=3,
                    patience=None, seed=0, select_on="uar")


def _epochs(path):
    return [json.loads(x) for x in (path / "log.jsonl").read_text().splitlines() if '"type": "epoch"' in x]


def test_select_on_loss_picks_the_epoch_of_lowest_validation_loss(accelerator, tmp_path):
    torch.manual_seed(0)
    model = StandIn()
    result = fit(model, make_split(40, 0, separation=0.7), make_split(30, 1, separation=0.7),
                 replace(BASE, select_on="loss"), accelerator, tmp_path, LABELS)
    epochs = _epochs(tmp_path)
    losses = [e["validation"]["loss"] for e in epochs]
    assert result.best_epoch == int(np.argmin(losses))  # earliest on ties, as argmin
    assert result.best_validation["loss"] == pytest.approx(min(losses))
    # the logged loss is the mean cross-entropy of the validation clips (checked on the selected weights)
    val = make_split(30, 1, separation=0.7)
    batch = val.collate([val.dataset[i] for i in range(len(val))])
    model.eval()
    with torch.no_grad():
        ce = F.cross_entropy(model(batch.features, batch.mel_lengths).double(), batch.labels).item()
    assert ce == pytest.approx(min(losses), rel=1e-5)


@pytest.mark.slow
def test_average_last_holds_the_mean_of_the_epochs_ending_with_the_selected_one(accelerator, tmp_path):
    train, val = make_split(40, 0), make_split(30, 1)
    torch.manual_seed(0)
    plain = fit(StandIn(), train, val, BASE, accelerator, tmp_path / "plain", LABELS)
    torch.manual_seed(0)
    model = StandIn()
    result = fit(model, train, val, replace(BASE, average_last=3), accelerator, tmp_path / "avg", LABELS)
    assert result.best_epoch == plain.best_epoch  # averaging changes the final weights, not the trajectory
    best = result.best_epoch
    want_epochs = list(range(max(0, best - 2), best + 1))
    assert result.averaged["epochs"] == want_epochs
    root = tmp_path / "avg" / "checkpoints"
    kept = sorted(int(f.stem.split("-")[1]) for f in root.glob("epoch-*.safetensors"))
    assert set(want_epochs) <= set(kept) and min(kept) >= best - 2  # epochs before the window were pruned
    mean = {n: sum(load_file(str(root / f"epoch-{e:04d}.safetensors"))[n].double() for e in want_epochs)
            / len(want_epochs) for n in trainable_state(model)}
    for n, t in trainable_state(model).items():
        assert torch.allclose(t.double(), mean[n], atol=1e-7), n
    log = [json.loads(x) for x in (tmp_path / "avg" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["type"] == "average" and log[-1]["epochs"] == want_epochs
    assert log[-1]["validation"]["uar"] == pytest.approx(result.averaged["validation"]["uar"])


def test_average_weights_known_answer(tmp_path):
    from loralens.training.checkpoint import save_safetensors

    save_safetensors(tmp_path / "a.safetensors", {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])})
    save_safetensors(tmp_path / "b.safetensors", {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([1.0])})
    got = average_weights([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    assert torch.equal(got["w"], torch.tensor([2.0, 4.0])) and torch.equal(got["b"], torch.tensor([0.5]))


def _first_epoch_loss(accelerator, tmp_path, settings) -> tuple[float, torch.nn.Module, object]:
    """Train one epoch with learning rate 0 (weights never move) and return the logged epoch train loss."""
    torch.manual_seed(0)
    model = StandIn()
    model.drop.p = 0.0
    train = make_split(20, 0)
    s = replace(settings, epochs=1, lr_head=1e-30, lr_encoder=1e-30, weight_decay=0.0, grad_clip=None)
    fit(model, train, make_split(9, 1), s, accelerator, tmp_path, LABELS)
    return _epochs(tmp_path)[0]["train_loss"], model, train


def test_label_smoothing_known_answer(accelerator, tmp_path):
    loss, model, train = _first_epoch_loss(accelerator, tmp_path, replace(BASE, label_smoothing=0.2))
    batch = train.collate([train.dataset[i] for i in range(len(train))])
    with torch.no_grad():
        logp = F.log_softmax(model(batch.features, batch.mel_lengths).double(), -1)
    # smoothed target: 0.8 on the class + 0.2 / 3 on every class
    want = -(0.8 * logp.gather(1, batch.labels[:, None])[:, 0] + 0.2 / 3 * logp.sum(-1)).mean().item()
    assert loss == pytest.approx(want, rel=1e-5)


def test_mixup_known_answer(accelerator, tmp_path):
    settings = replace(BASE, mixup_alpha=0.4)
    loss, model, train = _first_epoch_loss(accelerator, tmp_path, settings)
    total, n = 0.0, 0
    with torch.no_grad():
        for i, b in enumerate(epoch_batches(train.lengths, 8, settings.seed, 0)):
            batch = train.collate([train.dataset[j] for j in b])
            x, lens, ya, yb, lam = mixup_batch(batch.features, batch.mel_lengths, batch.labels, 0.4,
                                               clip_rng(settings.seed, 0, i, 1))
            logits = model(x, lens).double()
            total += (lam * F.cross_entropy(logits, ya, reduction="sum")
                      + (1 - lam) * F.cross_entropy(logits, yb, reduction="sum")).item()
            n += len(b)
    assert loss == pytest.approx(total / n, rel=1e-5)


def test_mixup_batch_known_answer():
    x = torch.arange(12, dtype=torch.float32).reshape(3, 1, 4)
    lens = torch.tensor([4, 2, 3])
    y = torch.tensor([0, 1, 2])
    rng = np.random.default_rng(0)
    mixed, ml, ya, yb, lam = mixup_batch(x, lens, y, 0.5, rng)
    ref = np.random.default_rng(0)
    lam_ref = ref.beta(0.5, 0.5)
    perm = torch.as_tensor(ref.permutation(3))
    assert lam == pytest.approx(lam_ref)
    assert torch.allclose(mixed, lam_ref * x + (1 - lam_ref) * x[perm])
    assert torch.equal(ml, torch.maximum(lens, lens[perm])) and torch.equal(ya, y) and torch.equal(yb, y[perm])
    with pytest.raises(Exception, match="alpha"):
        mixup_batch(x, lens, y, 0.0, rng)


@pytest.mark.slow
def test_resume_with_every_loop_lever_on_is_exact(accelerator, tmp_path):
    train, val = make_split(30, 0), make_split(12, 1)
    settings = LoopSettings(epochs=4, batch_size=4, grad_accum=2, log_every=1, checkpoint_every=3, patience=None,
                            select_on="loss", average_last=2, mixup_alpha=0.3, label_smoothing=0.1)

    def fresh():
        torch.manual_seed(5)
        return StandIn()

    whole = fresh()
    fit(whole, train, val, settings, accelerator, tmp_path / "a", LABELS)
    part = fresh()
    r = fit(part, train, val, settings, accelerator, tmp_path / "b", LABELS, stop_after_steps=9)
    assert r.interrupted
    torch.manual_seed(1234)
    random.seed(1)
    np.random.seed(1)
    resumed = StandIn()
    fit(resumed, train, val, settings, accelerator, tmp_path / "b", LABELS)
    for (n, p), (_, q) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(p, q), n
    assert strip_times(tmp_path / "a" / "log.jsonl") == strip_times(tmp_path / "b" / "log.jsonl")


def test_select_on_last_keeps_the_final_epoch_and_never_stops_early(accelerator, tmp_path):
    torch.manual_seed(0)
    model = StandIn()
    settings = replace(BASE, select_on="last", patience=1)
    result = fit(model, make_split(40, 0, separation=0.7), make_split(30, 1, separation=0.7), settings,
                 accelerator, tmp_path, LABELS)
    epochs = _epochs(tmp_path)
    assert len(epochs) == settings.epochs and result.best_epoch == settings.epochs - 1
    assert result.best_validation["uar"] == epochs[-1]["validation"]["uar"]

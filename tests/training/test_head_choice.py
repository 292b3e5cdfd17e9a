"""`head.hidden_state: auto`: the choice of hidden state per fold, and runs that use it."""

from __future__ import annotations

import json

import pytest
import torch

from loralens.errors import ConfigError, RunFolderError
from loralens.training.config import make_config
from loralens.training.head_choice import choose_hidden_state, fold_config

from .conftest import base_settings, train_in_process


def _pooled(informative: int, n_speakers: int = 6, per: int = 20, states: int = 4, d: int = 8) -> tuple:
    """Clips of `n_speakers` speakers whose hidden state `informative` carries the class (a mean shift), others
    noise; each speaker also shifts every state (speaker variation)."""
    g = torch.Generator().manual_seed(0)
    n = n_speakers * per
    labels = torch.arange(n) % 3
    speakers = [f"s{i // per}" for i in range(n)]
    x = torch.randn(n, states, d, generator=g)
    x += torch.randn(n_speakers, 1, d, generator=g).repeat_interleave(per, 0)
    x[:, informative, :3] += 4.0 * torch.nn.functional.one_hot(labels, 3).float()
    return x, labels.tolist(), speakers


@pytest.mark.parametrize("informative", [1, 3])
def test_the_hidden_state_that_carries_the_class_is_chosen(informative):
    x, y, spk = _pooled(informative)
    c = choose_hidden_state(x, y, spk)
    assert c["hidden_state"] == informative and c["candidates"] == [1, 2, 3]
    assert c["n_splits"] == 4 and c["speakers"] == 6 and c["clips"] == 120
    assert max(c["cv_uar"]) == c["cv_uar"][informative - 1] > 0.9 > max(c["cv_uar"][:informative - 1], default=0)


def test_the_choice_needs_two_speakers_and_matching_inputs():
    x, y, _ = _pooled(1)
    with pytest.raises(ConfigError, match="at least 2 training speakers"):
        choose_hidden_state(x, y, ["one"] * len(y))
    with pytest.raises(ConfigError, match="do not match"):
        choose_hidden_state(x[:5], y, ["a"] * len(y))


def test_fold_config_reads_the_folds_choice(tmp_path):
    cfg = make_config({"head": {"hidden_state": "auto"}})
    with pytest.raises(RunFolderError, match="hidden_state.json"):
        fold_config(cfg, tmp_path)
    (tmp_path / "hidden_state.json").write_text(json.dumps({"hidden_state": 2}))
    assert fold_config(cfg, tmp_path).head.hidden_state == 2
    plain = make_config({"head": {"weighted_layer_sum": True}})
    assert fold_config(plain, tmp_path) is plain


@pytest.mark.parametrize("method", ["frozen", "lora"])
def test_a_run_with_auto_chooses_per_fold_and_its_models_follow(method, tiny_model_dir, synthetic_root, feature_cache,
                                                               tmp_path):
    from loralens.inference.fold_model import load_run_models
    from loralens.inference.predict import predict

    s = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / "run", method=method, epochs=2,
                      head={"projector_dim": 16, "hidden_state": "auto", "standardize": True, "speaker_norm": False},
                      lp_ft_epochs=2 if method == "lora" else 0)
    if method == "frozen":
        s.pop("lora")
    summary = train_in_process(s)
    for k in (0, 1):
        fold = tmp_path / "run" / f"fold_{k}"
        choice = json.loads((fold / "hidden_state.json").read_text())
        assert choice["hidden_state"] in (1, 2) and len(choice["cv_uar"]) == 2
        assert json.loads((fold / "metrics.json").read_text())["hidden_state"] == choice["hidden_state"]
        clf = load_run_models(tmp_path / "run", fold=k).folds[0].classifier
        assert clf.runner.n_layers == choice["hidden_state"]
    # a rerun reads the choices back and finds every fold complete
    assert train_in_process(s)["folds"] == summary["folds"]
    res = predict(tmp_path / "run", sorted(synthetic_root.rglob("*.wav"))[:2], fold=0)
    assert len(res.clips) == 2


def test_auto_all_chooses_the_layer_sum_when_every_state_carries_a_little():
    g = torch.Generator().manual_seed(1)
    n_speakers, per, states, d = 6, 20, 4, 8
    n = n_speakers * per
    labels = torch.arange(n) % 3
    x = torch.randn(n, states, d, generator=g) * 2.0
    x[:, 1:, :3] += 1.2 * torch.nn.functional.one_hot(labels, 3).float()[:, None]  # weak, in every state
    speakers = [f"s{i // per}" for i in range(n)]
    c = choose_hidden_state(x, labels.tolist(), speakers, with_sum=True)
    assert c["candidates"] == [1, 2, 3, "all"] and c["hidden_state"] == "all"
    assert c["cv_uar"][-1] > max(c["cv_uar"][:-1])
    # one informative state still wins over the sum that dilutes it
    x1, y1, spk1 = _pooled(2)
    assert choose_hidden_state(x1, y1, spk1, with_sum=True)["hidden_state"] == 2


def test_the_choice_all_is_the_weighted_layer_sum_head(tmp_path):
    cfg = make_config({"head": {"hidden_state": "auto-all"}})
    assert (cfg.head.weighted_layer_sum, cfg.head.standardize, cfg.head.speaker_norm) == (False, True, True)
    (tmp_path / "hidden_state.json").write_text(json.dumps({"hidden_state": "all"}))
    head = fold_config(cfg, tmp_path).head
    assert (head.hidden_state, head.weighted_layer_sum, head.layer_norm, head.speaker_norm) == (None, True, True, True)
    (tmp_path / "hidden_state.json").write_text(json.dumps({"hidden_state": 3}))
    assert fold_config(cfg, tmp_path).head.hidden_state == 3
    with pytest.raises(ConfigError, match="auto-all"):
        make_config({"head": {"hidden_state": "every"}})


def test_an_auto_all_run_with_a_logistic_head_stage(tiny_model_dir, synthetic_root, feature_cache, tmp_path):
    """LoRA with `hidden_state: auto-all` and `lp_fit: logistic`: the probe stage is the logistic regression on the
    chosen input (its validation UAR is the head's, before the adapters train), and the folds' models rebuild."""
    from loralens.data.corpora import load_corpus
    from loralens.inference.fold_model import load_run_models
    from loralens.inference.predict import InputClip, predict

    by_id = load_corpus("manifest", synthetic_root).by_id()
    s = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / "run", method="lora", epochs=1,
                      head={"projector_dim": 16, "hidden_state": "auto-all"}, lp_fit="logistic")
    train_in_process(s)
    for k in (0, 1):
        fold = tmp_path / "run" / f"fold_{k}"
        choice = json.loads((fold / "hidden_state.json").read_text())
        assert choice["candidates"] == [1, 2, "all"]
        metrics = json.loads((fold / "metrics.json").read_text())
        assert metrics["hidden_state"] == choice["hidden_state"]
        assert metrics["linear_probe"]["fit"] == "logistic" and metrics["linear_probe"]["epochs"] == 0
        clf = load_run_models(tmp_path / "run", fold=k).folds[0].classifier
        assert clf.head.use_weighted_layer_sum == (choice["hidden_state"] == "all")
        # predict rebuilds the fold's model (its own input) and reproduces its test predictions
        pred = json.loads((fold / "predictions.json").read_text())
        clips = [InputClip(i, by_id[i].path, by_id[i].label, by_id[i].speaker) for i in pred["ids"]]
        got = predict(tmp_path / "run", clips, fold=k, device="cpu")
        for c, want in zip(got.clips, pred["probabilities"]):
            assert [c.probabilities[lab] for lab in pred["labels"]] == pytest.approx(want, abs=1e-4)

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
    plain = make_config({})
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

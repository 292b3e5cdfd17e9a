"""Probing analysis: decodable labels are found, shuffled labels stay at chance, speaker control, plot, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from loralens.analysis import probing
from loralens.analysis.context import AnalysisContext, SplitData
from loralens.analysis.suite import ANALYSES, run_analysis
from loralens.data.batching import Batch
from tests.analysis.helpers import LABEL_NAMES_4, tiny_classifiers, tiny_context


def coded_split(n_clips: int, speakers: list[str], seed: int, prefix: str, batch_size: int = 10,
                mel_frames: int = 40, strength: float = 1.5) -> SplitData:
    """Short random clips whose mel bins carry a class pattern (fixed across splits) and a speaker pattern."""
    fixed = torch.Generator().manual_seed(123)
    class_pat = torch.randn(4, 80, 1, generator=fixed)
    spk_pat = {s: torch.randn(80, 1, generator=torch.Generator().manual_seed(1000 + i))
               for i, s in enumerate(sorted(set(speakers)))}
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n_clips) % 4)[torch.randperm(n_clips, generator=gen)]
    spk = [speakers[i % len(speakers)] for i in range(n_clips)]
    batches = []
    for start in range(0, n_clips, batch_size):
        idx = range(start, min(start + batch_size, n_clips))
        feats = torch.randn(len(idx), 80, mel_frames, generator=gen)
        for r, i in enumerate(idx):
            feats[r] += strength * class_pat[labels[i]] + strength * spk_pat[spk[i]]
        lengths = torch.randint(mel_frames // 2, mel_frames + 1, (len(idx),), generator=gen)
        batches.append(Batch(feats, lengths, labels[list(idx)].clone(), [f"{prefix}_{i}" for i in idx]))
    return SplitData(batches, spk)


@pytest.fixture(scope="module")
def coded_result():
    adapted, frozen = tiny_classifiers()
    ctx = AnalysisContext(
        adapted=adapted, frozen=frozen, label_names=LABEL_NAMES_4,
        train=coded_split(120, [f"tr{i}" for i in range(6)], 1, "train"),
        test=coded_split(80, [f"te{i}" for i in range(2)], 2, "test"),
        n_boot=200, seed=0, options={"probing": {"inner_folds": 3, "c": [0.1, 1.0]}},
    )
    with torch.no_grad():
        return probing.run(ctx)


@pytest.mark.slow
def test_decodable_labels_and_shuffled_chance(coded_result):
    r = coded_result
    L = 2
    for key in ("adapted", "frozen"):
        uar = r["emotion"][key]["uar"]
        assert len(uar["value"]) == L + 1
        assert min(uar["value"]) > 0.8  # the class pattern is linearly decodable everywhere
        assert all(lo <= v <= hi for lo, v, hi in zip(uar["low"], uar["value"], uar["high"]))
        assert len(r["emotion"][key]["cv_uar"]["fold_std"]) == L + 1
        assert min(r["emotion"][key]["cv_uar"]["value"]) > 0.8
        assert set(r["emotion"][key]["c"]) <= {0.1, 1.0}  # chosen by the speaker-grouped inner CV
    shuffled = np.asarray(r["emotion"]["shuffled_adapted"]["uar"]["value"])
    # 80 test clips (20 per class): UAR std at chance is about 0.05 per layer; mean of 3 layers within 0.15.
    assert abs(shuffled.mean() - 0.25) < 0.15
    assert r["chance"] == {"emotion": 0.25, "speaker": pytest.approx(1 / 6)}
    # speaker pattern is decodable too (within-speaker folds over the 6 training speakers)
    assert min(r["speaker"]["adapted"]["accuracy"]["value"]) > 0.6
    assert r["speaker"]["n_speakers"] == 6
    # the paired gap: adapted - frozen UAR per hidden state, its band from the same resamples
    gap = r["emotion_gap"]["uar"]
    diff = np.subtract(r["emotion"]["adapted"]["uar"]["value"], r["emotion"]["frozen"]["uar"]["value"])
    assert gap["value"] == pytest.approx(list(diff), abs=1e-12)
    assert all(lo <= v <= hi for lo, v, hi in zip(gap["low"], gap["value"], gap["high"]))


@pytest.mark.slow
def test_random_features_near_chance_and_contract(tmp_path):
    ctx = tiny_context(n_boot=30, options={"probing": {"speaker_folds": 2}})
    out = run_analysis(ANALYSES["probing"], ctx, tmp_path / "probing")
    back = json.loads((tmp_path / "probing" / "result.json").read_text())
    assert back["emotion"]["adapted"]["uar"]["value"] == out["emotion"]["adapted"]["uar"]["value"]
    assert back["n_layers"] == 2 and back["layers"] == [0, 1]
    for key in ("adapted", "frozen"):
        assert set(back["emotion"][key]["uar"]) >= {"value", "low", "high", "std"}
        assert set(back["speaker"][key]["accuracy"]) >= {"value", "low", "high"}
    for rel in back["meta"]["figures"]:
        path = tmp_path / "probing" / rel
        assert path.stat().st_size > 0
    png = tmp_path / "probing" / "figures" / "probing.png"
    import matplotlib.image

    assert matplotlib.image.imread(png).ndim == 3
    assert "hidden state" in back["reading"]


def test_needs_train_and_frozen():
    from loralens.errors import ConfigError

    with pytest.raises(ConfigError):
        probing.run(tiny_context(train=False))
    with pytest.raises(ConfigError):
        probing.run(tiny_context(frozen=False))

"""`loralens demo`: its run configuration is valid and plans on embedded tiny.en with the synthetic corpus, and the
command generates the corpus once and runs the pipeline on it. The demo's training itself is not run here (about
3 CPU-minutes even when cut to 48 clips and 2 epochs); tests/test_pipeline.py runs the same pipeline on a tiny model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loralens import demo
from loralens.cli import main
from loralens.pipeline import RunConfig, check_run_config, load_run_config, run_pipeline


def test_demo_config_is_valid_and_round_trips(tmp_path):
    cfg = demo.demo_config(tmp_path / "demo", seed=3)
    variants = check_run_config(cfg)
    assert list(variants) == ["lora", "frozen"]
    lora, frozen = variants["lora"], variants["frozen"]
    assert (lora.model, lora.method, lora.lora.r, lora.seed, lora.corpus) == ("tiny.en", "lora", 8, 3, "manifest")
    assert frozen.method == "frozen" and frozen.folds_file == lora.folds_file == tmp_path / "demo" / "folds.json"
    assert lora.corpus_root == tmp_path / "demo" / "corpus"
    assert cfg.synthetic and cfg.analysis.folds == [0] and cfg.report
    # The run.yaml snapshot of the demo loads back to the same configuration.
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert load_run_config(path) == cfg


@pytest.fixture
def small_demo(monkeypatch):
    # 4 speakers (4 folds of 1 test, 1 validation, 2 training speakers) x 4 classes x 1 clip
    monkeypatch.setattr(demo, "DEMO_SPEAKERS", 4)
    monkeypatch.setattr(demo, "DEMO_CLIPS_PER_CLASS", 1)


@pytest.mark.slow
def test_demo_dry_run_plans_on_tiny_en(tmp_path, small_demo):
    from loralens.models.registry import is_installed

    if not is_installed("tiny.en"):
        pytest.skip("embedded tiny.en is not installed")
    from loralens.data.synthetic import generate_corpus

    out = tmp_path / "demo"
    generate_corpus(out / "corpus", n_speakers=4, clips_per_class_per_speaker=1, seed=0)
    lines: list[str] = []
    run_pipeline(demo.demo_config(out), echo=lines.append, dry_run=True)
    text = "\n".join(lines)
    assert "model tiny.en, method lora" in text and "model tiny.en, method frozen" in text
    assert text.count("to run") == 8  # 2 variants x 4 folds
    assert not (out / "train").exists()


def test_demo_command_generates_the_corpus_once(tmp_path, small_demo, monkeypatch, capsys):
    seen: list[RunConfig] = []

    def fake_pipeline(cfg: RunConfig, *, echo, dry_run: bool = False) -> Path:
        seen.append(cfg)
        return cfg.out / "report.html"

    monkeypatch.setattr(demo, "run_pipeline", fake_pipeline)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "generating the synthetic corpus" in printed
    assert f"The report is at: {(out / 'report.html').resolve()}" in printed
    manifest = (out / "corpus" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 4 * 4 * 1
    # What the command hands the pipeline, field by field (not the demo config compared with itself).
    cfg = seen[0]
    assert cfg.out == out and cfg.synthetic and cfg.method == "lora" and cfg.baseline
    assert cfg.train["seed"] == 2 and cfg.train["model"] == "tiny.en" and cfg.train["corpus"] == "manifest"
    assert Path(cfg.train["corpus_root"]) == out / "corpus"
    assert Path(cfg.train["feature_cache"]) == out / "feature_cache"
    assert cfg.analysis.folds == [0]
    before = (out / "corpus" / "manifest.csv").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--seed", "2"]) == 0
    assert "generating" not in capsys.readouterr().out
    assert (out / "corpus" / "manifest.csv").stat().st_mtime_ns == before and len(seen) == 2

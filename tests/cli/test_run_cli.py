"""`loralens run`: a run from flags alone (one fold, no baseline), a re-run from the run's own run.yaml that redoes
nothing, the dry-run plan of the variants the flags ask for, and bad values that exit 2 naming the field."""

from __future__ import annotations

import pytest
import yaml

from loralens.cli import main
from loralens.io import read_json
from tests.pipeline_helpers import copy_run, failing_analysis, mtimes, stages


def _flags(i: dict) -> list[str]:
    return ["--corpus", "manifest", "--corpus-root", str(i["corpus"]), "--model", str(i["model"]), "--window", "trim",
            "--folds", "speaker-kfold", "--folds-k", "2", "--epochs", "1", "--batch-size", "4"]


@pytest.mark.slow
def test_run_from_flags_one_fold_without_baseline(tmp_path, pipeline_inputs, monkeypatch, capsys):
    i = pipeline_inputs
    monkeypatch.setenv("LORALENS_CACHE", str(tmp_path / "cache"))  # the default feature cache
    out = tmp_path / "out"
    code = main(["run", *_flags(i), "--out", str(out), "--fold", "1", "--ranks", "2", "--no-baseline",
                 "--analyses", "layer_contribution", "--test-per-class", "2", "--n-boot", "10", "--seed", "1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    # ends with the results table, then the report path, printed once
    tail = printed.rstrip().splitlines()
    assert tail[-1] == f"report: {out / 'report.html'}" and printed.count(str(out / "report.html")) == 1
    assert tail[-3].split() == ["variant", "test", "UAR", "%", "WAR", "%", "macro-F1", "%", "folds"]
    assert tail[-2].startswith("lora_r2 ") and tail[-2].split()[-1] == "1"
    assert sorted(p.name for p in (out / "train").iterdir()) == ["lora_r2"]
    run_cfg = yaml.safe_load((out / "train" / "lora_r2" / "config.yaml").read_text())
    assert (run_cfg["lora"]["r"], run_cfg["lora"]["alpha"], run_cfg["seed"], run_cfg["fold"]) == (2, 4, 1, 1)
    assert [p.name for p in (out / "train" / "lora_r2").glob("fold_*")] == ["fold_1"]
    assert (tmp_path / "cache").is_dir()
    # --fold 1 without --analysis-folds: the trained fold is the analysed one
    result = read_json(out / "analysis" / "lora_r2" / "fold_1" / "layer_contribution" / "result.json")
    assert result["meta"]["n_test_clips"] == 8 and result["meta"]["n_boot"] == 10
    assert list(stages(out)) == ["data", "train:lora_r2", "analysis:lora_r2:fold_1", "report"]
    assert yaml.safe_load((out / "run.yaml").read_text())["baseline"] is False


def test_rerun_from_run_yaml_redoes_nothing(tmp_path, pipeline_run, capsys):
    out = copy_run(pipeline_run[0], tmp_path / "out")
    metrics = mtimes(out, "train/*/fold_*/metrics.json")
    results = mtimes(out, "analysis/*/fold_*/*/result.json")
    code = main(["run", "--config", str(out / "run.yaml"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert printed.count("training complete") == 2
    assert not [line for line in printed.splitlines() if line.startswith("analysis ")]  # nothing analysed
    assert mtimes(out, "train/*/fold_*/metrics.json") == metrics
    assert mtimes(out, "analysis/*/fold_*/*/result.json") == results
    assert {s["status"] for n, s in stages(out).items() if n != "report"} == {"skipped"}


def test_other_training_settings_are_refused_before_anything_runs(tmp_path, pipeline_run, capsys):
    out = copy_run(pipeline_run[0], tmp_path / "out")
    before = (out / "run.yaml").read_text()
    assert main(["run", "--config", str(out / "run.yaml"), "--out", str(out), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "variant(s) trained with other settings: lora_r4 (epochs: 1 there, 2 now); frozen (epochs" in err
    assert "--out" in err and (out / "run.yaml").read_text() == before


def test_failed_analysis_exits_1_after_the_report(tmp_path, pipeline_run, monkeypatch, capsys):
    out = copy_run(pipeline_run[0], tmp_path / "out")
    (out / "analysis" / "lora_r4" / "fold_0" / "probing" / "result.json").unlink()
    failing_analysis(monkeypatch, "probing")
    before = (out / "report.html").stat().st_mtime_ns
    assert main(["run", "--config", str(out / "run.yaml"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "analysis:lora_r4:fold_0 (probing: RuntimeError: probing broke (simulated))" in err
    assert "re-run the same command" in err and (out / "report.html").stat().st_mtime_ns > before


def test_dry_run_plans_every_variant(tmp_path, pipeline_inputs, capsys):
    i = pipeline_inputs
    out = tmp_path / "out"
    code = main(["run", *_flags(i), "--out", str(out), "--ranks", "2,8", "--seeds", "0,1", "--full", "--dry-run"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for v in ("lora_r2_s0", "lora_r2_s1", "lora_r8_s0", "lora_r8_s1", "full", "frozen"):
        assert f"== variant {v}\n" in printed
    assert "method full" in printed and "method frozen" in printed
    assert not out.exists()


def test_bad_values_exit_2_naming_the_field(tmp_path, capsys):
    bad = tmp_path / "run.yaml"
    bad.write_text(yaml.safe_dump({"train": {"epochs": 0, "bogus": 1}, "ranks": [8]}))
    assert main(["run", "--config", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "train.epochs" in err and "train.bogus" in err and str(bad) in err
    assert main(["run", "--n-boot", "3", "--dry-run"]) == 2
    assert "analysis.n_boot" in capsys.readouterr().err
    assert main(["run", "--analyses", "layer_contribution,nope", "--dry-run"]) == 2
    assert "analysis.names" in capsys.readouterr().err
    assert main(["run", "--ranks", "8,x", "--dry-run"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()

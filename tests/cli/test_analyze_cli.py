"""`loralens analyze RUN --baseline FROZEN` on the trained tiny run of tests/test_pipeline.py: results written, the
same numbers as the pipeline's under the same settings, reused on a second call, recomputed with --force; the
analysis list; bad folds, baselines and values exit 2 with the reason."""

from __future__ import annotations

import pytest
import torch

from loralens.cli import main
from loralens.io import read_json
from tests.pipeline_helpers import failing_analysis, mtimes

# The pipeline's analysis settings (tests/test_pipeline.py tiny_run_settings): same settings, same key.
SETTINGS = ["--n-boot", "10", "--test-per-class", "2", "--train-per-class", "2", "--batch-size", "8"]


@pytest.fixture(scope="module")
def run(pipeline_run):
    return pipeline_run[0]


def test_analyze_writes_reuses_and_forces(run, tmp_path, capsys):
    out = tmp_path / "analysis"
    args = ["analyze", str(run / "train" / "lora_r4"), "--baseline", str(run / "train" / "frozen"),
            "--analyses", "layer_contribution,similarity", "--out", str(out), *SETTINGS]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "analysis layer_contribution ..." in printed and "analysis similarity ..." in printed
    assert printed.count("layer_contribution: ") == 1 and printed.count("similarity: ") == 1
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["layer_contribution", "similarity"]
    assert (out / "verdicts.json").is_file()
    assert "verdict, delayed specialization: " in printed
    for name in ("layer_contribution", "similarity"):
        mine = read_json(out / name / "result.json")
        theirs = read_json(run / "analysis" / "lora_r4" / "fold_0" / name / "result.json")
        assert mine["meta"]["key"] == theirs["meta"]["key"]
        strip = ("meta", "reading")
        assert {k: v for k, v in mine.items() if k not in strip} == {k: v for k, v in theirs.items() if k not in strip}

    before = mtimes(out, "*/result.json")
    assert main(args) == 0
    assert "complete, reused: layer_contribution, similarity" in capsys.readouterr().out
    assert mtimes(out, "*/result.json") == before

    assert main([*args, "--force"]) == 0
    after = mtimes(out, "*/result.json")
    assert all(after[k] > before[k] for k in before)


def test_failed_analysis_exits_1(run, tmp_path, monkeypatch, capsys):
    failing_analysis(monkeypatch, "similarity")
    out = tmp_path / "analysis"
    code = main(["analyze", str(run / "train" / "lora_r4"), "--baseline", str(run / "train" / "frozen"),
                 "--analyses", "layer_contribution,similarity", "--out", str(out), *SETTINGS])
    captured = capsys.readouterr()
    assert code == 1
    assert "layer_contribution: " in captured.out and "similarity FAILED: RuntimeError" in captured.out
    assert "analysis failed: similarity: RuntimeError: similarity broke (simulated)" in captured.err
    assert (out / "layer_contribution" / "result.json").exists() and (out / "similarity" / "error.json").exists()


def test_list_names_every_analysis(capsys):
    from loralens.analysis.suite import available

    assert main(["analyze", ".", "--list"]) == 0
    printed = capsys.readouterr().out
    for name, a in available().items():
        assert name in printed and a.title in printed
    assert "needs frozen baseline" in printed


def test_bad_arguments_exit_2(run, tmp_path, capsys):
    lora, frozen = str(run / "train" / "lora_r4"), str(run / "train" / "frozen")
    out = str(tmp_path / "a")
    assert main(["analyze", lora, "--baseline", frozen, "--fold", "5", "--analyses", "layer_contribution",
                 "--out", out]) == 2
    assert "fold 5 does not exist" in capsys.readouterr().err
    assert main(["analyze", lora, "--baseline", lora, "--analyses", "similarity", "--out", out]) == 2
    assert "not 'frozen'" in capsys.readouterr().err
    assert main(["analyze", lora, "--analyses", "similarity", "--out", out]) == 2
    assert "'similarity': compare with the frozen baseline" in capsys.readouterr().err
    assert main(["analyze", lora, "--analyses", "nope", "--out", out]) == 2
    assert "unknown analysis ['nope']" in capsys.readouterr().err
    assert main(["analyze", lora, "--n-boot", "3"]) == 2
    assert "--n-boot" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["analyze", lora, "--baseline", frozen, "--analyses", "layer_contribution", "--device", "cuda",
                     "--out", out]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path)]) == 2
    assert "config.yaml: not found" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_rerunning_one_analysis_keeps_the_others_evidence_in_the_verdicts(run, tmp_path):
    """Verdicts use every complete result of the fold, not only the analyses run in this call."""
    import shutil

    out = tmp_path / "analysis"
    shutil.copytree(run / "analysis" / "lora_r4" / "fold_0", out)
    full = read_json(out / "verdicts.json")
    assert main(["analyze", str(run / "train" / "lora_r4"), "--baseline", str(run / "train" / "frozen"),
                 "--analyses", "weight_analysis", "--force", "--out", str(out), *SETTINGS]) == 0
    again = read_json(out / "verdicts.json")
    for claim in ("delayed_specialization", "forward_alignment_backward_differentiation"):
        assert again[claim]["supported"] == full[claim]["supported"]
        assert again[claim]["numbers"] == full[claim]["numbers"]

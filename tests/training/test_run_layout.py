from pathlib import Path

from loralens.training.run_folder import RunFolder
from loralens.training.run_layout import RunLayout, fold_dirs, fold_index, fold_name


def test_fold_names_parse_one_way():
    assert fold_name(3) == "fold_3" and fold_index("fold_3") == 3 and fold_index("fold_10") == 10
    for other in ("fold_", "fold_x", "fold_-1", "xfold_1", "fold_1a", "aggregate", "fold1"):
        assert fold_index(other) is None, other


def test_fold_dirs_are_the_fold_folders_by_index(tmp_path: Path):
    for name in ("fold_10", "fold_2", "fold_0", "fold_a", "aggregate"):
        (tmp_path / name).mkdir()
    (tmp_path / "fold_5").write_text("a file, not a fold folder")
    assert fold_dirs(tmp_path) == [(0, tmp_path / "fold_0"), (2, tmp_path / "fold_2"), (10, tmp_path / "fold_10")]
    assert fold_dirs(tmp_path / "absent") == []
    assert RunFolder(tmp_path).fold_indices() == [0, 2, 10]


def test_run_layout_names_every_path(tmp_path: Path):
    out = RunLayout(str(tmp_path))
    assert out.root == tmp_path
    assert [out.run_yaml, out.stages, out.environment, out.data_summary, out.bad_files, out.folds, out.report] == [
        tmp_path / p for p in ("run.yaml", "stages.json", "environment.json", "data/summary.json",
                               "data/bad_files.json", "folds.json", "report.html")]
    assert out.variant("lora_r8") == tmp_path / "train" / "lora_r8"
    assert out.analysis_fold("lora_r8", 2) == tmp_path / "analysis" / "lora_r8" / "fold_2"
    assert out.aggregate("lora_r8") == tmp_path / "analysis" / "lora_r8" / "aggregate"
    assert out.variant_names() == [] and out.analysed_variants() == []
    out.variant("frozen").mkdir(parents=True)
    out.analysis_fold("lora", 1).mkdir(parents=True)
    out.aggregate("lora").mkdir()
    assert out.variant_names() == ["frozen"] and out.analysed_variants() == ["lora"]
    assert out.analysed_folds("lora") == [(1, out.analysis_fold("lora", 1))]
    assert RunFolder(out.variant("frozen")).analysis(1) == out.variant("frozen") / "analysis" / "fold_1"

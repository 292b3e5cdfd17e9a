"""`loralens train`: YAML config with flags on top, dry run, a frozen run end to end, and errors naming the field."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from loralens.cli.train import main, train
from loralens.io import read_json
from tests.training.conftest import base_settings, cli_args, feature_cache, one_thread, synthetic_root, tiny_model_dir  # noqa: F401 (fixtures)


def _yaml_config(path, settings):
    path.write_text(yaml.safe_dump(settings))
    return path


def test_config_file_with_flag_overrides_dry_run(tiny_model_dir, synthetic_root, feature_cache, tmp_path):
    settings = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / "run")
    cfg = _yaml_config(tmp_path / "train.yaml", settings)
    res = CliRunner().invoke(train, ["--config", str(cfg), "--fold", "0", "--lora-r", "2", "--dry-run"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "fold0" in res.output and "fold1" not in res.output
    # r=2 from the flag (the file says 4): 2 v_proj x (A 2x64 + B 64x2) + head (64x16+16 + 16x4+4 + the default
    # head's 3 layer weights: embeddings and 2 layers)
    assert f"{2 * 2 * 64 * 2 + 64 * 16 + 16 + 16 * 4 + 4 + 3:,} trainable" in res.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_frozen_run_end_to_end(tiny_model_dir, synthetic_root, feature_cache, tmp_path, capsys):
    settings = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / "run", method="frozen",
                             epochs=3)
    settings.pop("lora")
    cfg = _yaml_config(tmp_path / "train.yaml", settings)
    with one_thread():
        code = main(["--config", str(cfg), "--epochs", "2", "--patience", "0", "--grad-clip", "0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "over 2 fold(s)" in out
    snap = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert snap["epochs"] == 2 and snap["method"] == "frozen" and snap["patience"] is None and snap["grad_clip"] is None
    s = read_json(tmp_path / "run" / "summary.json")
    assert set(s["folds"]) == {"fold0", "fold1"} and s["mean_std"]["uar"]["n"] == 2
    assert all(read_json(tmp_path / "run" / f"fold_{k}" / "metrics.json")["epochs_trained"] == 2 for k in (0, 1))


def test_bad_values_name_the_field(tmp_path, capsys):
    cfg = _yaml_config(tmp_path / "bad.yaml", {"epochs": 2, "lora": {"r": 0}, "bogus": 1})
    assert main(["--config", str(cfg), "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "lora.r" in err and "bogus" in err and "batch_size" in err and "bad.yaml" in err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_missing_corpus_root_is_explained(tiny_model_dir, tmp_path, capsys):
    code = main(["--corpus", "manifest", "--model", str(tiny_model_dir), "--run-dir", str(tmp_path / "r"), "--dry-run"])
    assert code == 2
    assert "corpus_root" in capsys.readouterr().err


def test_help_lists_options():
    res = CliRunner().invoke(train, ["--help"])
    assert res.exit_code == 0
    for opt in ("--config", "--method", "--lora-r", "--window", "--patience", "--dry-run", "--run-dir"):
        assert opt in res.output


def test_cli_args_helper_round_trip(tiny_model_dir, synthetic_root, feature_cache, tmp_path):
    # the helper other tests use turns settings into flags that validate to the same configuration
    from loralens.training.config import load_config, make_config

    settings = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / "run")
    args = cli_args(settings)
    assert "--lora-r" in args and "--folds-k" in args
    assert make_config(settings).lora.r == 4 and load_config(None, {"lora.r": 4}).lora.r == 4

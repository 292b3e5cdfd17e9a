"""`loralens.pipeline` end to end on a tiny random Whisper (saved as a Hugging Face folder) and a small synthetic
corpus: every stage's outputs, a re-run that trains and analyses nothing, a crash mid-analysis that redoes one
analysis, a new rank that trains only the new variant, failures recorded in stages.json, and config errors that name
the field. The full pipeline runs once per test session (the `pipeline_run` fixture, tests/conftest.py); tests that
change a run work on a copy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from loralens.errors import ConfigError
from loralens.io import read_json
from loralens.pipeline import RunConfig, load_run_config, run_pipeline
from tests.pipeline_helpers import copy_run, failing_analysis, mtimes, settings_for, stages, tiny_run_settings


@pytest.fixture(scope="module")
def run(pipeline_run) -> tuple[Path, list[str], float]:
    return pipeline_run


def test_tiny_model_folder_loads(pipeline_inputs):
    from loralens.models.loading import load_feature_extractor, load_whisper

    model = pipeline_inputs["model"]
    assert load_whisper(model).config.d_model == 64
    fe = load_feature_extractor(model)
    assert fe.feature_size == 80 and fe.sampling_rate == 16000


def test_every_stage_writes_its_outputs(run):
    from loralens.analysis.suite import available

    out, lines, wall = run
    print(f"pipeline wall time {wall:.1f} s")
    for f in ("run.yaml", "stages.json", "environment.json", "folds.json", "data/summary.json", "report.html"):
        assert (out / f).is_file(), f
    assert yaml.safe_load((out / "run.yaml").read_text())["ranks"] == [4]
    assert sorted(p.name for p in (out / "train").iterdir()) == ["frozen", "lora_r4"]
    n_folds = len(read_json(out / "folds.json")["folds"])
    assert n_folds == 2
    for variant in ("lora_r4", "frozen"):
        s = read_json(out / "train" / variant / "summary.json")
        assert s["mean_std"]["uar"]["n"] == n_folds
        assert (out / "train" / variant / "fold_1" / "metrics.json").is_file()
    assert not (out / "analysis" / "frozen").exists()  # the baseline is what variants are compared with
    # LoRA's LP-FT stage (on by default) computed the frozen encoder outputs; the frozen baseline linked them
    (cached,) = (out / "train" / "lora_r4" / "encoder_cache").glob("*.safetensors")
    assert (out / "train" / "frozen" / "encoder_cache" / cached.name).stat().st_ino == cached.stat().st_ino
    assert read_json(out / "train" / "lora_r4" / "fold_0" / "metrics.json")["linear_probe"]["epochs"] == 20
    fold0 = out / "analysis" / "lora_r4" / "fold_0"
    assert not (out / "analysis" / "lora_r4" / "fold_1").exists()  # analysis.folds: [0]
    registered = set(available())
    assert registered >= {"layer_contribution", "probing", "similarity"}
    for name in registered:
        result = read_json(fold0 / name / "result.json")
        assert result["meta"]["analysis"] == name and result["meta"]["n_test_clips"] == 8  # 4 classes x 2
        assert result["meta"]["n_boot"] == 10 and isinstance(result["reading"], str)
    verdicts = read_json(fold0 / "verdicts.json")
    assert verdicts and isinstance(verdicts, dict)
    st = stages(out)
    assert list(st) == ["data", "train:lora_r4", "train:frozen", "analysis:lora_r4:fold_0", "report"]
    assert all(s["status"] == "done" for s in st.values())
    assert read_json(out / "environment.json")["torch"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "lora_r4" in html and "frozen" in html
    assert not any(line.startswith("report: ") for line in lines)  # the command prints it, once (tests/cli)


def _aggregate_leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dict]]:
    if isinstance(node, dict) and "per_fold" in node:
        return [(path, node)]
    return [leaf for k, v in (node.items() if isinstance(node, dict) else [])
            for leaf in _aggregate_leaves(v, path + (k,))]


def test_aggregate_of_one_fold_equals_that_fold(run):
    from loralens.analysis.suite import available

    out, _, _ = run
    variant = out / "analysis" / "lora_r4"
    agg = variant / "aggregate"
    assert sorted(p.stem for p in agg.glob("*.json")) == sorted([*available(), "verdicts"])
    n_curves = 0
    for name in available():
        doc = read_json(agg / f"{name}.json")
        assert doc["analysis"] == name and doc["folds"] == [0] and doc["n_folds"] == 1
        result = read_json(variant / "fold_0" / name / "result.json")
        for path, leaf in _aggregate_leaves(doc["curves"]):
            value = result
            for key in path:
                value = value[key]
            if isinstance(value, dict):  # a curve
                n_curves += 1
                want = [None if v is None or v != v else v for v in value["value"]]
                assert leaf["mean"] == want and leaf["per_fold"] == [want] and leaf["n_folds"] == 1, (name, path)
                assert leaf["std"] == [None] * len(want)
            else:
                assert leaf["mean"] == (None if value != value else value) and leaf["std"] is None, (name, path)
    assert n_curves >= 20
    lens = read_json(agg / "logit_lens.json")["curves"]["adapted"]["agreement"]
    assert len(lens["mean"]) == 2  # the tiny encoder's 2 layers
    verdicts = read_json(agg / "verdicts.json")
    fold_verdicts = read_json(variant / "fold_0" / "verdicts.json")
    claim = verdicts["claims"]["delayed_specialization"]
    assert verdicts["folds"] == [0] and claim["supported"] == [fold_verdicts["delayed_specialization"]["supported"]]
    assert claim["n_supported"] == (1 if claim["supported"] == [True] else 0)


def test_rerun_trains_and_analyses_nothing(run, tmp_path, pipeline_inputs, monkeypatch):
    out = copy_run(run[0], tmp_path / "out")
    metrics = mtimes(out, "train/*/fold_*/metrics.json")
    results = mtimes(out, "analysis/*/fold_*/*/result.json")
    assert len(metrics) == 4 and len(results) >= 3

    def fail(*a, **k):
        raise AssertionError("nothing should be trained or analysed again")

    monkeypatch.setattr("loralens.training.crossval.train", fail)
    monkeypatch.setattr("loralens.analysis.api.context_from_runs", fail)
    lines: list[str] = []
    t0 = time.perf_counter()
    run_pipeline(load_run_config(None, settings_for(out, pipeline_inputs)), echo=lines.append)
    wall = time.perf_counter() - t0
    assert mtimes(out, "train/*/fold_*/metrics.json") == metrics
    assert mtimes(out, "analysis/*/fold_*/*/result.json") == results
    st = stages(out)
    assert [st[n]["status"] for n in ("data", "train:lora_r4", "train:frozen", "analysis:lora_r4:fold_0")] == [
        "skipped"] * 4
    assert all(st[n]["wall_time_s"] < 5 for n in st if n != "report")
    assert st["report"]["status"] == "done"
    assert any("training complete" in line and "skipped" in line for line in lines)
    print(f"re-run wall time {wall:.1f} s")


def test_deleted_result_redoes_only_that_analysis(run, tmp_path, pipeline_inputs):
    out = copy_run(run[0], tmp_path / "out")
    fold0 = out / "analysis" / "lora_r4" / "fold_0"
    (fold0 / "layer_contribution" / "result.json").unlink()
    before = mtimes(fold0, "*/result.json")
    metrics = mtimes(out, "train/*/fold_*/metrics.json")
    lines: list[str] = []
    run_pipeline(load_run_config(None, settings_for(out, pipeline_inputs)), echo=lines.append)
    after = mtimes(fold0, "*/result.json")
    assert set(after) == set(before) | {"layer_contribution/result.json"}
    assert {k: v for k, v in after.items() if k in before} == before
    assert mtimes(out, "train/*/fold_*/metrics.json") == metrics
    assert [line for line in lines if line.startswith("analysis ")] == ["analysis layer_contribution ..."]
    st = stages(out)
    assert st["analysis:lora_r4:fold_0"]["status"] == "done" and st["train:lora_r4"]["status"] == "skipped"


def test_new_rank_trains_only_the_new_variant(run, tmp_path, pipeline_inputs):
    out = copy_run(run[0], tmp_path / "out")
    metrics = mtimes(out, "train/*/fold_*/metrics.json")
    results = mtimes(out, "analysis/*/fold_*/*/result.json")
    s = settings_for(out, pipeline_inputs, ranks=[4, 8])
    s["analysis"]["names"] = ["layer_contribution"]
    run_pipeline(load_run_config(None, s), echo=lambda line: None)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["frozen", "lora_r4", "lora_r8"]
    after = mtimes(out, "train/*/fold_*/metrics.json")
    assert {k: v for k, v in after.items() if k in metrics} == metrics
    assert sorted(set(after) - set(metrics)) == [f"train/lora_r8/fold_{k}/metrics.json" for k in (0, 1)]
    cfg8 = yaml.safe_load((out / "train" / "lora_r8" / "config.yaml").read_text())
    assert cfg8["lora"]["r"] == 8 and cfg8["lora"]["alpha"] == 16
    new_results = mtimes(out, "analysis/*/fold_*/*/result.json")
    assert {k: v for k, v in new_results.items() if k in results} == results
    assert set(new_results) - set(results) == {"analysis/lora_r8/fold_0/layer_contribution/result.json"}
    st = stages(out)
    assert (st["train:lora_r4"]["status"], st["train:lora_r8"]["status"]) == ("skipped", "done")
    # The report compares the variants side by side: both ranks in the results and in the analysis section.
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("lora_r8") >= 2 and html.count("lora_r4") >= 2


def test_failed_stage_is_recorded(run, tmp_path, pipeline_inputs, monkeypatch):
    out = copy_run(run[0], tmp_path / "out")
    (out / "analysis" / "lora_r4" / "fold_0" / "probing" / "result.json").unlink()

    def crash(*a, **k):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr("loralens.analysis.api.analyze_run", crash)
    with pytest.raises(RuntimeError, match="simulated"):
        run_pipeline(load_run_config(None, settings_for(out, pipeline_inputs)), echo=lambda line: None)
    st = stages(out)
    assert st["analysis:lora_r4:fold_0"]["status"] == "failed"
    assert "RuntimeError: out of memory (simulated)" == st["analysis:lora_r4:fold_0"]["error"]
    assert "report" not in st


def test_failed_analysis_is_reported_and_retried(run, tmp_path, pipeline_inputs, monkeypatch):
    out = copy_run(run[0], tmp_path / "out")
    fold0 = out / "analysis" / "lora_r4" / "fold_0"
    for name in ("layer_contribution", "similarity"):
        (fold0 / name / "result.json").unlink()
    failing_analysis(monkeypatch, "layer_contribution")
    cfg = load_run_config(None, settings_for(out, pipeline_inputs))
    run_pipeline(cfg, echo=lambda line: None)  # the other analyses and the report go on
    st = stages(out)
    assert st["analysis:lora_r4:fold_0"]["status"] == "failed" and st["report"]["status"] == "done"
    assert st["analysis:lora_r4:fold_0"]["error"] == \
        "layer_contribution: RuntimeError: layer_contribution broke (simulated)"
    assert (fold0 / "similarity" / "result.json").exists() and \
        not (fold0 / "layer_contribution" / "result.json").exists()
    assert "simulated" in read_json(fold0 / "layer_contribution" / "error.json")["error"]
    from loralens.pipeline import failed_stages

    assert [s["name"] for s in failed_stages(out)] == ["analysis:lora_r4:fold_0"]
    monkeypatch.undo()
    before = mtimes(fold0, "*/result.json")
    lines: list[str] = []
    run_pipeline(cfg, echo=lines.append)
    assert [line for line in lines if line.startswith("analysis ")] == ["analysis layer_contribution ..."]
    assert mtimes(fold0, "*/result.json").items() >= before.items()
    assert not (fold0 / "layer_contribution" / "error.json").exists() and not failed_stages(out)


def test_dry_run_trains_nothing(tmp_path, pipeline_inputs, monkeypatch):
    out = tmp_path / "out"
    lines: list[str] = []
    run_pipeline(load_run_config(None, settings_for(out, pipeline_inputs, ranks=[2, 4])), echo=lines.append,
                 dry_run=True)
    assert not out.exists()
    text = "\n".join(lines)
    assert "== variant lora_r2" in text and "== variant lora_r4" in text and "== variant frozen" in text
    assert text.count("to run") == 6  # 3 variants x 2 folds


@pytest.mark.parametrize(("change", "field"), [
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"lora": {"r": 0}}}, "train.lora.r"),
    ({"train": {"bogus": 1}}, "train.bogus"),
    ({"train": {"run_dir": "x"}}, "train.run_dir"),
    ({"ranks": [0]}, "ranks.0"),
    ({"ranks": [4, 4]}, "ranks"),
    ({"seeds": []}, "seeds"),
    ({"target_modules": [[]]}, "target_modules"),
    ({"analysis": {"n_boot": 5}}, "analysis.n_boot"),
    ({"analysis": {"names": ["no_such_analysis"]}}, "analysis.names"),
    ({"method": "frozen"}, "method"),
    ({"baseline": False, "analysis": {"names": ["similarity"]}}, "analysis.names: 'similarity' cannot run"),
    ({"method": "full", "analysis": {"names": ["lora_internals"]}}, "analysis.names: 'lora_internals' cannot run"),
])
def test_bad_config_names_the_field(tmp_path, change, field):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), "train": {"corpus": "manifest"}, **change}))
    with pytest.raises(ConfigError) as e:
        load_run_config(path)
    assert field in str(e.value) and str(path) in str(e.value)


def test_analysis_fold_not_trained_errors_before_training(tmp_path, pipeline_inputs):
    out = tmp_path / "out"
    s = settings_for(out, pipeline_inputs)
    s["analysis"]["folds"] = [5]
    with pytest.raises(ConfigError, match=r"analysis.folds: fold\(s\) \[5\]"):
        run_pipeline(load_run_config(None, s), echo=lambda line: None)
    assert (out / "folds.json").exists() and not (out / "train").exists()
    assert stages(out)["data"]["status"] == "done"


def test_single_fold_is_the_analysed_fold(pipeline_inputs):
    from loralens.pipeline import analysis_folds

    i = pipeline_inputs
    s = tiny_run_settings(i["model"], i["corpus"], i["features"], Path("unused"))
    del s["analysis"]["folds"]
    s["train"]["fold"] = 1
    assert analysis_folds(load_run_config(None, s), 2) == [1]
    s["analysis"]["folds"] = "all"
    assert analysis_folds(load_run_config(None, s), 2) == [1]
    s["train"]["fold"] = None
    assert analysis_folds(load_run_config(None, s), 2) == [0, 1]


def test_variant_names_are_stable():
    from loralens.pipeline import variant_configs

    def names(**kw):
        return list(variant_configs(RunConfig(train={"lora": {"r": 16, "alpha": 3}}, **kw)))

    assert names() == ["lora", "frozen"]
    assert names(ranks=[8]) == ["lora_r8", "frozen"]
    assert names(ranks=[8, 32]) == ["lora_r8", "lora_r32", "frozen"]
    assert names(seeds=[0, 1], baseline=False, full=True) == ["lora_s0", "lora_s1", "full"]
    assert names(target_modules=[["v_proj"], ["q_proj", "v_proj"]]) == ["lora_v_proj", "lora_q_proj+v_proj", "frozen"]
    v = variant_configs(RunConfig(train={"lora": {"r": 16, "alpha": 3}}, ranks=[8, 32]))
    assert (v["lora_r8"].lora.r, v["lora_r8"].lora.alpha, v["lora_r32"].lora.alpha) == (8, 16, 64)
    plain = variant_configs(RunConfig(train={"lora": {"r": 16, "alpha": 3}}))["lora"]
    assert (plain.lora.r, plain.lora.alpha) == (16, 3)  # no ranks list: the train section's own alpha


def test_docs_example_config_is_valid(tmp_path):
    from loralens.pipeline import variant_configs

    doc = (Path(__file__).resolve().parents[1] / "docs" / "pipeline.md").read_text(encoding="utf-8")
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "run.yaml").write_text(example)
    cfg = load_run_config(tmp_path / "run.yaml")
    assert list(variant_configs(cfg)) == ["lora_r8", "lora_r32", "lora_r64", "frozen"]


def test_analyses_that_cannot_apply_are_left_out_or_refused(run):
    from loralens.analysis.api import _select, analyze_run
    from loralens.analysis.suite import available

    out = run[0]
    chosen, left_out = _select(None, None, "full")
    assert {"lora_internals", "weight_analysis"} <= set(left_out)
    assert not {a.name for a in chosen} & set(left_out)
    assert all(not a.needs_frozen for a in chosen) and set(left_out) | {a.name for a in chosen} == set(available())
    with pytest.raises(ConfigError, match="'lora_internals': need LoRA adapters, and the run is method 'frozen'"):
        analyze_run(out / "train" / "frozen", names=["lora_internals"])
    # in a run, each variant gets the named analyses that apply to it
    from loralens.pipeline import variant_analyses, variant_configs

    cfg = RunConfig(full=True, analysis={"names": ["lora_internals", "layer_contribution"]})
    assert {n: variant_analyses(cfg, t) for n, t in variant_configs(cfg).items() if n != "frozen"} == {
        "lora": ["layer_contribution", "lora_internals"], "full": ["layer_contribution"]}


def test_seeds_are_also_scored_as_an_ensemble(tmp_path, pipeline_inputs):
    import numpy as np

    from loralens.pipeline import results_table
    from loralens.training.metrics import classification_metrics

    out = tmp_path / "out"
    s = settings_for(out, pipeline_inputs, seeds=[0, 1], baseline=False, analysis={"enabled": False})
    lines: list[str] = []
    run_pipeline(load_run_config(None, s), echo=lines.append)
    e = read_json(out / "ensembles" / "lora_r4_seeds.json")
    assert e["variants"] == ["lora_r4_s0", "lora_r4_s1"] and e["seeds"] == [0, 1] and e["missing_folds"] == []
    for fold in e["folds"].values():  # by hand: the arg-max of the two seeds' mean probabilities
        preds = [read_json(out / "train" / v / f"fold_{fold['index']}" / "predictions.json") for v in e["variants"]]
        mean = np.mean([p["probabilities"] for p in preds], axis=0)
        assert fold["uar"] == classification_metrics(preds[0]["true"], mean.argmax(1).tolist(), preds[0]["labels"]).uar
    assert stages(out)["ensemble:lora_r4_seeds"]["status"] == "done"
    assert any(line.startswith("== seed ensemble lora_r4_seeds") for line in lines)
    assert "lora_r4_seeds" in results_table(out)
    assert "Seed ensembles" in (out / "report.html").read_text(encoding="utf-8")
    # a re-run trains nothing and scores the ensemble again from the folders
    (out / "ensembles" / "lora_r4_seeds.json").unlink()
    run_pipeline(load_run_config(None, s), echo=lambda line: None)
    assert stages(out)["train:lora_r4_s1"]["status"] == "skipped"
    assert read_json(out / "ensembles" / "lora_r4_seeds.json")["folds"] == e["folds"]


def test_seed_groups_name_the_ensembles():
    from loralens.pipeline import seed_groups, variant_configs

    cfg = RunConfig.model_validate({"out": "runs/x", "ranks": [4, 8], "seeds": [0, 1], "full": True,
                                    "train": {"corpus": "manifest", "model": "tiny.en"}})
    assert seed_groups(variant_configs(cfg)) == {"lora_r4_seeds": ["lora_r4_s0", "lora_r4_s1"],
                                                 "lora_r8_seeds": ["lora_r8_s0", "lora_r8_s1"]}
    one = RunConfig.model_validate({"out": "runs/x", "seeds": [3], "train": {"corpus": "manifest"}})
    assert seed_groups(variant_configs(one)) == {}

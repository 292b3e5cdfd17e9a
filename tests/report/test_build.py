"""The run report built from a realistic fake `loralens run` output folder: sections in order, the numbers of
the JSON files, embedded figures, notes for what did not run, errors naming malformed files.

The fake folder is written with the real writers where they need no model: `summarize` (data summary),
`folds_to_json`, `classification_metrics` / `aggregate_folds` (training metrics and summary.json, with the
keys of `loralens.training.crossval`), `config_to_yaml`, `save_figure` (analysis figures).
"""

from __future__ import annotations

import base64
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from loralens.data.clips import Clip, Corpus
from loralens.data.folds import Fold, folds_to_json
from loralens.data.summary import summarize
from loralens.errors import RunFolderError
from loralens.io import atomic_write_json, atomic_write_text
from loralens.models.lora_settings import LoraSettings
from loralens.plots.figures import new_figure, save_figure
from loralens.report.build import FIGURE_DIR, build_report
from loralens.report.images import PNG_SIGNATURE
from loralens.report.run_output import ANALYSIS_ORDER
from loralens.training.config import TrainConfig, config_hash, config_to_yaml
from loralens.training.metrics import aggregate_folds, classification_metrics

LABELS = ("neutral", "happy", "sad", "angry")
SPEAKERS = [f"spk{i:02d}" for i in range(1, 7)]
# variant -> (config overrides, accuracy of its fake predictions)
VARIANTS = {
    "lora_r8": ({"method": "lora", "lora": LoraSettings(r=8, alpha=16)}, 0.75),
    "lora_r32": ({"method": "lora", "lora": LoraSettings(r=32, alpha=64)}, 0.85),
    "frozen": ({"method": "frozen"}, 0.5),
}
TRAINABLE = {"lora_r8": 20_996, "lora_r32": 69_380, "frozen": 1_028}
FOLD_SPEAKERS = [(["spk01", "spk02"], ["spk03"]), (["spk03", "spk04"], ["spk05"]), (["spk05", "spk06"], ["spk01"])]


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag == "h2":
            self._in_h2 = True
            self.h2.append("")

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2:
            self.h2[-1] += data


def parse_uar_cell(page: str, variant: str) -> str:
    """The UAR cell of `variant` in the table 'Test metrics per variant'."""
    table = page.split("Test metrics per variant", 1)[1].split("</table>", 1)[0]
    row = re.search(rf"<tr><td>{re.escape(variant)}</td><td>[^<]*</td><td[^>]*>(.*?)</td>", table)
    assert row, table[:500]
    return re.sub(r"<[^>]+>", "", row.group(1))


def parse(page: str) -> _Text:
    p = _Text()
    p.feed(page)
    p.close()
    return p


def _corpus() -> Corpus:
    rng = np.random.default_rng(0)
    clips = [
        Clip(f"{s}/{s}_{lab}_{k:02d}", Path(f"/data/{s}/{s}_{lab}_{k:02d}.wav"), lab, s,
             gender="female" if int(s[3:]) % 2 else "male", duration=float(rng.uniform(1.5, 3.0)))
        for s in SPEAKERS for lab in LABELS for k in range(2)
    ]
    return Corpus("synthetic", Path("/data"), LABELS, clips)


def _folds(corpus: Corpus) -> list[Fold]:
    folds = []
    for k, (test_spk, val_spk) in enumerate(FOLD_SPEAKERS):
        ids = lambda spk: [c.id for c in corpus.clips if c.speaker in spk]  # noqa: E731
        train_spk = [s for s in SPEAKERS if s not in test_spk + val_spk]
        folds.append(Fold(f"fold_{k}", ids(train_spk), ids(val_spk), ids(test_spk)))
    return folds


def _curve(rng: np.random.Generator, n: int) -> dict:
    value = np.sort(rng.uniform(0, 1, n))
    return {"value": value.tolist(), "low": (value - 0.05).tolist(), "high": (value + 0.05).tolist()}


def _analysis(folder: Path, name: str, variant: str, fold: int, rng: np.random.Generator) -> dict:
    """result.json + one figure, as the suite driver writes them."""
    n_layers = 4
    result: dict = {"layers": list(range(n_layers)), "n_layers": n_layers}
    if name == "logit_lens":
        result["adapted"] = {k: _curve(rng, n_layers) for k in ("kl", "agreement", "uar")}
        result["last_layer_max_abs_logit_diff"] = 0.0
    else:
        result["adapted"] = {"attn_rel": _curve(rng, n_layers)}
    with_style = new_figure(2.4, 1.6)
    fig, ax = with_style
    ax.plot(result["layers"], result["adapted"][next(iter(result["adapted"]))]["value"])
    ax.set(xlabel="layer", ylabel="value")
    png, svg = save_figure(fig, folder / "figures" / f"{name}_curve")
    result["meta"] = {"analysis": name, "title": name.replace("_", " ").title(), "fold": fold, "key": "abc",
                      "wall_time_s": 12.5, "peak_rss_mib": 812.3, "peak_rss_before_mib": 700.0,
                      "n_test_clips": 16, "seed": 0, "n_boot": 200,
                      "figures": [str(png.relative_to(folder)), str(svg.relative_to(folder))]}
    result["reading"] = f"READING {name} {variant} fold {fold}: agreement reaches 90 % at layer 3 of 4."
    atomic_write_json(folder / "result.json", result)
    return result


def make_run_output(root: Path, *, synthetic: bool = True, variants: dict = VARIANTS, n_complete: dict | None = None,
                    analysed: dict | None = None, environment: bool = True) -> dict:
    """Write a fake `loralens run` output folder; returns what the report should show (per-fold metrics)."""
    corpus = _corpus()
    folds = _folds(corpus)
    run_cfg = {"out": str(root), "train": {"corpus": "synthetic", "corpus_root": "data/synthetic", "model": "tiny.en",
                                           "epochs": 2, "seed": 0},
               "method": "lora", "ranks": [8, 32], "target_modules": None, "seeds": None, "baseline": True,
               "full": False, "analysis": {"enabled": True, "folds": [0], "n_boot": 200}, "report": True,
               "synthetic": synthetic}
    atomic_write_text(root / "run.yaml", yaml.safe_dump(run_cfg, sort_keys=False))
    atomic_write_json(root / "data" / "summary.json", summarize(corpus, folds))
    atomic_write_json(root / "folds.json", folds_to_json(folds, corpus, scheme="speaker-kfold", seed=0))
    stages = [{"name": "data", "wall_time_s": 3.21, "status": "done"}]
    expected: dict = {"corpus": corpus, "folds": {}}
    by_id = corpus.by_id()
    for v, (overrides, accuracy) in variants.items():
        cfg = TrainConfig(corpus="synthetic", model="tiny.en", run_dir=root / "train" / v, seed=0, **overrides)
        run = root / "train" / v
        atomic_write_text(run / "config.yaml", config_to_yaml(cfg))
        per_fold = {}
        rng = np.random.default_rng(len(v))
        for k, fold in enumerate(folds[: (n_complete or {}).get(v, len(folds))]):
            y = [LABELS.index(by_id[i].label) for i in fold.test]
            pred = [t if rng.random() < accuracy else int(rng.integers(0, 4)) for t in y]
            m = classification_metrics(y, pred, LABELS)
            metrics = {"fold": k, "name": fold.name, "config_hash": config_hash(cfg), "method": cfg.method,
                       "model": "tiny.en", "labels": list(LABELS), "selected_epoch": 1, "epochs_trained": 2,
                       "stopped_early": False, "steps": 8, "validation": {"uar": 0.5 + 0.01 * k, "loss": 1.2},
                       "test": m.to_dict(), "sizes": {"train": len(fold.train), "validation": len(fold.validation),
                                                      "test": len(fold.test)},
                       "trainable_params": TRAINABLE[v], "total_params": 8_000_000, "wall_time_s": 61.0 + k,
                       "processes": 1, "mixed_precision": "no",
                       "peak_memory": {"cpu_rss_peak_mib": 1500.0 + k, "cuda_max_allocated_mib": None}}
            atomic_write_json(run / f"fold_{k}" / "metrics.json", metrics)
            test = {key: metrics["test"][key] for key in ("uar", "war", "macro_f1", "per_class_recall")}
            per_fold[fold.name] = {**test,
                                   "validation_uar": metrics["validation"]["uar"], "selected_epoch": 1,
                                   "wall_time_s": metrics["wall_time_s"], "trainable_params": TRAINABLE[v],
                                   "peak_memory": metrics["peak_memory"], "n_test": len(fold.test)}
            expected["folds"].setdefault(v, []).append(metrics)
        if per_fold and (n_complete or {}).get(v) is None:
            atomic_write_json(run / "summary.json", {
                "corpus": "synthetic", "method": cfg.method, "model": "tiny.en", "config_hash": config_hash(cfg),
                "scheme": "speaker-kfold", "labels": list(LABELS), "folds": per_fold, "missing_folds": [],
                "mean_std": aggregate_folds(per_fold, LABELS), "std": "sample standard deviation over folds (ddof=1)"})
        stages.append({"name": f"train:{v}", "wall_time_s": 190.4, "status": "done"})
    rng = np.random.default_rng(1)
    if analysed is None:
        analysed = {"lora_r8": ["layer_contribution", "logit_lens"], "lora_r32": ["layer_contribution"]}
    for v, names in analysed.items():
        base = root / "analysis" / v / "fold_0"
        base.mkdir(parents=True, exist_ok=True)
        for name in names:
            _analysis(base / name, name, v, 0, rng)
        stages.append({"name": f"analysis:{v}:fold_0", "wall_time_s": 42.0, "status": "done"})
    if "lora_r8" in analysed:
        atomic_write_json(root / "analysis" / "lora_r8" / "fold_0" / "verdicts.json", {"claims": {
            "delayed_specialization": {"supported": True, "statement": "Agreement with the final prediction stays "
                                       "below 0.5 until 0.75 of depth.", "agreement_threshold": 0.9,
                                       "depth_threshold": 0.5, "depth_reached": 0.75},
            "forward_alignment_backward_differentiation": {"supported": None, "statement": "lora_internals did not "
                                                           "run.", "cka_forward": None, "cka_backward": None,
                                                           "difference_threshold": 0.2},
        }})
    if "lora_r32" in analysed:
        erasure = root / "analysis" / "lora_r32" / "fold_0" / "erasure"
        erasure.mkdir(parents=True, exist_ok=True)
        atomic_write_json(erasure / "error.json", {"type": "AnalysisInputError", "error": "ERASURE-BROKE for a test"})
    stages.append({"name": "report", "wall_time_s": 4.5, "status": "done"})
    atomic_write_json(root / "stages.json", {"stages": stages, "seed": 0})
    if environment:
        atomic_write_json(root / "environment.json", {"python": "3.11.9 (cpython)", "torch": "2.13.0",
                                                      "transformers": "5.24.0", "peft": "0.21.0",
                                                      "git commit": "0123456789abcdef0123456789abcdef01234567",
                                                      "cpu": "Test CPU (2 logical cores)", "gpu": "none (CPU)"})
    return expected


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict, str]:
    root = tmp_path_factory.mktemp("run")
    expected = make_run_output(root)
    path = build_report(root)
    return root, expected, path.read_text(encoding="utf-8")


def _pm(values: list[float]) -> str:
    v = 100 * np.asarray(values)
    return f"{v.mean():.2f} \u00b1 {v.std(ddof=1):.2f}"


def test_sections_in_order(built):
    root, _, page = built
    assert (root / "report.html").exists()
    titles = [re.sub(r"^\d+", "", t) for t in parse(page).h2 if t != "Contents"]
    expected = ["Overview", "Data", "Results", "Confusion matrices"]
    expected += ["Analysis: " + n.replace("_", " ").title() if n in ("layer_contribution", "logit_lens") else None
                 for n in ANALYSIS_ORDER]
    got_analyses = [t for t in titles if t.startswith("Analysis: ")]
    assert len(got_analyses) == len(ANALYSIS_ORDER)
    assert got_analyses[:2] == ["Analysis: Layer Contribution", "Analysis: Logit Lens"]  # titles from result meta
    assert got_analyses[2] == "Analysis: Layer erasure" and got_analyses[-1] == "Analysis: Activation patching"
    assert titles[:4] == expected[:4]
    assert titles[-2:] == ["Verdicts on the paper's claims", "Reproducibility"]


def test_banner_and_ravdess_instructions(built):
    _, _, page = built
    text = "".join(parse(page).text)
    assert "Synthetic smoke test \u2014 not an emotion benchmark" in text
    assert 'class="banner"' in page
    assert "loralens data download ravdess --dest data/ravdess" in text
    assert "loralens run --corpus ravdess --corpus-root data/ravdess" in text


def test_data_summary_numbers(built):
    _, _, page = built
    text = "".join(parse(page).text)
    assert "synthetic: 48 clips, 6 speakers (3 female, 3 male), 4 classes (neutral, happy, sad, angry)." in text
    assert "Clips per class" in text and "25.0" in text  # 12 of 48 clips per class
    corpus = _corpus()
    d = [c.duration for c in corpus.clips]
    assert f"{min(d):.2f}" in text and f"{max(d):.2f}" in text and f"{np.median(d):.2f}" in text
    assert "spk03, spk04" in text  # test speakers of fold_1


def test_results_match_the_metrics(built):
    _, expected, page = built
    text = "".join(parse(page).text)
    for v, metrics in expected["folds"].items():
        for key in ("uar", "war", "macro_f1"):
            assert _pm([m["test"][key] for m in metrics]) in text, (v, key)
        for m in metrics:
            assert f"{100 * m['test']['uar']:.2f}" in text
    assert "20\u2009996 (0.26 %)" in text and "69\u2009380 (0.87 %)" in text  # trainable params, share of total
    assert "3 min 06 s" in text  # training time: 61 + 62 + 63 s summed over folds
    assert "3 min 06 s\u20131502" in text  # peak CPU RSS: largest over folds (MiB); no GPU
    assert "LoRA r=8 alpha=16 on v_proj seed 0" in text
    assert "lora_r8816v_projall0" in text  # ablation row: rank, alpha (an integer), targets, layers, seed
    assert "LoRA ablation: rank, target modules and seed side by side" in text
    assert "Chance UAR = 1/4 = 25.0 %" in text
    means = {v: np.mean([m["test"]["uar"] for m in ms]) for v, ms in expected["folds"].items()}
    best = max(("lora_r8", "lora_r32"), key=means.get)
    assert f"The best LoRA variant ({best}) is {abs(100 * (means[best] - means['frozen'])):.1f} points" in text


def test_confusions_are_summed_over_folds(built):
    root, expected, _ = built
    assert (root / FIGURE_DIR / "confusion_per_variant.png").exists()
    assert (root / FIGURE_DIR / "uar_per_variant.svg").exists()
    # Every clip is in exactly one test fold: the summed matrix counts each clip once.
    total = sum(np.asarray(m["test"]["confusion"]).sum() for m in expected["folds"]["lora_r8"])
    assert total == 48


def test_figures_are_embedded_as_decodable_images(built):
    root, _, page = built
    imgs = parse(page).imgs
    analysis_pngs = sorted((root / "analysis").rglob("*.png"))
    assert len(analysis_pngs) == 3
    assert len(imgs) == 2 + len(analysis_pngs)  # bar chart, confusions, one per analysis result
    payloads = []
    for img in imgs:
        src = img["src"]
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        payloads.append(data)
    for p in analysis_pngs:
        assert p.read_bytes() in payloads
    assert "http://" not in page.replace("http://www.w3.org", "") and "<script" not in page.lower()


def test_analyses_side_by_side_with_notes(built):
    _, _, page = built
    text = "".join(parse(page).text)
    assert "lora_r8, fold 0: READING layer_contribution lora_r8 fold 0" in text
    assert "lora_r32, fold 0: READING layer_contribution lora_r32 fold 0" in text
    assert "lora_r8, fold 0: READING logit_lens lora_r8 fold 0" in text
    assert "lora_r32, fold 0: not run." in text  # logit lens not run for lora_r32
    assert "lora_r32, fold 0: failed: AnalysisInputError: ERASURE-BROKE for a test" in text
    assert text.count("Confidence: ") == 2  # one per analysis with results
    assert "intervals from 200 bootstrap resamples" in text
    assert "12.5 s" in text and "812.3" in text


def test_verdicts_shown_with_numbers(built):
    _, _, page = built
    text = "".join(parse(page).text)
    assert "Delayed specialization, lora_r8, fold 0: SUPPORTED. Agreement with the final prediction" in text
    assert "Forward alignment, backward differentiation, lora_r8, fold 0: NOT ENOUGH DATA." in text
    assert "lora_r32, fold 0: no verdicts.json (not run)." in text
    # thresholds listed first, then measured numbers
    i_thr, i_num = text.index("agreement_threshold"), text.index("depth_reached")
    assert i_thr < i_num and "0.900" in text and "0.750" in text


def test_reproducibility(built):
    _, _, page = built
    text = "".join(parse(page).text)
    for item in ("3.11.9 (cpython)", "2.13.0", "5.24.0", "0.21.0", "0123456789abcdef", "Test CPU (2 logical cores)"):
        assert item in text
    assert "train:lora_r8" in text and "analysis:lora_r8:fold_0" in text and "3.2 s" in text
    assert "config: train.model" in text and "config: synthetic" in text
    assert "config hash: train/lora_r8" in text


def test_rebuild_is_identical_and_atomic(built, tmp_path):
    root, _, page = built
    other = build_report(root, tmp_path / "elsewhere" / "r.html")
    assert other.read_text(encoding="utf-8") == page
    assert not [p for p in (tmp_path / "elsewhere").iterdir() if p.name.endswith(".tmp")]


def test_plain_run_missing_pieces_are_notes(tmp_path):
    # Not synthetic, lora_r8 with one of three folds done, no analyses, no environment.json.
    make_run_output(tmp_path, synthetic=False, variants={"lora_r8": VARIANTS["lora_r8"]}, n_complete={"lora_r8": 1},
                    analysed={}, environment=False)
    page = build_report(tmp_path).read_text(encoding="utf-8")
    text = "".join(parse(page).text)
    assert "Synthetic smoke test" not in text and 'class="banner"' not in page
    assert "lora_r8: 1 of 3 folds complete" in text
    assert "Not run: no analysis results under" in text
    assert "did not record its environment" in text
    # one fold: the mean alone, no ± std
    uar = parse_uar_cell(page, "lora_r8")
    assert "\u00b1" not in uar and re.fullmatch(r"\d+\.\d\d", uar)


def test_damaged_pieces_are_notes(tmp_path):
    # A corrupt figure, a figure listed but deleted, a failed stage, a fold whose UAR is NaN (empty test split).
    make_run_output(tmp_path, analysed={"lora_r8": ["layer_contribution", "logit_lens"]})
    fig_dir = tmp_path / "analysis" / "lora_r8" / "fold_0"
    (fig_dir / "layer_contribution" / "figures" / "layer_contribution_curve.png").write_bytes(b"GIF89a not a png")
    (fig_dir / "logit_lens" / "figures" / "logit_lens_curve.png").unlink()
    (fig_dir / "logit_lens" / "figures" / "logit_lens_curve.svg").unlink()
    stages = json.loads((tmp_path / "stages.json").read_text())
    stages["stages"].append({"name": "analysis:lora_r32:fold_0", "wall_time_s": 1.0, "status": "failed",
                             "error": "CUDA out of memory"})
    atomic_write_json(tmp_path / "stages.json", stages)
    metrics_path = tmp_path / "train" / "frozen" / "fold_2" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["test"]["uar"] = float("nan")
    atomic_write_json(metrics_path, metrics)
    (tmp_path / "train" / "frozen" / "summary.json").unlink()  # aggregate from the fold files instead

    page = build_report(tmp_path).read_text(encoding="utf-8")
    parsed = parse(page)
    text = "".join(parsed.text)
    assert "layer_contribution_curve.png left out: neither PNG nor SVG" in text
    assert "figure figures/logit_lens_curve.png listed in result.json but not found" in text
    assert "failed: CUDA out of memory" in text
    assert len(parsed.imgs) == 2  # bar chart and confusions only
    frozen = [m["test"]["uar"] for m in _frozen_uars(tmp_path)]
    assert parse_uar_cell(page, "frozen") == _pm(frozen[:2])  # the NaN fold is left out of the mean


def _frozen_uars(root: Path) -> list[dict]:
    return [json.loads((root / "train" / "frozen" / f"fold_{k}" / "metrics.json").read_text()) for k in range(3)]


def test_empty_run_still_builds(tmp_path):
    atomic_write_text(tmp_path / "run.yaml", "train: {corpus: ravdess}\nsynthetic: false\n")
    page = build_report(tmp_path).read_text(encoding="utf-8")
    text = "".join(parse(page).text)
    assert "Not run: no training results under" in text
    assert "Not run: " in text and "data" in text


@pytest.mark.parametrize("relative", [
    "stages.json", "data/summary.json", "train/lora_r8/fold_1/metrics.json", "train/frozen/summary.json",
    "analysis/lora_r8/fold_0/logit_lens/result.json", "analysis/lora_r8/fold_0/verdicts.json",
])
def test_malformed_json_names_the_file(tmp_path, relative):
    make_run_output(tmp_path, analysed={"lora_r8": ["logit_lens"]})
    (tmp_path / relative).write_text('{"truncated": ', encoding="utf-8")
    with pytest.raises(RunFolderError, match=re.escape(relative.split("/")[-1]) + ": not valid JSON"):
        build_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_binary_garbage_names_the_file(tmp_path):
    make_run_output(tmp_path, analysed={})
    (tmp_path / "train" / "lora_r8" / "summary.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RunFolderError, match="summary.json: not UTF-8"):
        build_report(tmp_path)


def test_malformed_yaml_and_wrong_types_name_the_file(tmp_path):
    atomic_write_text(tmp_path / "run.yaml", "train: [unclosed\n")
    with pytest.raises(RunFolderError, match="run.yaml: not valid YAML"):
        build_report(tmp_path)
    atomic_write_text(tmp_path / "run.yaml", "synthetic: true\n")
    atomic_write_text(tmp_path / "stages.json", "[1, 2]")
    with pytest.raises(RunFolderError, match="stages.json: expected a JSON object"):
        build_report(tmp_path)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(RunFolderError, match="not a `loralens run` output"):
        build_report(tmp_path)
    with pytest.raises(RunFolderError, match="not a folder"):
        build_report(tmp_path / "missing")


def test_analysis_order_is_the_suite_order():
    from loralens.analysis.suite import ANALYSIS_MODULES

    assert ANALYSIS_ORDER == tuple(m.rsplit(".", 1)[1] for m in ANALYSIS_MODULES)


@pytest.mark.slow
def test_report_loads_in_headless_chromium(built, tmp_path):
    test_browser = pytest.importorskip("tests.report.test_browser")
    chromium = test_browser._find_chromium()
    if chromium is None:
        pytest.skip("Chromium not found (scripts/install-chromium.sh installs it)")
    _, _, page = built
    result = test_browser._probe(chromium, page, tmp_path, "run-report")
    assert test_browser._problems(result) == []
    assert len(result["images"]) == 5 and all(img["naturalWidth"] > 50 for img in result["images"])
    assert not math.isnan(sum(img["width"] for img in result["images"]))


@pytest.mark.slow
def test_real_analysis_results_are_shown(tmp_path):
    # The suite driver's own result.json, meta and figures (tiny random models), read back by the report.
    pytest.importorskip("loralens.analysis.layer_contribution")
    from loralens.analysis.suite import run_suite
    from tests.analysis.helpers import tiny_context

    make_run_output(tmp_path, variants={"lora_r8": VARIANTS["lora_r8"]}, analysed={})
    ctx = tiny_context(n_boot=20, train=False)
    results = run_suite(ctx, tmp_path / "analysis" / "lora_r8" / "fold_0", ["layer_contribution"])
    page = build_report(tmp_path).read_text(encoding="utf-8")
    parsed = parse(page)
    text = "".join(parsed.text)
    for name, result in results.items():
        assert result["reading"] and result["reading"] in text
        pngs = [p for p in result["meta"]["figures"] if p.endswith(".png")]
        assert pngs
        folder = tmp_path / "analysis" / "lora_r8" / "fold_0" / name
        uris = [base64.b64decode(i["src"].split(",", 1)[1]) for i in parsed.imgs]
        for p in pngs:
            assert (folder / p).read_bytes() in uris
    assert "Here: 95 % intervals from 20 bootstrap resamples, seed 0." in text
    assert "lora_r8, fold 0: not run." in text  # the analyses not run


@pytest.mark.slow
def test_building_does_not_import_torch(built, tmp_path):
    import subprocess
    import sys

    root, _, _ = built
    code = ("import sys; from loralens.report.build import build_report; "
            f"build_report({str(root)!r}, {str(tmp_path / 'r.html')!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_verdicts_in_the_format_verdicts_py_writes_are_shown():
    """verdicts.py writes `{claim: {...}, "thresholds": {...}}` (no "claims" wrapper): the section reads it."""
    from loralens.analysis.verdicts import verdicts
    from loralens.report.sections import _claims

    v = json.loads(json.dumps(verdicts({})))
    claims = _claims(v)
    assert set(claims) == {"delayed_specialization", "forward_alignment_backward_differentiation"}
    assert all(c["supported"] is None and c["statement"] for c in claims.values())
    assert claims["delayed_specialization"]["thresholds"]["agreement_threshold"] == \
        v["thresholds"]["agreement_threshold"]

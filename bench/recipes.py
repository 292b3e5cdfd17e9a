"""Recipe search (issue 11): a named grid of training recipes on chosen folds of a corpus (RAVDESS's `ravdess6` by
default), each paired fold by fold with a strong frozen baseline; prints a table and writes JSON + Markdown.

    python bench/recipes.py --grid screen --model tiny.en --folds 0,1,2 --out runs/recipes-tiny.en
    python bench/recipes.py --corpus manifest --root runs/hard/manifest.csv --folds-scheme speaker-kfold \
        --folds-k 5 --folds 0,1,2,3,4 ...                           # any corpus loralens reads (docs/corpora.md)
    python bench/recipes.py --list                                  # the built-in recipes and grids
    python bench/recipes.py --recipes-file my.yaml --grid mine ...  # own recipes / grids (merged over the built-ins)

A recipe is a set of `TrainConfig` fields (nested as in YAML) over the common settings (corpus, model, fold scheme,
trim windows, seed 0 unless `--seed`, the shared feature cache); `lora: {layers: upper}` means the upper half of the
model's layers; a recipe's head is the last-layer head unless it names another (`-wls-ln`, `-z`, `-hs{k}`).
Every (recipe, fold) trains in its own subprocess (`train()` of the package), so its peak memory is its own; each
recipe has its run folder `<out>/<recipe>`, so re-running skips complete folds and resumes an interrupted one.

The baselines: every recipe of the grid with `method: frozen` (heads on cached encoder outputs: last layer, weighted
layer sum with per-layer normalisation) and `probe` (standardised logistic regression on one hidden state of the
frozen encoder, the hidden state chosen per fold on validation UAR; `bench/layer_probe.py` picks it on test). The
*strong frozen baseline* of a fold is the baseline with the best validation UAR on that fold (test data never choose).
Each recipe is reported with UAR / WAR / macro-F1 (mean ± std over folds), its paired test-UAR difference with the
strong baseline (mean ± std, folds better / worse), the correlation of validation and test UAR across folds (model
selection's reliability), wall time and peak memory per fold.

Recipes file (YAML): `recipes: {name: {field: value, ...}}`, `grids: {name: [recipe names]}`.
`--clips-per-class-per-speaker k` builds a smaller corpus (a manifest of the first k clips of each class and actor)
for smoke tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loralens.io import atomic_write_json, atomic_write_text, read_json, read_yaml_mapping  # noqa: E402
from loralens.training.config import config_hash, config_to_yaml, make_config  # noqa: E402
from loralens.training.frozen_cache import share_encoder_cache  # noqa: E402
from loralens.training.metrics import mean_std  # noqa: E402
from loralens.training.run_folder import RunFolder  # noqa: E402

QKVO = ["q_proj", "k_proj", "v_proj", "out_proj"]
# every recipe names its head: the last-layer head of the paper (transformers' WhisperForAudioClassification) unless it
# says otherwise, so that a recipe keeps its meaning (and its config hash) when the package's default head changes
# every recipe names `speaker_norm: false` unless it is about it (the package's default since 0.6), so that its
# figures and hash keep their meaning
LAST_LAYER_HEAD = {"weighted_layer_sum": False, "layer_norm": False, "standardize": False, "speaker_norm": False}
FROZEN = {"method": "frozen", "epochs": 30, "patience": 10, "batch_size": 32, "lr_head": 1e-3,
          "head": LAST_LAYER_HEAD}
# the LoRA recipe of docs/results.md (lora-trim): r=32 on v_proj of every layer, 3 epochs, adapter lr 3e-4, no LP-FT
# (named: LP-FT is the package's lora default since the search, and `lora` is the paper's recipe it is compared with;
# so is selection on validation UAR, which the package's lora default replaced by the last epoch after the search)
LORA = {"method": "lora", "epochs": 3, "lr_encoder": 3e-4, "lr_head": 1e-3, "lp_ft_epochs": 0, "lp_fit": "gradient",
        "select_on": "uar",
        "lora": {"r": 32, "alpha": 64, "target_modules": ["v_proj"]}, "head": LAST_LAYER_HEAD}
SPEC = {"spec_time_masks": 2, "spec_time_width": 40, "spec_freq_masks": 2, "spec_freq_width": 10}


def _with(base: dict, **over: Any) -> dict:
    """`base` with nested overrides (`lora={"r": 8}` merges into base["lora"])."""
    out = json.loads(json.dumps(base))
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


# LP-FT: the head fitted alone on the frozen encoder's cached outputs first (the package's lora default now)
LPFT = _with(LORA, lp_ft_epochs=20)


RECIPES: dict[str, dict] = {
    # baselines (frozen encoder)
    "frozen-last": FROZEN,
    "frozen-wls-ln": _with(FROZEN, head={"weighted_layer_sum": True, "layer_norm": True}),
    "probe": {"probe": True},
    # where and how much to adapt
    "lora": LORA,
    "lora-qv": _with(LORA, lora={"target_modules": ["q_proj", "v_proj"]}),
    "lora-qkvo": _with(LORA, lora={"target_modules": QKVO}),
    "lora-qkvo-ffn": _with(LORA, lora={"target_modules": QKVO + ["fc1", "fc2"]}),
    "lora-r8": _with(LORA, lora={"r": 8, "alpha": 16}),
    "lora-r16": _with(LORA, lora={"r": 16, "alpha": 32}),
    "lora-upper": _with(LORA, lora={"layers": "upper"}),
    "lora-lr1e-4": _with(LORA, lr_encoder=1e-4),
    "lora-lr1e-3": _with(LORA, lr_encoder=1e-3),
    "lora-e6": _with(LORA, epochs=6),
    "lora-e10": _with(LORA, epochs=10),
    # levers, one at a time on `lora`
    "lora-val4": _with(LORA, validation_speakers=4),
    "lora-sel-loss": _with(LORA, select_on="loss"),
    "lora-lpft": LPFT,
    "lora-lpft-val4": _with(LPFT, validation_speakers=4),
    # LP-FT, longer, with SpecAugment and the mean of the last 3 epochs' weights
    "lora-lpft-aug": _with(LPFT, epochs=6, patience=None, average_last=3, augment=SPEC),
    # one lever at a time on top of LP-FT (the default recipe)
    "lpft-r8": _with(LPFT, lora={"r": 8, "alpha": 16}),
    "lpft-qkvo-ffn": _with(LPFT, lora={"target_modules": QKVO + ["fc1", "fc2"]}),
    "lpft-lr1e-3": _with(LPFT, lr_encoder=1e-3),
    "lpft-upper": _with(LPFT, lora={"layers": "upper"}),
    "lpft-ls": _with(LPFT, augment={"label_smoothing": 0.1}),
    "lpft-mixup": _with(LPFT, augment={"mixup_alpha": 0.2}),
    "lpft-speed": _with(LPFT, augment={"speed": [0.9, 1.0, 1.1]}),
    # with the head of the best frozen baseline on base (weighted layer sum + per-layer LN)
    "lora-lpft-wls": _with(LPFT, head={"weighted_layer_sum": True, "layer_norm": True}),
    "lora-specaug": _with(LORA, augment=SPEC),
    "lora-speed": _with(LORA, augment={"speed": [0.9, 1.0, 1.1]}),
    "lora-noise": _with(LORA, augment={"noise_snr_db": [10.0, 30.0], "noise_prob": 0.5}),
    "lora-mixup": _with(LORA, augment={"mixup_alpha": 0.2}),
    "lora-ls": _with(LORA, augment={"label_smoothing": 0.1}),
    "lora-avg3": _with(LORA, epochs=6, average_last=3, patience=None),
    # the levers together (a candidate to confirm; the screen says which to keep)
    "lora-combo": _with(LORA, epochs=6, patience=None, validation_speakers=4, select_on="loss", lp_ft_epochs=20,
                        average_last=3, lora={"r": 16, "alpha": 32, "target_modules": QKVO + ["fc1", "fc2"]},
                        augment={**SPEC, "speed": [0.9, 1.0, 1.1], "label_smoothing": 0.1}),
}
# the head on an earlier hidden state k (the encoder cut after layer k-1): frozen, and LP-FT adapting the k layers
# below; "-z": the head's input z-scored with the training clips' statistics (head.standardize)
for _k in range(1, 33):
    RECIPES[f"frozen-hs{_k}"] = _with(FROZEN, head={"hidden_state": _k})
    RECIPES[f"lpft-hs{_k}"] = _with(LPFT, head={"hidden_state": _k})
    RECIPES[f"frozen-hs{_k}-z"] = _with(FROZEN, head={"hidden_state": _k, "standardize": True})
    RECIPES[f"lpft-hs{_k}-z"] = _with(LPFT, head={"hidden_state": _k, "standardize": True})
RECIPES["frozen-auto-z"] = _with(FROZEN, head={"hidden_state": "auto", "standardize": True})
RECIPES["lpft-auto-z"] = _with(LPFT, head={"hidden_state": "auto", "standardize": True})
RECIPES["frozen-last-z"] = _with(FROZEN, head={"standardize": True})
RECIPES["lpft-z"] = _with(LPFT, head={"standardize": True})
RECIPES["frozen-wls-ln-z"] = _with(FROZEN, head={"weighted_layer_sum": True, "layer_norm": True, "standardize": True})
RECIPES["lpft-wls-ln-z"] = _with(LPFT, head={"weighted_layer_sum": True, "layer_norm": True, "standardize": True})
# one lever at a time on top of lpft-wls-ln-z (the package's default recipe until it took `-last`'s selection)
RECIPES["lpft-wls-ln-z-lr1e-3"] = _with(RECIPES["lpft-wls-ln-z"], lr_encoder=1e-3)
RECIPES["lpft-wls-ln-z-ls"] = _with(RECIPES["lpft-wls-ln-z"], augment={"label_smoothing": 0.1})
# model selection on top of the default: 4 validation speakers (2 by default on ravdess6), selection on loss
RECIPES["lpft-wls-ln-z-val4"] = _with(RECIPES["lpft-wls-ln-z"], validation_speakers=4)
RECIPES["lpft-wls-ln-z-sel-loss"] = _with(RECIPES["lpft-wls-ln-z"], select_on="loss")
RECIPES["lpft-wls-ln-z-last"] = _with(RECIPES["lpft-wls-ln-z"], select_on="last")  # the default of loralens 0.5
# per-speaker normalisation of the head's input (docs/results.md 6f)
RECIPES["frozen-wls-ln-z-spk"] = _with(RECIPES["frozen-wls-ln-z"], head={"speaker_norm": True})
RECIPES["lpft-wls-ln-z-spk-last"] = _with(RECIPES["lpft-wls-ln-z-last"], head={"speaker_norm": True})  # the 0.6 default
RECIPES["probe-spk"] = {"probe": True, "speaker_norm": True}
RECIPES["frozen-auto-z-spk"] = _with(RECIPES["frozen-auto-z"], head={"speaker_norm": True})
RECIPES["lpft-auto-z-spk-last"] = _with(RECIPES["lpft-auto-z"], select_on="last", head={"speaker_norm": True})
# the head's input chosen among the hidden states AND the weighted sum (auto-all), and LP-FT's head stage as a real
# logistic regression (lp_fit: logistic; docs/results.md 6g)
RECIPES["probe-spk-cv-all"] = {"probe": True, "speaker_norm": True, "choose": "cv-all"}
RECIPES["frozen-autoall-z-spk"] = _with(RECIPES["frozen-auto-z-spk"], head={"hidden_state": "auto-all"})
RECIPES["lpft-autoall-z-spk-last"] = _with(RECIPES["lpft-auto-z-spk-last"], head={"hidden_state": "auto-all"})
RECIPES["lplr-autoall-z-spk-last"] = _with(RECIPES["lpft-autoall-z-spk-last"], lp_fit="logistic", lp_ft_epochs=0)
RECIPES["lplr-wls-ln-z-spk-last"] = _with(RECIPES["lpft-wls-ln-z-spk-last"], lp_fit="logistic", lp_ft_epochs=0)
RECIPES["lplr-autoall-z-spk-last-ls"] = _with(RECIPES["lplr-autoall-z-spk-last"], augment={"label_smoothing": 0.1})
RECIPES["lplr-autoall-z-spk-last-lr1e-3"] = _with(RECIPES["lplr-autoall-z-spk-last"], lr_encoder=1e-3)
GRIDS: dict[str, list[str]] = {
    "smoke": ["frozen-last", "probe", "lora"],
    "baselines": ["frozen-last", "frozen-wls-ln", "probe"],
    "where": ["frozen-last", "frozen-wls-ln", "probe", "lora", "lora-qv", "lora-qkvo", "lora-qkvo-ffn", "lora-r8",
              "lora-r16", "lora-upper", "lora-lr1e-4", "lora-lr1e-3", "lora-e6", "lora-e10"],
    "levers": ["frozen-last", "frozen-wls-ln", "probe", "lora", "lora-val4", "lora-sel-loss", "lora-lpft",
               "lora-specaug", "lora-speed", "lora-noise", "lora-mixup", "lora-ls", "lora-avg3", "lora-combo"],
}
GRIDS["screen"] = list(dict.fromkeys(GRIDS["where"] + GRIDS["levers"]))
GRIDS["confirm"] = ["frozen-last", "frozen-wls-ln", "probe", "lora", "lora-combo"]
GRIDS["lpft-levers"] = ["frozen-last", "frozen-wls-ln", "probe", "lora-lpft", "lpft-r8", "lpft-qkvo-ffn",
                        "lpft-lr1e-3", "lpft-upper", "lpft-ls", "lpft-mixup", "lpft-speed"]


# ------------------------------------------------------------------------------------------------ data
def capped_manifest(root: Path, out: Path, per_class: int) -> Path:
    """A manifest of the first `per_class` clips of each (actor, class) of RAVDESS at `root` (for smoke tests)."""
    from loralens.data.corpora import load_corpus

    corpus = load_corpus("ravdess", root)
    counts: dict[tuple[str, str], int] = {}
    lines = ["id,path,label,speaker,gender"]
    for c in corpus.clips:
        key = (c.speaker, c.label)
        if counts.get(key, 0) >= per_class:
            continue
        counts[key] = counts.get(key, 0) + 1
        lines.append(f"{c.id},{Path(c.path).resolve()},{c.label},{c.speaker},{c.gender or ''}")
    path = out / f"ravdess-{per_class}-per-class" / "manifest.csv"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def upper_half(model: str) -> list[int]:
    from loralens.models.classifier import whisper_encoder
    from loralens.models.loading import load_whisper

    n = len(whisper_encoder(load_whisper(model)).layers)
    return list(range(n // 2, n))


def recipe_config(name: str, recipe: dict, common: dict, out: Path, fold: int, model: str):
    r = json.loads(json.dumps(recipe))
    if (r.get("lora") or {}).get("layers") == "upper":
        r["lora"]["layers"] = upper_half(model)
    return make_config(_with(common, **r), {"run_dir": str(out / name), "fold": fold}, source=f"recipe {name}")


# ------------------------------------------------------------------------------------------------ running
def run_recipe_fold(name: str, cfg, out: Path, log_dir: Path) -> dict:
    """Train one fold of a recipe in a subprocess (skipped when complete); returns {"process_wall_s", "skipped"}."""
    folder = RunFolder(cfg.run_dir).fold(cfg.fold)
    timing = log_dir / f"{name}.fold{cfg.fold}.json"  # the process's wall time, kept for later invocations
    if folder.completed(config_hash(cfg)) is not None:
        return {"skipped": True, "process_wall_s": read_json(timing).get("process_wall_s") if timing.exists() else None}
    needs_cache = cfg.method == "frozen" or cfg.lp_ft or cfg.head.standardize
    if needs_cache:
        share_encoder_cache([out / "encoder_cache"], RunFolder(cfg.run_dir).encoder_cache)
    cfg_path = log_dir / f"{name}.fold{cfg.fold}.yaml"
    atomic_write_text(cfg_path, config_to_yaml(cfg))
    t0 = time.perf_counter()
    with open(log_dir / f"{name}.fold{cfg.fold}.log", "a", encoding="utf-8") as log:
        rc = subprocess.call([sys.executable, str(Path(__file__).resolve()), "--worker", str(cfg_path)],
                             cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "TQDM_MININTERVAL": "30"})
    wall = time.perf_counter() - t0
    if rc != 0:
        log_file = log_dir / f"{name}.fold{cfg.fold}.log"
        raise SystemExit(f"recipe {name} fold {cfg.fold} failed (exit {rc}); see {log_file}")
    if needs_cache:
        share_encoder_cache([RunFolder(cfg.run_dir).encoder_cache], out / "encoder_cache")
    atomic_write_json(timing, {"process_wall_s": round(wall, 1), "config_hash": config_hash(cfg)})
    return {"skipped": False, "process_wall_s": round(wall, 1)}


def worker(config_path: Path) -> int:
    from loralens.training.config import load_config
    from loralens.training.crossval import train

    train(load_config(config_path))
    return 0


# ------------------------------------------------------------------------------------------------ probe
def probe_fold(frozen_run: Path, fold: int, labels: list[str], speaker_norm: bool = False,
               choose: str = "validation") -> dict:
    """Standardised logistic regression on each hidden state of the frozen encoder's cached pooled outputs (from the
    run folder of a frozen recipe), fitted on the fold's training clips; the hidden state with the best validation
    UAR is scored on test. `speaker_norm`: each clip's pooled vectors are first z-scored with its speaker's mean and
    std over all the speaker's clips of the fold (labels unused), as `head.speaker_norm` does. `choose: cv-all`:
    the input is chosen as `head.hidden_state: auto-all` chooses it (speaker-grouped cross-validation over the
    training and validation clips, the weighted sum's uniform start among the candidates) and the probe is
    `lp_fit: logistic`'s, i.e. exactly the head an `auto-all` + `lp_fit: logistic` recipe starts its fine-tuning
    from. Returns the fold's row."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from loralens.data.corpora import load_corpus
    from loralens.training.metrics import classification_metrics

    t0 = time.perf_counter()
    caches = sorted((frozen_run / "encoder_cache").glob("*.safetensors"))
    if not caches:
        raise SystemExit(f"{frozen_run}/encoder_cache: empty; "
                         "the probe needs a frozen recipe (e.g. frozen-last) run first")
    with safe_open(str(caches[0]), framework="pt") as f:
        ids = json.loads((f.metadata() or {})["ids"])
    pooled = load_file(str(caches[0]))["pooled"].numpy()
    row = {c: n for n, c in enumerate(ids)}
    folds = read_json(frozen_run / "folds.json")
    spec = folds["folds"][fold]
    cfg = read_yaml_mapping(frozen_run / "config.yaml")
    corpus = load_corpus(cfg["corpus"], cfg["corpus_root"], cfg.get("label_set"))
    by_id = {c.id: labels.index(c.label) for c in corpus.clips}
    idx = {s: [row[c] for c in spec[s]] for s in ("train", "validation", "test")}
    if speaker_norm:
        import torch

        from loralens.models.speaker_stats import SpeakerStatistics

        speaker_of = {c.id: c.speaker for c in corpus.clips}
        fold_ids = [c for s in idx for c in spec[s]]
        stats = SpeakerStatistics.from_pooled({c: torch.from_numpy(pooled[row[c]]) for c in fold_ids},
                                              {c: speaker_of[c] for c in fold_ids})
        mean, std = stats.for_ids(fold_ids)
        pooled = pooled.copy()
        pooled[[row[c] for c in fold_ids]] = ((torch.from_numpy(pooled[[row[c] for c in fold_ids]]) - mean)
                                             / std).numpy()
    y = {s: np.array([by_id[c] for c in spec[s]]) for s in idx}
    if choose == "cv-all":
        return _probe_cv_all(pooled, idx, y, spec, corpus, labels, fold, t0)
    best = None
    val_uars = []
    for h in range(pooled.shape[1]):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        probe.fit(pooled[idx["train"], h], y["train"])
        val = classification_metrics(y["validation"].tolist(), probe.predict(pooled[idx["validation"], h]).tolist(),
                                     labels)
        val_uars.append(val.uar)
        if best is None or val.uar > best[1].uar:
            best = (h, val, probe)
    h, val, probe = best
    test = classification_metrics(y["test"].tolist(), probe.predict(pooled[idx["test"], h]).tolist(), labels)
    return _probe_row(fold, test, val, h, t0, validation_uar_by_hidden_state=val_uars)


def _probe_row(fold: int, test, val, hidden_state, t0: float, **extra) -> dict:
    """A probe's row of the results (test and validation `ClassificationMetrics`, what it read, its own wall time;
    the fields of trained recipes that a probe has not, None)."""
    return {"fold": fold, "uar": test.uar, "war": test.war, "macro_f1": test.macro_f1, "validation_uar": val.uar,
            "hidden_state": hidden_state, **extra, "wall_time_s": round(time.perf_counter() - t0, 2),
            "process_wall_s": None, "peak_rss_mib": None, "peak_cuda_mib": None, "trainable_params": None,
            "selected_epoch": None}


def _probe_cv_all(pooled: np.ndarray, idx: dict, y: dict, spec: dict, corpus, labels: list[str], fold: int,
                  t0: float) -> dict:
    """`probe_fold`'s `choose: cv-all` (pooled already z-scored per speaker when asked)."""
    import torch

    from loralens.training.head_choice import candidate_features, choose_hidden_state
    from loralens.training.logistic_head import fit_logistic
    from loralens.training.metrics import classification_metrics

    speaker_of = {c.id: c.speaker for c in corpus.clips}
    tv = idx["train"] + idx["validation"]
    choice = choose_hidden_state(torch.from_numpy(pooled[tv]), np.concatenate([y["train"], y["validation"]]),
                                 [speaker_of[c] for c in spec["train"] + spec["validation"]], with_sum=True)
    h = choice["hidden_state"]
    feats = {s: candidate_features(pooled[idx[s]], True)[h] for s in idx}
    w, b = fit_logistic(feats["train"], y["train"], len(labels))
    m = {s: classification_metrics(y[s].tolist(), (feats[s] @ w.T + b).argmax(1).tolist(), labels)
         for s in ("validation", "test")}
    return _probe_row(fold, m["test"], m["validation"], h, t0, cv_uar=choice["cv_uar"])


# ------------------------------------------------------------------------------------------------ results
def fold_row(run_dir: Path, fold: int, process_wall: float | None) -> dict | None:
    p = run_dir / f"fold_{fold}" / "metrics.json"
    if not p.exists():
        return None
    d = read_json(p)
    row = {"fold": fold, "uar": d["test"]["uar"], "war": d["test"]["war"], "macro_f1": d["test"]["macro_f1"],
           "validation_uar": d["validation"].get("uar"), "validation_loss": d["validation"].get("loss"),
           "wall_time_s": d["wall_time_s"], "process_wall_s": process_wall,
           "peak_rss_mib": d["peak_memory"].get("cpu_rss_peak_mib"),
           "peak_cuda_mib": d["peak_memory"].get("cuda_max_allocated_mib"),
           "trainable_params": d["trainable_params"], "selected_epoch": d["selected_epoch"],
           "epochs_trained": d["epochs_trained"]}
    if "linear_probe" in d:
        row["linear_probe_validation_uar"] = d["linear_probe"]["validation"].get("uar")
    return row


def pearson(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def paired(rows: list[dict], reference: dict[int, dict]) -> dict | None:
    common = [r for r in rows if r["fold"] in reference]
    if not common:
        return None
    diffs = [r["uar"] - reference[r["fold"]]["uar"] for r in common]
    return {**mean_std(diffs), "folds": [r["fold"] for r in common], "diffs": diffs,
            "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs)}


def summarise(name: str, recipe: dict, rows: list[dict]) -> dict:
    out: dict[str, Any] = {"recipe": name, "settings": recipe, "folds": rows, "n_folds": len(rows)}
    for key in ("uar", "war", "macro_f1"):
        out[key] = mean_std([r[key] for r in rows]) if rows else None
    vals = [(r["validation_uar"], r["uar"]) for r in rows if r.get("validation_uar") is not None]
    out["validation_test_r"] = pearson([v for v, _ in vals], [t for _, t in vals])
    walls = [r["wall_time_s"] for r in rows if r.get("wall_time_s") is not None]
    out["wall_time_s_per_fold"] = mean_std(walls) if walls else None
    process = [r["process_wall_s"] for r in rows if r.get("process_wall_s") is not None]
    out["process_wall_s_per_fold"] = mean_std(process) if process else None
    out["peak_rss_mib"] = max((r["peak_rss_mib"] for r in rows if r.get("peak_rss_mib")), default=None)
    out["peak_cuda_mib"] = max((r["peak_cuda_mib"] for r in rows if r.get("peak_cuda_mib")), default=None)
    out["trainable_params"] = next((r["trainable_params"] for r in rows if r.get("trainable_params")), None)
    return out


# the three; with per-speaker normalisation in the grid, its frozen read-outs join them (a fair baseline)
STRONG_CANDIDATES = ("frozen-last", "frozen-wls-ln", "probe", "probe-spk", "frozen-wls-ln-z-spk", "probe-spk-cv-all")


def strong_baseline(baselines: dict[str, list[dict]]) -> dict[int, dict]:
    """Per fold, the baseline with the best validation UAR (ties: the first listed)."""
    best: dict[int, dict] = {}
    for name, rows in baselines.items():
        for r in rows:
            if r.get("validation_uar") is None:
                continue
            if r["fold"] not in best or r["validation_uar"] > best[r["fold"]]["validation_uar"]:
                best[r["fold"]] = {**r, "baseline": name}
    return best


def pm(d: dict | None, digits: int = 3, signed: bool = False) -> str:
    if not d or d.get("mean") is None:
        return "–"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    return fmt.format(d["mean"]) + (f" ± {d['std']:.{digits}f}" if d.get("std") is not None else "")


def _head_words(head: dict) -> str:
    """How a recipe's head reads the encoder: "last layer", "weighted layer sum + LN", "hidden state 2", "hidden state
    auto", each with ", z-scored" when the head standardises its input."""
    if head.get("weighted_layer_sum"):
        words = "weighted layer sum" + (" + LN" if head.get("layer_norm") else "")
    elif head.get("hidden_state") is not None:
        words = f"hidden state {head['hidden_state']}"
    else:
        words = "last layer"
    return words + (", z-scored per speaker" if head.get("speaker_norm") else
                    ", z-scored" if head.get("standardize") else "")


def describe(recipe: dict) -> str:
    if recipe.get("probe"):
        chosen = ("input chosen by speaker-grouped CV among hidden states and their mean (auto-all)"
                  if recipe.get("choose") == "cv-all" else "hidden state chosen on validation")
        return f"logistic regression, {chosen}" + (", z-scored per speaker" if recipe.get("speaker_norm") else "")
    head = recipe.get("head") or {}
    if recipe.get("method") == "frozen":
        return f"frozen, {_head_words(head)}, {recipe.get('epochs')} ep"
    lora = recipe.get("lora") or {}
    parts = [f"r{lora.get('r', 32)} {'+'.join(m.replace('_proj', '') for m in lora.get('target_modules', ['v_proj']))}"]
    if lora.get("layers") is not None:
        parts.append(f"layers {lora['layers']}")
    parts.append(f"{recipe.get('epochs', 10)} ep, lr {recipe.get('lr_encoder', 1e-4):g}")
    if head:
        parts.append(f"head {_head_words(head)}")
    if "lr_head" in recipe and recipe["lr_head"] != LORA["lr_head"]:
        parts.append(f"head lr {recipe['lr_head']:g}")
    for key, label in (("validation_speakers", "val spk"), ("select_on", "select"), ("lp_ft_epochs", "LP ep"),
                       ("lp_fit", "LP fit"),
                       ("average_last", "avg")):
        if key in recipe:
            parts.append(f"{label} {recipe[key]}")
    for key, value in (recipe.get("augment") or {}).items():
        parts.append(f"{key} {value}")
    return ", ".join(parts)


def tables(results: list[dict], strong: dict[int, dict], folds: list[int]) -> str:
    lines = ["| recipe | what | folds | UAR | WAR | macro-F1 | ΔUAR vs strong frozen | better / worse | r(val, test) "
             "| wall s / fold (fold; process) | peak RSS MiB | peak CUDA MiB |", "|" + "---|" * 12]
    for r in results:
        d = r.get("vs_strong")
        counts = f"{d['better']} / {d['worse']}" if d else "–"
        corr = "–" if r["validation_test_r"] is None else f"{r['validation_test_r']:+.2f}"
        lines.append(
            f"| {r['recipe']} | {describe(r['settings'])} | {r['n_folds']} | {pm(r['uar'])} | {pm(r['war'])} | "
            f"{pm(r['macro_f1'])} | {pm(d, signed=True) if d else '–'} | {counts} | {corr} | "
            f"{pm(r['wall_time_s_per_fold'], 0)}; {pm(r.get('process_wall_s_per_fold'), 0)} | "
            f"{r['peak_rss_mib'] or '–'} | {r['peak_cuda_mib'] or '–'} |")
    lines += ["",
              "Test UAR per fold (the strong frozen baseline: the baseline of best validation UAR on that fold):", "",
              "| recipe | " + " | ".join(f"fold {k}" for k in folds) + " |", "|---|" + "---|" * len(folds)]
    lines.append("| strong frozen | " + " | ".join(
        f"{strong[k]['uar']:.3f} ({strong[k]['baseline']})" if k in strong else "–" for k in folds) + " |")
    for r in results:
        by = {x["fold"]: x["uar"] for x in r["folds"]}
        lines.append(f"| {r['recipe']} | " + " | ".join(f"{by[k]:.3f}" if k in by else "–" for k in folds) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, default=Path("../shared/data/ravdess"),
                    help="the corpus folder, or the manifest file of --corpus manifest")
    ap.add_argument("--corpus", default="ravdess", help="corpus name as in `loralens train --corpus`")
    ap.add_argument("--label-set", default=None, help="label set of the corpus (default: the corpus default)")
    ap.add_argument("--folds-scheme", default=None,
                    help="fold scheme (default ravdess6 for ravdess, else auto; see docs/folds.md)")
    ap.add_argument("--folds-k", type=int, default=None, help="folds of the speaker-kfold scheme")
    ap.add_argument("--out", type=Path, default=None, help="default runs/recipes-<model>")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--grid", default="screen", help=f"a built-in grid ({', '.join(GRIDS)}) or one of --recipes-file")
    ap.add_argument("--recipes", default=None, help="comma-separated recipe names (instead of --grid)")
    ap.add_argument("--recipes-file", type=Path, default=None, help="YAML with `recipes:` and `grids:`")
    ap.add_argument("--folds", default="0,1,2", help="fold indices (ravdess6: 0-5)")
    ap.add_argument("--seed", type=int, default=0,
                    help="training seed of every recipe (use another --out per seed; bench/seed_ensemble.py averages "
                    "several seeds' predictions)")
    ap.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs (smoke tests)")
    ap.add_argument("--clips-per-class-per-speaker", type=int, default=None,
                    help="train on a capped copy of the corpus (smoke tests)")
    ap.add_argument("--batch-size", type=int, default=None, help="override the adapted recipes' batch size")
    ap.add_argument("--feature-cache", type=Path, default=None, help="default <out>/feature_cache")
    ap.add_argument("--folds-file", type=Path, default=None,
                    help="folds JSON (e.g. another run's folds.json): the same folds whatever --seed; seed ensembles "
                         "on speaker-kfold corpora need it, since the seed also draws that scheme's folds")
    ap.add_argument("--json", type=Path, default=None, help="default bench/results/recipes-<grid>-<model>.json")
    ap.add_argument("--markdown", type=Path, default=None, help="default the JSON path with .md")
    ap.add_argument("--list", action="store_true", help="print the recipes and grids and exit")
    args = ap.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker)

    recipes, grids = dict(RECIPES), dict(GRIDS)
    if args.recipes_file is not None:
        extra = read_yaml_mapping(args.recipes_file)
        recipes.update(extra.get("recipes") or {})
        grids.update(extra.get("grids") or {})
    if args.list:
        for name, r in recipes.items():
            print(f"{name:<16} {describe(r)}")
        for name, names in grids.items():
            print(f"grid {name}: {', '.join(names)}")
        return 0
    names = [n.strip() for n in args.recipes.split(",") if n.strip()] if args.recipes else grids.get(args.grid)
    if names is None:
        ap.error(f"unknown grid {args.grid!r}: use one of {', '.join(grids)} or --recipes")
    unknown = [n for n in names if n not in recipes]
    if unknown:
        ap.error(f"unknown recipe(s) {', '.join(unknown)}: see --list")
    folds = [int(f) for f in args.folds.split(",") if f.strip()]
    out = args.out or Path(f"runs/recipes-{args.model}")
    label = args.recipes.replace(",", "+") if args.recipes else args.grid
    json_path = args.json or Path(f"bench/results/recipes-{label}-{args.model}.json")
    md_path = args.markdown or json_path.with_suffix(".md")
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    from loralens.data.corpora import load_corpus

    labels = list(load_corpus(args.corpus, args.root, args.label_set).labels)
    scheme = args.folds_scheme or ("ravdess6" if args.corpus == "ravdess" else "auto")
    common: dict[str, Any] = {"corpus": args.corpus, "corpus_root": str(args.root), "model": args.model,
                              "folds": scheme, "window": "trim", "seed": args.seed, "batch_size": 8,
                              "feature_cache": str(args.feature_cache or out / "feature_cache")}
    if args.label_set is not None:
        common["label_set"] = args.label_set
    if args.folds_k is not None:
        common["folds_k"] = args.folds_k
    if args.folds_file is not None:
        common["folds_file"] = str(args.folds_file)
    if args.clips_per_class_per_speaker:
        if args.corpus != "ravdess":
            ap.error("--clips-per-class-per-speaker caps RAVDESS only")
        common.update(corpus="manifest", label_set=",".join(labels),
                      corpus_root=str(capped_manifest(args.root, out, args.clips_per_class_per_speaker)))

    # frozen recipes first: their encoder cache is what the probe and LP-FT reuse
    order = sorted(names, key=lambda n: (0 if recipes[n].get("method") == "frozen" else
                                         2 if recipes[n].get("probe") else 1))
    frozen_run = next((out / n for n in order if recipes[n].get("method") == "frozen"), None)
    rows: dict[str, list[dict]] = {n: [] for n in names}
    effective: dict[str, dict] = {}
    for name in order:
        recipe = effective[name] = dict(recipes[name])
        if args.epochs is not None and not recipe.get("probe"):
            recipe["epochs"] = args.epochs
        if args.batch_size is not None and recipe.get("method") != "frozen" and not recipe.get("probe"):
            recipe["batch_size"] = args.batch_size
        for k in folds:
            if recipe.get("probe"):
                if frozen_run is None:
                    ap.error("recipe 'probe' needs a frozen recipe (e.g. frozen-last) in the same grid")
                rows[name].append(probe_fold(frozen_run, k, labels, bool(recipe.get("speaker_norm")),
                                             recipe.get("choose", "validation")))
                print(f"[{name}] fold {k}: test UAR {rows[name][-1]['uar']:.3f} "
                      f"(hidden state {rows[name][-1]['hidden_state']})", flush=True)
                continue
            cfg = recipe_config(name, recipe, common, out, k, args.model)
            info = run_recipe_fold(name, cfg, out, log_dir)
            row = fold_row(out / name, k, info["process_wall_s"])
            rows[name].append(row)
            when = " (complete earlier)" if info["skipped"] else f", {info['process_wall_s']:.0f} s"
            print(f"[{name}] fold {k}: test UAR {row['uar']:.3f}, validation UAR {row['validation_uar']:.3f}{when}",
                  flush=True)

    frozen_names = [n for n in names if recipes[n].get("method") == "frozen" or recipes[n].get("probe")]
    # the strong frozen baseline is chosen among the three (the other frozen heads are recipes like any other)
    baselines = {n: rows[n] for n in [n for n in STRONG_CANDIDATES if n in frozen_names] or frozen_names}
    strong = strong_baseline(baselines)
    results = [summarise(n, effective[n], rows[n]) for n in names]
    for r in results:
        r["vs_strong"] = paired(r["folds"], strong)
        if frozen_run is not None and r["recipe"] != frozen_run.name:
            r["vs_" + frozen_run.name] = paired(r["folds"], {x["fold"]: x for x in rows[frozen_run.name]})
    strong_rows = [strong[k] for k in folds if k in strong]
    table = tables(results, strong, folds)
    print(table)
    doc = {"benchmark": "recipes", "model": args.model, "grid": label, "folds": folds,
           "corpus": (f"{args.corpus} ({args.root}), folds {scheme}" if not args.clips_per_class_per_speaker else
                      f"ravdess, {args.clips_per_class_per_speaker} clips per class and actor"),
           "common": common, "epochs_override": args.epochs,
           "strong_frozen": {"per_fold": strong_rows, "uar": mean_std([r["uar"] for r in strong_rows]) if strong_rows
                             else None, "rule": "per fold, the baseline of best validation UAR"},
           "machine": {"platform": platform.platform(), "python": sys.version.split()[0]},
           "command": "python bench/recipes.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "results": results}
    atomic_write_json(json_path, doc)
    atomic_write_text(md_path, f"Recipes `{label}` on `{args.model}`, folds {folds}; command: `{doc['command']}`\n\n"
                      + table + "\n")
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

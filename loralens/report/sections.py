"""The sections of the run report, each built from a `RunOutput` (JSON only). Missing pieces become notes.

Every builder returns a `loralens.report.html.Section`; `build.py` puts them in order. Rates (UAR, WAR,
macro-F1, recall) are stored as fractions and shown in percent; fold aggregates are mean ± sample std
(ddof=1), as `loralens.training.metrics.aggregate_folds` computes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loralens.analysis.catalogue import BY_NAME, CATALOGUE
from loralens.report.html import (
    Cell,
    Figure,
    MeanStd,
    Section,
    Table,
    collect_environment,
    format_number,
    format_seconds,
    reproducibility_table,
)
from loralens.report.run_output import ANALYSIS_ORDER, AnalysedFold, AnalysisResult, RunOutput, Variant, natural_key
from loralens.training.config import AUTO_HIDDEN_STATES

SYNTHETIC_BANNER = "Synthetic smoke test \u2014 not an emotion benchmark"
RAVDESS_DOWNLOAD = "loralens data download ravdess --dest data/ravdess"
RAVDESS_RUN = "loralens run --corpus ravdess --corpus-root data/ravdess"

#: Report titles and one-line descriptions of the analyses (a result's meta.title wins for the title).
ANALYSIS_INFO: dict[str, tuple[str, str]] = {e.name: (e.title, e.description) for e in CATALOGUE}

#: What the uncertainty shown by each analysis is (the figures' bands and the numbers' intervals).
CI_NOTES: dict[str, str] = {e.name: e.ci_note for e in CATALOGUE}

CLAIMS: dict[str, tuple[str, str]] = {
    "delayed_specialization": (
        "Delayed specialization",
        "The paper's claim: the LoRA-adapted encoder keeps the pre-trained model's general features in its "
        "early layers and commits to the emotion decision only in the deepest layers.",
    ),
    "forward_alignment_backward_differentiation": (
        "Forward alignment, backward differentiation",
        "The paper's claim: LoRA's A and B matrices are aligned in the forward pass (similar output "
        "structure) but differ in the backward pass (gradients of different structure).",
    ),
}

#: Curves shown aggregated over folds (path in the result, row label) and what their columns index.
AGGREGATE_CURVES: dict[str, tuple[str, tuple[tuple[tuple[str, ...], str], ...]]] = {
    e.name: (e.curves_axis, e.key_curves) for e in CATALOGUE if e.curves_axis
}


# ------------------------------------------------------------------------------------------------ helpers
def _pct(value: Any) -> float | None:
    return 100.0 * float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _pct_cell(agg: Mapping[str, Any] | None) -> Cell:
    """A mean ± std (fractions) aggregate as a percent cell; the mean alone with one fold; None when absent."""
    if not agg or agg.get("mean") is None:
        return None
    mean = 100.0 * float(agg["mean"])
    if agg.get("std") is None:
        return mean
    return MeanStd(mean, 100.0 * float(agg["std"]), digits=2, n=agg.get("n"))


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    from loralens.training.metrics import mean_std

    return mean_std(list(values))


def _peak(memory: Any, key: str) -> float | None:
    if isinstance(memory, Mapping) and isinstance(memory.get(key), (int, float)):
        return float(memory[key])
    return None


def _seconds(value: Any) -> str | None:
    return format_seconds(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _max(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _head_words(v: Variant) -> str:
    """", head on hidden state 4, z-scored input" and the like (the folds' own choices with `auto`); "" for the
    default head."""
    head = (v.config or {}).get("head")
    head = head if isinstance(head, Mapping) else {}
    where = head.get("hidden_state")
    words = ""
    if where in AUTO_HIDDEN_STATES:
        chosen = [(f.metrics or {}).get("hidden_state") for f in v.complete_folds]
        chosen = [str(c) for c in chosen if c is not None]
        words = ", head on the hidden state each fold chose" + (f" ({', '.join(chosen)})" if chosen else "")
    elif where is not None:
        words = f", head on hidden state {where}"
    if head.get("weighted_layer_sum"):
        words = ", head on the weighted layer sum" + (" (per-layer LN)" if head.get("layer_norm") else "")
    if head.get("speaker_norm"):
        words += ", input z-scored per speaker"
    elif head.get("standardize"):
        words += ", z-scored input"
    return words


def _describe_variant(v: Variant) -> str:
    return _describe_method(v) + _head_words(v)


def _describe_method(v: Variant) -> str:
    cfg = v.config or {}
    method = v.method
    if method == "frozen":
        return "frozen encoder, trained head (baseline)"
    if method == "full":
        return "full fine-tuning of the encoder"
    lora = cfg.get("lora") if isinstance(cfg.get("lora"), Mapping) else {}
    parts = ["LoRA"]
    if lora.get("r") is not None:
        parts.append(f"r={lora['r']}")
    alpha = lora.get("alpha")
    if alpha is not None:
        parts.append(f"alpha={int(alpha) if isinstance(alpha, float) and alpha.is_integer() else alpha}")
    targets = lora.get("target_modules")
    if targets:
        parts.append("on " + "+".join(str(t) for t in targets))
    if lora.get("layers"):
        parts.append("layers " + ",".join(str(x) for x in lora["layers"]))
    if cfg.get("seed") is not None:
        parts.append(f"seed {cfg['seed']}")
    return " ".join(parts)


def _fold_rows(v: Variant) -> list[dict[str, Any]]:
    """Per complete fold: name, uar, war, macro_f1, per_class_recall, validation_uar, selected_epoch, wall_time_s,
    trainable_params, peak_memory, n_test (summary.json's per-fold record, else metrics.json)."""
    by_name = (v.summary or {}).get("folds") if isinstance((v.summary or {}).get("folds"), Mapping) else {}
    rows = []
    for f in v.complete_folds:
        m = f.metrics or {}
        test = m.get("test") if isinstance(m.get("test"), Mapping) else {}
        s = by_name.get(f.name) if isinstance(by_name.get(f.name), Mapping) else {}
        validation = m.get("validation") if isinstance(m.get("validation"), Mapping) else {}
        sizes = m.get("sizes") if isinstance(m.get("sizes"), Mapping) else {}
        rows.append({
            "index": f.index, "name": f.name,
            "uar": s.get("uar", test.get("uar")), "war": s.get("war", test.get("war")),
            "macro_f1": s.get("macro_f1", test.get("macro_f1")),
            "per_class_recall": s.get("per_class_recall", test.get("per_class_recall")) or {},
            "validation_uar": s.get("validation_uar", validation.get("uar")),
            "selected_epoch": s.get("selected_epoch", m.get("selected_epoch")),
            "wall_time_s": s.get("wall_time_s", m.get("wall_time_s")),
            "trainable_params": s.get("trainable_params", m.get("trainable_params")),
            "total_params": m.get("total_params"),
            "peak_memory": s.get("peak_memory", m.get("peak_memory")),
            "n_test": s.get("n_test", sizes.get("test")),
            "confusion": test.get("confusion"),
        })
    if not rows and by_name:  # summary.json without fold folders (copied out alone): still show it
        for name, s in sorted(by_name.items(), key=lambda kv: natural_key(kv[0])):
            if isinstance(s, Mapping):
                rows.append({"index": None, "name": name, **s, "confusion": None})
    return rows


def _aggregate(v: Variant, labels: Sequence[str]) -> dict[str, Any] | None:
    """summary.json's mean_std, else computed from the complete folds (training still running)."""
    ms = (v.summary or {}).get("mean_std")
    if isinstance(ms, Mapping):
        return dict(ms)
    rows = _fold_rows(v)
    if not rows:
        return None
    out = {k: _mean_std([r[k] for r in rows if isinstance(r.get(k), (int, float))]) for k in ("uar", "war", "macro_f1")}
    out["per_class_recall"] = {
        lab: _mean_std([r["per_class_recall"].get(lab) for r in rows if isinstance(r.get("per_class_recall"), Mapping)])
        for lab in labels
    }
    return out


def _number(value: Any) -> Cell:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return value
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        shown = ", ".join(format_number(x) if isinstance(x, float) else str(x) for x in value[:12])
        return shown + (f", ... ({len(value)} values)" if len(value) > 12 else "")
    return str(value)


def _unusable_image(path: Path) -> str | None:
    """Why the figure file at `path` cannot be embedded (unreadable, not a PNG or SVG), or None when it can."""
    from loralens.report.images import image_mime

    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if image_mime(head) is None:
        return "neither PNG nor SVG"
    if head.startswith(b"\x89PNG") and len(head) < 24:
        return "truncated PNG"
    return None


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


# ------------------------------------------------------------------------------------------------ sections
def banner(run: RunOutput) -> str | None:
    """The warning banner of a synthetic run (None otherwise)."""
    if not run.synthetic:
        return None
    return (f"{SYNTHETIC_BANNER}. The audio is synthesised (loralens.data.synthetic): it checks that the pipeline "
            f"runs, and its numbers say nothing about emotion recognition. To run the same on RAVDESS: "
            f"`{RAVDESS_DOWNLOAD}`, then `{RAVDESS_RUN} ...` with the other options of this run.")


def overview_section(run: RunOutput) -> Section:
    """What was run: corpus, model, variants, folds, analyses; for a synthetic run how to run it on RAVDESS."""
    corpus = (run.data_summary or {}).get("corpus") or run.setting("corpus") or "unknown corpus"
    model = run.setting("model") or "unknown model"
    n_folds = len((run.folds or {}).get("folds") or []) or len(((run.data_summary or {}).get("folds")) or [])
    paragraphs = [
        f"Corpus {corpus}, Whisper model {model}, {n_folds or 'unknown number of'} speaker-independent "
        f"cross-validation folds" + (f" ({run.folds['scheme']})" if run.folds and run.folds.get("scheme") else "")
        + (f", seed {run.seed}." if run.seed is not None else ".")
    ]
    if run.variants:
        paragraphs.append("Variants trained: " + "; ".join(f"{v.name} ({_describe_variant(v)}, "
                                                            f"{len(v.complete_folds)} folds complete)"
                                                            for v in run.variants) + ".")
    if run.analysed:
        paragraphs.append("Analysed: " + ", ".join(a.label for a in run.analysed) + ".")
    notes = []
    if run.synthetic:
        paragraphs.append(
            f"{SYNTHETIC_BANNER}. The corpus is the synthetic source-filter corpus of the demo: utterances with "
            "the prosodic cues of emotion (pitch, tempo, loudness, spectral tilt) and nothing else. Use this report "
            "to check that every stage ran; do not read its numbers as emotion-recognition results.")
        paragraphs.append(f"The same run on RAVDESS: download and verify the corpus with `{RAVDESS_DOWNLOAD}`, "
                          f"then `{RAVDESS_RUN} --out runs/ravdess` with this run's other options (model, "
                          f"variants, analyses; see run.yaml in the reproducibility section).")
    if run.config is None:
        notes.append(f"{run.root / 'run.yaml'} not found: the run configuration is unknown.")
    return Section("Overview", paragraphs=paragraphs, notes=notes)


def data_section(run: RunOutput) -> Section:
    """Classes, speakers, folds and durations of the corpus as used (bad clips left out)."""
    s = run.data_summary
    notes: list[str] = []
    tables: list[Table] = []
    paragraphs: list[str] = []
    fold_records = (s or {}).get("folds")
    if s is None:
        notes.append(f"Not run: {run.root / 'data' / 'summary.json'} not found (the data stage has not finished).")
    else:
        n = s.get("n_clips") or 0
        genders = s.get("genders") or {}
        paragraphs.append(
            f"{s.get('corpus', 'corpus')}: {n} clips, {s.get('n_speakers', '?')} speakers"
            + (f" ({', '.join(f'{v} {k}' for k, v in genders.items())})" if genders else "")
            + f", {len(s.get('labels') or [])} classes ({', '.join(str(x) for x in s.get('labels') or [])}).")
        classes = s.get("classes") or {}
        if classes:
            tables.append(Table(["class", "clips", "share (%)"],
                                [[str(k), int(v), 100.0 * v / n if n else None] for k, v in classes.items()],
                                caption="Clips per class", digits=1))
        d = s.get("durations")
        if isinstance(d, Mapping) and d.get("n"):
            total_min = d["total_s"] / 60.0 if isinstance(d.get("total_s"), (int, float)) else None
            tables.append(Table(["clips", "min (s)", "median (s)", "mean (s)", "max (s)", "total (min)"],
                                [[d.get("n"), d.get("min_s"), d.get("median_s"), d.get("mean_s"), d.get("max_s"),
                                  total_min]], caption="Clip durations", digits=2))
        else:
            notes.append("Durations were not recorded in data/summary.json.")
        speakers = s.get("speakers") or {}
        labels = [str(x) for x in s.get("labels") or []]
        if speakers:
            rows: list[list[Cell]] = []
            for spk, info in speakers.items():
                info = info if isinstance(info, Mapping) else {}
                cls = info.get("classes") if isinstance(info.get("classes"), Mapping) else {}
                rows.append([str(spk), str(info.get("gender") or "?"), info.get("n_clips")]
                            + [cls.get(lab) for lab in labels])
            tables.append(Table(["speaker", "gender", "clips", *labels], rows, caption="Clips per speaker and class"))
    if not fold_records and run.folds and isinstance(run.folds.get("folds"), list):
        fold_records = [{"name": f.get("name"), "speakers": f.get("speakers") or {},
                         "n_clips": {k: len(f.get(k) or []) for k in ("train", "validation", "test")}}
                        for f in run.folds["folds"] if isinstance(f, Mapping)]
    if fold_records:
        def spk(f: Mapping[str, Any], split: str) -> str:
            names = (f.get("speakers") or {}).get(split) or []
            if len(names) <= 6:
                return ", ".join(str(x) for x in names)
            return f"{', '.join(map(str, names[:3]))}, ... ({len(names)})"

        tables.append(Table(
            ["fold", "train clips", "validation clips", "test clips", "validation speakers", "test speakers"],
            [[str(f.get("name")), (f.get("n_clips") or {}).get("train"), (f.get("n_clips") or {}).get("validation"),
              (f.get("n_clips") or {}).get("test"), spk(f, "validation"), spk(f, "test")] for f in fold_records],
            caption="Folds (no speaker is in two splits of a fold; the test splits cover the corpus once)",
        ))
    elif s is not None:
        notes.append("No folds recorded (folds.json not found).")
    skipped = _skipped_files(run, s)
    if skipped:
        paragraphs.append(f"{len(skipped)} audio file(s) failed the bad-audio checks and were left out of every "
                          "split (on_bad_audio: skip); they are listed below and in data/bad_files.json.")
        tables.append(Table(["clip", "file", "reason"],
                            [[str(b.get("id")), str(b.get("path")), str(b.get("reason"))] for b in skipped],
                            caption="Files left out"))
    elif s is not None:
        notes.append("No audio file was left out: every clip passed the bad-audio checks.")
    return Section("Data", paragraphs=paragraphs, tables=tables, notes=notes)


def _skipped_files(run: RunOutput, summary: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The bad files left out: data/summary.json's `skipped`, else data/bad_files.json (runs made before)."""
    if summary is not None and isinstance(summary.get("skipped"), list):
        return [b for b in summary["skipped"] if isinstance(b, Mapping)]
    path = run.root / "data" / "bad_files.json"
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [b for b in files if isinstance(b, Mapping)] if isinstance(files, list) else []


@dataclass
class _ResultRows:
    """The rows of the results tables and what the figures need, gathered variant by variant (`add`)."""

    notes: list[str] = field(default_factory=list)
    main: list[list[Cell]] = field(default_factory=list)  # one per variant: mean ± std, parameters, time, memory
    folds: list[list[Cell]] = field(default_factory=list)  # one per complete fold of every variant
    recall: list[list[Cell]] = field(default_factory=list)  # one per variant that ran: recall per class
    uar: dict[str, list[float]] = field(default_factory=dict)  # variant -> finite test UAR of each fold
    confusions: dict[str, list[list[int]]] = field(default_factory=dict)  # variant -> confusions summed over folds
    n_conf: dict[str, int] = field(default_factory=dict)  # variant -> folds summed into its confusion matrix

    def add(self, v: Variant, labels: Sequence[str], n_total: int | None) -> None:
        """The rows of variant `v` (`n_total`: the folds of the run, for the note on incomplete variants)."""
        rows = _fold_rows(v)
        agg = _aggregate(v, labels)
        if not rows:
            self.notes.append(f"{v.name}: not run (no complete fold under {v.root}).")
            self.main.append([v.name, v.method, None, None, None, None, None, None, None, "0"])
            return
        if n_total and len(rows) < n_total:
            self.notes.append(f"{v.name}: {len(rows)} of {n_total} folds complete; its numbers cover those folds only.")
        self.main.append(_main_row(v, rows, agg))
        self.uar[v.name] = [float(r["uar"]) for r in rows
                            if isinstance(r.get("uar"), (int, float)) and math.isfinite(r["uar"])]
        for r in rows:
            self.folds.append(_fold_table_row(v, r))
            self.add_confusion(v.name, r.get("confusion"))
        pcr = (agg or {}).get("per_class_recall") or {}
        self.recall.append([v.name] + [_pct_cell(pcr.get(lab)) for lab in labels])

    def add_confusion(self, name: str, cm: Any) -> None:
        """Add a fold's confusion matrix to the sum of variant `name` (a matrix of another size restarts it)."""
        if not (isinstance(cm, list) and cm):
            return
        if name in self.confusions and len(self.confusions[name]) == len(cm):
            self.confusions[name] = [[a + b for a, b in zip(ra, rb)] for ra, rb in zip(self.confusions[name], cm)]
        else:
            self.confusions[name] = [list(row) for row in cm]
        self.n_conf[name] = self.n_conf.get(name, 0) + 1


def _main_row(v: Variant, rows: Sequence[Mapping[str, Any]], agg: Mapping[str, Any] | None) -> list[Cell]:
    """Variant, method, UAR / WAR / macro-F1 mean ± std, trainable parameters (share), summed training time, peak
    GPU and RSS memory (MiB, largest over folds), folds."""
    trainable = next((r["trainable_params"] for r in rows if isinstance(r.get("trainable_params"), int)), None)
    total = next((r["total_params"] for r in rows if isinstance(r.get("total_params"), int)), None)
    times = [float(r["wall_time_s"]) for r in rows if isinstance(r.get("wall_time_s"), (int, float))]
    gpu = _max([_peak(r.get("peak_memory"), "cuda_max_allocated_mib") for r in rows])
    cpu = _max([_peak(r.get("peak_memory"), "cpu_rss_peak_mib") for r in rows])
    share = f" ({100.0 * trainable / total:.2f} %)" if trainable is not None and total else ""
    return [
        v.name, v.method, _pct_cell((agg or {}).get("uar")), _pct_cell((agg or {}).get("war")),
        _pct_cell((agg or {}).get("macro_f1")),
        f"{format_number(trainable)}{share}" if trainable is not None else None,
        format_seconds(sum(times)) if times else None, None if gpu is None else round(gpu),
        None if cpu is None else round(cpu), str(len(rows)),
    ]


def _fold_table_row(v: Variant, r: Mapping[str, Any]) -> list[Cell]:
    """Variant, fold, test UAR / WAR / macro-F1, validation UAR, selected epoch (from 1), test clips, time."""
    return [v.name, str(r["name"]), _pct(r.get("uar")), _pct(r.get("war")), _pct(r.get("macro_f1")),
            _pct(r.get("validation_uar")),
            r["selected_epoch"] + 1 if isinstance(r.get("selected_epoch"), int) else None,
            r.get("n_test"),
            _seconds(r.get("wall_time_s"))]


def _main_table(rows: list[list[Cell]], labels: Sequence[str]) -> Table:
    chance = 1.0 / len(labels) if labels else None
    return Table(
        ["variant", "method", "UAR (%)", "WAR (%)", "macro-F1 (%)", "trainable params", "training time",
         "peak GPU (MiB)", "peak RSS (MiB)", "folds"],
        rows, caption="Test metrics per variant: mean ± std over folds", digits=2,
        notes="UAR = unweighted average recall (mean of per-class recalls), WAR = accuracy; std = sample std over "
              "folds (ddof=1), no std with one fold. Model selection used the validation split only. Training time "
              "is the sum of the folds' wall times (the frozen baseline's one-off encoder pass is not included); "
              "peak memory is the largest over folds (GPU: CUDA max allocated; CPU: the process's peak RSS)."
              + (f" Chance UAR = 1/{len(labels)} = {100 * chance:.1f} %." if chance else ""),
    )


def _fold_table(rows: list[list[Cell]]) -> Table:
    return Table(["variant", "fold", "UAR (%)", "WAR (%)", "macro-F1 (%)", "val. UAR (%)",
                  "epoch", "test clips", "time"], rows, digits=2,
                 caption="Test metrics per fold",
                 notes="val. UAR: validation UAR of the epoch kept (the epoch column, counted from 1: selected on "
                       "validation, or the last with select_on: last); "
                       "time: the fold's training wall time.")


def _uar_figures(uar: Mapping[str, list[float]], figure_dir: Path, labels: Sequence[str]) -> list[Figure]:
    """The bar chart of test UAR per variant (drawn into `figure_dir`), when some variant has a UAR."""
    from loralens.plots.results import uar_per_variant_figure

    if not uar:
        return []
    chance = 1.0 / len(labels) if labels else None
    png, _ = uar_per_variant_figure(uar, figure_dir / "uar_per_variant", chance=chance)
    return [Figure(png, caption="Test UAR per variant: bars = mean over folds, error bars = sample std "
                                "over folds, dots = folds, dashed line = chance.",
                   alt="bar chart of test UAR per variant")]


def _results_only(run: RunOutput, figure_dir: Path, rows: _ResultRows) -> Section:
    """The results section: headline, tables (per variant, ablation, per class, per fold), bar chart."""
    labels = run.labels
    tables = [_main_table(rows.main, labels)]
    paragraphs = []
    best = _headline(run, rows.uar)
    if best:
        paragraphs.append(best)
    tables += _ablation_tables(run, labels)
    tables += _ensemble_tables(run)
    if labels and rows.recall:
        tables.append(Table(["variant", *labels], rows.recall, digits=1,
                            caption="Test recall per class (%): mean ± std over folds"))
    tables.append(_fold_table(rows.folds))
    figures = _uar_figures(rows.uar, figure_dir, labels)
    return Section("Results", paragraphs=paragraphs, tables=tables, figures=figures, notes=rows.notes)


def _confusion_section(run: RunOutput, figure_dir: Path, rows: _ResultRows) -> Section:
    """The confusion matrices of every variant summed over its test folds, in one figure."""
    from loralens.plots.confusion import confusion_grid_figure

    labels, confusions = run.labels, rows.confusions
    conf_notes = []
    conf_figures = []
    if confusions and labels and all(len(cm) == len(labels) for cm in confusions.values()):
        png, _ = confusion_grid_figure(confusions, labels, figure_dir / "confusion_per_variant", rows.n_conf)
        conf_figures.append(Figure(png, caption="Test confusion matrices summed over folds (every clip is in exactly "
                                                "one test fold, so each matrix covers the corpus once): rows = true "
                                                "class, columns = predicted; colour = fraction of the true class, "
                                                "numbers = clips.",
                                   alt="confusion matrices, one per variant"))
    else:
        conf_notes.append("Not run: no complete fold with a confusion matrix in its metrics.json.")
    missing = [v.name for v in run.variants if v.name not in confusions]
    if confusions and missing:
        conf_notes.append(f"No confusion matrix for: {', '.join(missing)}.")
    conf_notes.append("The per-fold confusion matrices and training curves are in each fold's figures/ folder "
                      "(train/<variant>/fold_<k>/figures/).")
    return Section("Confusion matrices",
                   paragraphs=["Confusions are summed over the test folds of each variant rather than shown per "
                               "fold: one matrix per variant covers every clip once."] if conf_figures else [],
                   figures=conf_figures, notes=conf_notes)


def results_section(run: RunOutput, figure_dir: Path) -> tuple[Section, Section]:
    """The results section (mean ± std, per fold, per class, ablation, bar chart) and the confusion section."""
    if not run.variants:
        text = f"Not run: no training results under {run.root / 'train'}."
        return (Section("Results", notes=[text]), Section("Confusion matrices", notes=[text]))
    n_total = len(run.folds.get("folds") or []) if run.folds else None
    rows = _ResultRows()
    for v in run.variants:
        rows.add(v, run.labels, n_total)
    return _results_only(run, figure_dir, rows), _confusion_section(run, figure_dir, rows)


def _headline(run: RunOutput, uar: Mapping[str, Sequence[float]]) -> str | None:
    if not uar:
        return None
    means = {k: sum(v) / len(v) for k, v in uar.items() if v}
    if not means:
        return None
    parts = [f"{k} {100 * m:.1f} %" for k, m in means.items()]
    text = "Mean test UAR: " + ", ".join(parts) + "."
    lora = {k: m for k, m in means.items() if k.startswith("lora")}
    if lora and "frozen" in means:
        best = max(lora, key=lora.get)
        diff = 100 * (lora[best] - means["frozen"])
        side = "above" if diff >= 0 else "below"
        text += f" The best LoRA variant ({best}) is {abs(diff):.1f} points {side} the frozen baseline."
    for name, e in run.ensembles.items():
        ens, gain = (e.get("mean_std") or {}).get("uar") or {}, e.get("gain") or {}
        if ens.get("mean") is not None and gain.get("mean") is not None:
            text += (f" Averaging the class probabilities of {len(e.get('variants') or [])} seeds ({name}) gives "
                     f"{100 * ens['mean']:.1f} %, {100 * gain['mean']:+.1f} points over the mean single seed.")
    if run.synthetic:
        text += " (Synthetic data: these numbers check the pipeline, not emotion recognition.)"
    return text


def _ensemble_tables(run: RunOutput) -> list[Table]:
    """Seed ensembles (ensembles/<name>.json): each seed's mean UAR beside the UAR of their averaged
    probabilities, and the paired gain per fold."""
    rows: list[list[Cell]] = []
    for name, e in run.ensembles.items():
        ms, gain = e.get("mean_std") or {}, e.get("gain") or {}
        folds = (ms.get("uar") or {}).get("n")
        rows.append([name, ", ".join(str(v) for v in e.get("variants") or []), _pct_cell(e.get("members_uar")),
                     _pct_cell(ms.get("uar")), _pct_cell(ms.get("war")), _pct_cell(ms.get("macro_f1")),
                     _pct_cell(gain), f"{gain.get('better', 0)} / {gain.get('worse', 0)}", folds])
    if not rows:
        return []
    return [Table(["ensemble", "seeds (variants)", "single seed UAR (%)", "ensemble UAR (%)", "WAR (%)",
                   "macro-F1 (%)", "gain (points)", "folds better / worse", "folds"], rows, digits=1,
                  caption="Seed ensembles: the test class probabilities of variants that differ only in their "
                          "seed, averaged per fold (mean ± std over folds)",
                  notes="single seed UAR: the seeds' mean UAR per fold, then mean ± std over folds; gain: ensemble "
                        "minus that mean, per fold. The ensemble is what `loralens predict` makes of the seeds' run "
                        "folders together.")]


def _ablation_tables(run: RunOutput, labels: Sequence[str]) -> list[Table]:
    """Rank / target-module / seed ablation side by side when several LoRA variants ran, plus the spread over
    seeds of otherwise identical settings."""
    lora = [v for v in run.variants if v.method == "lora" and v.complete_folds]
    if len(lora) < 2:
        return []
    rows = []
    groups: dict[tuple, list[tuple[Variant, float]]] = {}
    for v in lora:
        cfg = v.config or {}
        lcfg = cfg.get("lora") if isinstance(cfg.get("lora"), Mapping) else {}
        agg = _aggregate(v, labels) or {}
        targets = "+".join(str(t) for t in lcfg.get("target_modules") or []) or None
        layers = ",".join(str(x) for x in lcfg["layers"]) if lcfg.get("layers") else "all"
        trainable = next((r["trainable_params"] for r in _fold_rows(v)
                          if isinstance(r.get("trainable_params"), int)), None)
        key = (lcfg.get("r"), lcfg.get("alpha"), targets, layers)
        alpha = lcfg.get("alpha")
        if isinstance(alpha, float) and alpha.is_integer():
            alpha = int(alpha)
        rows.append((key, cfg.get("seed"), [v.name, lcfg.get("r"), alpha, targets, layers, cfg.get("seed"),
                                            _pct_cell(agg.get("uar")), _pct_cell(agg.get("war")),
                                            _pct_cell(agg.get("macro_f1")), trainable]))
        mean_uar = (agg.get("uar") or {}).get("mean")
        if mean_uar is not None:
            groups.setdefault(key, []).append((v, float(mean_uar)))

    def order(item: tuple) -> tuple:
        (r, alpha, targets, layers), seed, _ = item
        return (str(targets), r if isinstance(r, (int, float)) else math.inf, str(layers),
                seed if isinstance(seed, int) else math.inf)

    tables = [Table(["variant", "rank r", "alpha", "target modules", "layers", "seed", "UAR (%)", "WAR (%)",
                     "macro-F1 (%)", "trainable parameters"], [row for *_, row in sorted(rows, key=order)],
                    caption="LoRA ablation: rank, target modules and seed side by side (mean ± std over folds)",
                    digits=1,
                    notes="When ranks vary, alpha = 2 r keeps the update scale alpha / r comparable (the paper's "
                          "r = 32, alpha = 64).")]
    seeded = {k: g for k, g in groups.items() if len(g) > 1}
    if seeded:
        seed_rows: list[list[Cell]] = []
        for (r, alpha, targets, layers), g in seeded.items():
            ms = _mean_std([u for _, u in g])
            seed_rows.append([f"r={r}, alpha={alpha}, {targets}, layers {layers}", len(g),
                              _pct_cell(ms), ", ".join(v.name for v, _ in g)])
        tables.append(Table(["setting", "seeds", "UAR (%) over seeds", "variants"], seed_rows, digits=1,
                            caption="Seed variation: the fold-mean UAR of identical settings, mean ± std over seeds"))
    return tables


def _aggregate_leaf(curves: Any, path: Sequence[str]) -> Mapping[str, Any] | None:
    for key in path:
        if not isinstance(curves, Mapping):
            return None
        curves = curves.get(key)
    return curves if isinstance(curves, Mapping) and isinstance(curves.get("mean"), list) else None


def _aggregate_cell(mean: Any, std: Any, n: int) -> Cell:
    if not isinstance(mean, (int, float)):
        return None
    return MeanStd(float(mean), float(std) if isinstance(std, (int, float)) else math.nan, n=n)


def aggregate_tables(run: RunOutput, name: str, short_title: str) -> list[Table]:
    """Per variant whose `aggregate/<name>.json` covers at least two folds: the key curves of `AGGREGATE_CURVES`
    (rows) per layer (columns) as mean \u00b1 sample std over folds. Nothing for one fold."""
    if name not in AGGREGATE_CURVES:
        return []
    axis, wanted = AGGREGATE_CURVES[name]
    tables = []
    for variant, agg in run.aggregates.items():
        n = agg.n_folds(name)
        if n < 2:
            continue
        doc = agg.analyses[name]
        leaves = [(label, leaf) for path, label in wanted
                  if (leaf := _aggregate_leaf(doc.get("curves"), path)) is not None]
        if not leaves:
            continue
        width = max(len(leaf["mean"]) for _, leaf in leaves)
        rows: list[list[Cell]] = []
        for label, leaf in leaves:
            std = leaf.get("std") if isinstance(leaf.get("std"), list) else []
            per_fold = [p for p in leaf.get("per_fold") or [] if isinstance(p, list)]
            # folds with a value at layer i (the tooltip's count): a fold's null is left out of that cell
            counts = [sum(i < len(p) and isinstance(p[i], (int, float)) for p in per_fold) if per_fold
                      else int(leaf.get("n_folds") or n) for i in range(len(leaf["mean"]))]
            cells = [_aggregate_cell(m, std[i] if i < len(std) else None, counts[i])
                     for i, m in enumerate(leaf["mean"])]
            rows.append([label, *cells, *[None] * (width - len(cells))])
        folds = ", ".join(str(k) for k in doc.get("folds") or [])
        tables.append(Table(["curve", *(str(i) for i in range(width))], rows,
                            caption=f"{short_title}, {variant}: aggregated over {n} folds ({folds}); "
                                    f"columns: {axis}",
                            notes="Mean \u00b1 sample standard deviation (ddof = 1) over folds of each fold's "
                                  "point estimate; folds where a value is missing are left out of that cell."))
    return tables


def _analysis_title(name: str, results: Sequence[AnalysisResult]) -> str:
    for r in results:
        if r.meta.get("title"):
            return str(r.meta["title"])
    return ANALYSIS_INFO.get(name, (name.replace("_", " ").capitalize(), ""))[0]


def analysis_sections(run: RunOutput) -> list[Section]:
    """One section per analysis in suite order (extra analyses found after them); every analysed variant and fold
    side by side: readings, a table of run facts, figures grouped by figure so the same plot of each variant
    follows one another."""
    if not run.analysed:
        return [Section("Analyses", notes=[f"Not run: no analysis results under {run.root / 'analysis'}."])]
    found = {n for a in run.analysed for n in a.analyses}
    names = list(ANALYSIS_ORDER) + sorted(found - set(ANALYSIS_ORDER), key=natural_key)
    several = len(run.analysed) > 1
    sections = []
    for name in names:
        entries = [(a, a.analyses.get(name)) for a in run.analysed]
        complete = [(a, r) for a, r in entries if r is not None and r.result is not None]
        title = "Analysis: " + _analysis_title(name, [r for _, r in entries if r is not None])
        description = ANALYSIS_INFO.get(name, ("", ""))[1]
        paragraphs = [description] if description else []
        notes: list[str] = []
        for a, r in entries:
            if r is None:
                notes.append(f"{a.label}: not run.")
            elif r.result is None:
                notes.append(f"{a.label}: failed: {r.error}" if r.error else f"{a.label}: not run (no result.json).")
        if not complete:
            sections.append(Section(title, paragraphs=paragraphs, notes=notes))
            continue
        rows: list[list[Cell]] = []
        for a, r in complete:
            reading = str(r.result.get("reading") or "").strip()
            paragraphs.append(f"{a.label}: {reading}" if several else reading or "(no reading recorded)")
            meta = r.meta
            rows.append([a.variant, str(a.fold), meta.get("n_test_clips"), meta.get("n_boot"),
                         _seconds(meta.get("wall_time_s")),
                         meta.get("peak_rss_mib"), len(r.figures)])
            for m in r.missing_figures:
                notes.append(f"{a.label}: figure {m} listed in result.json but not found in {r.root}.")
            if r.result.get("last_layer_max_abs_logit_diff") not in (None, 0, 0.0):
                notes.append(f"{a.label}: check failed: the last layer's lens logits differ from the model's by "
                             f"{r.result['last_layer_max_abs_logit_diff']} (must be 0).")
        tables = [Table(["variant", "fold", "test clips", "bootstrap resamples", "wall time", "peak RSS (MiB)",
                         "figures"], rows, digits=1, caption=f"{title[len('Analysis: '):]}: runs shown")]
        tables += aggregate_tables(run, name, title[len('Analysis: '):])
        figures = []
        by_stem: dict[str, list[tuple[AnalysedFold, Path]]] = {}
        for a, r in complete:
            for p in r.figures:
                by_stem.setdefault(str(p.relative_to(r.root).with_suffix("")), []).append((a, p))
        for stem, items in by_stem.items():
            for a, p in items:
                problem = _unusable_image(p)
                if problem:
                    notes.append(f"{a.label}: figure {p} left out: {problem}.")
                    continue
                what = Path(stem).name.replace("_", " ")
                figures.append(Figure(p, caption=f"{title[len('Analysis: '):]}, {a.label}: {what}.",
                                      alt=f"{name} {what} ({a.label})"))
        seeds = {r.meta.get("seed") for _, r in complete}
        ci = CI_NOTES.get(name, "Intervals, where shown, are percentile-bootstrap intervals over test clips.")
        boot = {r.result.get("n_boot_diagonal", r.meta.get("n_boot")) for _, r in complete} - {None}
        if name == "similarity" and all(isinstance(r.result.get("diagonal_band"), Mapping) for _, r in complete):
            groups = sorted({r.result["diagonal_band"].get("groups") for _, r in complete} - {None})
            ci += f" Here: jackknife over {', '.join(str(g) for g in groups)} groups of clips."
            boot = set()
        if name in BY_NAME and not BY_NAME[name].bootstrap:
            boot = set()
        alpha = {r.result.get("alpha") for _, r in complete} - {None}
        level = f"{100 * (1 - float(next(iter(alpha)))):.0f} % " if len(alpha) == 1 else "95 % "
        if boot:
            ci += (f" Here: {level}intervals from {', '.join(str(b) for b in sorted(boot))} bootstrap resamples"
                   + (f", seed {', '.join(str(s) for s in seeds if s is not None)}" if seeds - {None} else "") + ".")
        notes.insert(0, "Confidence: " + ci)
        sections.append(Section(title, paragraphs=paragraphs, tables=tables, figures=figures, notes=notes))
    return sections


def _verdict_label(v: Mapping[str, Any]) -> str:
    """The claim's outcome in capitals: `outcome` where verdicts.py wrote one, else from `supported` (older files)."""
    outcome = v.get("outcome")
    if isinstance(outcome, str) and outcome:
        return outcome.upper()
    supported = v.get("supported")
    if supported is True:
        return "SUPPORTED"
    if supported is False:
        return "NOT SUPPORTED"
    return "NOT ENOUGH DATA"


def _claims(verdicts: Mapping[str, Any]) -> dict[str, Any]:
    """Claim name -> verdict, from `{"claims": {...}}` or from verdicts.py's flat `{claim: {...}, "thresholds": ...}`
    (each claim then also gets the shared thresholds)."""
    if isinstance(verdicts.get("claims"), Mapping):
        return dict(verdicts["claims"])
    shared = verdicts.get("thresholds")
    claims = {}
    for name, v in verdicts.items():
        if isinstance(v, Mapping) and "supported" in v:
            claims[name] = {**v, "thresholds": shared} if isinstance(shared, Mapping) and "thresholds" not in v else v
    return claims


def _criteria(v: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    c = v.get("criteria")
    return [x for x in c if isinstance(x, Mapping)] if isinstance(c, list) else []


def _deciding(v: Mapping[str, Any]) -> str:
    """One sentence: which criteria decided the claim's outcome."""
    crit = _criteria(v)
    outcome = str(v.get("outcome") or "")
    names = lambda o: [str(c.get("name") or c.get("criterion")) for c in crit if c.get("outcome") == o]  # noqa: E731
    if outcome == "supported":
        return f"All {len(crit)} criteria are met beyond their uncertainty."
    if outcome == "not supported":
        return "Fails on: " + "; ".join(names("not supported")) + "."
    if outcome == "inconclusive":
        return "Undecided within the uncertainty: " + "; ".join(names("inconclusive")) + "."
    missing = names("not enough data")
    return ("Missing inputs for: " + "; ".join(missing) + ".") if missing else str(v.get("reason") or "")


def _margin_cell(c: Mapping[str, Any]) -> Cell:
    m = c.get("margin")
    return f"{m:+.3f}" if isinstance(m, (int, float)) and math.isfinite(m) else "–"


def criteria_table(name: str, label: str, v: Mapping[str, Any]) -> Table:
    """A claim's criteria as a person reads them: criterion, value, threshold, margin, band, outcome, reading."""
    rows: list[list[Cell]] = []
    for c in _criteria(v):
        rows.append([str(c.get("name") or c.get("criterion")), str(c.get("value_text") or "–"),
                     str(c.get("threshold_text") or "–"), _margin_cell(c), str(c.get("band_text") or "–"),
                     str(c.get("outcome") or "").upper(), str(c.get("reading") or "")])
    return Table(["criterion", "value", "threshold", "margin", "band", "outcome", "reading"], rows,
                 caption=f"{name}, {label}: {_verdict_label(v)}",
                 notes="Margin = value minus threshold in the direction that supports the claim; band = the range the "
                       "value can take within its uncertainty (onsets: earliest possible to earliest certain; module "
                       "shares: modules decided yes to yes-or-undecided). Outcome per criterion: supported / not "
                       "supported / inconclusive (the band straddles the threshold). Definitions: docs/claims.md.")


def _verdicts_over_folds(run: RunOutput, claim_names: Sequence[str]) -> tuple[list[str], Table] | None:
    """"Supported in k of N folds" per claim and variant whose aggregate/verdicts.json covers at least two folds."""
    rows: list[list[Cell]] = []
    paragraphs = []
    for variant, agg in run.aggregates.items():
        v = agg.verdicts or {}
        n = v.get("n_folds")
        claims = v.get("claims")
        if not isinstance(n, int) or n < 2 or not isinstance(claims, Mapping):
            continue
        for claim in claim_names:
            c = claims.get(claim)
            if not isinstance(c, Mapping):
                continue
            name = CLAIMS.get(claim, (claim.replace("_", " ").capitalize(), ""))[0]
            k = int(c.get("n_supported") or 0)
            against = int(c.get("n_not_supported") or 0)
            inconclusive = int(c.get("n_inconclusive") or 0)
            undecided = int(c.get("n_undecided") or 0)
            text = f"supported in {k} of {n} folds"
            rows.append([name, variant, ", ".join(str(f) for f in v.get("folds") or []), text, against,
                         inconclusive, undecided])
            paragraphs.append(f"{name}, {variant}: {text} (not supported in {against}, inconclusive in "
                              f"{inconclusive}, not enough data in {undecided}).")
    if not rows:
        return None
    return paragraphs, Table(["claim", "variant", "folds", "over folds", "not supported", "inconclusive",
                              "not enough data"], rows,
                             caption="Verdicts over folds: in how many analysed folds each claim is supported")


def verdict_section(run: RunOutput) -> Section:
    """The two claims: a verdict per analysed variant and fold, and per claim a table of its criteria (value,
    threshold, margin, band, outcome, reading); verdicts.json files without criteria (older runs) get their
    numbers listed instead."""
    with_verdicts = [a for a in run.analysed if a.verdicts is not None]
    notes = [f"{a.label}: no verdicts.json (not run)." for a in run.analysed if a.verdicts is None]
    title = "Verdicts on the paper's claims"
    if not with_verdicts:
        return Section(title, notes=notes or [f"Not run: no analysis results under {run.root / 'analysis'}."])
    found = {c for a in with_verdicts for c in _claims(a.verdicts)}
    claim_names = list(CLAIMS) + sorted(found - set(CLAIMS))
    summary_rows: list[list[Cell]] = []
    paragraphs = []
    tables: list[Table] = []
    for claim in claim_names:
        name, description = CLAIMS.get(claim, (claim.replace("_", " ").capitalize(), ""))
        if description:
            paragraphs.append(f"{name}. {description}")
        columns = []
        numbers: dict[str, dict[str, Any]] = {}
        for a in with_verdicts:
            v = _claims(a.verdicts).get(claim)
            if not isinstance(v, Mapping):
                summary_rows.append([name, a.variant, str(a.fold), "NOT RUN", "no verdict recorded for this claim"])
                continue
            label = _verdict_label(v)
            if _criteria(v):
                reading = _deciding(v)
                summary_rows.append([name, a.variant, str(a.fold), label, reading])
                paragraphs.append(f"{name}, {a.label}: {label}. {reading}".strip())
                tables.append(criteria_table(name, a.label, v))
                continue
            statement = str(v.get("statement") or "")
            summary_rows.append([name, a.variant, str(a.fold), label, statement])
            paragraphs.append(f"{name}, {a.label}: {label}. {statement}".strip())
            columns.append(a.label)
            flat: dict[str, Any] = {}
            _flatten("", {k: x for k, x in v.items() if k not in ("supported", "statement", "outcome")}, flat)
            for key, value in flat.items():
                numbers.setdefault(key, {})[a.label] = value
        if numbers:
            keys = sorted(numbers, key=lambda k: (0 if "threshold" in k.lower() else 1, natural_key(k)))
            rows = [[k] + [_number(numbers[k].get(c)) for c in columns] for k in keys]
            tables.append(Table(["number", *columns], rows,
                                caption=f"{name}: thresholds first, then the measured numbers (older verdicts "
                                        f"file without criteria)", digits=3))
    tables.insert(0, Table(["claim", "variant", "fold", "verdict", "why"], summary_rows,
                           caption="Verdicts (supported / not supported / inconclusive / not enough data)"))
    over_folds = _verdicts_over_folds(run, claim_names)
    if over_folds is not None:
        paragraphs[:0] = over_folds[0]
        tables.insert(0, over_folds[1])
    notes.append("Every criterion is decided against its uncertainty band, not its point value: 'inconclusive' "
                 "when the band straddles the threshold, 'not enough data' when an analysis it needs did not run. "
                 "The thresholds are fixed in loralens.analysis.verdicts before looking at the data; the rules, "
                 "their controls and known answers are in docs/claims.md.")
    return Section(title, paragraphs=paragraphs, tables=tables, notes=notes)


def reproducibility_section(run: RunOutput) -> Section:
    """Environment (as recorded by the run, else of this process), configuration, seed, wall time per stage."""
    notes = []
    env = run.environment
    if env is None:
        env = collect_environment()
        notes.append("The run did not record its environment (environment.json): the versions, commit and "
                     "hardware shown are those of the process that built this report.")
    env = {str(k): str(v) for k, v in env.items()}
    extra = []
    for v in run.variants:
        h = (v.summary or {}).get("config_hash") or next(
            (f.metrics.get("config_hash") for f in v.complete_folds if f.metrics.get("config_hash")), None)
        if h:
            extra.append((f"config hash: train/{v.name}", str(h)))
    repro = reproducibility_table(env, config=run.config, seed=run.seed, extra=extra)
    tables = [repro]
    stages = (run.stages or {}).get("stages")
    if isinstance(stages, list) and stages:
        rows: list[list[Cell]] = []
        total = 0.0
        for s in stages:
            if not isinstance(s, Mapping):
                continue
            wall = s.get("wall_time_s")
            if isinstance(wall, (int, float)):
                total += float(wall)
            status = str(s.get("status", "?")) + (f": {s['error']}" if s.get("error") else "")
            rows.append([str(s.get("name")), status,
                         format_seconds(float(wall)) if isinstance(wall, (int, float)) else None])
        rows.append(["total", "", format_seconds(total)])
        tables.insert(0, Table(["stage", "status", "wall time"], rows, caption="Wall time of each stage (stages.json)",
                               notes="'skipped': the stage's results were complete from an earlier run, so this run "
                                     "reused them; its time is that of the check."))
    else:
        notes.append(f"{run.root / 'stages.json'} not found: stage wall times unknown.")
    return Section("Reproducibility", tables=tables, notes=notes)

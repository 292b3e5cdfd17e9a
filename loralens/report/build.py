"""`build_report`: the self-contained HTML report of a `loralens run` output folder.

Reads only JSON, YAML and figure files of the folder (never tensors or models), draws two summary figures
(test UAR per variant, confusion matrices summed over folds) into `<out>/report_figures/` (PNG + SVG), and
writes one HTML file with every figure embedded as a data URI. Sections:

1. Overview (and, for `synthetic: true`, a banner saying it is a smoke test, with the RAVDESS commands)
2. Data: classes, speakers, folds, durations
3. Results: UAR / WAR / macro-F1 mean ± std per variant with parameters, time and memory; ablation; per class;
   per fold; bar chart
4. Confusion matrices (summed over folds, one per variant)
5. One section per analysis, in suite order, every analysed variant and fold side by side; with >= 2 analysed
   folds, key curves aggregated over folds (mean ± std per layer, from analysis/<variant>/aggregate/)
6. Verdicts on the paper's two claims (and "supported in k of N folds" with >= 2 analysed folds)
7. Reproducibility: stage wall times, environment, seed, configuration

Anything not run shows as a note; a malformed file raises RunFolderError naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

from loralens.report.html import Report
from loralens.report.run_output import RunOutput, read_run_output
from loralens.report.sections import (
    analysis_sections,
    banner,
    data_section,
    overview_section,
    reproducibility_section,
    results_section,
    verdict_section,
)

REPORT_NAME = "report.html"
FIGURE_DIR = "report_figures"


def make_report(run: RunOutput, figure_dir: str | os.PathLike[str] | None = None) -> Report:
    """The `Report` of a read output folder; summary figures are drawn into `figure_dir`
    (default `<out>/report_figures`)."""
    figure_dir = Path(figure_dir) if figure_dir is not None else run.root / FIGURE_DIR
    corpus = (run.data_summary or {}).get("corpus") or run.setting("corpus") or "unknown corpus"
    model = run.setting("model")
    title = f"LoRA-adapted Whisper for speech emotion recognition: {corpus}" + (f", {model}" if model else "")
    variants = ", ".join(v.name for v in run.variants) or "no variant trained yet"
    subtitle = f"loralens run report of {run.root.name}/: variants {variants}"
    report = Report(title, subtitle=subtitle, banner=banner(run))
    results, confusion = results_section(run, figure_dir)
    report.add_section(overview_section(run))
    report.add_section(data_section(run))
    report.add_section(results)
    report.add_section(confusion)
    for section in analysis_sections(run):
        report.add_section(section)
    report.add_section(verdict_section(run))
    report.add_section(reproducibility_section(run))
    return report


def build_report(out_dir: str | os.PathLike[str], report_path: str | os.PathLike[str] | None = None) -> Path:
    """Build the HTML report of the `loralens run` output folder `out_dir` and write it atomically to
    `report_path` (default `<out_dir>/report.html`); returns its path.

    Raises RunFolderError when `out_dir` is not a run output folder, or naming a JSON / YAML file that is
    malformed. Pieces not run yet (a variant, an analysis, the verdicts) appear as notes."""
    out_dir = Path(out_dir)
    run = read_run_output(out_dir)
    path = Path(report_path) if report_path is not None else out_dir / REPORT_NAME
    return make_report(run).write(path)

"""The report's results aggregated over folds: a mean ± std table of key curves per analysis and "supported in k
of N folds" in the verdicts, on the fake run output folder of test_build, aggregated with the real
`aggregate_run`. With one analysed fold the report is unchanged."""

from __future__ import annotations

import math
import re

import pytest

from loralens.analysis.aggregate import aggregate_run
from loralens.io import atomic_write_json
from loralens.report.build import build_report
from loralens.report.run_output import read_run_output
from tests.report.test_build import make_run_output, parse


def curve(values: list[float | None]) -> dict:
    return {"value": values, "low": [None] * len(values), "high": [None] * len(values)}


def lens_result(fold: int, agreement: list[float | None], uar: list[float]) -> dict:
    return {"layers": [0, 1, 2], "n_layers": 3, "last_layer_max_abs_logit_diff": 0.0,
            "adapted": {"kl": curve([0.3, 0.2, 0.0]), "agreement": curve(agreement), "uar": curve(uar)},
            "reading": f"READING logit_lens lora_r8 fold {fold}",
            "meta": {"analysis": "logit_lens", "fold": fold, "key": "abc", "n_test_clips": 16, "n_boot": 200,
                     "seed": 0, "figures": []}}


def verdicts(outcome: str) -> dict:
    """Per-fold verdicts in the flat format loralens.analysis.verdicts writes (claim (ii) inconclusive)."""
    crit = {"criterion": "probe_onset_late", "name": "Probe advantage appears late", "outcome": outcome,
            "value": 0.8, "value_text": "0.80 (hidden state 4)", "threshold": 0.667, "threshold_text": "depth > 0.67",
            "margin": 0.133, "band": [0.6, 0.8], "band_text": "[0.60, 0.80]", "reading": "READING-" + outcome}
    inc = {**crit, "criterion": "forward_alignment", "name": "A and B outputs more aligned than under random B",
           "outcome": "inconclusive", "reading": "READING-ii"}
    return {"delayed_specialization": {"outcome": outcome, "supported": {"supported": True, "not supported": False}.get(
                outcome), "statement": "s", "criteria": [crit], "numbers": {}},
            "forward_alignment_backward_differentiation": {"outcome": "inconclusive", "supported": None,
                                                           "statement": "n", "criteria": [inc], "numbers": {}},
            "thresholds": {"agreement_threshold": 0.8}}


def table(page: str, caption_start: str) -> list[list[str]]:
    """Cells (text) of the table whose caption starts with `caption_start`."""
    start = page.index(caption_start)
    body = page[start:].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r, flags=re.S)]
            for r in rows]


def two_fold_run(root):
    make_run_output(root)
    base = root / "analysis" / "lora_r8"
    atomic_write_json(base / "fold_0" / "logit_lens" / "result.json",
                      lens_result(0, [0.2, 0.6, 1.0], [0.30, 0.40, 0.50]))
    atomic_write_json(base / "fold_1" / "logit_lens" / "result.json",
                      lens_result(1, [0.4, None, 1.0], [0.50, 0.60, 0.70]))
    atomic_write_json(base / "fold_0" / "verdicts.json", verdicts("supported"))
    atomic_write_json(base / "fold_1" / "verdicts.json", verdicts("not supported"))
    for variant in ("lora_r8", "lora_r32"):
        aggregate_run(root, variant)


@pytest.mark.slow
def test_two_folds_show_mean_std_table_and_verdict_counts(tmp_path):
    two_fold_run(tmp_path)
    run = read_run_output(tmp_path)
    assert run.aggregates["lora_r8"].n_folds("logit_lens") == 2
    assert run.aggregates["lora_r8"].n_folds("layer_contribution") == 1
    page = build_report(tmp_path).read_text(encoding="utf-8")
    rows = table(page, "Logit lens, lora_r8: aggregated over 2 folds (0, 1); columns: layer")
    assert rows[0] == ["curve", "0", "1", "2"]
    s = 0.2 / math.sqrt(2)  # sample std of two values 0.2 apart
    assert rows[1] == ["adapted, agreement with final", f"0.300 \u00b1 {s:.3f}", "0.600 \u00b1 \u2013",
                       "1.000 \u00b1 0.000"]
    assert rows[2] == ["adapted, UAR", f"0.400 \u00b1 {s:.3f}", f"0.500 \u00b1 {s:.3f}", f"0.600 \u00b1 {s:.3f}"]
    # one fold only: no aggregate table for layer_contribution (lora_r8 has it in fold 0 alone) nor for lora_r32
    assert "Layer Contribution, lora_r8: aggregated" not in page and "lora_r32: aggregated" not in page
    assert page.count('title="mean \u00b1 std over 2 runs"') == 5 and page.count('over 1 runs"') == 1
    text = "".join(parse(page).text)
    assert ("Delayed specialization, lora_r8: supported in 1 of 2 folds (not supported in 1, inconclusive in 0, not "
            "enough data in 0).") in text
    verdict_rows = table(page, "Verdicts over folds")
    assert verdict_rows[1] == ["Delayed specialization", "lora_r8", "0, 1", "supported in 1 of 2 folds", "1", "0", "0"]
    assert verdict_rows[2][3] == "supported in 0 of 2 folds" and verdict_rows[2][5] == "2"  # inconclusive in both
    # per fold and claim: the criteria as a person reads them, not raw keys
    rows = table(page, "Delayed specialization, lora_r8, fold 1: NOT SUPPORTED</caption>")
    assert rows[0] == ["criterion", "value", "threshold", "margin", "band", "outcome", "reading"]
    assert rows[1] == ["Probe advantage appears late", "0.80 (hidden state 4)", "depth &gt; 0.67", "+0.133",
                       "[0.60, 0.80]", "NOT SUPPORTED", "READING-not supported"]
    assert "Forward alignment, backward differentiation, lora_r8, fold 0: INCONCLUSIVE. Undecided within the " \
           "uncertainty: A and B outputs more aligned than under random B." in text
    assert "numbers.modules" not in text


@pytest.mark.slow
def test_one_fold_changes_nothing(tmp_path):
    make_run_output(tmp_path)
    before = build_report(tmp_path, tmp_path / "before.html").read_text(encoding="utf-8")
    written = aggregate_run(tmp_path, "lora_r8")
    assert {"layer_contribution", "logit_lens", "verdicts"} <= set(written)
    after = build_report(tmp_path, tmp_path / "after.html").read_text(encoding="utf-8")
    assert "aggregated over" not in after and "supported in" not in after
    assert after.replace("after.html", "before.html") == before

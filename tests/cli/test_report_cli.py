"""`loralens report RUN_OUT [--out FILE]` end to end on a fake run output folder."""

from __future__ import annotations

import base64

import pytest
from click.testing import CliRunner

from loralens.cli.report import report
from loralens.errors import RunFolderError
from tests.report.test_build import make_run_output, parse


@pytest.fixture(scope="module")
def run_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("run-out")
    make_run_output(root, analysed={"lora_r8": ["logit_lens"]})
    return root


@pytest.mark.slow
def test_report_command_writes_the_page(run_out, tmp_path):
    result = CliRunner().invoke(report, [str(run_out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"report: {run_out / 'report.html'}"
    page = (run_out / "report.html").read_text(encoding="utf-8")
    parsed = parse(page)
    assert "Synthetic smoke test \u2014 not an emotion benchmark" in "".join(parsed.text)
    assert len(parsed.imgs) == 3  # UAR bar chart, confusions, the logit-lens figure
    assert all(base64.b64decode(i["src"].split(",", 1)[1]).startswith(b"\x89PNG") for i in parsed.imgs)

    out = tmp_path / "sub" / "mine.html"
    result = CliRunner().invoke(report, [str(run_out), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == page


def test_report_command_errors(run_out, tmp_path):
    result = CliRunner().invoke(report, [str(tmp_path / "absent")])
    assert result.exit_code == 2 and "does not exist" in result.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "stages.json").write_text("{oops", encoding="utf-8")
    result = CliRunner().invoke(report, [str(bad)])
    assert isinstance(result.exception, RunFolderError) and "stages.json: not valid JSON" in str(result.exception)


def test_through_the_loralens_entry_point(run_out, tmp_path, capsys, monkeypatch):
    from loralens.cli import cli, main

    if "report" not in cli.commands:  # until loralens.cli registers it
        monkeypatch.setitem(cli.commands, "report", report)
    assert cli.commands["report"] is report
    out = tmp_path / "r.html"
    assert main(["report", str(run_out), "--out", str(out)]) == 0
    assert out.exists() and f"report: {out}" in capsys.readouterr().out
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.yaml").write_text("train: [unclosed\n", encoding="utf-8")
    assert main(["report", str(bad)]) == 2
    assert "run.yaml: not valid YAML" in capsys.readouterr().err

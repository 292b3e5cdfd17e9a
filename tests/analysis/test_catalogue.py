"""The analysis catalogue is the one list of analyses: the suite registers exactly its entries, in its order, each
from the module it names; the report's order and tables are read from it; importing it does not import torch."""

from __future__ import annotations

import subprocess
import sys

from loralens.analysis import catalogue, suite


def test_registered_analyses_are_the_catalogue_in_its_order():
    registered = suite.available()
    assert tuple(registered) == catalogue.ORDER
    for entry in catalogue.CATALOGUE:
        assert registered[entry.name].run.__module__ == entry.module_name
        assert entry.title and entry.description and entry.ci_note
        assert bool(entry.curves_axis) == bool(entry.key_curves)
        assert {k: getattr(registered[entry.name], k) for k in entry.needs} == entry.needs
    assert (registered["probing"].needs_frozen, registered["probing"].needs_train) == (True, True)
    assert (registered["lora_internals"].needs_lora, registered["lora_internals"].needs_grad) == (True, True)
    assert not registered["erasure"].needs_frozen and registered["patching"].needs_frozen


def test_report_reads_the_catalogue():
    from loralens.report import run_output, sections

    assert run_output.ANALYSIS_ORDER == catalogue.ORDER
    assert sections.ANALYSIS_INFO["patching"] == (catalogue.BY_NAME["patching"].title,
                                                  catalogue.BY_NAME["patching"].description)
    assert set(sections.AGGREGATE_CURVES) == {e.name for e in catalogue.CATALOGUE if e.key_curves}
    assert [e.name for e in catalogue.CATALOGUE if not e.bootstrap] == ["lora_internals", "weight_analysis"]


def test_catalogue_imports_without_torch():
    code = "import sys, loralens.analysis.catalogue; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

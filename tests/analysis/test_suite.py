"""The suite driver: skipping complete results, recording failures without losing the other analyses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loralens.analysis import suite
from loralens.analysis.suite import Analysis, run_suite


class _Ctx:
    """The least of a context the driver touches."""

    fold = "fold_0"
    seed = 0
    n_boot = 10

    class test:  # noqa: N801 - mimics SplitData
        n_clips = 3

    def require_frozen(self, name):
        return None

    def require_train(self, name):
        return None


@pytest.fixture
def fake_registry(monkeypatch):
    calls = {"ok": 0, "bad": 0}

    def ok_run(ctx):
        calls["ok"] += 1
        return {"value": 1.0}

    def bad_run(ctx):
        calls["bad"] += 1
        raise ValueError("broken on purpose")

    def plot(result, out_dir: Path):
        return []

    registry = {
        "bad": Analysis("bad", "Bad", bad_run, plot, lambda r: "never"),
        "ok": Analysis("ok", "OK", ok_run, plot, lambda r: f"value {r['value']}"),
    }
    monkeypatch.setattr(suite, "ANALYSES", registry)
    monkeypatch.setattr(suite, "ANALYSIS_MODULES", ())
    return calls


def test_failure_is_recorded_and_others_still_run(tmp_path, fake_registry):
    messages = []
    results = run_suite(_Ctx(), tmp_path, key="k1", progress=messages.append)
    assert list(results) == ["ok"]
    err = json.loads((tmp_path / "bad" / "error.json").read_text())
    assert err["type"] == "ValueError" and "broken on purpose" in err["error"]
    assert any("bad FAILED" in m for m in messages)
    ok = json.loads((tmp_path / "ok" / "result.json").read_text())
    assert ok["reading"] == "value 1.0" and ok["meta"]["key"] == "k1"


def test_complete_results_are_not_recomputed_unless_key_changes(tmp_path, fake_registry):
    run_suite(_Ctx(), tmp_path, ["ok"], key="k1")
    run_suite(_Ctx(), tmp_path, ["ok"], key="k1")
    assert fake_registry["ok"] == 1
    run_suite(_Ctx(), tmp_path, ["ok"], key="k2")
    assert fake_registry["ok"] == 2


def test_keep_going_false_raises(tmp_path, fake_registry):
    with pytest.raises(ValueError, match="broken on purpose"):
        run_suite(_Ctx(), tmp_path, ["bad"], keep_going=False)


def test_unknown_analysis_names_valid_ones(fake_registry):
    from loralens.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown analysis"):
        suite.resolve(["nope"])


def _wait_for_samples(rss, count: int) -> None:
    """Block until `rss` has taken `count` readings: waits on the sampler's progress, not on a fixed sleep."""
    import threading

    tick = threading.Event()
    while rss.samples < count:
        tick.wait(0.005)


def test_peak_rss_sees_memory_allocated_inside_the_block():
    import numpy as np

    from loralens.analysis.suite import PeakRSS

    with PeakRSS(interval=0.01) as before:
        pass
    with PeakRSS(interval=0.01) as during:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
        block[::512] += 1
        _wait_for_samples(during, during.samples + 2)  # the background thread read the RSS with the block alive
        del block
    assert during.peak_mib > before.peak_mib + 150

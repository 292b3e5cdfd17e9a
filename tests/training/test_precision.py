"""`precision: auto` resolved for the hardware: bf16 on CPUs with AMX or AVX512-BF16 and on bf16 CUDA devices."""

from __future__ import annotations

import pytest
import torch

from loralens.errors import ConfigError
from loralens.io import atomic_write_json
from loralens.training import precision as P
from loralens.training.crossval import make_accelerator, run_precision
from loralens.training.run_folder import RunFolder


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch):
    """These tests are about the hardware probe: no `accelerate launch` setting in the environment."""
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)


@pytest.mark.parametrize("features, mode", [((), "fp32"), (("avx512_bf16",), "bf16"), (("amx",), "bf16"),
                                            (("amx", "avx512_bf16"), "bf16")])
def test_auto_on_a_cpu(features, mode):
    choice = P.resolve_precision("auto", "cpu", cpu_features=features)
    assert choice.mode == mode and choice.requested == "auto"
    if mode == "fp32":
        assert "neither AMX nor AVX512-BF16" in choice.reason
    else:
        assert features[0].upper() in choice.reason


def test_auto_on_a_cpu_without_amx_simulated_through_the_probes(monkeypatch):
    """The probe itself: a CPU whose torch reports neither feature resolves to fp32, one with AVX512-BF16 only
    to bf16 (this project's CPU); the accelerator follows."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert P.cpu_bf16_features() == ()
    assert P.resolve_precision("auto").mode == "fp32"
    assert make_accelerator("auto").mixed_precision == "no"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert P.cpu_bf16_features() == ("avx512_bf16",)
    assert P.resolve_precision("auto").mode == "bf16"
    assert make_accelerator("auto").mixed_precision == "bf16"


def test_cpuinfo_fallback_when_torch_has_no_probe(monkeypatch, tmp_path):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n")
    real = P._cpuinfo_flags
    monkeypatch.setattr(P, "_cpuinfo_flags", lambda: real(info))
    assert P.cpu_bf16_features() == ("amx",)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert P.cpu_bf16_features() == ()
    assert real(tmp_path / "missing") == set()


def test_auto_follows_the_accelerate_launcher(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    choice = P.resolve_precision("auto", "cpu", cpu_features=("amx",))
    assert choice.mode == "fp32" and "ACCELERATE_MIXED_PRECISION=no" in choice.reason
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert P.resolve_precision("auto", "cpu", cpu_features=()).mode == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # not a loralens precision: resolved for the hardware
    assert P.resolve_precision("auto", "cpu", cpu_features=()).mode == "fp32"
    assert P.resolve_precision("fp32").mode == "fp32"  # an explicit value wins over the launcher


def test_explicit_values_and_cuda():
    assert P.resolve_precision("fp32", "cpu", cpu_features=("amx",)).mode == "fp32"
    assert P.resolve_precision("bf16", "cpu", cpu_features=()).mode == "bf16"
    assert P.resolve_precision("auto", "cuda", cuda_bf16=True).mode == "bf16"
    assert P.resolve_precision("auto", "cuda", cuda_bf16=False).mode == "fp32"
    assert P.resolve_precision("bf16").accelerate_mixed_precision == "bf16"
    assert P.resolve_precision("fp32").accelerate_mixed_precision == "no"
    with pytest.raises(ConfigError, match="'fp16' is not one of auto, fp32, bf16"):
        P.resolve_precision("fp16")


def test_a_run_keeps_the_precision_it_started_with(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(P, "cpu_bf16_features", lambda: ("avx512_bf16",))
    run = RunFolder(tmp_path / "run")
    # a new run folder: resolved for this machine
    assert run_precision("auto", run).mode == "bf16"
    # recorded as fp32 when the run started (e.g. on another machine): kept
    run.root.mkdir(parents=True)
    atomic_write_json(run.precision, {"requested": "auto", "resolved": "fp32", "reason": "auto: no bf16"})
    kept = run_precision("auto", run)
    assert kept.mode == "fp32" and "recorded when the run started" in kept.reason
    # an explicit request is not overridden by the record of another request
    assert run_precision("bf16", run).mode == "bf16"
    # a folder started before precision was recorded (fold folders, no precision.json): fp32, as it ran then
    old = RunFolder(tmp_path / "old")
    (old.root / "fold_0").mkdir(parents=True)
    assert run_precision("auto", old).mode == "fp32"

"""How the report names a trained variant, its head included."""

from __future__ import annotations

from pathlib import Path

from loralens.report.run_output import TrainFold, Variant
from loralens.report.sections import _describe_variant


def _variant(config: dict, chosen: list[int | None] = ()) -> Variant:
    folds = [TrainFold(k, Path(f"fold_{k}"), {"hidden_state": c} if c is not None else {})
             for k, c in enumerate(chosen)]
    return Variant("lora", Path("train/lora"), config, None, folds)


def test_the_head_is_named_with_the_folds_choices():
    lora = {"method": "lora", "lora": {"r": 32, "alpha": 64.0, "target_modules": ["v_proj"]}, "seed": 0}
    assert _describe_variant(_variant(lora)) == "LoRA r=32 alpha=64 on v_proj seed 0"
    auto = _variant({**lora, "head": {"hidden_state": "auto", "standardize": True}}, [4, 5])
    assert _describe_variant(auto) == ("LoRA r=32 alpha=64 on v_proj seed 0, head on the hidden state each fold chose "
                                       "(4, 5), z-scored input")
    spk = _variant({**lora, "head": {"weighted_layer_sum": True, "layer_norm": True, "standardize": True,
                                     "speaker_norm": True}})
    assert _describe_variant(spk).endswith("head on the weighted layer sum (per-layer LN), input z-scored per speaker")
    fixed = _variant({"method": "frozen", "head": {"hidden_state": 2}})
    assert _describe_variant(fixed) == "frozen encoder, trained head (baseline), head on hidden state 2"
    wls = _variant({"method": "frozen", "head": {"weighted_layer_sum": True, "layer_norm": True}})
    assert _describe_variant(wls).endswith("head on the weighted layer sum (per-layer LN)")

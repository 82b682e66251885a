"""RepairConfig validates its fields and names the flag to fix."""

from __future__ import annotations

import pytest

from quantswarm.errors import ConfigError
from repair.repair_config import RepairConfig


def test_defaults_and_derived_paths():
    cfg = RepairConfig(agent="m.gguf", quant="q2_k", out_dir="runs/x")
    assert cfg.quant == "Q2_K" and cfg.results == "runs/x/results"
    assert "q_proj" in cfg.targets and "lm_head" not in cfg.targets
    assert cfg.attention == "sdpa"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"agent": ""}, "--agent"),
    ({"quant": "Q9_X"}, "quant type"),
    ({"train_items": 0}, "--train-items"),
    ({"beta": 0}, "--beta"),
    ({"lora_targets": "q_proj,lm_head"}, "lm_head"),
    ({"hf_model": "/nonexistent"}, "--hf-model"),
    ({"precision": "fp8"}, "precision"),
    ({"attention": "flash_attention_2"}, "attention must be one of sdpa, eager, sdpa-cudnn"),
])
def test_bad_values_are_one_clear_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RepairConfig(**{"agent": "m.gguf", **kwargs})


def test_set_overrides_take_each_fields_type():
    from repair.repair_config import field_overrides

    assert field_overrides(["beta=0.3", "batch_size=4", "gradient_checkpointing=false", "loss_type=sft"]) == {
        "beta": 0.3, "batch_size": 4, "gradient_checkpointing": False, "loss_type": "sft"}
    assert field_overrides(["gradient_checkpointing=true"]) == {"gradient_checkpointing": True}
    with pytest.raises(ConfigError, match="expected KEY=VALUE with KEY one of"):
        field_overrides(["nope=1"])
    with pytest.raises(ConfigError, match="batch_size takes a int"):
        field_overrides(["batch_size=many"])

"""The shipped H200 specs' per-context constants against the committed H200 measurement.

The serving campaign of 2026-11-30 (``benchmarks/results/gpu/2026-11-30-h200x2-serving``) planned every context with
the default ``vram.overhead_mib`` of 320 MiB and no partial-offload term, and measured each llama-server's VRAM with
NVML. Weights, KV cache and compute buffer are planned from the GGUF and llama.cpp's sizing, so the plan with the
shipped specs' ``overhead_mib`` and ``partial_offload_mib`` is the run's plan shifted by those per context; it must
land within 1% of what NVML measured for every context of both plans and of the slots x n_ctx sweep. The two
constants were read off this same run (in-sample): the test keeps the shipped specs tied to the measurement, and a
later run on the device is what validates them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "benchmarks/results/gpu/2026-11-30-h200x2-serving"
RUN_OVERHEAD_MIB = 320  # the run's specs set no vram.overhead_mib: the default then


def spec_vram(name: str) -> dict:
    return yaml.safe_load((REPO / f"data/swarms/{name}.yaml").read_text())["vram"]


def contexts() -> list[tuple[str, dict, str]]:
    """(label, measured memory row, spec whose constants apply) of every context of the run."""
    out = []
    for e in json.loads((RUN / "campaign.json").read_text())["specs"]:
        for m in e["memory"]["agents"]:
            out.append((f"{e['name']}:{m['agent']}", m, e["name"]))
    for f in sorted(RUN.glob("serving-bench-p*-c*.json")):  # the sweep: qwen15-q4km of h200-reference
        (m,) = json.loads(f.read_text())["memory"]["agents"]
        out.append((f.name.split("-2026")[0], m, "h200-reference"))
    return out


@pytest.mark.parametrize("label, mem, spec", contexts(), ids=[c[0] for c in contexts()])
def test_planned_vram_is_within_one_percent_of_nvml(label, mem, spec):
    assert mem["measure"] == "vram"
    v = spec_vram(spec)
    partial = 1 <= mem["n_gpu_layers"] < mem["n_layers"]  # n_layers here counts the output layer
    planned = mem["planned_vram_mib"] - RUN_OVERHEAD_MIB + v["overhead_mib"] + partial * v["partial_offload_mib"]
    assert abs(planned - mem["measured_mib"]) / mem["measured_mib"] < 0.01


def test_every_context_of_both_plans_is_checked():
    labels = {c[0] for c in contexts()}
    assert len(labels) == 6 + 6 + 6  # 16 GiB plan, tight plan, 6 sweep points
    partial = sorted(label for label, m, _ in contexts() if 1 <= m["n_gpu_layers"] < m["n_layers"])
    assert partial == ["h200-reference-tight:qwen15-f16", "serving-bench-p16-c32768"]

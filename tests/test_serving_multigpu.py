"""Multi-GPU placement: spec keys, main-GPU best fit, layer splits, refusals, and the 1-GPU plan unchanged."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from quantswarm.errors import ConfigError
from quantswarm.registry import inspect_gguf
from serving.planner import MIB, ModelShape, plan_vram, resolve_gpu_budgets, split_plan
from serving.swarm_config import AgentSpec, load_swarm

REPO = Path(__file__).resolve().parent.parent


def shape(n_layers: int = 10, layer_mib: int = 100, head_mib: int = 50) -> ModelShape:
    """A made-up model: n_layers blocks of layer_mib, an output head of head_mib, no KV cache."""
    return ModelShape(n_layers=n_layers, layer_bytes=[layer_mib * MIB] * n_layers, output_gpu_bytes=head_mib * MIB,
                      output_host_bytes=head_mib * MIB, host_only_bytes=10 * MIB, kv_layer_bytes=[0.0] * n_layers)


def swarm(tmp_path: Path, model: Path, agents: dict, vram: dict) -> object:
    data = {"agents": {n: {"model": str(model), "n_ctx": 64, "parallel": 1, **a} for n, a in agents.items()},
            "vram": {"headroom_mib": 0, "overhead_mib": 100, **vram}}
    p = tmp_path / "swarm.yaml"
    p.write_text(yaml.safe_dump(data))
    return load_swarm(p)


AGENTS = {  # needs (whole, incl. 100 MiB context): router 650, big 1150, mid 850, small 450
    "router": {"role": "router"}, "big": {"usage": 0.9}, "mid": {"usage": 0.5}, "small": {"usage": 0.1},
}
SHAPES = {"router": shape(5), "big": shape(10), "mid": shape(7), "small": shape(3)}


def test_two_gpus_best_fit_router_first(tmp_path, smollm2):
    agents = {**AGENTS, "extra": {"usage": 0.05}}
    cfg = swarm(tmp_path, smollm2, agents, {"gpus": [2000, 1300]})
    plan = plan_vram(cfg, 1, shapes={**SHAPES, "extra": shape(6)})
    gpu = {n: a.gpu for n, a in plan.agents.items()}
    # router (650) best-fits GPU 1 (the least room that holds it); big (1150) only fits GPU 0; mid (850) fits
    # GPU 0 exactly; small (450) goes to GPU 1; extra (750) fits nowhere whole and no split has room: it is
    # partly offloaded on the GPU with the most room (GPU 1, 200 MiB: its context + 1 block)
    assert plan.order == ["router", "big", "mid", "small", "extra"]
    assert gpu == {"router": 1, "big": 0, "mid": 0, "small": 1, "extra": 1}
    assert all(plan.agents[n].full for n in ("router", "big", "mid", "small"))
    assert plan.agents["extra"].n_gpu_layers == 1
    assert plan.per_gpu_bytes() == {0: 2000 * MIB, 1: 1300 * MIB}
    assert plan.agents["big"].server_args(plan.multi_gpu) == ["--split-mode", "none", "--main-gpu", "0"]
    assert plan.multi_gpu and "@gpu1" in plan.rows()[0]["ngl"] and "GPU 1: 1300.0 of 1300 MiB" in plan.summary()


def test_pins_are_honoured(tmp_path, smollm2):
    agents = {**AGENTS, "small": {"usage": 0.1, "gpu": 1}, "mid": {"usage": 0.5, "gpu": 0, "n_gpu_layers": 4}}
    cfg = swarm(tmp_path, smollm2, agents, {"gpus": [2000, 2000]})
    plan = plan_vram(cfg, 1, shapes=SHAPES)
    assert plan.agents["small"].gpu == 1 and plan.agents["small"].full
    mid = plan.agents["mid"]
    assert (mid.gpu, mid.n_gpu_layers, mid.pinned) == (0, 4, True)
    with pytest.raises(ConfigError, match=r"agents\.small\.gpu: GPU 1 has no budget"):
        plan_vram(cfg, 1, shapes=SHAPES, gpus_mib=[2000])


def test_too_large_model_is_split_in_proportion_to_free_memory(tmp_path, smollm2):
    # 4 GPUs; the router (650) takes GPU 3, then `big` (1150) fits no single GPU: it is split over all four
    cfg = swarm(tmp_path, smollm2, {"router": {"role": "router"}, "big": {}}, {"gpus": [600, 400, 400, 900]})
    plan = plan_vram(cfg, 1, shapes=SHAPES)
    assert plan.agents["router"].gpu == 3
    big = plan.agents["big"]
    # tensor_split = each GPU's room left (MiB) less one context: 600-100, 400-100, 400-100, 900-650-100
    assert big.tensor_split == [500, 300, 300, 150] and big.full
    assert big.server_args(True) == ["--split-mode", "layer", "--tensor-split", "500,300,300,150"]
    assert set(big.devices) == {0, 1, 2, 3} and big.overhead == 4 * 100 * MIB
    assert sum(big.devices.values()) == big.gpu_bytes == (10 * 100 + 50 + 4 * 100) * MIB
    for d, b in plan.per_gpu_bytes().items():
        assert b <= [600, 400, 400, 900][d] * MIB


def test_split_follows_llama_cpp_layer_assignment(smollm2):
    info = inspect_gguf(smollm2)
    s = ModelShape.from_gguf(info)
    agent = AgentSpec(n_ctx=256, parallel=1)
    p = split_plan("x", agent, s, s.n_layers + 1, 0, [1, 1])
    n = s.n_layers + 1  # blocks + output head: the first half (by index/act < 0.5) on GPU 0
    first = (n + 1) // 2
    kv = s.kv_bytes(1, 256)
    compute = s.compute_bytes(agent)  # each GPU's scheduler reserves a compute buffer
    assert compute > 0 and p.compute == 2 * compute
    assert p.devices[0] == pytest.approx(sum(s.layer_bytes[:first]) + first * kv + compute)
    assert p.devices[0] + p.devices[1] == pytest.approx(p.gpu_weights + p.gpu_kv + p.compute)


def test_refusal_names_the_key(tmp_path, smollm2):
    cfg = swarm(tmp_path, smollm2, {"router": {"role": "router"}, "big": {}}, {"gpus": [400, 400]})
    with pytest.raises(ConfigError, match=r"^vram\.gpus: .* cannot hold the router agent 'router' fully on GPU, "
                                          r"on one GPU or split"):
        plan_vram(cfg, 1, shapes={"router": shape(10), "big": shape(1)})
    pinned = swarm(tmp_path, smollm2, {"router": {"role": "router", "gpu": 1}, "big": {}}, {"gpus": [2000, 500]})
    with pytest.raises(ConfigError, match=r"^agents\.router\.gpu: GPU 1 .* cannot hold the router agent"):
        plan_vram(pinned, 1, shapes={"router": shape(10), "big": shape(1)})
    ts = swarm(tmp_path, smollm2, {"big": {"tensor_split": [9, 1]}}, {"gpus": [500, 2000]})
    with pytest.raises(ConfigError, match=r"^agents\.big\.tensor_split: \[9\.0, 1\.0\] puts \d+ MiB on GPU 0"):
        plan_vram(ts, 1, shapes={"big": shape(10)})


@pytest.fixture(scope="module")
def old_planner(tmp_path_factory):
    """serving/planner.py as committed before multi-GPU placement (the reference for the 1-GPU result)."""
    src = subprocess.run(["git", "show", "ef64182:serving/planner.py"], cwd=REPO, capture_output=True, text=True)
    if src.returncode:
        pytest.skip("the pre-multi-GPU planner is not in this checkout's history")
    path = tmp_path_factory.mktemp("old") / "old_planner.py"
    path.write_text(src.stdout)
    spec = importlib.util.spec_from_file_location("old_planner", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_planner"] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("old_planner", None)


@pytest.mark.parametrize("budget", [1400, 1700, 2200, 8000])
def test_one_gpu_plan_equals_the_old_planner(tmp_path, smollm2, old_planner, budget):
    agents = {"router": {"role": "router", "n_ctx": 256}, "coder": {"usage": 0.9, "n_ctx": 1024, "parallel": 2},
              "chat": {"usage": 0.2, "n_ctx": 512, "parallel": 2, "n_gpu_layers": 7}}
    cfg = swarm(tmp_path, smollm2, agents, {"headroom_mib": 100, "overhead_mib": 300})
    # the old planner knew no compute buffer: compare on shapes without graph sizes (compute 0)
    shapes = {n: dataclasses.replace(ModelShape.from_gguf(inspect_gguf(a.model)), graph=None)
              for n, a in cfg.agents.items()}
    old = old_planner.plan_vram(cfg, budget, shapes=shapes)
    for new in (plan_vram(cfg, budget, shapes=shapes), plan_vram(swarm(tmp_path, smollm2, agents, {
            "headroom_mib": 100, "overhead_mib": 300, "gpus": [budget]}), 1, shapes=shapes)):
        assert new.order == old.order and new.gpu_bytes == old.gpu_bytes and new.cpu_bytes == old.cpu_bytes
        for n, o in old.agents.items():
            a = new.agents[n]
            assert (a.n_gpu_layers, a.gpu_bytes, a.cpu_bytes, a.gpu) == (o.n_gpu_layers, o.gpu_bytes, o.cpu_bytes, 0)
            assert a.server_args(new.multi_gpu) == []  # nothing new on a one-GPU machine
    for small in (500, 1000, 1100):  # too small: the same refusal (the headroom one now names compute buffers too)
        with pytest.raises(ConfigError) as was:
            old_planner.plan_vram(cfg, small, shapes=shapes)
        with pytest.raises(ConfigError, match=r"^(vram\.budget_mib|agents): ") as now:
            plan_vram(cfg, small, shapes=shapes)
        assert str(now.value).startswith(str(was.value).split(";")[0])


def test_spec_keys_and_budgets(tmp_path, smollm2):
    assert swarm(tmp_path, smollm2, AGENTS, {}).vram.gpus is None
    cfg = swarm(tmp_path, smollm2, AGENTS, {"gpus": [1000, "auto"]})
    assert resolve_gpu_budgets(cfg, free=[5000.0, 3000.5]) == [1000, 3000]
    assert resolve_gpu_budgets(swarm(tmp_path, smollm2, AGENTS, {"gpus": "auto"}), free=[10.0, 20.0]) == [10, 20]
    cpu = plan_vram(swarm(tmp_path, smollm2, AGENTS, {"gpus": "auto"}), 1, shapes=SHAPES, gpus_mib=[])
    assert cpu.budget_bytes is None and all(a.gpu is None for a in cpu.agents.values())
    bad = [
        ({"gpus": [1000, "lots"]}, {}, r"vram\.gpus\[1\]: expected an integer MiB or `auto`"),
        ({"gpus": []}, {}, r"vram\.gpus: empty list"),
        ({"gpus": [1000], "budget_mib": 1000}, {}, r"vram\.gpus: set either vram\.budget_mib .* not both"),
        ({}, {"gpu": 1}, r"agents\.small\.gpu: 1 needs several GPUs; set vram\.gpus"),
        ({"gpus": [1000, 1000]}, {"gpu": 2}, r"agents\.small\.gpu: 2 is not a GPU of vram\.gpus"),
        ({"gpus": [1000, 1000]}, {"gpu": 0, "tensor_split": [1, 1]}, r"agents\.small\.tensor_split: set either"),
        ({"gpus": [1000, 1000]}, {"tensor_split": [1, 0]}, r"agents\.small\.tensor_split: .* at least two"),
        ({"gpus": [1000, 1000]}, {"tensor_split": [1, 1, 1]}, r"agents\.small\.tensor_split: 3 proportions"),
        ({"gpus": [1000, 1000]}, {"gpu": "one"}, r"agents\.small\.gpu: expected an integer"),
    ]
    for vram, small, message in bad:
        with pytest.raises(ConfigError, match=message):
            swarm(tmp_path, smollm2, {**AGENTS, "small": small}, vram)


def test_h200x2_example_loads(tmp_path, monkeypatch, smollm2):
    monkeypatch.setenv("SWARM_MODELS", str(tmp_path))
    with pytest.raises(ConfigError, match=r"agents\.\w+\.model: .* does not exist"):
        load_swarm(REPO / "data/swarms/h200x2-5agents.yaml")
    data = yaml.safe_load((REPO / "data/swarms/h200x2-5agents.yaml").read_text())
    for a in data["agents"].values():
        a["model"] = str(smollm2)
    p = tmp_path / "h200x2.yaml"
    p.write_text(yaml.safe_dump(data))
    cfg = load_swarm(p)
    plan = plan_vram(cfg, 1, gpus_mib=[140000, 140000])
    assert plan.multi_gpu and all(a.full for a in plan.agents.values())


@pytest.mark.parametrize("name, f16, contexts", [("h200x2-reference", None, 3), ("h200x2-reference-split", [0, 1], 4)])
def test_h200x2_reference_specs_place_as_documented(tmp_path, smollm2, name, f16, contexts):
    """With SmolLM2 standing in for every model, the budgets scaled down to keep the same squeeze: every agent is
    whole on one GPU, both GPUs are used, and the split spec's F16 agent spans both."""
    data = yaml.safe_load((REPO / f"data/swarms/{name}.yaml").read_text())
    data.pop("models_dir")
    for a in data["agents"].values():
        a.pop("quantize_from", None)
        a["model"] = str(smollm2)
    data["router"]["program"] = None
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    cfg = load_swarm(p)
    assert cfg.vram.overhead_mib == 585 and cfg.vram.partial_offload_mib == 355
    # room for `contexts` SmolLM2 contexts per GPU (the split agent has one on each GPU)
    plan = plan_vram(cfg, 1, gpus_mib=[contexts * 1300] * 2)
    placed = {n: sorted(a.devices) for n, a in plan.agents.items()}
    assert all(a.full for a in plan.agents.values())
    assert {g for gs in placed.values() for g in gs} == {0, 1}
    if f16 is None:
        assert all(len(gs) == 1 for gs in placed.values())
    else:
        assert placed["qwen15-f16"] == f16 and plan.agents["qwen15-f16"].tensor_split

"""The LangGraph supervisor on a real CPU swarm: SmolLM2 at three quants, a router compiled with LabeledFewShot on
the real router LM, a task routed by it to an agent, and failed validations climbing the fallback chain."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from serving.graph import build_graph, graph_for_swarm, next_in_chain, node_name
from serving.quants import quantize
from serving.swarm import Swarm
from serving.swarm_config import load_swarm
from serving.workers import port_free

CHAIN = ["chat", "coder", "router"]
# stop strings covering how greedy SmolLM2 opens an answer, so every agent's answer is empty (fails validation)
STOPS = ["H", "I", "T", "S", "A", "W", "Y", " ", "h", "i", "t", "s", "a", "w", "y", "O", "`", "d", "\n", "D", "C"]


def free_block(n: int) -> int:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        base = random.randint(20000, low - n - 1)
        if all(port_free("127.0.0.1", base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port block")


def test_next_in_chain():
    assert next_in_chain(CHAIN, "chat", ["chat"]) == "coder"
    assert next_in_chain(CHAIN, "coder", ["coder"]) == "router"
    assert next_in_chain(CHAIN, "router", ["router"]) is None
    assert next_in_chain(CHAIN, "chat", ["chat", "coder"]) == "router"
    assert next_in_chain(["chat", "coder"], "router", ["router"]) == "chat"  # off-chain: from the start


@pytest.fixture(scope="module")
def compiled(smollm2, llama_server_bin, tmp_path_factory):
    """A LabeledFewShot router over {chat, coder}, compiled on the real router LM (SmolLM2 Q4_0)."""
    import os

    from router.compiler import compile_router
    from router.router_config import RouterConfig

    d = tmp_path_factory.mktemp("graph")
    os.environ.setdefault("DSPY_CACHEDIR", str(d / "dspy_cache"))
    q4_0 = quantize(smollm2, d / "smollm2-q4_0.gguf", "Q4_0")
    q8_0 = quantize(smollm2, d / "smollm2-q8_0.gguf", "Q8_0")
    tasks = [("What is 12 + 30?", "chat"), ("Say hello to Anna.", "chat"), ("How many days are in a week?", "chat"),
             ("Name a colour of the sky.", "chat"), ("Write a Python function that adds two numbers.", "coder"),
             ("Fix this Python code: def f(x) return x", "coder"), ("Write Python code to sort a list.", "coder"),
             ("Write a Python class for a stack.", "coder")]
    labels = d / "labels.jsonl"
    labels.write_text("".join(json.dumps({"task": t, "agent": a}) + "\n" for t, a in tasks))
    swarm_json = d / "swarm.json"
    swarm_json.write_text(json.dumps({"cost_unit": "relative", "strongest": "coder", "agents": [
        {"name": "chat", "cost": 1.0, "description": "chat, arithmetic, short answers"},
        {"name": "coder", "cost": 2.0, "description": "writing or fixing Python code"}]}))
    prog = d / "router"
    compile_router(RouterConfig(labels=str(labels), swarm=str(swarm_json), optimizer="labeled", max_demos=4,
                                train_frac=0.6, dev_frac=0.3, max_train=4, max_dev=2, router_model=str(q4_0),
                                max_tokens=8, n_ctx=1024, out=str(prog)), log=lambda *_: None)
    return {"dir": d, "program": prog, "models": {"router": q4_0, "chat": smollm2, "coder": q8_0}}


@pytest.fixture(scope="module")
def spec(compiled) -> Path:
    d, m = compiled["dir"], compiled["models"]
    base = free_block(4)
    data = {
        "agents": {"router": {"model": str(m["router"]), "role": "router", "n_ctx": 1024, "parallel": 1,
                              "n_threads": 1},
                   "chat": {"model": str(m["chat"]), "n_ctx": 512, "parallel": 1, "n_threads": 1},
                   "coder": {"model": str(m["coder"]), "role": "coder", "n_ctx": 512, "parallel": 1, "n_threads": 1}},
        "router": {"program": str(compiled["program"]), "agent": "router"},
        "fallback": CHAIN,
        "vram": {"budget_mib": 0},
        "gateway": {"port": base + 3},
        "workers": {"start_port": base, "log_dir": str(d / "logs")},
        "monitor": {"enabled": False},
    }
    path = d / "swarm.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def swarm(spec):
    s = Swarm(load_swarm(spec), log=lambda _m: None)
    s.start()
    yield s
    s.close()


def ask(text: str, **kw) -> dict:
    return {"request": {"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": text}], **kw}}


def test_graph_from_the_spec_routes_with_the_compiled_router(spec, swarm):
    graph = build_graph(spec)  # endpoints = the spec's worker ports, router = the spec's compiled program
    assert {node_name(a) for a in ("router", "chat", "coder")} | {"route", "validate"} <= set(graph.get_graph().nodes)
    out = graph.invoke(ask("Write a Python function that returns the square of a number."))
    route = out["route"]
    assert route["source"] == "router" and route["agent"] in ("chat", "coder") and route["latency_ms"] > 0
    hops = out["hops"]
    assert hops[0]["agent"] == route["agent"] and hops[0]["completion_tokens"] > 0
    for i, (prev, nxt) in enumerate(zip(hops, hops[1:], strict=False)):  # a climb follows a failed check
        assert not prev["valid"] and nxt["agent"] == next_in_chain(CHAIN, prev["agent"], out["tried"][: i + 1])
    assert out["agent"] == hops[-1]["agent"] and out["valid"] == hops[-1]["valid"]
    if hops[0]["valid"]:
        assert len(hops) == 1 and out["answer"].strip()


def test_failed_validation_climbs_the_fallback_chain(swarm):
    out = graph_for_swarm(swarm).invoke(ask("Write a Python function that adds two numbers.", stop=STOPS))
    routed = out["route"]["agent"]
    assert out["route"]["source"] == "router" and routed in ("chat", "coder")
    expected = CHAIN[CHAIN.index(routed):]  # the routed agent, then every agent after it in the chain
    assert [h["agent"] for h in out["hops"]] == expected == out["tried"]
    assert all(not h["valid"] and h["reason"] == "empty answer" for h in out["hops"])
    assert out["valid"] is False and out["agent"] == "router"


def test_named_agent_skips_the_router_and_custom_check(swarm):
    seen = []

    def picky(text: str, role: str, wants_json: bool) -> str | None:
        seen.append(role)
        return None if role == "router" else "not the router"

    out = graph_for_swarm(swarm, validate=picky).invoke(
        {"request": {"model": "chat", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}})
    assert out["route"] == {"agent": "chat", "source": "named", "latency_ms": 0.0}
    assert [h["agent"] for h in out["hops"]] == ["chat", "coder", "router"] and seen == ["general", "coder", "router"]
    assert out["valid"] is True and out["agent"] == "router" and out["answer"]

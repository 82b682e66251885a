"""A real co-resident swarm: 3 llama-server workers over SmolLM2 at 3 quants, the gateway, a real nats-server.

One swarm serves the whole module; every generation is capped at a few tokens to keep the file fast on 2 cores.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from quantswarm.results import ResultsTable
from serving.bus import BusWorker, close, collect, connect, ensure_stream, publish_raw, publish_task
from serving.gateway import GatewayServer
from serving.natsd import LocalNats
from serving.quants import quantize
from serving.swarm import Swarm
from serving.swarm_config import load_swarm
from serving.workers import free_port_block as free_block  # noqa: F401 - shared with the bus and gateway tests

REPO = Path(__file__).resolve().parent.parent
MAX_TOKENS = 4


@pytest.fixture(scope="module")
def quants(smollm2, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("quants")
    return {"Q4_1": smollm2, "Q8_0": quantize(smollm2, d / "smollm2-q8_0.gguf", "Q8_0"),
            "Q4_0": quantize(smollm2, d / "smollm2-q4_0.gguf", "Q4_0")}


def write_spec(path: Path, quants: dict[str, Path], **over) -> Path:
    base = free_block(5)
    data = {
        "agents": {
            "router": {"model": str(quants["Q4_0"]), "role": "router", "n_ctx": 256, "parallel": 1, "n_threads": 1},
            "chat": {"model": str(quants["Q4_1"]), "n_ctx": 256, "parallel": 2, "n_threads": 1},
            "coder": {"model": str(quants["Q8_0"]), "role": "coder", "n_ctx": 256, "parallel": 2, "n_threads": 1},
        },
        "router": {"default_agent": "chat"},
        "fallback": ["chat", "coder"],
        "vram": {"budget_mib": 0},
        "gateway": {"port": base + 4},
        "workers": {"start_port": base, "health_interval_s": 0.3, "log_dir": str(path.parent / "logs")},
        "monitor": {"csv": str(path.parent / "monitor.csv")},
    }
    data.update(over)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def swarm(quants, tmp_path_factory):
    spec = write_spec(tmp_path_factory.mktemp("swarm") / "swarm.yaml", quants)
    s = Swarm(load_swarm(spec), log=lambda _m: None)
    s.start()
    pids = {n: w.pid for n, w in s.supervisor.workers.items()}
    yield s
    s.close()
    pids.update({n: w.pid for n, w in s.supervisor.workers.items()})
    for pid in pids.values():  # no orphan llama-server processes
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


@pytest.fixture(scope="module")
def gw(swarm):
    with GatewayServer(swarm) as g:
        with httpx.Client(base_url=g.url, timeout=120) as client:
            yield client


def chat(client, model="auto", content="Hi!", **kw):
    return client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}],
                                                     "max_tokens": MAX_TOKENS, **kw})


def test_all_agents_loaded_and_listed(gw, swarm):
    models = gw.get("/v1/models").json()
    ids = [m["id"] for m in models["data"]]
    assert ids[0] == "auto" and sorted(ids[1:]) == ["chat", "coder", "router"]
    assert {m["file"] for m in models["data"][1:]} == {"smollm2-q4_0.gguf", "smollm2-135m-instruct-q4_1.gguf",
                                                         "smollm2-q8_0.gguf"}
    health = gw.get("/health")
    assert health.status_code == 200 and all(a["state"] == "up" for a in health.json()["agents"].values())
    rows = swarm.supervisor.measured_vs_plan()
    assert [r["measure"] for r in rows] == ["rss"] * 3 and all(float(r["measured_MiB"]) > 50 for r in rows)


def test_auto_and_named_requests(gw):
    auto = chat(gw)
    assert auto.status_code == 200, auto.text
    body = auto.json()
    assert body["model"] == "chat" and body["quantswarm"]["route"]["source"] == "default"
    assert body["choices"][0]["message"]["content"] and body["usage"]["completion_tokens"] > 0
    named = chat(gw, model="coder")
    assert named.json()["model"] == "coder" and named.headers["x-quantswarm-route"] == "named"
    metrics = gw.get("/metrics").text
    assert 'quantswarm_requests_total{agent="coder",outcome="ok",source="named"} 1' in metrics
    assert 'quantswarm_worker_up{agent="router"} 1' in metrics


def test_streaming(gw):
    with gw.stream("POST", "/v1/chat/completions", json={"model": "router", "stream": True, "max_tokens": MAX_TOKENS,
                                                         "messages": [{"role": "user", "content": "Hi"}]}) as r:
        assert r.status_code == 200 and r.headers["x-quantswarm-agent"] == "router"
        events = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["model"] for c in chunks} == {"router"}
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    assert text


def test_bad_requests_are_refused_clearly(gw):
    r = chat(gw, model="ghost")
    assert r.status_code == 404 and "not an agent of this swarm" in r.json()["error"]["message"]
    r = gw.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "request body is not JSON"
    r = gw.post("/v1/chat/completions", json={"model": "auto", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("messages:")


def test_invalid_answer_climbs_the_fallback_chain(gw):
    # stop strings that cover how greedy SmolLM2 opens an answer, so the answer is empty
    stops = ["H", "I", "T", "S", "A", "W", "Y", " ", "h", "i", "t", "s", "a", "w", "y", "O"]
    r = chat(gw, content="Hi!", stop=stops)
    q = r.json()["quantswarm"]
    assert [f["agent"] for f in q["fallbacks"]] == ["chat", "coder"], q
    assert {f["reason"] for f in q["fallbacks"]} == {"empty answer"} and q["valid"] is False
    assert r.headers["x-quantswarm-fallbacks"] == "2"


def test_api_key(swarm):
    swarm.cfg.gateway.api_key = "k-test"
    try:
        server = GatewayServer(swarm, port=free_block(1)).start()
    finally:
        swarm.cfg.gateway.api_key = None
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.get("/v1/models").status_code == 401
            assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.get("/v1/models", headers={"Authorization": "Bearer k-test"}).status_code == 200
            assert c.get("/health").status_code == 200
    finally:
        server.stop()


def _processing(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("llamacpp:requests_processing"):
            return float(line.split()[-1])
    return 0.0


def test_worker_killed_mid_request_fails_over_and_restarts(gw, swarm):
    w = swarm.supervisor.workers["chat"]
    old_pid, url = w.pid, w.url
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(r=chat(gw, content="Write a long story about a cat.",
                                                             max_tokens=16)))
    t.start()
    deadline = time.monotonic() + 30
    while _processing(url) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(old_pid, signal.SIGKILL)
    t.join(120)
    r = result["r"]
    assert r.status_code == 200, r.text
    q = r.json()["quantswarm"]
    assert r.json()["model"] == "coder" and q["failovers"][0]["agent"] == "chat"
    assert swarm.supervisor.wait_up("chat", 60)
    assert w.pid != old_pid and w.restarts == 1
    assert chat(gw, model="chat").json()["model"] == "chat"


def test_bus_end_to_end_survives_a_killed_worker(swarm):
    asyncio.run(_bus_scenario(swarm))


async def _bus_scenario(swarm):
    with LocalNats() as nats_srv:
        spec = copy.deepcopy(swarm.cfg.bus)
        spec.url = nats_srv.url
        nc = await connect(spec)
        js = nc.jetstream()
        await ensure_stream(js, spec)
        valid = [f"t{i}" for i in range(6)]
        published = 0
        for i, tid in enumerate(valid):
            model = "auto" if i % 3 else "router"
            assert await publish_task(js, spec, {"id": tid, "model": model, "prompt": f"Count to {i}.",
                                                 "max_tokens": MAX_TOKENS})
            published += 1
        assert not await publish_task(js, spec, {"id": "t0", "prompt": "dup", "max_tokens": 1})  # dedup by id
        malformed = [(b"this is not json", "bad-0"), (json.dumps({"id": "bad-1"}).encode(), None),
                     (json.dumps({"id": "bad-2", "prompt": "x", "model": "ghost"}).encode(), "bad-2"),
                     (json.dumps({"id": "bad-3", "prompt": "x", "colour": 1}).encode(), "bad-3")]
        for payload, mid in malformed:
            await publish_raw(js, spec, payload, mid)
            published += 1

        stop = asyncio.Event()
        worker = BusWorker(swarm, spec, log=lambda _m: None)
        run = asyncio.create_task(worker.run(stop))
        killed = False

        def on_result(_item: dict) -> None:
            nonlocal killed
            if not killed:  # kill the default agent's worker while the rest are in flight
                killed = True
                os.kill(swarm.supervisor.workers["chat"].pid, signal.SIGKILL)

        results = await collect(js, spec, spec.results_subject, expect=len(valid), timeout=150, on_message=on_result)
        dead = await collect(js, spec, spec.dead_subject, expect=len(malformed), timeout=30)
        stop.set()
        await run
        # nothing more is stored: each task ended as exactly one result or one dead letter
        extra = await collect(js, spec, spec.results_subject, expect=len(valid) + 1, timeout=1.5)
        await close(nc)
    assert killed
    assert sorted(r["id"] for r in results) == valid and len(extra) == len(valid)
    assert len(results) + len(dead) == published
    reasons = {d["id"]: d["reason"] for d in dead}
    assert reasons["bad-0"].startswith("not JSON")
    assert "exactly one of `messages` or `prompt`" in reasons["bad-1"]
    assert "'ghost' is not an agent" in reasons["bad-2"]
    assert reasons["bad-3"].startswith("invalid task: colour")
    assert all(r["text"] and r["agent"] in swarm.cfg.agents for r in results)
    assert any(r["failovers"] and r["failovers"][0]["agent"] == "chat" for r in results)  # in flight at the kill
    assert worker.completed == len(valid) and worker.dead == len(malformed)
    assert swarm.supervisor.wait_up("chat", 60)


def test_bench_cli_writes_rows_and_summary(quants, tmp_path):
    from quantswarm.cli import app

    spec = write_spec(tmp_path / "bench.yaml", quants)
    res = CliRunner().invoke(app, ["bench", str(spec), "--n", "4", "--concurrency", "3", "--max-tokens", "4",
                                   "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "p95_ms" in res.output and "tok/s" in res.output
    summary = json.loads(next((tmp_path / "out").glob("serving-bench-*.json")).read_text())
    assert summary["ok"] == 4 and summary["latency_ms"]["p50"] > 0 and summary["tok_s"] > 0
    rows = ResultsTable(tmp_path / "results").read(source="bench")
    assert len(rows) == 4 and set(rows.agent) <= {"chat", "coder", "router"}
    assert (rows.completion_tokens > 0).all() and rows.run_id.nunique() == 1


@pytest.mark.parametrize("closed_loop", [False, True], ids=["open", "closed-loop"])
def test_bench_over_the_bus(quants, tmp_path, closed_loop):
    from serving.bench import BenchConfig, bench_once

    spec = write_spec(tmp_path / "one.yaml", quants)
    cfg = load_swarm(spec)
    cfg.agents = {"chat": cfg.agents["chat"]}
    cfg.fallback = ["chat"]
    bc = BenchConfig(n=3, concurrency=2, max_tokens=MAX_TOKENS, profile="short", transport="bus",
                     results=str(tmp_path / "results"), out=str(tmp_path / "out"), closed_loop=closed_loop)
    s = bench_once(cfg, bc, log=lambda _m: None, label="bus")
    assert s["ok"] == 3 and s["dead_lettered"] == 0 and s["transport"] == "bus"
    assert s["closed_loop"] is closed_loop
    (mem,) = s["memory"]["agents"]  # planned vs measured after load: host RSS on a CPU-only machine
    assert mem["agent"] == "chat" and mem["measure"] in ("vram", "rss") and mem["measured_mib"] > 0
    assert len(ResultsTable(tmp_path / "results").read(run_id=s["run_id"])) == 3
    # the worker log has llama.cpp's buffer sizes: the planned KV cache is the logged one, to its 2 decimals
    assert mem["logged_kv_mib"] == pytest.approx(mem["planned_kv_mib"], abs=0.006)
    assert mem["logged_compute_mib"] == pytest.approx(mem["planned_compute_mib"], rel=0.05)


def test_execution_modes_run_at_one_concurrency(quants, tmp_path):
    from serving.bench import BenchConfig, bench_once
    from serving.bench_modes import agent_for_kind, compare_modes

    cfg = load_swarm(write_spec(tmp_path / "modes.yaml", quants))
    cfg.agents = {n: cfg.agents[n] for n in ("chat", "coder")}
    cfg.fallback = ["chat"]
    assert agent_for_kind(cfg, "code") == "coder" and agent_for_kind(cfg, "math") == "chat"  # no math agent
    bc = BenchConfig(n=5, concurrency=2, max_tokens=MAX_TOKENS, profile="mixed", transport="http",
                     results=str(tmp_path / "results"), out=str(tmp_path / "out"))
    swarm_run = bench_once(cfg, bc, log=lambda _m: None, label="swarm")
    res = compare_modes(cfg, bc, lambda _m: None, swarm_summary=swarm_run)
    assert [r["concurrency"] for r in res["modes"]] == [2, 2, 2]
    assert all(r["requests"] == 5 for r in res["modes"])
    # mixed = math, knowledge, code, short, math: chat, then coder for the code item, then chat again
    assert res["swap"]["loads"] == 3 and res["shared"]["per_agent"].keys() == {"chat"}
    with pytest.raises(ValueError, match="compare at one concurrency"):
        compare_modes(cfg, BenchConfig(**{**bc.__dict__, "concurrency": 3}), lambda _m: None, swarm_run)


def test_serve_dry_run_and_foreground_ctrl_c(quants, tmp_path):
    spec = write_spec(tmp_path / "fg.yaml", quants)
    exe = [sys.executable, "-m", "quantswarm.cli"]
    dry = subprocess.run([*exe, "serve", str(spec), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and "CPU-only plan" in dry.stdout and "gpu_total_MiB" in dry.stdout
    port = yaml.safe_load(spec.read_text())["gateway"]["port"]
    proc = subprocess.Popen([*exe, "serve", str(spec)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert health and health["status"] == "ok", proc.stdout.read() if proc.poll() is not None else health
        pids = [a["pid"] for a in health["agents"].values()]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "stopping workers" in out
    assert all(not Path(f"/proc/{p}").exists() for p in pids), out

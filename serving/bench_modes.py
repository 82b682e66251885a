"""Execution-mode study: the same workload at the same concurrency under three ways of serving it.

* ``swap``: one model per request type, loaded on demand. One llama-server at a time; a request whose agent is not
  the loaded one waits until the requests in flight on the loaded model are answered, then the model is swapped
  (stop, start the other; the load time counts). Request type -> agent: by role (math -> `math`, code -> `coder`,
  knowledge -> `knowledge`, short -> `chat`), else the spec's default agent.
* ``shared``: the spec's default agent alone serves every request.
* ``swarm``: the co-resident swarm as specced (the caller's run, passed in).

Every mode keeps the same number of requests in flight, ``BenchConfig.concurrency``, and the single-model modes
get that many llama-server slots (``parallel``), so no mode is held back by fewer slots than requests in flight.
(The earlier comparison ran one model with 1 slot and 1 request in flight against the swarm at
``concurrency`` requests: it measured concurrency, not the execution mode.) Transport: ``shared`` goes through the
same transport as the swarm run (gateway or bus); ``swap`` talks to the loaded llama-server directly over HTTP, as
a swap proxy in front of it would.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from dataclasses import asdict

import httpx

from quantswarm.energy import EnergyMeter
from quantswarm.engine.server import LlamaServerEngine
from serving.bench import BenchSession, Sample, WorkItem, single_agent, summarize, workload
from serving.bench_config import BenchConfig
from serving.swarm_config import SwarmConfig

KIND_ROLES = {"math": "math", "code": "coder", "knowledge": "knowledge", "short": "chat", "tool": "tools",
              "research": "research", "gsm8k": "math", "humaneval": "coder", "mmlu": "knowledge"}


def agent_for_kind(cfg: SwarmConfig, kind: str) -> str:
    """The agent a request type goes to in swap mode: the first agent whose role matches it, else the default."""
    role = KIND_ROLES.get(kind)
    return next((n for n, a in cfg.agents.items() if a.role == role), cfg.default_agent())


def _engine(cfg: SwarmConfig, name: str, slots: int) -> LlamaServerEngine:
    """The swapped-in model with ``slots`` slots, all its layers on the GPU when the spec has a GPU budget (the
    point of swapping is that one model at a time gets the GPU)."""
    a = cfg.agents[name]
    return LlamaServerEngine(a.model, n_ctx=a.n_ctx, parallel=slots, n_gpu_layers=999 if cfg.vram.budget_mib else 0,
                             n_threads=a.n_threads, kv_cache_type=a.kv_cache_type, flash_attn=a.flash_attn,
                             n_ubatch=a.n_ubatch, startup_timeout=cfg.workers.startup_timeout_s,
                             request_timeout=cfg.gateway.request_timeout_s)


async def _ask(url: str, it: WorkItem, agent: str, bc: BenchConfig) -> Sample:
    body = {"messages": it.messages, "max_tokens": bc.max_tokens, "temperature": 0.0}
    t = time.perf_counter()
    try:
        async with httpx.AsyncClient(base_url=url, timeout=bc.timeout_s) as client:
            r = await client.post("/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        return Sample(it, agent=agent, error=f"{type(exc).__name__}: {exc}", latency_ms=(time.perf_counter() - t) * 1e3)
    ms = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        return Sample(it, agent=agent, error=f"HTTP {r.status_code}: {r.text[:200]}", latency_ms=ms)
    d = r.json()
    usage = d.get("usage") or {}
    return Sample(it, agent=agent, text=d["choices"][0]["message"].get("content") or "", ok=True, latency_ms=ms,
                  prompt_tokens=int(usage.get("prompt_tokens", 0)),
                  completion_tokens=int(usage.get("completion_tokens", 0)))


async def _run_swap(cfg: SwarmConfig, items: list[WorkItem], bc: BenchConfig, log: Callable[[str], None]
                    ) -> tuple[list[Sample], int, float]:
    """Serve ``items`` in order with at most ``bc.concurrency`` in flight and one model loaded at a time; returns the
    samples, the number of model loads and the seconds spent loading."""
    sem = asyncio.Semaphore(bc.concurrency)
    inflight: set[asyncio.Task] = set()
    engine: LlamaServerEngine | None = None
    loaded, loads, load_s = None, 0, 0.0
    samples: list[Sample] = []

    async def one(it: WorkItem, agent: str, url: str) -> None:
        async with sem:
            samples.append(await _ask(url, it, agent, bc))

    try:
        for it in items:
            need = agent_for_kind(cfg, it.kind)
            if need != loaded:
                if inflight:
                    await asyncio.gather(*inflight)
                    inflight.clear()
                t = time.perf_counter()
                if engine is not None:
                    await asyncio.to_thread(engine.close)
                engine = await asyncio.to_thread(_engine, cfg, need, bc.concurrency)
                load_s += time.perf_counter() - t
                loaded, loads = need, loads + 1
            while sem.locked():  # closed loop: the next request waits for a free place
                await asyncio.sleep(0.002)
            task = asyncio.create_task(one(it, need, engine.url))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            await asyncio.sleep(0)
        await asyncio.gather(*list(inflight))
    finally:
        if engine is not None:
            engine.close()
    log(f"swap: {loads} model loads, {load_s:.1f} s loading")
    return samples, loads, load_s


def run_swap(cfg: SwarmConfig, bc: BenchConfig, log: Callable[[str], None] = print,
             items: list[WorkItem] | None = None) -> dict:
    """The swap mode's summary on ``items`` (default: ``bc``'s workload) as :func:`serving.bench.summarize`, plus
    ``loads`` and ``load_s``."""
    items = items if items is not None else workload(cfg, bc, log)
    meter = EnergyMeter(cfg.vram.gpu)
    with meter:
        t0 = time.perf_counter()
        samples, loads, load_s = asyncio.run(_run_swap(cfg, items, bc, log))
        wall = time.perf_counter() - t0
    summary = summarize(samples, wall, meter, cfg)
    summary.update({"label": "swap", "concurrency": bc.concurrency, "loads": loads, "load_s": round(load_s, 2)})
    return summary


def compare_modes(cfg: SwarmConfig, bc: BenchConfig, log: Callable[[str], None], swarm_summary: dict,
                  items: list[WorkItem] | None = None) -> dict:
    """swap vs shared vs the co-resident swarm (``swarm_summary``, run at ``bc.concurrency``), all at
    ``bc.concurrency`` requests in flight, on ``items`` (default: ``bc``'s workload); returns the per-mode summaries
    and a table."""
    from quantswarm.text_table import format_table

    conc = bc.concurrency
    if swarm_summary.get("concurrency") != conc:
        raise ValueError(f"the swarm run had concurrency {swarm_summary.get('concurrency')}, the modes run {conc}; "
                         "compare at one concurrency")
    name = cfg.default_agent()
    if items is None:
        items = workload(cfg, bc, log)  # from the full spec: the routed profile needs its router program
    with BenchSession(single_agent(cfg, name, parallel=conc), log, bc.transport, bc.nats) as session:
        shared = session.run(BenchConfig(**{**asdict(bc), "model": name}), "shared", items)
    swap = run_swap(copy.deepcopy(cfg), bc, log, items)
    rows = []
    for label, s in ((f"swap (one model per request type, loaded on demand, {conc} slots)", swap),
                     (f"shared (one model: {name}, {conc} slots)", shared), ("co-resident swarm", swarm_summary)):
        rows.append({"mode": label, "concurrency": s["concurrency"], "requests": s["ok"], "wall_s": s["wall_s"],
                     "req/s": s["req_s"], "tok/s": s["tok_s"], "p50_ms": s["latency_ms"]["p50"],
                     "p95_ms": s["latency_ms"]["p95"], "loads": s.get("loads", "")})
    log(format_table(rows))
    return {"swap": swap, "shared": shared, "modes": rows}

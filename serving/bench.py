"""``quantswarm bench``: load a swarm, send N requests at a controlled rate over HTTP or the bus, report.

Workload profiles (deterministic from the seed): ``short`` chat, long-context ``research`` (a passage
sized to the smallest agent context plus a question), ``toolstorm`` (JSON tool calls in bursts of 10)
and ``mixed`` (math / knowledge / code). The report has avg/p50/p95/p99 end-to-end latency, router
decision latency, per-agent and aggregate tok/s, VRAM peak, energy and Wh per 1M generated tokens
(n/a without NVML). Every request becomes a results-table row (``source="bench"``) and the summary is
written as JSON. ``sweep`` repeats the bench over parallel slots x n_ctx (the capacity knee);
:mod:`serving.bench_modes` compares swap / shared / co-resident at one concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import random
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

from quantswarm.energy import EnergyMeter, GpuSample, device_label, sample, wh_per_mtok
from quantswarm.errors import ConfigError
from quantswarm.loaders import Item
from quantswarm.registry import inspect_gguf, sha256_file
from quantswarm.results import ResultRow, ResultsTable, new_run_id, prompt_hash, versions_json
from serving.bench_config import PROFILES, TRANSPORTS, BenchConfig  # noqa: F401 - re-exported
from serving.planner import MIB
from serving.schemas import BusTask
from serving.swarm_config import SwarmConfig
from serving.validation import check_answer


@dataclass
class WorkItem:
    """One request of a workload: when to send it (seconds from start) and what."""

    id: str
    kind: str  # short | research | tool | math | knowledge | code
    messages: list[dict]
    at: float = 0.0
    wants_json: bool = False
    gold: str = ""
    task: str = ""  # an eval task that scores the answer (routed profile), else the bench's own checks
    item: Item | None = None  # that task's item
    allow_code_execution: bool = False  # a code task may run the answer (sandboxed)


@dataclass
class Sample:
    """What came back for one request."""

    item: WorkItem
    agent: str = ""
    text: str = ""
    ok: bool = False
    error: str = ""
    latency_ms: float = 0.0
    route_ms: float = 0.0
    route_source: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fallbacks: int = 0
    correct: bool = False  # set by score_samples
    extracted: str = ""


# --- workloads -------------------------------------------------------------------------------

_NAMES = ["Ada", "Linus", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret"]
_CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Egypt", "Cairo"),
             ("Canada", "Ottawa"), ("Kenya", "Nairobi"), ("Peru", "Lima")]
_TOOLS = ["get_weather", "search_web", "read_file", "send_email"]
_WORDS = ("the swarm keeps every agent loaded so requests never wait for a model swap while the router sends "
          "easy questions to small quantized models and hard ones to larger ones memory bandwidth decides "
          "decode speed on a GPU and batching across slots raises throughput until the compute saturates").split()


def _item(kind: str, i: int, rng: random.Random, research_words: int) -> WorkItem:
    if kind == "short":
        name = rng.choice(_NAMES)
        return WorkItem(f"short-{i}", kind, [{"role": "user", "content": f"Say hello to {name} in one sentence."}])
    if kind == "research":
        passage = " ".join(rng.choice(_WORDS) for _ in range(research_words))
        q = "In one sentence, what does the passage say decides decode speed?"
        return WorkItem(f"research-{i}", kind, [{"role": "system", "content": "Answer from the passage."},
                                                 {"role": "user", "content": f"Passage: {passage}\n\n{q}"}])
    if kind == "tool":
        tool = rng.choice(_TOOLS)
        return WorkItem(f"tool-{i}", kind, [{"role": "user", "content": f'Call the tool {tool}. Reply only with JSON '
                                             f'like {{"tool": "{tool}", "args": {{}}}}.'}], wants_json=True)
    if kind == "math":
        a, b = rng.randint(2, 49), rng.randint(2, 49)
        return WorkItem(f"math-{i}", kind, [{"role": "user", "content": f"What is {a} + {b}? Answer with the number."}],
                        gold=str(a + b))
    if kind == "knowledge":
        country, capital = rng.choice(_CAPITALS)
        return WorkItem(f"knowledge-{i}", kind, [{"role": "user", "content": f"What is the capital of {country}?"}],
                        gold=capital)
    fn = rng.choice(["square", "double", "negate", "halve"])
    return WorkItem(f"code-{i}", "code", [{"role": "user", "content": f"Write a Python function {fn}(x). "
                                           "Reply with one ```python code block."}])


def make_workload(profile: str, n: int, rate: float, seed: int = 0, min_ctx: int = 512) -> list[WorkItem]:
    """``n`` requests of a profile with send times: evenly at ``rate``/s, or bursts of 10 for toolstorm."""
    rng = random.Random(seed)
    research_words = max(20, min(400, int(min_ctx * 0.6)))  # ~1.3 tokens a word: leaves room for the answer
    kinds = {"short": ["short"], "research": ["research"], "toolstorm": ["tool"],
             "mixed": ["math", "knowledge", "code", "short"]}[profile]
    items = [_item(kinds[i % len(kinds)], i, rng, research_words) for i in range(n)]
    step = 1.0 / rate if rate > 0 else 0.0
    for i, it in enumerate(items):
        it.at = (i // 10) * 10 * step if profile == "toolstorm" else i * step
    return items


@functools.cache
def _eval_task(name: str):
    """An eval task by name, read and validated once per process (a run scores hundreds of answers with it)."""
    from evals.task import load_task

    return load_task(name)


def score(item: WorkItem, text: str, role: str) -> tuple[bool, str]:
    """(correct, extracted): an item of an eval task by that task's primary filter; other gold-bearing items when
    the gold appears in the answer; the rest when the answer passes validation."""
    if item.task and item.item is not None:
        res = next(r for r in _eval_task(item.task).score(text, item.item,
                                                          allow_code_execution=item.allow_code_execution) if r.primary)
        return res.correct, res.extracted
    if item.gold:
        return item.gold.lower() in text.lower(), ""
    return check_answer(text, role=role, wants_json=item.wants_json) is None, ""


def workload(cfg: SwarmConfig, bc: BenchConfig, log: Callable[[str], None] = print) -> list[WorkItem]:
    """The bench's requests: the routed profile's held-out tasks, else :func:`make_workload`'s.

    Raises ConfigError for the routed profile without a compiled router in the spec."""
    if bc.profile != "routed":
        return make_workload(bc.profile, bc.n, bc.rate, bc.seed, min_ctx=min(a.n_ctx for a in cfg.agents.values()))
    from serving.routed_workload import routed_workload

    if not cfg.router.program:
        raise ConfigError(f"{cfg.path}: --profile routed draws the router's held-out tasks: set router.program")
    items = routed_workload(bc.labels, cfg.router.program, bc.n, bc.seed, bc.data_dir, bc.allow_code_execution,
                            log=log)
    step = 1.0 / bc.rate if bc.rate > 0 else 0.0
    for i, it in enumerate(items):
        it.at = i * step
    return items


# --- drivers -------------------------------------------------------------------------------------

async def _paced(items: list[WorkItem], concurrency: int, send: Callable, progress: Callable[[Sample], None]
                 ) -> list[Sample]:
    sem = asyncio.Semaphore(concurrency)
    t0 = time.monotonic()

    async def one(it: WorkItem) -> Sample:
        delay = it.at - (time.monotonic() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        async with sem:
            s = await send(it)
        progress(s)
        return s

    return await asyncio.gather(*(one(it) for it in items))


def model_for(bc: BenchConfig, agents: list[str], i: int) -> str:
    """The request's model field: ``spread`` sends request i to agent i mod n by name."""
    return agents[i % len(agents)] if bc.model == "spread" else bc.model


async def run_http(url: str, items: list[WorkItem], bc: BenchConfig, progress, api_key: str | None = None,
                   agents: list[str] | None = None) -> list[Sample]:
    """Send ``items`` to a gateway's /v1/chat/completions with bounded concurrency."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    models = {it.id: model_for(bc, agents or [], i) for i, it in enumerate(items)}
    async with httpx.AsyncClient(base_url=url, timeout=bc.timeout_s, headers=headers) as client:
        async def send(it: WorkItem) -> Sample:
            body = {"model": models[it.id], "messages": it.messages, "max_tokens": bc.max_tokens, "temperature": 0.0}
            if it.wants_json:
                body["response_format"] = {"type": "json_object"}
            t = time.perf_counter()
            try:
                r = await client.post("/v1/chat/completions", json=body)
            except httpx.HTTPError as exc:
                return Sample(it, error=f"{type(exc).__name__}: {exc}", latency_ms=(time.perf_counter() - t) * 1000)
            ms = (time.perf_counter() - t) * 1000
            if r.status_code != 200:
                return Sample(it, error=f"HTTP {r.status_code}: {r.text[:200]}", latency_ms=ms)
            d = r.json()
            q = d.get("quantswarm", {})
            usage = d.get("usage") or {}
            return Sample(it, agent=d.get("model", ""), text=d["choices"][0]["message"].get("content") or "", ok=True,
                          latency_ms=ms, route_ms=q.get("route", {}).get("latency_ms", 0.0),
                          route_source=q.get("route", {}).get("source", ""),
                          prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)),
                          fallbacks=len(q.get("fallbacks", [])))

        return await _paced(items, bc.concurrency, send, progress)


async def run_bus(swarm, nats_url: str, items: list[WorkItem], bc: BenchConfig, run_id: str, progress
                  ) -> tuple[list[Sample], int]:
    """Publish ``items`` as bus tasks at the paced rate, consume them on ``swarm``, collect results and dead letters.

    Returns the samples and the number of dead letters.
    """
    import nats

    from serving.bus import BusWorker, close, connect, ensure_stream, publish_task, reader

    seen: set[str] = set()
    for it in items:  # a repeated id is deduplicated by JetStream and its second result waited for in vain
        if it.id in seen:
            raise ConfigError(f"workload: request id {it.id!r} is used twice; every request needs its own id")
        seen.add(it.id)

    spec = copy.deepcopy(swarm.cfg.bus)
    spec.url = nats_url
    spec.concurrency = bc.concurrency
    nc = await connect(spec)
    js = nc.jetstream()
    await ensure_stream(js, spec)
    sent: dict[str, float] = {}
    by_id = {f"{run_id}.{it.id}": it for it in items}
    samples: dict[str, Sample] = {}
    done = asyncio.Event()
    dead = 0

    def on_result(d: dict) -> None:
        tid = d.get("id")
        if tid in by_id and tid not in samples:
            it = by_id[tid]
            samples[tid] = s = Sample(
                it, agent=d["agent"], text=d["text"], ok=True,
                latency_ms=(time.perf_counter() - sent.get(tid, time.perf_counter())) * 1000,
                route_ms=d.get("route_ms", 0.0), route_source=d.get("route_source", ""),
                prompt_tokens=d.get("prompt_tokens", 0), completion_tokens=d.get("completion_tokens", 0),
                fallbacks=len(d.get("fallbacks", [])))
            progress(s)

    def on_dead(d: dict) -> None:
        nonlocal dead
        tid = d.get("id")
        if tid in by_id and tid not in samples:
            samples[tid] = Sample(by_id[tid], error=f"dead-lettered: {d.get('reason')}")
            dead += 1
            progress(samples[tid])

    async def follow(sub, handle: Callable[[dict], None]) -> None:
        while len(samples) < len(items):
            try:
                msgs = await sub.fetch(batch=50, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for m in msgs:
                handle(json.loads(m.data))
        done.set()

    subs = [await reader(js, spec, spec.results_subject, from_start=False),
            await reader(js, spec, spec.dead_subject, from_start=False)]
    followers = [asyncio.create_task(follow(subs[0], on_result)), asyncio.create_task(follow(subs[1], on_dead))]
    stop = asyncio.Event()
    worker = asyncio.create_task(BusWorker(swarm, spec, log=lambda _m: None).run(stop))
    t0 = time.monotonic()
    agents = list(swarm.cfg.agents)
    for i, (tid, it) in enumerate(by_id.items()):
        delay = it.at - (time.monotonic() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        while bc.closed_loop and len(sent) - len(samples) >= bc.concurrency and time.monotonic() - t0 < bc.timeout_s:
            await asyncio.sleep(0.002)  # closed loop: a "client" sends its next task once one of its answers is back
        sent[tid] = time.perf_counter()
        await publish_task(js, spec, BusTask(id=tid, model=model_for(bc, agents, i), messages=it.messages,
                                             max_tokens=bc.max_tokens,
                                             response_format={"type": "json_object"} if it.wants_json else None,
                                             meta={"run_id": run_id}))
    try:
        await asyncio.wait_for(done.wait(), timeout=bc.timeout_s)
    except TimeoutError:
        pass
    finally:
        stop.set()
        for f in followers:
            f.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        await worker
        await close(nc, *subs)
    out = [samples.get(tid) or Sample(it, error="no result within the timeout") for tid, it in by_id.items()]
    return out, dead


# --- report --------------------------------------------------------------------------------------

def score_samples(samples: list[Sample], cfg: SwarmConfig) -> None:
    """Score every answered sample once (:func:`score`; sets ``correct`` and ``extracted``)."""
    for s in samples:
        if s.ok:
            role = cfg.agents[s.agent].role if s.agent in cfg.agents else "general"
            s.correct, s.extracted = score(s.item, s.text, role)


def energy_over_gpus(meters: dict[int, EnergyMeter], tokens: int) -> dict:
    """Energy of a run metered on several GPUs: ``per_gpu`` (joules, average W, Wh per 1M generated tokens, peak
    VRAM MiB per GPU index) and the totals ``joules``, ``avg_power_w`` (summed over GPUs) and ``wh_per_mtok``; the
    totals are None when any GPU has no reading."""
    per = {g: {"joules": m.joules, "avg_power_w": m.avg_power_w, "wh_per_mtok": m.wh_per_mtok(tokens),
               "vram_peak_mib": m.peak_vram_mib} for g, m in meters.items()}
    if any(m.joules is None for m in meters.values()):
        return {"per_gpu": per}
    joules = sum(m.joules for m in meters.values())
    seconds = max(m.seconds for m in meters.values())
    return {"per_gpu": per, "joules": joules, "avg_power_w": round(joules / seconds, 1) if seconds > 0 else None,
            "wh_per_mtok": wh_per_mtok(joules, tokens)}


def accuracy(samples: list[Sample]) -> dict:
    """Share of answers scored right (after :func:`score_samples`): overall, per agent and per request kind, with
    n and correct per group; an unanswered request counts as wrong."""
    groups: dict[str, dict[str, int]] = defaultdict(lambda: {"n": 0, "correct": 0})
    for s in samples:
        for key in ("all", f"agent:{s.agent or '(none)'}", f"kind:{s.item.kind}"):
            groups[key]["n"] += 1
            groups[key]["correct"] += int(s.ok and s.correct)
    return {k: {**v, "accuracy": round(v["correct"] / v["n"], 4)} for k, v in sorted(groups.items())}


def summarize(samples: list[Sample], wall_s: float, meter: EnergyMeter | None, cfg: SwarmConfig | None = None
              ) -> dict:
    """Latency percentiles, router latency and decision sources, tok/s per agent and in aggregate, VRAM, energy
    and mean power; with ``cfg``, the answers are scored and ``accuracy`` added (:func:`accuracy`)."""
    if cfg is not None:
        score_samples(samples, cfg)
    ok = [s for s in samples if s.ok]
    lat = np.array([s.latency_ms for s in ok]) if ok else np.array([np.nan])
    route = np.array([s.route_ms for s in ok if s.route_source not in ("", "named")] or [0.0])
    tokens = sum(s.completion_tokens for s in ok)
    per_agent: dict[str, dict] = defaultdict(lambda: {"requests": 0, "completion_tokens": 0})
    for s in ok:
        per_agent[s.agent]["requests"] += 1
        per_agent[s.agent]["completion_tokens"] += s.completion_tokens
    for a in per_agent.values():
        a["tok_s"] = round(a["completion_tokens"] / wall_s, 2) if wall_s > 0 else None
    joules = meter.joules if meter else None
    sources: dict[str, int] = defaultdict(int)
    for s in ok:
        sources[s.route_source or "n/a"] += 1
    return {
        "requests": len(samples), "ok": len(ok), "errors": len(samples) - len(ok),
        "fallbacks": sum(s.fallbacks for s in ok), "wall_s": round(wall_s, 3),
        "latency_ms": {"avg": _r(lat.mean()), "p50": _r(np.percentile(lat, 50)), "p95": _r(np.percentile(lat, 95)),
                       "p99": _r(np.percentile(lat, 99))},
        "router_ms": {"avg": _r(route.mean()), "p95": _r(np.percentile(route, 95))},
        "completion_tokens": tokens, "tok_s": round(tokens / wall_s, 2) if wall_s > 0 else None,
        "req_s": round(len(ok) / wall_s, 3) if wall_s > 0 else None,
        "per_agent": dict(per_agent), "route_sources": dict(sources),
        "vram_peak_mib": meter.peak_vram_mib if meter else None,
        "joules": joules, "wh_per_mtok": meter.wh_per_mtok(tokens) if meter else None,
        "avg_power_w": meter.avg_power_w if meter else None,
        **({"accuracy": accuracy(samples)} if cfg is not None else {}),
    }


def _r(x: float) -> float | None:
    return None if x != x else round(float(x), 2)


def summary_rows(summary: dict) -> list[dict]:
    """The summary as printable rows (one aggregate row, then one per agent)."""
    lat = summary["latency_ms"]
    na = "n/a"
    rows = [{"scope": "all", "requests": summary["ok"], "errors": summary["errors"], "tok/s": summary["tok_s"],
             "avg_ms": lat["avg"], "p50_ms": lat["p50"], "p95_ms": lat["p95"], "p99_ms": lat["p99"],
             "router_ms": summary["router_ms"]["avg"],
             "vram_peak_MiB": na if summary["vram_peak_mib"] is None else round(summary["vram_peak_mib"]),
             "J": na if summary["joules"] is None else round(summary["joules"], 1),
             "W": na if summary.get("avg_power_w") is None else summary["avg_power_w"],
             "Wh/1Mtok": na if summary["wh_per_mtok"] is None else round(summary["wh_per_mtok"], 2)}]
    for name, a in sorted(summary["per_agent"].items()):
        rows.append({"scope": name, "requests": a["requests"], "tok/s": a["tok_s"]})
    return rows


# --- runs ----------------------------------------------------------------------------------------

def _agent_facts(cfg: SwarmConfig) -> dict[str, dict]:
    facts = {}
    for n, a in cfg.agents.items():
        info = inspect_gguf(a.model)
        facts[n] = {"model_file": Path(a.model).name, "model_sha": sha256_file(a.model), "quant": info.file_type}
    return facts


def loaded_memory(swarm, before: GpuSample | None) -> dict:
    """Planned vs measured memory of a loaded swarm: per worker (:meth:`Supervisor.measured_memory`) and the
    GPU's used VRAM before the load (``before``) and now, from NVML (None without a GPU)."""
    plan, after = swarm.plan, sample(swarm.cfg.vram.gpu)
    return {"budget_mib": None if plan.budget_bytes is None else plan.budget_bytes / MIB,
            "planned_vram_mib": plan.gpu_bytes / MIB, "planned_host_mib": plan.cpu_bytes / MIB,
            "vram_used_before_mib": before.vram_used_mib if before else None,
            "vram_used_loaded_mib": after.vram_used_mib if after else None,
            "vram_load_delta_mib": after.vram_used_mib - before.vram_used_mib if before and after else None,
            "vram_free_loaded_mib": after.vram_total_mib - after.vram_used_mib if after else None,
            "agents": swarm.supervisor.measured_memory()}


def to_rows(samples: list[Sample], cfg: SwarmConfig, bc: BenchConfig, run_id: str, extra: dict) -> list[ResultRow]:
    facts = _agent_facts(cfg)
    device = device_label()
    versions = versions_json({"bench": json.dumps({"transport": bc.transport, "concurrency": bc.concurrency,
                                                   "rate": bc.rate, "profile": bc.profile, **extra},
                                                  sort_keys=True)})
    rows = []
    for s in samples:
        f = facts.get(s.agent, {"model_file": "", "model_sha": "", "quant": ""})
        prompt = json.dumps(s.item.messages)
        rows.append(ResultRow(
            run_id=run_id, agent=s.agent or "(none)", model_file=f["model_file"], model_sha=f["model_sha"],
            quant=f["quant"], task=f"serving-{bc.profile}", dataset=bc.profile, split="bench", item_id=s.item.id,
            output=s.text if s.ok else f"[error] {s.error}", extracted=s.extracted, gold=s.item.gold,
            correct=s.ok and s.correct, source="bench", backend="llama-server",
            subject=s.item.kind, prompt_hash=prompt_hash(prompt), prompt=prompt, prompt_tokens=s.prompt_tokens,
            completion_tokens=s.completion_tokens, latency_ms=s.latency_ms, seed=bc.seed, route=s.route_source,
            device=device,
            versions=versions,
        ))
    return rows


class BenchSession:
    """One loaded swarm for several bench runs (and a local NATS server when ``nats`` is ``local`` on the bus): the
    load is paid once and memory is measured once, right after it. Use as a context manager; :meth:`run` per load.

    SIGTERM, like Ctrl-C, stops the workers while the session is open (on the main thread)."""

    def __init__(self, cfg: SwarmConfig, log: Callable[[str], None] = print, transport: str = "bus",
                 nats: str = "local"):
        self.cfg = copy.deepcopy(cfg)
        self.cfg.monitor.enabled = False  # each run's EnergyMeter covers it
        self.log, self.transport, self.nats = log, transport, nats
        self.swarm = None
        self.nats_srv = None
        self.memory: dict = {}
        self._old_sig = None

    def __enter__(self) -> BenchSession:
        from serving.natsd import LocalNats
        from serving.swarm import Swarm
        from serving.workers import port_free

        if not port_free(self.cfg.gateway.host, self.cfg.gateway.port):
            from quantswarm.engine.server import free_port

            self.cfg.gateway.port = free_port()
        if threading.current_thread() is threading.main_thread():
            self._old_sig = signal.signal(signal.SIGTERM, _sigterm)
        try:
            self.swarm = Swarm(self.cfg, log=self.log)
            self.swarm.make_plan()
            before = sample(self.cfg.vram.gpu)
            self.swarm.start()
            self.memory = loaded_memory(self.swarm, before)
            if self.transport == "bus" and self.nats == "local":
                self.nats_srv = LocalNats()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.swarm is not None:
            self.swarm.close()
        if self.nats_srv is not None:
            self.nats_srv.close()
        if self._old_sig is not None:
            signal.signal(signal.SIGTERM, self._old_sig)
            self._old_sig = None

    def gpus(self) -> list[int]:
        """The GPUs the plan uses (CUDA indices, first = ``vram.gpu`` when used), else ``[vram.gpu]``: each run
        meters every one of them."""
        used = sorted({d for a in self.swarm.plan.agents.values() for d in a.devices}) or [self.cfg.vram.gpu]
        return sorted(used, key=lambda g: g != self.cfg.vram.gpu)  # stable: vram.gpu first, the rest in order

    def run(self, bc: BenchConfig, label: str = "swarm", items: list[WorkItem] | None = None) -> dict:
        """One load of ``bc`` (its workload, or ``items``) on the loaded swarm; writes rows + summary JSON and
        returns the summary (:func:`summarize` plus the run's settings and the session's memory)."""
        from tqdm import tqdm

        from serving.gateway import GatewayServer

        if bc.transport != self.transport:
            raise ConfigError(f"this session serves over {self.transport}, the run asks for {bc.transport}")
        cfg, swarm = self.cfg, self.swarm
        run_id = new_run_id(f"bench-{label}")
        items = items if items is not None else workload(cfg, bc, self.log)
        bar = tqdm(total=len(items), desc=f"bench {label}", unit="req", leave=False)
        gpus = self.gpus()
        meters = {g: EnergyMeter(g) for g in gpus}
        meter = meters[gpus[0]]
        with contextlib.ExitStack() as stack:
            for m in meters.values():
                stack.enter_context(m)
            t0 = time.perf_counter()
            if bc.transport == "http":
                with GatewayServer(swarm) as gw:
                    samples = asyncio.run(run_http(gw.url, items, bc, lambda _s: bar.update(1),
                                                   cfg.gateway.api_key, list(cfg.agents)))
                dead = 0
            else:
                url = self.nats_srv.url if self.nats_srv is not None else self.nats
                samples, dead = asyncio.run(run_bus(swarm, url, items, bc, run_id, lambda _s: bar.update(1)))
            wall = time.perf_counter() - t0
        bar.close()
        summary = summarize(samples, wall, meter, cfg)
        missed = {k: v for k, v in summary["route_sources"].items() if k in ("default", "router-error",
                                                                               "router-unknown")}
        if missed and cfg.router.program:  # said here and in each row's `route`, never silently
            note = (f"note: {label}: {sum(missed.values())} of {summary['ok']} model=auto requests did not get the "
                    f"router's decision and went to {cfg.default_agent()!r} ({missed})")
            print(note, file=sys.stderr)
            self.log(note)
        if len(meters) > 1:
            summary.update(energy_over_gpus(meters, summary["completion_tokens"]))
        summary.update({"run_id": run_id, "label": label, "transport": bc.transport, "profile": bc.profile,
                        "concurrency": bc.concurrency, "rate": bc.rate, "max_tokens": bc.max_tokens,
                        "dead_lettered": dead, "device": device_label(), "spec": cfg.path,
                        "closed_loop": bc.closed_loop, "model": bc.model, "memory": self.memory,
                        "agents": {n: {"n_ctx": a.n_ctx, "parallel": a.parallel,
                                       "n_gpu_layers": swarm.plan.agents[n].n_gpu_layers}
                                   for n, a in cfg.agents.items()}})
        written = ResultsTable(bc.results).append(to_rows(samples, cfg, bc, run_id, {"label": label}))
        out = Path(bc.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"serving-{run_id}.json"
        path.write_text(json.dumps(summary, indent=2, default=str))
        summary["summary_file"] = str(path)
        self.log(f"{written} rows -> {bc.results} (run {run_id}); summary -> {path}")
        return summary


def bench_once(cfg: SwarmConfig, bc: BenchConfig, log: Callable[[str], None] = print, label: str = "swarm") -> dict:
    """Start the swarm, run one workload over HTTP or the bus, write rows + summary; returns the summary."""
    with BenchSession(cfg, log, bc.transport, bc.nats) as session:
        return session.run(bc, label)


def _sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def run_bench(cfg: SwarmConfig, bc: BenchConfig, log: Callable[[str], None] = print) -> dict:
    """The `bench` verb: one run, or the slots x n_ctx sweep, or the execution-mode comparison; prints tables."""
    from quantswarm.text_table import format_table

    if bc.sweep_parallel or bc.sweep_ctx:
        return run_sweep(cfg, bc, log)
    summary = bench_once(cfg, bc, log, label="swarm")
    log(format_table(summary_rows(summary)))
    result = {"swarm": summary}
    if bc.compare_modes:
        from serving.bench_modes import compare_modes

        result.update(compare_modes(cfg, bc, log, swarm_summary=summary))
    return result


def single_agent(cfg: SwarmConfig, name: str, parallel: int | None = None) -> SwarmConfig:
    """A copy of ``cfg`` serving only agent ``name`` (``parallel`` slots if given): no fallback, no router
    program, ``auto`` goes to it."""
    if name not in cfg.agents:
        raise ConfigError(f"agent {name!r} is not in {cfg.path}; use one of: {', '.join(cfg.agents)}")
    single = copy.deepcopy(cfg)
    single.agents = {name: single.agents[name]}
    single.agents[name].parallel = parallel or single.agents[name].parallel
    single.fallback = []
    single.router.default_agent = name
    single.router.agent = None
    single.router.program = None
    return single


def sweep_concurrency(configs: list[SwarmConfig], requested: int) -> int:
    """The one concurrency every sweep point runs at: ``requested``, raised to the largest point's total slots so
    that no point leaves slots idle. Holding it fixed keeps the points comparable."""
    return max([requested, *(c.total_slots() for c in configs)])


def run_sweep(cfg: SwarmConfig, bc: BenchConfig, log: Callable[[str], None] = print) -> dict:
    """Bench every (n_ctx, parallel) pair on all agents at one held concurrency; mark the capacity knee of each
    n_ctx over increasing slots."""
    from quantswarm.text_table import format_table

    pars = sorted(set(bc.sweep_parallel)) or [None]
    ctxs = sorted(set(bc.sweep_ctx)) or [None]
    points = []
    for ctx in ctxs:
        for par in pars:
            c = copy.deepcopy(cfg)
            for a in c.agents.values():
                a.parallel = par or a.parallel
                a.n_ctx = ctx or a.n_ctx
            points.append((par, ctx, c))
    conc = sweep_concurrency([c for _, _, c in points], bc.concurrency)
    log(f"sweep: {len(points)} points, concurrency held at {conc} for every point"
        + (f" (--concurrency {bc.concurrency} raised to the largest point's total slots)"
           if conc != bc.concurrency else ""))
    rows = []
    for par, ctx, c in points:
        s = bench_once(c, BenchConfig(**{**asdict(bc), "concurrency": conc, "sweep_parallel": [],
                                        "sweep_ctx": []}), log, label=f"p{par or 'spec'}-c{ctx or 'spec'}")
        rows.append({"parallel": par or "spec", "n_ctx": ctx or "spec", "concurrency": conc,
                     "tok/s": s["tok_s"], "req/s": s["req_s"], "p50_ms": s["latency_ms"]["p50"],
                     "p95_ms": s["latency_ms"]["p95"], "errors": s["errors"],
                     "vram_free_MiB": _r(s["memory"]["vram_free_loaded_mib"]) if s["memory"].get(
                         "vram_free_loaded_mib") is not None else "n/a (no GPU)", "run_id": s["run_id"]})
    knees = capacity_knees(rows)
    for i, r in enumerate(rows):
        r["knee"] = "<-" if i in knees.values() else ""
    log(format_table(rows))
    for line in describe_knees(rows, knees):
        log(line)
    out_dir = Path(bc.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"serving-sweep-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(rows, indent=2, default=str))
    log(f"sweep -> {out}")
    return {"sweep": rows, "knees": {str(k): v for k, v in knees.items()}, "concurrency": conc, "file": str(out)}


def capacity_knees(rows: list[dict], gain: float = 0.10) -> dict:
    """Per n_ctx, the index (into ``rows``) of the capacity knee: the fewest slots after which one more slot step
    raises throughput by less than ``gain`` (10%). Rows of one n_ctx are compared in increasing ``parallel`` only,
    never across n_ctx values. An n_ctx whose throughput still grows at its last point, or that has a single slot
    count, gets None (no knee within the sweep)."""
    groups: dict = defaultdict(list)
    for i, r in enumerate(rows):
        if isinstance(r["parallel"], int):
            groups[r["n_ctx"]].append(i)
    knees: dict = {}
    for ctx, idx in groups.items():
        idx = sorted(idx, key=lambda i: rows[i]["parallel"])
        knees[ctx] = None
        for a, b in zip(idx, idx[1:], strict=False):
            before, after = rows[a]["tok/s"] or 0.0, rows[b]["tok/s"] or 0.0
            if before > 0 and (after - before) / before < gain:
                knees[ctx] = a
                break
    return knees


def describe_knees(rows: list[dict], knees: dict) -> list[str]:
    """One line per n_ctx saying where its knee is, or that the sweep did not reach one."""
    lines = []
    for ctx, i in knees.items():
        if i is not None:
            lines.append(f"n_ctx {ctx}: knee at {rows[i]['parallel']} slots per agent "
                         f"({rows[i]['tok/s']} tok/s; more slots add < 10%)")
            continue
        slots = sorted(r["parallel"] for r in rows if r["n_ctx"] == ctx and isinstance(r["parallel"], int))
        lines.append(f"n_ctx {ctx}: no knee within {slots[-1]} slots" + (" (tok/s still rising)" if len(slots) > 1
                     else " (sweep --sweep-parallel over 2+ values to find one)"))
    if not knees:
        lines.append("no knee: the sweep has no --sweep-parallel values, so slots were not varied")
    return lines

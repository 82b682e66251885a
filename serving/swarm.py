"""A running swarm: workers + router + fallback + metrics, shared by the HTTP gateway and the bus.

``Swarm.complete`` is the one request path: pick the agent (named, or routed for ``auto``), call its
worker, check the answer with the validation hook and on failure re-send to the next agent of the
fallback chain; a worker that dies mid-request is failed over the same way (and restarted by the
supervisor). Every hop is recorded in the outcome and in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx

from quantswarm.errors import EngineError, QuantswarmError
from serving.metrics import Metrics
from serving.monitor import Monitor
from serving.planner import VramPlan, plan_vram, preflight, resolve_budget_mib
from serving.quants import prepare_models
from serving.routing import RouteInfo, SwarmRouter
from serving.schemas import ChatRequest
from serving.swarm_config import SwarmConfig
from serving.validation import check_answer
from serving.workers import Supervisor


class WorkerDown(QuantswarmError):
    """A worker could not take or finish a request (crashed, restarting or refused)."""


class BadRequest(QuantswarmError):
    """The request itself is wrong (unknown model, too long for the context): the client must fix it."""


@dataclass
class ChatOutcome:
    """The answer to one request and how it was reached."""

    agent: str
    text: str
    response: dict
    route: RouteInfo
    fallbacks: list[dict] = field(default_factory=list)  # answers that failed validation: agent, reason
    failovers: list[dict] = field(default_factory=list)  # workers that failed mid-request: agent, reason
    valid: bool = True
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def extension(self) -> dict:
        """The ``quantswarm`` block added to OpenAI responses."""
        return {"agent": self.agent, "route": {"source": self.route.source, "agent": self.route.agent,
                                               "latency_ms": round(self.route.latency_ms, 3),
                                               "rationale": self.route.rationale},
                "fallbacks": self.fallbacks, "failovers": self.failovers, "valid": self.valid}


class Swarm:
    """Plans, loads and serves a swarm spec; ``start()`` blocks until every agent is loaded."""

    def __init__(self, cfg: SwarmConfig, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.log = log
        self.metrics = Metrics()
        self.plan: VramPlan | None = None
        self.supervisor: Supervisor | None = None
        self.router: SwarmRouter | None = None
        self.monitor: Monitor | None = None
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = {}
        self.started_at = 0.0

    # --- lifecycle -------------------------------------------------------------------------
    def make_plan(self) -> VramPlan:
        prepare_models(self.cfg, self.log)
        self.plan = plan_vram(self.cfg, resolve_budget_mib(self.cfg))
        return self.plan

    def start(self) -> Swarm:
        plan = self.plan or self.make_plan()
        for note in preflight(plan, self.cfg.vram.gpu):
            self.log(f"preflight: {note}")
        if self.cfg.monitor.enabled:
            self.monitor = Monitor(self.cfg.monitor.csv, self.cfg.monitor.interval_s, self.cfg.vram.gpu,
                                   self.cfg.monitor.temp_alert_c, log=self.log)
            self.monitor.start()
        self.log(f"loading {len(plan.order)} agents: {', '.join(plan.order)}")
        self.supervisor = Supervisor(self.cfg, plan, self.log)
        try:
            self.supervisor.start()
            ra = self.cfg.router_agent()
            api_base = f"{self.supervisor.workers[ra].url}/v1" if ra else None
            self.router = SwarmRouter(self.cfg, api_base=api_base)
        except BaseException:
            self.close()
            raise
        self.log(f"auto routing: {self.router.mode}")
        self.started_at = time.time()
        return self

    def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.close()
        if self.monitor is not None:
            self.monitor.stop()
        self._clients.clear()

    def __enter__(self) -> Swarm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- helpers ---------------------------------------------------------------------------
    def _client(self) -> httpx.AsyncClient:
        """One async client per event loop (the gateway's and the bus's loops differ)."""
        loop = asyncio.get_running_loop()
        held = self._clients.get(id(loop))
        if held is None or held[0] is not loop:
            held = (loop, httpx.AsyncClient(timeout=self.cfg.gateway.request_timeout_s,
                                            limits=httpx.Limits(max_connections=4 * self.cfg.total_slots() + 8)))
            self._clients[id(loop)] = held
        return held[1]

    async def route(self, req: ChatRequest) -> RouteInfo:
        if req.model != "auto":
            if req.model not in self.cfg.agents:
                raise BadRequest(f"model {req.model!r} is not an agent of this swarm; "
                                 f"use one of: auto, {', '.join(self.cfg.agents)}")
            return RouteInfo(req.model, "named")
        info = await asyncio.to_thread(self.router.route, req.user_text())
        self.metrics.observe("quantswarm_route_latency_ms", info.latency_ms)
        return info

    def _next_agent(self, current: str, tried: list[str]) -> str | None:
        """The next agent of the fallback chain after ``current`` not yet tried (up ones first)."""
        chain = self.cfg.fallback
        rest = chain[chain.index(current) + 1:] if current in chain else list(chain)
        options = [a for a in rest if a not in tried]
        up = [a for a in options if self.supervisor.workers[a].up]
        return (up or options or [None])[0]

    async def _call(self, agent: str, body: dict) -> dict:
        w = self.supervisor.workers[agent]
        if not w.up:
            raise WorkerDown(f"{agent} is {w.state}")
        try:
            r = await self._client().post(f"{w.url}/v1/chat/completions", json=body)
        except httpx.TransportError as exc:
            self.supervisor.mark_down(agent, f"request failed: {type(exc).__name__}")
            raise WorkerDown(f"{agent}: {type(exc).__name__}: {exc}") from None
        if r.status_code == 400:
            raise BadRequest(f"{agent} refused the request: {r.text[:300]}")
        if r.status_code != 200:
            raise WorkerDown(f"{agent} answered {r.status_code}: {r.text[:200]}")
        try:
            return r.json()
        except ValueError:
            raise WorkerDown(f"{agent} sent a body that is not JSON") from None

    async def _failover_target(self, agent: str, tried: list[str]) -> str | None:
        nxt = self._next_agent(agent, tried)
        if nxt is not None:
            return nxt
        # nowhere else to go: wait for this worker's restart
        ok = await asyncio.to_thread(self.supervisor.wait_up, agent, self.cfg.workers.startup_timeout_s)
        return agent if ok else None

    # --- the request path ------------------------------------------------------------------
    async def complete(self, req: ChatRequest) -> ChatOutcome:
        """Answer a non-streaming request (route, call, validate, fall back / fail over)."""
        t0 = time.perf_counter()
        route = await self.route(req)
        body = req.upstream_body()
        agent: str | None = route.agent
        tried: list[str] = []
        fallbacks: list[dict] = []
        failovers: list[dict] = []
        last: tuple[str, dict, str] | None = None
        valid = False
        for _ in range(2 * len(self.cfg.agents) + 2):
            if agent is None:
                break
            tried.append(agent)
            try:
                out = await self._call(agent, body)
            except WorkerDown as exc:
                failovers.append({"agent": agent, "reason": str(exc)[:200]})
                self.metrics.inc("quantswarm_failovers_total", agent=agent)
                agent = await self._failover_target(agent, tried)
                continue
            msg = (out.get("choices") or [{}])[0].get("message") or {}
            text = msg.get("content") or ""
            last = (agent, out, text)
            reason = (check_answer(text, role=self.cfg.agents[agent].role, wants_json=req.wants_json)
                      if self.cfg.gateway.validate_answers else None)
            if reason is None:
                valid = True
                break
            fallbacks.append({"agent": agent, "reason": reason})
            self.metrics.inc("quantswarm_fallbacks_total", agent=agent, reason=reason.split(" (")[0])
            agent = self._next_agent(agent, tried)
        latency = (time.perf_counter() - t0) * 1000
        if last is None:
            self.metrics.inc("quantswarm_requests_total", agent=route.agent, source=route.source, outcome="error")
            raise EngineError(f"no agent could answer (tried {', '.join(tried)}): "
                              f"{failovers[-1]['reason'] if failovers else 'no agent up'}")
        agent, out, text = last
        usage = out.get("usage") or {}
        outcome = ChatOutcome(agent=agent, text=text, response=out, route=route, fallbacks=fallbacks,
                              failovers=failovers, valid=valid, latency_ms=latency,
                              prompt_tokens=int(usage.get("prompt_tokens", 0)),
                              completion_tokens=int(usage.get("completion_tokens", 0)))
        self._record(outcome)
        return outcome

    def _record(self, o: ChatOutcome) -> None:
        m = self.metrics
        m.inc("quantswarm_requests_total", agent=o.agent, source=o.route.source, outcome="ok" if o.valid else "invalid")
        m.inc("quantswarm_prompt_tokens_total", o.prompt_tokens, agent=o.agent)
        m.inc("quantswarm_completion_tokens_total", o.completion_tokens, agent=o.agent)
        m.observe("quantswarm_request_latency_ms", o.latency_ms, agent=o.agent)

    async def stream(self, req: ChatRequest) -> tuple[RouteInfo, str, AsyncIterator[bytes]]:
        """Open a streaming answer (fails over before the first byte); returns route, agent and SSE chunks.

        Streamed answers are not validated (they are already on their way); use non-streaming for fallback.
        """
        t0 = time.perf_counter()
        route = await self.route(req)
        body = req.upstream_body(stream=True)
        agent: str | None = route.agent
        tried: list[str] = []
        client = self._client()
        for _ in range(2 * len(self.cfg.agents) + 2):
            if agent is None:
                break
            tried.append(agent)
            w = self.supervisor.workers[agent]
            try:
                if not w.up:
                    raise WorkerDown(f"{agent} is {w.state}")
                resp = await client.send(client.build_request("POST", f"{w.url}/v1/chat/completions", json=body),
                                         stream=True)
                if resp.status_code == 400:
                    text = (await resp.aread()).decode(errors="replace")
                    await resp.aclose()
                    raise BadRequest(f"{agent} refused the request: {text[:300]}")
                if resp.status_code != 200:
                    await resp.aclose()
                    raise WorkerDown(f"{agent} answered {resp.status_code}")
            except (httpx.TransportError, WorkerDown) as exc:
                if isinstance(exc, httpx.TransportError):
                    self.supervisor.mark_down(agent, f"request failed: {type(exc).__name__}")
                self.metrics.inc("quantswarm_failovers_total", agent=agent)
                agent = await self._failover_target(agent, tried)
                continue
            return route, agent, self._relay(resp, agent, route, t0)
        raise EngineError(f"no agent could answer (tried {', '.join(tried)})")

    async def _relay(self, resp: httpx.Response, agent: str, route: RouteInfo, t0: float) -> AsyncIterator[bytes]:
        usage: dict = {}
        try:
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data != "[DONE]":
                    try:
                        chunk = json.loads(data)
                        chunk["model"] = agent
                        usage = chunk.get("usage") or usage
                        data = json.dumps(chunk)
                    except ValueError:
                        pass
                yield f"data: {data}\n\n".encode()
        finally:
            await resp.aclose()
            o = ChatOutcome(agent=agent, text="", response={}, route=route,
                            latency_ms=(time.perf_counter() - t0) * 1000,
                            prompt_tokens=int(usage.get("prompt_tokens", 0)),
                            completion_tokens=int(usage.get("completion_tokens", 0)))
            self._record(o)

    # --- reports ---------------------------------------------------------------------------
    def health(self) -> dict:
        st = self.supervisor.status() if self.supervisor else {}
        ok = bool(st) and all(s["state"] == "up" for s in st.values())
        return {"status": "ok" if ok else "degraded", "agents": st,
                "routing": self.router.mode if self.router else "not started"}

    def metrics_text(self) -> str:
        gauges = []
        if self.supervisor:
            for n, w in self.supervisor.workers.items():
                gauges.append(("quantswarm_worker_up", {"agent": n}, 1.0 if w.up else 0.0, "1 when the worker serves"))
                gauges.append(("quantswarm_worker_restarts", {"agent": n}, float(w.restarts), "worker restarts"))
                gauges.append(("quantswarm_worker_gpu_layers", {"agent": n}, float(w.n_gpu_layers),
                               "GPU layers the worker runs with"))
        if self.monitor and self.monitor.last is not None:
            s = self.monitor.last
            for name, v, h in (("quantswarm_gpu_power_watts", s.power_w, "GPU power draw"),
                               ("quantswarm_gpu_temperature_celsius", s.temp_c, "GPU temperature"),
                               ("quantswarm_gpu_vram_used_mib", s.vram_used_mib, "VRAM in use"),
                               ("quantswarm_gpu_sm_util_percent", s.sm_util, "SM utilisation")):
                gauges.append((name, {"gpu": str(s.gpu)}, float(v), h))
        return self.metrics.render(gauges)

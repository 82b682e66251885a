"""The swarm as a LangGraph supervisor: route, answer, validate, climb the fallback chain.

:func:`build_graph` turns a swarm spec into a compiled LangGraph ``StateGraph``:

- ``route``: the spec's router (the compiled DSPy program run on the router agent, its TF-IDF
  baseline, or ``router.default_agent``) picks an agent for the last user message; a request
  naming an agent (``model``) skips it;
- one node per agent (``agent/<name>``), reached by a conditional edge from ``route``, sends the
  chat request to that agent's OpenAI-compatible llama-server endpoint;
- ``validate`` checks the answer with the gateway's hook (empty, malformed JSON when JSON was asked,
  Python that does not compile for a ``coder``); a conditional edge ends the run on a valid answer,
  else goes to the next untried agent of the spec's ``fallback`` chain, and ends when none is left.

The graph talks to running workers: those of ``quantswarm serve SPEC`` (the spec's ports, the
default) or of a :class:`~serving.swarm.Swarm` started in-process (:func:`graph_for_swarm`)::

    graph = build_graph(load_swarm("swarm.yaml"))
    out = graph.invoke({"request": {"messages": [{"role": "user", "content": "What is 17 * 23?"}]}})
    out["agent"], out["answer"], out["hops"]
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import httpx

from quantswarm.errors import ConfigError, EngineError
from serving.routing import SwarmRouter
from serving.schemas import ChatRequest
from serving.swarm_config import SwarmConfig, load_swarm
from serving.validation import check_answer

Validator = Callable[[str, str, bool], "str | None"]  # (text, role, wants_json) -> reason, or None when valid


class GraphState(TypedDict, total=False):
    """What flows through the graph. Input: ``request`` (an OpenAI chat body; ``model`` "auto" or an agent).

    Output: ``agent`` (who gave ``answer``), ``valid``, ``route`` (agent, source, latency_ms), ``hops``
    (one record per agent tried: agent, valid, reason, latency_ms, completion_tokens) and ``tried``.
    """

    request: dict
    route: dict
    agent: str
    answer: str
    valid: bool
    reason: str
    next_agent: str
    last_call: dict
    tried: Annotated[list[str], operator.add]
    hops: Annotated[list[dict], operator.add]


def node_name(agent: str) -> str:
    """The graph node of an agent."""
    return f"agent/{agent}"


def default_endpoints(cfg: SwarmConfig) -> dict[str, str]:
    """Each agent's llama-server base URL as ``quantswarm serve`` starts it (workers.host + the agent's port)."""
    return {name: f"http://{cfg.workers.host}:{a.port}" for name, a in cfg.agents.items()}


def next_in_chain(chain: list[str], current: str, tried: list[str]) -> str | None:
    """The first agent after ``current`` in the fallback chain not yet tried (from the start if it is off-chain)."""
    rest = chain[chain.index(current) + 1:] if current in chain else list(chain)
    return next((a for a in rest if a not in tried), None)


def _validate_default(text: str, role: str, wants_json: bool) -> str | None:
    return check_answer(text, role=role, wants_json=wants_json)


def build_graph(spec: SwarmConfig | str | Path, *, endpoints: dict[str, str] | None = None,
                router: SwarmRouter | None = None, validate: Validator | None = None,
                timeout_s: float | None = None):
    """A compiled LangGraph supervisor over the swarm ``spec`` (a SwarmConfig or a spec YAML path).

    ``endpoints`` maps agent -> base URL (default: the spec's worker ports); ``router`` is a started
    :class:`SwarmRouter` (default: one built from the spec, its program run on the router agent's endpoint);
    ``validate`` replaces the answer check. Invoke with ``{"request": {...OpenAI chat body...}}``.
    """
    from langgraph.graph import END, START, StateGraph

    cfg = spec if isinstance(spec, SwarmConfig) else load_swarm(spec)
    urls = {**default_endpoints(cfg), **(endpoints or {})}
    unknown = sorted(set(urls) - set(cfg.agents))
    if unknown:
        raise ConfigError(f"endpoints: {unknown} are not agents of the spec; agents: {', '.join(cfg.agents)}")
    bad = [a for a in cfg.agents if ":" in a or "|" in a]
    if bad:
        raise ConfigError(f"agents: {bad}: LangGraph node names cannot hold ':' or '|'; rename the agents")
    if router is None:
        ra = cfg.router_agent()
        router = SwarmRouter(cfg, api_base=f"{urls[ra]}/v1" if ra else None)
    check = validate or _validate_default
    client = httpx.Client(timeout=timeout_s or cfg.gateway.request_timeout_s)

    def route(state: GraphState) -> dict:
        req = ChatRequest.model_validate(state["request"])
        if req.model != "auto":
            if req.model not in cfg.agents:
                raise ConfigError(f"model {req.model!r} is not an agent of this swarm; "
                                  f"use one of: auto, {', '.join(cfg.agents)}")
            info = {"agent": req.model, "source": "named", "latency_ms": 0.0}
        else:
            r = router.route(req.user_text())
            info = {"agent": r.agent, "source": r.source, "latency_ms": round(r.latency_ms, 3)}
        return {"route": info, "next_agent": info["agent"]}

    def make_agent_node(name: str) -> Callable[[GraphState], dict]:
        def call(state: GraphState) -> dict:
            req = ChatRequest.model_validate(state["request"])
            t0 = time.perf_counter()
            try:
                r = client.post(f"{urls[name]}/v1/chat/completions", json=req.upstream_body())
                r.raise_for_status()
                out = r.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise EngineError(f"agent {name} at {urls[name]} failed: {type(exc).__name__}: {exc}") from None
            text = ((out.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
            hop = {"agent": name, "latency_ms": round((time.perf_counter() - t0) * 1000, 1),
                   "completion_tokens": int((out.get("usage") or {}).get("completion_tokens", 0))}
            return {"agent": name, "answer": text, "tried": [name], "last_call": hop}

        return call

    def judge(state: GraphState) -> dict:
        req = ChatRequest.model_validate(state["request"])
        agent = state["agent"]
        reason = check(state.get("answer", ""), cfg.agents[agent].role, req.wants_json) if cfg.gateway.validate \
            else None
        nxt = None if reason is None else next_in_chain(cfg.fallback, agent, state["tried"])
        hop = {**state["last_call"], "valid": reason is None, "reason": reason or ""}
        return {"valid": reason is None, "reason": reason or "", "next_agent": nxt or "", "hops": [hop]}

    def to_agent(state: GraphState) -> str:
        return node_name(state["next_agent"])

    def after_validate(state: GraphState) -> str:
        return node_name(state["next_agent"]) if state.get("next_agent") else END

    g = StateGraph(GraphState)
    g.add_node("route", route)
    g.add_node("validate", judge)
    agent_nodes = [node_name(a) for a in cfg.agents]
    for a in cfg.agents:
        g.add_node(node_name(a), make_agent_node(a))
        g.add_edge(node_name(a), "validate")
    g.add_edge(START, "route")
    g.add_conditional_edges("route", to_agent, agent_nodes)
    g.add_conditional_edges("validate", after_validate, [*agent_nodes, END])
    return g.compile()


def graph_for_swarm(swarm: Any, validate: Validator | None = None):
    """The graph over a started :class:`~serving.swarm.Swarm` (its workers' URLs and its router)."""
    if swarm.supervisor is None or swarm.router is None:
        raise EngineError("start the swarm first (Swarm.start())")
    urls = {n: w.url for n, w in swarm.supervisor.workers.items()}
    return build_graph(swarm.cfg, endpoints=urls, router=swarm.router, validate=validate)

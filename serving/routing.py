"""How ``model="auto"`` picks an agent: the compiled router program, or the spec's documented default.

With ``router.program`` set, :func:`router.load_router` loads the compiled program and runs it on the
already-loaded router agent (``api_base`` = that worker's ``/v1``); with ``router.kind: tfidf`` the
router package's LM-free TF-IDF baseline (``tfidf.json`` in that directory) decides instead.
Without a program, every request goes to :meth:`SwarmConfig.default_agent` (``router.default_agent``,
else ``fallback[0]``, else the first agent) and the decision says ``source="default"``. A router
answer naming no agent of this swarm, or a router error, also goes to the default, and says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from quantswarm.errors import ConfigError
from serving.swarm_config import SwarmConfig


@dataclass
class RouteInfo:
    """Where a request went and why: source is named | router | default | router-error."""

    agent: str
    source: str
    latency_ms: float = 0.0
    rationale: str = ""


class SwarmRouter:
    """Routes ``auto`` requests; ``api_base`` is the router agent's OpenAI base URL (``.../v1``)."""

    def __init__(self, cfg: SwarmConfig, api_base: str | None = None):
        self.cfg = cfg
        self.default = cfg.default_agent()
        self.program = None
        if cfg.router.program:
            try:
                import router
            except ImportError as exc:
                raise ConfigError(f"router.program: the router package is unavailable ({exc}); "
                                  "remove router.program to route to router.default_agent") from None
            prog = Path(cfg.router.program)
            if cfg.router.kind == "tfidf":
                self.program = router.TfidfRouter.load(prog if prog.is_file() else prog / router.TFIDF_FILE)
            else:
                self.program = router.load_router(prog, api_base=api_base)

    @property
    def mode(self) -> str:
        if self.program is None:
            return f"default agent {self.default!r}"
        return f"{self.cfg.router.kind} router {self.cfg.router.program}"

    def route(self, text: str) -> RouteInfo:
        """Pick an agent for ``text`` (blocking: the compiled router calls the router agent)."""
        if self.program is None:
            return RouteInfo(self.default, "default", 0.0, "no compiled router program in the spec")
        t0 = time.perf_counter()
        try:
            d = self.program.route(text)
        except Exception as exc:  # a router failure must not lose the request
            return RouteInfo(self.default, "router-error", (time.perf_counter() - t0) * 1000,
                             f"{type(exc).__name__}: {exc}"[:200])
        agent = getattr(d, "agent", "")
        latency = float(getattr(d, "latency_ms", (time.perf_counter() - t0) * 1000))
        if agent not in self.cfg.agents:
            return RouteInfo(self.default, "router-unknown", latency, f"router chose {agent!r}, not an agent")
        return RouteInfo(agent, "router", latency, str(getattr(d, "rationale", "") or "")[:300])

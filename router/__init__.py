"""Router: send each task to the cheapest agent that will get it right (issue 4).

Import-light: DSPy and sklearn load only when a router is loaded. Serving uses
``load_router(program_dir, api_base=...) -> Router`` with ``Router.route(text) -> RouteDecision``, and can fall
back to ``TfidfRouter.load(program_dir / "tfidf.json")`` without any LM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.baselines import TfidfRouter
    from router.program import RouteDecision, Router, load_router
    from router.router_config import RouterConfig

__all__ = ["RouteDecision", "Router", "RouterConfig", "TfidfRouter", "load_router", "TFIDF_FILE"]

TFIDF_FILE = "tfidf.json"

_LAZY = {"RouteDecision": "router.program", "Router": "router.program", "load_router": "router.program",
         "TfidfRouter": "router.baselines", "RouterConfig": "router.router_config"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'router' has no attribute {name!r}")

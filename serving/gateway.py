"""The OpenAI-compatible gateway: ``/v1/chat/completions`` (streaming or not), ``/v1/models``, ``/health``,
``/metrics`` (Prometheus text). ``model="auto"`` is routed; a named agent goes straight there.

Binds 127.0.0.1 by default; with ``gateway.api_key`` every route but ``/health`` needs
``Authorization: Bearer KEY``. Responses carry a ``quantswarm`` block (agent, route, fallbacks).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from quantswarm.errors import EngineError
from serving.schemas import ChatRequest, RequestError
from serving.swarm import BadRequest, Swarm


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> JSONResponse:
    """An OpenAI-shaped error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}},
                        status_code=status)


async def openai_chunks(events: AsyncIterator[bytes], include_usage: bool) -> AsyncIterator[bytes]:
    """Shape an agent's SSE chunks as OpenAI streams them for this client.

    The agent is always asked for usage (the gateway's metrics need it). A client that asked for it
    (``stream_options.include_usage``) gets ``"usage": null`` on every chunk and a last chunk with empty
    ``choices`` and the usage; any other client gets neither the usage chunk nor a ``usage`` key.
    """
    async for event in events:
        text = event.decode()
        data = text[5:].strip() if text.startswith("data:") else ""
        if not data or data == "[DONE]":
            yield event
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            yield event
            continue
        if include_usage:
            chunk.setdefault("usage", None)
        elif not chunk.get("choices"):
            continue
        else:
            chunk.pop("usage", None)
        yield f"data: {json.dumps(chunk)}\n\n".encode()


def build_app(swarm: Swarm) -> FastAPI:
    """The FastAPI app over a started :class:`Swarm`."""
    app = FastAPI(title="quantswarm gateway", docs_url=None, redoc_url=None, openapi_url=None)
    key = swarm.cfg.gateway.api_key

    @app.middleware("http")
    async def auth(request: Request, call_next):
        if key and request.url.path != "/health":
            got = request.headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {key}".encode()):
                return _error(401, "missing or wrong API key (Authorization: Bearer KEY)", "authentication_error")
        return await call_next(request)

    @app.get("/health")
    async def health():
        h = swarm.health()
        return JSONResponse(h, status_code=200 if h["status"] == "ok" else 503)

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(swarm.metrics_text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        created = int(swarm.started_at)
        data = [{"id": "auto", "object": "model", "created": created, "owned_by": "quantswarm",
                 "description": f"routed: {swarm.router.mode if swarm.router else 'n/a'}"}]
        for name, a in swarm.cfg.agents.items():
            w = swarm.supervisor.workers[name]
            data.append({"id": name, "object": "model", "created": created, "owned_by": "quantswarm",
                         "role": a.role, "file": a.model.rsplit("/", 1)[-1], "state": w.state,
                         "n_ctx": a.n_ctx, "parallel": a.parallel, "n_gpu_layers": w.n_gpu_layers})
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        try:
            req = ChatRequest.from_openai(body)
        except RequestError as exc:
            return _error(400, str(exc), param=exc.param)
        try:
            if req.stream:
                route, agent, chunks = await swarm.stream(req)
                headers = {"x-quantswarm-agent": agent, "x-quantswarm-route": route.source}
                return StreamingResponse(openai_chunks(chunks, req.wants_usage), media_type="text/event-stream",
                                         headers=headers)
            out = await swarm.complete(req)
        except BadRequest as exc:
            return _error(404 if "not an agent" in str(exc) else 400, str(exc))
        except EngineError as exc:
            return _error(503, str(exc), "server_error")
        resp = dict(out.response)
        resp["model"] = out.agent
        resp["quantswarm"] = out.extension()
        headers = {"x-quantswarm-agent": out.agent, "x-quantswarm-route": out.route.source,
                   "x-quantswarm-fallbacks": str(len(out.fallbacks))}
        return JSONResponse(resp, headers=headers)

    return app


class GatewayServer:
    """Runs the gateway with uvicorn on a background thread (for tests and the bench)."""

    def __init__(self, swarm: Swarm, host: str | None = None, port: int | None = None):
        self.host = host or swarm.cfg.gateway.host
        self.port = port if port is not None else swarm.cfg.gateway.port
        config = uvicorn.Config(build_app(swarm), host=self.host, port=self.port, log_level="warning",
                                access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="quantswarm-gateway", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise EngineError(f"gateway could not bind {self.host}:{self.port} (in use?); change gateway.port")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


async def serve_forever(swarm: Swarm, host: str, port: int, bus_task: asyncio.Task | None = None) -> None:
    """Run the gateway in this event loop until Ctrl-C / SIGTERM (uvicorn handles the signals).

    If the bus consumer stops with an error the gateway stops too and the error is raised (no serving on
    without the bus that was asked for).
    """
    config = uvicorn.Config(build_app(swarm), host=host, port=port, log_level="warning", access_log=False,
                            lifespan="off")
    server = uvicorn.Server(config)
    if bus_task is not None:
        bus_task.add_done_callback(lambda t: setattr(server, "should_exit", True))
    try:
        await server.serve()
    finally:
        if bus_task is not None:
            if not bus_task.done():
                bus_task.cancel()
            try:
                await bus_task
            except asyncio.CancelledError:
                pass

"""``quantswarm serve``: plan, load and serve a swarm in the foreground until Ctrl-C.

The gateway and (with ``bus.enabled``) the bus consumer share one event loop; on Ctrl-C or SIGTERM
uvicorn stops, the bus drains, and every llama-server worker is terminated (no orphans).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

from quantswarm.text_table import format_table
from serving.planner import VramPlan
from serving.swarm import Swarm
from serving.swarm_config import SwarmConfig


def describe_plan(cfg: SwarmConfig, plan: VramPlan) -> str:
    """The VRAM plan as a table, with the budget line and each agent's port."""
    rows = plan.rows()
    for r in rows:
        a = cfg.agents[r["agent"]]
        r.update({"role": a.role, "port": a.port, "ctx x slots": f"{a.n_ctx}x{a.parallel}"})
    cols = ["agent", "role", "port", "ctx x slots", "ngl", "gpu", "gpu_weights_MiB", "gpu_kv_MiB", "overhead_MiB",
            "compute_MiB", "gpu_total_MiB", "cpu_MiB"]
    return f"{format_table(rows, cols)}\n{plan.summary()}"


def plan_only(cfg: SwarmConfig, log: Callable[[str], None] = print) -> VramPlan:
    """``serve --dry-run``: make missing quants, plan and print; loads nothing."""
    swarm = Swarm(cfg, log=log)
    plan = swarm.make_plan()
    log(describe_plan(cfg, plan))
    return plan


LOCAL_NATS_URL = "nats://127.0.0.1:4222"  # the spec's default bus.url: serve starts a nats-server there if none runs


def start_bus_server(cfg: SwarmConfig, log: Callable[[str], None] = print):
    """Make sure the bus has a JetStream server before anything loads; returns a LocalNats serve started, or None.

    Nothing listening at the default local URL: start ``nats-server -js`` on 127.0.0.1:4222 with its store in
    ``<run folder>/nats`` (the monitor CSV's folder, ``runs/`` beside the spec by default). Nothing listening at
    any other URL, or a server without JetStream: ConfigError, one line.
    """
    from serving.bus import check_bus, reachable
    from serving.natsd import LocalNats

    url = cfg.bus.url
    started = None
    if url == LOCAL_NATS_URL and not asyncio.run(reachable(url)):
        store = Path(cfg.monitor.csv).parent / "nats"
        started = LocalNats(port=4222, store=store)
        log(f"bus: nothing listened at {url}; started nats-server -js there (store {store})")
    try:
        asyncio.run(check_bus(cfg.bus))
    except BaseException:
        if started is not None:
            started.close()
        raise
    return started


def serve(cfg: SwarmConfig, *, host: str | None = None, port: int | None = None, bus: bool | None = None,
          log: Callable[[str], None] = print) -> None:
    """Run the swarm in the foreground until interrupted; always stops every worker (and a nats-server it started)."""
    swarm = Swarm(cfg, log=log)
    plan = swarm.make_plan()
    log(describe_plan(cfg, plan))
    use_bus = cfg.bus.enabled if bus is None else bus
    nats_server = start_bus_server(cfg, log) if use_bus else None
    # SIGTERM behaves like Ctrl-C (uvicorn re-raises the signal it caught after its own shutdown),
    # so the finally block below always stops the workers
    old = signal.signal(signal.SIGTERM, _sigterm)
    try:
        swarm.start()
        rows = swarm.supervisor.measured_vs_plan()
        log("planner vs measured after load:\n" + format_table(rows))
        host = host or cfg.gateway.host
        port = port or cfg.gateway.port
        log(f"gateway on http://{host}:{port}/v1 (models: auto, {', '.join(cfg.agents)})"
            f"{'; API key required' if cfg.gateway.api_key else ''}. Ctrl-C stops everything.")
        asyncio.run(_run(swarm, host, port, use_bus, log))
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        signal.signal(signal.SIGTERM, old)
        log("stopping workers")
        swarm.close()
        if nats_server is not None:
            nats_server.close()
        if swarm.monitor is not None and swarm.monitor.samples:
            log(f"monitor: {swarm.monitor.samples} samples in {swarm.monitor.csv_path}")


def _sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


async def _run(swarm: Swarm, host: str, port: int, use_bus: bool, log: Callable[[str], None]) -> None:
    from serving.gateway import serve_forever

    bus_task = None
    if use_bus:
        from serving.bus import BusWorker

        bus_task = asyncio.create_task(BusWorker(swarm, log=log).run())
    await serve_forever(swarm, host, port, bus_task)

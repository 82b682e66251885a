"""``quantswarm serve``: plan, load and serve a swarm in the foreground until Ctrl-C.

The gateway and (with ``bus.enabled``) the bus consumer share one event loop; on Ctrl-C or SIGTERM
uvicorn stops, the bus drains, and every llama-server worker is terminated (no orphans).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

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
            "gpu_total_MiB", "cpu_MiB"]
    return f"{format_table(rows, cols)}\n{plan.summary()}"


def plan_only(cfg: SwarmConfig, log: Callable[[str], None] = print) -> VramPlan:
    """``serve --dry-run``: make missing quants, plan and print; loads nothing."""
    swarm = Swarm(cfg, log=log)
    plan = swarm.make_plan()
    log(describe_plan(cfg, plan))
    return plan


def serve(cfg: SwarmConfig, *, host: str | None = None, port: int | None = None, bus: bool | None = None,
          log: Callable[[str], None] = print) -> None:
    """Run the swarm in the foreground until interrupted; always stops every worker."""
    swarm = Swarm(cfg, log=log)
    plan = swarm.make_plan()
    log(describe_plan(cfg, plan))
    # SIGTERM behaves like Ctrl-C (uvicorn re-raises the signal it caught after its own shutdown),
    # so the finally block below always stops the workers
    old = signal.signal(signal.SIGTERM, _sigterm)
    try:
        swarm.start()
        rows = swarm.supervisor.measured_vs_plan()
        log("planner vs measured after load:\n" + format_table(rows))
        host = host or cfg.gateway.host
        port = port or cfg.gateway.port
        use_bus = cfg.bus.enabled if bus is None else bus
        log(f"gateway on http://{host}:{port}/v1 (models: auto, {', '.join(cfg.agents)})"
            f"{'; API key required' if cfg.gateway.api_key else ''}. Ctrl-C stops everything.")
        asyncio.run(_run(swarm, host, port, use_bus, log))
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        signal.signal(signal.SIGTERM, old)
        log("stopping workers")
        swarm.close()
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

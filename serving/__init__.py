"""Serving: a co-resident llama.cpp swarm behind an OpenAI gateway and a NATS JetStream bus.

Modules: ``swarm_config`` (the YAML spec -> SwarmConfig), ``planner`` (VRAM plan, preflight), ``quants``
(make missing quants), ``workers`` (llama-server supervisor: restart, OOM re-plan), ``routing`` (auto ->
agent), ``validation`` (answer checks for fallback), ``swarm`` (the request path), ``gateway`` (FastAPI),
``bus`` (JetStream worker), ``natsd`` (a local nats-server), ``monitor`` (NVML sampler, plots, energy),
``metrics`` (Prometheus metrics), ``bench`` (load bench, sweep, modes), ``serve`` and ``cli`` (the verbs).
"""

from serving.swarm_config import SwarmConfig, load_swarm

__all__ = ["SwarmConfig", "load_swarm"]

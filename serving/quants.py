"""Make an agent's missing GGUF by quantizing another one (``quantize_from`` in the swarm spec)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from quantswarm.errors import ConfigError
from quantswarm.quantize import quantize
from serving.swarm_config import SwarmConfig

__all__ = ["prepare_models", "quantize"]


def prepare_models(cfg: SwarmConfig, log: Callable[[str], None] = print) -> list[str]:
    """Create every agent model that is missing and has ``quantize_from``; returns the names made."""
    made = []
    for name, a in cfg.agents.items():
        if Path(a.model).exists():
            continue
        if a.quantize_from is None:
            raise ConfigError(f"agents.{name}.model: {a.model} does not exist")
        log(f"quantizing {Path(a.quantize_from.source).name} -> {Path(a.model).name} ({a.quantize_from.type})")
        quantize(a.quantize_from.source, a.model, a.quantize_from.type)
        made.append(name)
    return made

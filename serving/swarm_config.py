"""The swarm spec: one YAML file describes a deployment, read into a typed :class:`SwarmConfig`.

The spec is a tree of pydantic models (:mod:`serving.swarm_spec`, re-exported here: extra keys forbidden, a
description on every field; the JSON schema is ``data/swarms/swarm.schema.json``, written by ``quantswarm
serve --schema``). Loading validates the whole file before anything starts (llama-swap style): unknown keys
are errors, every error is one line naming its key path (``agents.coder.n_ctx``), defaults live in code,
and ports are assigned deterministically (workers get ``workers.start_port + i`` in sorted agent-name order).

How paths resolve:
  * ``${VAR}`` and ``${VAR:-default}`` in any string are replaced from the environment; an unset
    variable without a default fails the load, naming the key.
  * ``models_dir`` (default ``$QUANTSWARM_MODELS``, ``$SWARM_MODELS`` or ``~/.cache/quantswarm/models``)
    is taken relative to the spec's directory when relative.
  * An agent's ``model``, ``lora`` and ``quantize_from.source`` are absolute, or relative to ``models_dir``.
  * ``router.program``, ``workers.log_dir`` and ``monitor.csv`` are relative to the spec's directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from quantswarm.errors import ConfigError
from quantswarm.model_errors import first_error
from quantswarm.paths import models_dir as default_models_dir
from serving.swarm_spec import (
    NAME_RE,
    QUANT_TYPES,
    ROLES,
    SUBJECT_RE,
    AgentSpec,
    BusSpec,
    GatewaySpec,
    MonitorSpec,
    QuantizeFrom,
    RouterSpec,
    SwarmConfig,
    VramSpec,
    WorkersSpec,
    describe_spec,
    schema_text,
    swarm_schema,
)

__all__ = ["NAME_RE", "QUANT_TYPES", "ROLES", "SUBJECT_RE", "AgentSpec", "BusSpec", "GatewaySpec", "MonitorSpec",
           "QuantizeFrom", "RouterSpec", "SwarmConfig", "VramSpec", "WorkersSpec", "config_from_dict", "describe_spec",
           "load_swarm", "schema_text", "swarm_schema"]


# --- loading -----------------------------------------------------------------------------------

_ENV_RE = re.compile(r"\$\{(?:env\.)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: str, key: str) -> str:
    def sub(m: re.Match) -> str:
        var, default = m.group(1), m.group(2)
        if var in os.environ:
            return os.environ[var]
        if default is not None:
            return default
        raise ConfigError(f"{key}: environment variable ${{{var}}} is not set; export it or write ${{{var}:-DEFAULT}}")

    return _ENV_RE.sub(sub, value)


def _expand_tree(value: Any, key: str) -> Any:
    """Replace ``${VAR}`` in every string of the parsed YAML; errors name the key path."""
    if isinstance(value, dict):
        return {k: _expand_tree(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_tree(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):
        return _expand(value, key)
    return value


def _resolve(path: str, base: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def load_swarm(path: str | Path) -> SwarmConfig:
    """Read and validate a swarm spec; raises ConfigError naming the key path on the first problem."""
    spec_path = Path(path).expanduser()
    if not spec_path.is_file():
        raise ConfigError(f"{spec_path}: no such swarm spec; see data/swarms/cpu-demo.yaml for an example")
    try:
        data = yaml.safe_load(spec_path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{spec_path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return config_from_dict(data, spec_path)


def config_from_dict(data: dict | None, spec_path: str | Path) -> SwarmConfig:
    """Validate an already-parsed spec (``spec_path`` anchors relative paths)."""
    spec_path = Path(spec_path).resolve()
    try:
        cfg = SwarmConfig.model_validate(_expand_tree({} if data is None else data, ""))
        cfg._path = str(spec_path)
        _validate(cfg, spec_path.parent)
    except ValidationError as exc:
        raise ConfigError(f"{spec_path.name}: {first_error(exc, SwarmConfig)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{spec_path.name}: {exc}") from None
    return cfg


def _validate(cfg: SwarmConfig, base: Path) -> None:
    """What one section cannot check alone: files on disk, agent references, ports; resolves paths."""
    if not cfg.agents:
        raise ConfigError("agents: at least one agent is required")
    mdir = _resolve(cfg.models_dir, base) if cfg.models_dir else default_models_dir()
    cfg.models_dir = str(mdir)
    for i, name in enumerate(sorted(cfg.agents)):
        _validate_agent(cfg, name, mdir)
        cfg.agents[name]._port = cfg.workers.start_port + i
    for i, name in enumerate(cfg.fallback):
        if name not in cfg.agents:
            raise ConfigError(f"fallback[{i}]: unknown agent {name!r}; agents: {', '.join(cfg.agents)}")
    if len(set(cfg.fallback)) != len(cfg.fallback):
        raise ConfigError("fallback: an agent appears twice; list each agent once")
    _validate_router(cfg, base)
    w = cfg.workers
    last = w.start_port + len(cfg.agents) - 1
    if last > 65535:
        raise ConfigError(f"workers.start_port: {w.start_port} leaves no room for {len(cfg.agents)} ports (1..65535)")
    if w.start_port <= cfg.gateway.port <= last:
        raise ConfigError(f"gateway.port: {cfg.gateway.port} collides with worker ports {w.start_port}..{last}")
    if w.log_dir:
        w.log_dir = str(_resolve(w.log_dir, base))
    cfg.monitor.csv = str(_resolve(cfg.monitor.csv, base))


def _validate_agent(cfg: SwarmConfig, name: str, mdir: Path) -> None:
    """agents.NAME: model (or quantize_from) and lora on disk, GPU pins within vram.gpus."""
    a = cfg.agents[name]
    key = f"agents.{name}"
    if not a.model:
        raise ConfigError(f"{key}.model: required (a .gguf path, absolute or relative to {mdir})")
    a.model = str(_resolve(a.model, mdir))
    if a.quantize_from is not None:
        if not a.quantize_from.source:
            raise ConfigError(f"{key}.quantize_from.source: required (the GGUF to quantize from)")
        a.quantize_from.source = str(_resolve(a.quantize_from.source, mdir))
        if not Path(a.model).exists() and not Path(a.quantize_from.source).is_file():
            raise ConfigError(f"{key}.quantize_from.source: {a.quantize_from.source} does not exist")
    elif not Path(a.model).is_file():
        raise ConfigError(f"{key}.model: {a.model} does not exist; fetch it (`quantswarm models fetch`), "
                          "fix the path or add quantize_from")
    if a.lora is not None:
        lora = _resolve(a.lora, mdir)
        if not lora.is_file():
            raise ConfigError(f"{key}.lora: {lora} does not exist; give a GGUF LoRA adapter "
                              "(`quantswarm repair run` writes one) or remove the key")
        with lora.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ConfigError(f"{key}.lora: {lora} is not a GGUF file; convert the adapter to GGUF "
                                  "(llama.cpp's convert_lora_to_gguf.py)")
        a.lora = str(lora)
    _resolve_cache(cfg, a, key)
    _check_extra_args(a, key)
    _validate_gpu_pins(cfg, a, key)


_PLANNED_FLAGS = {"-ctk": "kv_cache_type", "--cache-type-k": "kv_cache_type", "-ctv": "kv_cache_type",
                  "--cache-type-v": "kv_cache_type", "-fa": "flash_attn", "--flash-attn": "flash_attn",
                  "-ub": "n_ubatch", "--ubatch-size": "n_ubatch"}


def _check_extra_args(a: AgentSpec, key: str) -> None:
    """extra_args may not set what the planner counts (cache type, flash attention, ubatch): those have keys."""
    for i, arg in enumerate(a.extra_args):
        flag = arg.split("=", 1)[0]
        if flag in _PLANNED_FLAGS:
            raise ConfigError(f"{key}.extra_args[{i}]: {flag} is set from {key}.{_PLANNED_FLAGS[flag]} (the VRAM "
                              f"planner counts it); remove it and set {_PLANNED_FLAGS[flag]} instead")


def _resolve_cache(cfg: SwarmConfig, a: AgentSpec, key: str) -> None:
    """agents.NAME.kv_cache_type / flash_attn default to the workers' values; a quantized V cache needs flash
    attention (llama.cpp refuses it otherwise: ``llama_init_from_model``)."""
    from serving.memory_model import is_quantized

    explicit, explicit_fa = a.kv_cache_type is not None, a.flash_attn is not None
    a.kv_cache_type = a.kv_cache_type or cfg.workers.kv_cache_type
    a.flash_attn = a.flash_attn or cfg.workers.flash_attn
    if is_quantized(a.kv_cache_type) and a.flash_attn == "off":
        where = f"{key}.kv_cache_type" if explicit else "workers.kv_cache_type"
        fa = f"{key}.flash_attn" if explicit_fa else "workers.flash_attn"
        raise ConfigError(f"{where}: {a.kv_cache_type} quantizes the V cache, which llama.cpp runs only with flash "
                          f"attention, but {fa} is off; set it to on (quoted or not) or use f16/bf16/f32")


def _validate_router(cfg: SwarmConfig, base: Path) -> None:
    """router.agent / default_agent name agents; router.program exists and suits router.kind."""
    for attr in ("agent", "default_agent"):
        name = getattr(cfg.router, attr)
        if name is not None and name not in cfg.agents:
            raise ConfigError(f"router.{attr}: unknown agent {name!r}; agents: {', '.join(cfg.agents)}")
    if cfg.router.program:
        prog = _resolve(cfg.router.program, base)
        if not prog.exists():
            raise ConfigError(f"router.program: {prog} does not exist; compile one with `quantswarm router` "
                              "or remove the key to use router.default_agent")
        cfg.router.program = str(prog)
        if cfg.router.kind == "tfidf" and not (prog.is_file() or (prog / "tfidf.json").is_file()):
            raise ConfigError(f"router.program: {prog} has no tfidf.json for router.kind: tfidf")
        if cfg.router.kind == "program" and cfg.router_agent() is None:
            raise ConfigError("router.agent: a compiled program needs an agent to run it; set router.agent "
                              "or give one agent role: router")
        _check_program_agents(cfg, prog)


def _check_program_agents(cfg: SwarmConfig, prog: Path) -> None:
    """A compiled program routes only between the agents it was compiled for: all of them must be agents of this
    spec (read from its manifest.json), or the spec is refused. (A TF-IDF baseline, ``kind: tfidf``, keeps the
    documented fallback: a class that is no agent here goes to the default agent.)"""
    import json

    manifest = prog / "manifest.json"
    if cfg.router.kind != "program" or not manifest.is_file():
        return
    try:
        agents = json.loads(manifest.read_text()).get("agents") or []
    except (OSError, ValueError) as exc:
        raise ConfigError(f"router.program: {prog}: unreadable manifest ({exc})") from None
    missing = sorted(set(agents) - set(cfg.agents))
    if missing:
        raise ConfigError(f"router.program: {prog} was compiled for agents {missing} that this swarm does not have "
                          f"(agents here: {', '.join(cfg.agents)}); compile the router on this swarm's agent names")


def _validate_gpu_pins(cfg: SwarmConfig, a: AgentSpec, key: str) -> None:
    """agents.NAME.gpu / tensor_split: need vram.gpus, lie within its GPUs and exclude each other."""
    v = cfg.vram
    n_gpus = len(v.gpus) if isinstance(v.gpus, list) else None  # `auto`: known when planning
    if a.gpu is not None:
        if a.tensor_split is not None:
            raise ConfigError(f"{key}.tensor_split: set either {key}.gpu (whole model on one GPU) or "
                              f"{key}.tensor_split (layers split across GPUs), not both")
        if v.gpus is None and a.gpu != v.gpu:
            raise ConfigError(f"{key}.gpu: {a.gpu} needs several GPUs; set vram.gpus (a budget per GPU or `auto`)")
        if n_gpus is not None and a.gpu >= n_gpus:
            raise ConfigError(f"{key}.gpu: {a.gpu} is not a GPU of vram.gpus (indices 0..{n_gpus - 1})")
        if isinstance(v.gpus, list) and v.gpus[a.gpu] == 0:
            raise ConfigError(f"{key}.gpu: GPU {a.gpu} has budget 0 in vram.gpus; pin another GPU or give it a budget")
    if a.tensor_split is not None:
        ts = a.tensor_split
        if v.gpus is None:
            raise ConfigError(f"{key}.tensor_split: needs several GPUs; set vram.gpus (a budget per GPU or `auto`)")
        if any(x < 0 for x in ts) or sum(x > 0 for x in ts) < 2:
            raise ConfigError(f"{key}.tensor_split: {ts} needs proportions >= 0 with at least two above 0; "
                              f"for one GPU pin {key}.gpu instead")
        if n_gpus is not None and len(ts) > n_gpus:
            raise ConfigError(f"{key}.tensor_split: {len(ts)} proportions for {n_gpus} GPUs in vram.gpus")

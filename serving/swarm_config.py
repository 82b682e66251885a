"""The swarm spec: one YAML file describes a deployment, read into a typed :class:`SwarmConfig`.

Loading validates the whole file before anything starts (llama-swap style): unknown keys are errors,
every error names its key path (``agents.coder.n_ctx``), defaults live here in code, and ports are
assigned deterministically (workers get ``workers.start_port + i`` in sorted agent-name order).

How paths resolve:
  * ``${VAR}`` and ``${VAR:-default}`` in any string are replaced from the environment; an unset
    variable without a default fails the load, naming the key.
  * ``models_dir`` (default ``$QUANTSWARM_MODELS``, ``$SWARM_MODELS`` or ``~/.cache/quantswarm/models``)
    is taken relative to the spec's directory when relative.
  * An agent's ``model`` (and ``quantize_from.source``) is absolute, or relative to ``models_dir``.
  * ``router.program`` and ``monitor.csv`` are relative to the spec's directory.
"""

from __future__ import annotations

import os
import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import yaml

from quantswarm.errors import ConfigError
from quantswarm.paths import models_dir as default_models_dir

ROLES = ("router", "general", "chat", "coder", "math", "knowledge", "research", "tools")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SUBJECT_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
QUANT_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "F16")


def _f(default, help: str, **meta):
    """A dataclass field with a default and a help text (the YAML docs)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class QuantizeFrom:
    """Make a missing agent model by quantizing another GGUF (llama.cpp's quantizer, at `serve` start)."""

    source: str = _f("", "GGUF to quantize from (absolute or relative to models_dir); required")
    type: str = _f("Q8_0", "target quant type", choices=QUANT_TYPES)


@dataclass
class AgentSpec:
    """One co-resident agent: a llama-server process over one GGUF."""

    model: str = _f("", "GGUF path (absolute or relative to models_dir); required")
    role: str = _f("general", "what the agent is for; `coder` answers are checked to compile", choices=ROLES)
    n_ctx: int = _f(2048, "context tokens per slot")
    parallel: int = _f(2, "llama-server slots (continuous batching)")
    n_gpu_layers: int | None = _f(None, "pin GPU layers (0..n_layers+1); null lets the VRAM planner choose")
    gpu: int | None = _f(None, "pin the agent to this GPU index (needs vram.gpus); null lets the planner choose")
    tensor_split: list[float] | None = _f(None, "pin a layer split across GPUs: one proportion per GPU index, e.g. "
                                          "[3, 1] (needs vram.gpus; not with `gpu`); null lets the planner choose")
    usage: float = _f(1.0, "expected share of traffic; the planner keeps the most-used agents on GPU first")
    n_threads: int | None = _f(None, "CPU threads for this worker (null: llama.cpp's default)")
    extra_args: list = _f([], "extra llama-server arguments (strings)")
    quantize_from: QuantizeFrom | None = _f(None, "make `model` from another GGUF when it is missing")
    # resolved at load
    name: str = field(default="", metadata={"help": "agent name (the key)", "internal": True})
    port: int = field(default=0, metadata={"help": "assigned port", "internal": True})


@dataclass
class RouterSpec:
    """How `model="auto"` picks an agent."""

    agent: str | None = _f(None, "the agent that serves the compiled router program (default: a role=router agent)")
    program: str | None = _f(None, "compiled router program directory (router/ package); null: default_agent")
    kind: str = _f("program", "`program`: the compiled DSPy router run on router.agent; `tfidf`: the LM-free "
                   "TF-IDF baseline (program/tfidf.json)", choices=("program", "tfidf"))
    default_agent: str | None = _f(None, "where `auto` goes without a program (default: fallback[0], else first agent)")


@dataclass
class VramSpec:
    """The GPU memory budget the planner fits the swarm into."""

    budget_mib: int | str = _f("auto", "MiB of VRAM the swarm may use: an integer, `auto` (free VRAM) or 0 (CPU)")
    headroom_mib: int = _f(1024, "MiB kept free below the budget")
    overhead_mib: int = _f(320, "measured per-context overhead (CUDA context + compute buffers), MiB per agent")
    kv_type_bytes: float = _f(2.0, "bytes per KV-cache element (2 = f16 cache, 1 = q8_0)")
    gpu: int = _f(0, "GPU index of the single-GPU budget (and of the NVML monitor)")
    gpus: list[int | str] | str | None = _f(None, "several GPUs: one budget per GPU index, each an integer MiB or "
                                            "`auto` (that GPU's free VRAM), or `auto` for every GPU NVML sees; "
                                            "null: one GPU (vram.budget_mib on vram.gpu)")


@dataclass
class GatewaySpec:
    """The OpenAI-compatible HTTP gateway."""

    host: str = _f("127.0.0.1", "bind address (loopback by default)")
    port: int = _f(8080, "gateway port")
    api_key: str | None = _f(None, "require `Authorization: Bearer KEY` (use ${ENV_VAR}); null: open")
    validate: bool = _f(True, "check answers (empty, bad JSON, non-compiling code) and fall back")
    request_timeout_s: float = _f(300.0, "per-request timeout towards a worker, seconds")


@dataclass
class WorkersSpec:
    """The llama-server worker processes."""

    host: str = _f("127.0.0.1", "bind address of the workers")
    start_port: int = _f(10001, "first worker port; agents get consecutive ports in sorted-name order")
    health_interval_s: float = _f(1.0, "seconds between health checks")
    startup_timeout_s: float = _f(180.0, "seconds a worker may take to load")
    max_restarts: int = _f(5, "restarts per worker before it is given up")
    oom_retries: int = _f(3, "re-plans with fewer GPU layers after an out-of-memory load failure")
    log_dir: str | None = _f(None, "worker log folder (default: a temp folder)")


@dataclass
class BusSpec:
    """NATS JetStream task bus."""

    enabled: bool = _f(False, "consume tasks from the bus while serving")
    url: str = _f("nats://127.0.0.1:4222", "NATS server URL")
    stream: str = _f("QUANTSWARM", "JetStream stream holding tasks, results and dead letters")
    tasks_subject: str = _f("tasks.new", "subject tasks are published on")
    results_subject: str = _f("results.completed", "subject results are published on")
    dead_subject: str = _f("tasks.dead", "subject malformed / failed tasks go to, with the reason")
    durable: str = _f("quantswarm-workers", "durable pull consumer shared by every host (the queue group)")
    concurrency: int = _f(0, "tasks in flight per host (0: the swarm's total slots)")
    max_deliver: int = _f(5, "deliveries before a failing (or crashing) task is dead-lettered")
    ack_wait_s: float = _f(120.0, "seconds without a progress heartbeat before a task is redelivered "
                                  "(a running task sends one every ack_wait_s / 3)")
    duplicate_window_s: float = _f(600.0, "JetStream dedup window for message ids (task ids)")
    max_age_s: float = _f(7 * 86400.0, "stream retention: messages older than this are removed (>= duplicate_window_s)")
    max_msgs: int = _f(1_000_000, "stream retention: at most this many messages; a full stream refuses new ones")
    max_bytes: int = _f(1 << 30, "stream retention: at most this many bytes; a full stream refuses new ones")


@dataclass
class MonitorSpec:
    """NVML sampler."""

    enabled: bool = _f(True, "sample the GPU while serving (says once and records nothing without NVML)")
    interval_s: float = _f(1.0, "seconds between samples")
    csv: str = _f("runs/monitor.csv", "CSV file of samples (relative to the spec's directory)")
    temp_alert_c: float = _f(85.0, "log an alert line above this GPU temperature")


@dataclass
class SwarmConfig:
    """A whole swarm deployment (see the module docstring for path resolution).

    Sections: agents (map name -> AgentSpec), router, fallback (agent names, tried in order when an
    answer fails validation), vram, gateway, workers, bus, monitor.
    """

    agents: dict = _f({}, "agents by name (at least one)")
    router: RouterSpec = _f(None, "model=auto routing")
    fallback: list = _f([], "hierarchical fallback chain of agent names")
    vram: VramSpec = _f(None, "VRAM budget")
    gateway: GatewaySpec = _f(None, "HTTP gateway")
    workers: WorkersSpec = _f(None, "worker processes")
    bus: BusSpec = _f(None, "NATS JetStream bus")
    monitor: MonitorSpec = _f(None, "NVML monitor")
    models_dir: str | None = _f(None, "folder relative model paths resolve against")
    version: int = _f(1, "spec format version")
    path: str = field(default="", metadata={"help": "the spec file", "internal": True})

    def __post_init__(self) -> None:
        for name, cls in (("router", RouterSpec), ("vram", VramSpec), ("gateway", GatewaySpec),
                          ("workers", WorkersSpec), ("bus", BusSpec), ("monitor", MonitorSpec)):
            if getattr(self, name) is None:
                setattr(self, name, cls())

    @property
    def agent_names(self) -> list[str]:
        return list(self.agents)

    def router_agent(self) -> str | None:
        """The agent that serves the router program: router.agent, else the first role=router agent."""
        if self.router.agent:
            return self.router.agent
        return next((n for n, a in self.agents.items() if a.role == "router"), None)

    def default_agent(self) -> str:
        """Where `auto` goes without a compiled router: router.default_agent, fallback[0], else the first agent."""
        return self.router.default_agent or (self.fallback[0] if self.fallback else next(iter(self.agents)))

    def total_slots(self) -> int:
        return sum(a.parallel for a in self.agents.values())


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


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value, tp, key: str):
    """Check/convert one YAML value against a field type; errors name the key path."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _convert(value, opt, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{key}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return _build(tp, value, key)
    if value is None:
        raise ConfigError(f"{key}: must not be empty (expected {_type_name(tp)})")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return _expand(value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, str, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # a bug in this module, not in the spec


def _build(cls, data, key: str):
    """Build a config dataclass from a YAML mapping: unknown keys are errors, defaults from code."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'spec'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    public = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(map(str, data)) - set(public))
    if unknown:
        where = f"{key}." if key else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key; allowed: {', '.join(public)}")
    kwargs = {}
    for name, f in public.items():
        sub = f"{key}.{name}" if key else name
        if name not in data:
            continue
        value = data[name]
        if cls is SwarmConfig and name == "agents":
            kwargs[name] = _build_agents(value, sub)
            continue
        kwargs[name] = _convert(value, hints[name], sub)
        choices = f.metadata.get("choices")
        if choices and kwargs[name] is not None and kwargs[name] not in choices:
            raise ConfigError(f"{sub}: {kwargs[name]!r} is not one of {', '.join(choices)}")
        if f.default is MISSING and f.default_factory is MISSING:  # pragma: no cover - all fields have defaults
            raise ConfigError(f"{sub}: required")
    return cls(**kwargs)


def _build_agents(value, key: str) -> dict[str, AgentSpec]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{key}: expected a mapping of agent name -> settings with at least one agent")
    out = {}
    for name, body in value.items():
        name = str(name)
        if not NAME_RE.match(name) or name == "auto":
            raise ConfigError(f"{key}.{name}: agent names use letters, digits, `_.-` and cannot be `auto`")
        agent = _build(AgentSpec, body, f"{key}.{name}")
        agent.name = name
        out[name] = agent
    return out


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


def config_from_dict(data: dict, spec_path: str | Path) -> SwarmConfig:
    """Validate an already-parsed spec (``spec_path`` anchors relative paths)."""
    spec_path = Path(spec_path).resolve()
    try:
        cfg = _build(SwarmConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{spec_path.name}: {exc}") from None
    cfg.path = str(spec_path)
    try:
        _validate(cfg, spec_path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{spec_path.name}: {exc}") from None
    return cfg


def _validate(cfg: SwarmConfig, base: Path) -> None:
    if cfg.version != 1:
        raise ConfigError(f"version: {cfg.version} is not supported; write `version: 1`")
    if not cfg.agents:
        raise ConfigError("agents: at least one agent is required")
    _validate_gpus(cfg.vram)
    mdir = _resolve(cfg.models_dir, base) if cfg.models_dir else default_models_dir()
    cfg.models_dir = str(mdir)
    for i, name in enumerate(sorted(cfg.agents)):
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
        for attr, low in (("n_ctx", 16), ("parallel", 1)):
            if getattr(a, attr) < low:
                raise ConfigError(f"{key}.{attr}: must be at least {low}, got {getattr(a, attr)}")
        if a.n_gpu_layers is not None and a.n_gpu_layers < 0:
            raise ConfigError(f"{key}.n_gpu_layers: must be >= 0 or null (planned)")
        if a.usage < 0:
            raise ConfigError(f"{key}.usage: must be >= 0")
        _validate_gpu_pins(cfg, a, key)
        a.port = cfg.workers.start_port + i
    for i, name in enumerate(cfg.fallback):
        if name not in cfg.agents:
            raise ConfigError(f"fallback[{i}]: unknown agent {name!r}; agents: {', '.join(cfg.agents)}")
    if len(set(cfg.fallback)) != len(cfg.fallback):
        raise ConfigError("fallback: an agent appears twice; list each agent once")
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
    v = cfg.vram
    if isinstance(v.budget_mib, str) and v.budget_mib != "auto":
        raise ConfigError(f"vram.budget_mib: expected an integer MiB, `auto` or 0, got {v.budget_mib!r}")
    if isinstance(v.budget_mib, int) and v.budget_mib < 0:
        raise ConfigError("vram.budget_mib: must be >= 0 (0 = CPU only)")
    for attr in ("headroom_mib", "overhead_mib"):
        if getattr(v, attr) < 0:
            raise ConfigError(f"vram.{attr}: must be >= 0")
    if v.kv_type_bytes <= 0:
        raise ConfigError("vram.kv_type_bytes: must be > 0")
    if v.gpu < 0:
        raise ConfigError("vram.gpu: must be a GPU index >= 0")
    w = cfg.workers
    last = w.start_port + len(cfg.agents) - 1
    if w.start_port < 1 or last > 65535:
        raise ConfigError(f"workers.start_port: {w.start_port} leaves no room for {len(cfg.agents)} ports (1..65535)")
    if cfg.gateway.port < 1 or cfg.gateway.port > 65535:
        raise ConfigError(f"gateway.port: {cfg.gateway.port} is not a port (1..65535)")
    if w.start_port <= cfg.gateway.port <= last:
        raise ConfigError(f"gateway.port: {cfg.gateway.port} collides with worker ports {w.start_port}..{last}")
    if cfg.gateway.api_key is not None and not cfg.gateway.api_key.strip():
        raise ConfigError("gateway.api_key: empty; remove the key for an open gateway or set a value")
    for attr in ("health_interval_s", "startup_timeout_s"):
        if getattr(w, attr) <= 0:
            raise ConfigError(f"workers.{attr}: must be > 0")
    if w.log_dir:
        w.log_dir = str(_resolve(w.log_dir, base))
    b = cfg.bus
    if not b.url.startswith(("nats://", "tls://")):
        raise ConfigError(f"bus.url: {b.url!r} is not a nats:// URL")
    if not re.match(r"^[A-Za-z0-9_-]+$", b.stream):
        raise ConfigError(f"bus.stream: {b.stream!r}: letters, digits, `_` and `-` only")
    if not re.match(r"^[A-Za-z0-9_-]+$", b.durable):
        raise ConfigError(f"bus.durable: {b.durable!r}: letters, digits, `_` and `-` only")
    subjects = {}
    for attr in ("tasks_subject", "results_subject", "dead_subject"):
        s = getattr(b, attr)
        if not SUBJECT_RE.match(s):
            raise ConfigError(f"bus.{attr}: {s!r} is not a plain NATS subject (tokens separated by dots, no wildcards)")
        if s in subjects:
            raise ConfigError(f"bus.{attr}: {s!r} is also bus.{subjects[s]}; subjects must differ")
        subjects[s] = attr
    if b.concurrency < 0 or b.max_deliver < 1 or b.ack_wait_s <= 0:
        raise ConfigError("bus: concurrency must be >= 0, max_deliver >= 1 and ack_wait_s > 0")
    if b.max_age_s < b.duplicate_window_s or b.max_msgs < 1 or b.max_bytes < 1:
        raise ConfigError("bus: max_age_s must be >= duplicate_window_s, max_msgs and max_bytes >= 1")
    m = cfg.monitor
    if m.interval_s <= 0:
        raise ConfigError("monitor.interval_s: must be > 0")
    m.csv = str(_resolve(m.csv, base))


def _validate_gpus(v: VramSpec) -> None:
    """vram.gpus: `auto`, or a non-empty list of integer MiB >= 0 / `auto`; not together with an integer budget_mib."""
    if v.gpus is None:
        return
    if isinstance(v.gpus, str):
        if v.gpus != "auto":
            raise ConfigError(f"vram.gpus: expected `auto` or a list of per-GPU budgets (MiB or `auto`), "
                              f"got {v.gpus!r}")
    elif not v.gpus:
        raise ConfigError("vram.gpus: empty list; give one budget per GPU, `auto`, or remove the key for one GPU")
    else:
        for i, b in enumerate(v.gpus):
            if isinstance(b, str) and b != "auto":
                raise ConfigError(f"vram.gpus[{i}]: expected an integer MiB or `auto`, got {b!r}")
            if isinstance(b, int) and b < 0:
                raise ConfigError(f"vram.gpus[{i}]: must be >= 0 (0 = leave this GPU out)")
    if v.budget_mib != "auto":
        raise ConfigError(f"vram.gpus: set either vram.budget_mib (one GPU, here {v.budget_mib!r}) or vram.gpus "
                          "(one budget per GPU), not both; remove vram.budget_mib")


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
        if a.gpu < 0 or (n_gpus is not None and a.gpu >= n_gpus):
            raise ConfigError(f"{key}.gpu: {a.gpu} is not a GPU of vram.gpus (indices 0..{(n_gpus or 1) - 1})")
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


def describe_spec() -> str:
    """Every key with its default and help text (for `quantswarm serve --explain`)."""
    lines: list[str] = []

    def walk(cls, prefix: str) -> None:
        for f in fields(cls):
            if f.metadata.get("internal"):
                continue
            hint = typing.get_type_hints(cls)[f.name]
            nested = [t for t in (typing.get_args(hint) or (hint,)) if hasattr(t, "__dataclass_fields__")]
            default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory
                                                                   is not MISSING else None)
            key = f"{prefix}{f.name}"
            if cls is SwarmConfig and f.name == "agents":
                lines.append(f"{key}.NAME: {f.metadata['help']}")
                walk(AgentSpec, f"{key}.NAME.")
                continue
            if nested:
                lines.append(f"{key}: {f.metadata['help']}")
                walk(nested[0], f"{key}.")
            else:
                lines.append(f"{key} (default {default!r}): {f.metadata['help']}")

    walk(SwarmConfig, "")
    return "\n".join(lines)

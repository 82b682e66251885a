"""The swarm spec's types: pydantic models of one swarm YAML, read by :mod:`serving.swarm_config`.

Every section forbids unknown keys, takes YAML types as written (no coercion) and describes every field;
the JSON schema of :class:`SwarmConfig` is ``data/swarms/swarm.schema.json`` (``quantswarm serve --schema``).
Checks that need one section only live here (ranges, choices, NATS subjects); checks across sections and
on disk (agent references, ports, model files) run at load in :mod:`serving.swarm_config`.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from quantswarm.model_errors import At
from serving.memory_model import FlashAttn as _FlashAttn
from serving.memory_model import KvCacheType as _KvCacheType


def _on_off(value: Any) -> Any:
    """YAML reads an unquoted on/off/yes/no as a boolean: take it as the word it was."""
    return ("on" if value else "off") if isinstance(value, bool) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


FlashAttn = Annotated[_FlashAttn, BeforeValidator(_on_off)]
KvCacheType = Annotated[_KvCacheType, BeforeValidator(_lower)]  # Q8_0 and q8_0 alike

Role = Literal["router", "general", "chat", "coder", "math", "knowledge", "research", "tools"]
QuantType = Literal["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "F16"]
ROLES = get_args(Role)
QUANT_TYPES = get_args(QuantType)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SUBJECT_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class _Spec(BaseModel):
    """A section of the spec: unknown keys are errors and YAML types are taken as written (no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _agent_name(name: str) -> str:
    if not NAME_RE.match(name) or name == "auto":
        raise ValueError("agent names use letters, digits, `_.-` and cannot be `auto`")
    return name


AgentName = Annotated[str, AfterValidator(_agent_name)]
BudgetMiB = Annotated[int, Field(ge=0)]  # a VRAM budget: MiB, 0 = none


class QuantizeFrom(_Spec):
    """Make a missing agent model by quantizing another GGUF (llama.cpp's quantizer, at `serve` start)."""

    source: str = Field("", description="GGUF to quantize from (absolute or relative to models_dir); required")
    type: QuantType = Field("Q8_0", description="target quant type")


class AgentSpec(_Spec):
    """One co-resident agent: a llama-server process over one GGUF."""

    model: str = Field("", description="GGUF path (absolute or relative to models_dir); required")
    role: Role = Field("general", description="what the agent is for; `coder` answers are checked to compile")
    n_ctx: int = Field(2048, ge=16, description="context tokens per slot")
    parallel: int = Field(2, ge=1, description="llama-server slots (continuous batching)")
    n_gpu_layers: int | None = Field(None, ge=0, description="pin GPU layers (0..n_layers+1); null lets the VRAM "
                                                             "planner choose")
    gpu: int | None = Field(None, ge=0, description="pin the agent to this GPU index (needs vram.gpus); null lets "
                                                    "the planner choose")
    tensor_split: list[float] | None = Field(None, description="pin a layer split across GPUs: one proportion per "
                                                               "GPU index, e.g. [3, 1] (needs vram.gpus; not with "
                                                               "`gpu`); null lets the planner choose")
    usage: float = Field(1.0, ge=0, description="expected share of traffic; the planner keeps the most-used agents "
                                                "on GPU first")
    n_threads: int | None = Field(None, description="CPU threads for this worker (null: llama.cpp's default)")
    n_ubatch: int = Field(512, ge=1, description="llama.cpp's physical batch (`-ub`, tokens); the compute buffer "
                                                 "the planner counts grows with it")
    kv_cache_type: KvCacheType | None = Field(None, description="KV cache type of this agent (`-ctk`/`-ctv`, "
                                                                "llama.cpp's names); null: workers.kv_cache_type")
    flash_attn: FlashAttn | None = Field(None, description="flash attention for this agent (`-fa`); null: "
                                                          "workers.flash_attn")
    extra_args: list[str] = Field(default_factory=list, description="extra llama-server arguments (strings)")
    lora: str | None = Field(None, description="GGUF LoRA adapter llama-server applies over `model` (`--lora`), "
                                               "e.g. a `quantswarm repair` adapter; absolute or relative to "
                                               "models_dir; null: none")
    quantize_from: QuantizeFrom | None = Field(None, description="make `model` from another GGUF when it is missing")
    _name: str = PrivateAttr("")
    _port: int = PrivateAttr(0)

    @property
    def name(self) -> str:
        """The agent's name (its key under ``agents``)."""
        return self._name

    @property
    def port(self) -> int:
        """The worker port assigned at load."""
        return self._port


class RouterSpec(_Spec):
    """How `model="auto"` picks an agent."""

    agent: str | None = Field(None, description="the agent that serves the compiled router program (default: a "
                                                "role=router agent)")
    program: str | None = Field(None, description="compiled router program directory (router/ package); null: "
                                                  "default_agent")
    kind: Literal["program", "tfidf"] = Field("program", description="`program`: the compiled DSPy router run on "
                                                                     "router.agent; `tfidf`: the LM-free TF-IDF "
                                                                     "baseline (program/tfidf.json)")
    default_agent: str | None = Field(None, description="where `auto` goes without a program (default: "
                                                        "fallback[0], else first agent)")


class VramSpec(_Spec):
    """The GPU memory budget the planner fits the swarm into."""

    budget_mib: BudgetMiB | Literal["auto"] = Field("auto", description="MiB of VRAM the swarm may use: an integer, "
                                                                  "`auto` (free VRAM) or 0 (CPU)")
    headroom_mib: int = Field(1024, ge=0, description="MiB kept free below the budget")
    overhead_mib: int = Field(320, ge=0, description="measured per-context constant: the CUDA context and "
                                                     "runtime buffers, MiB per agent and GPU (the compute buffer is "
                                                     "computed from n_ctx, parallel and n_ubatch, not included)")
    partial_offload_mib: int = Field(0, ge=0, description="measured extra VRAM of a context with some but not all "
                                                           "of its n_layers + 1 offloadable layers (blocks + output) "
                                                           "on its GPU, MiB; 0: not modelled")
    gpu: int = Field(0, ge=0, description="GPU index of the single-GPU budget (and of the NVML monitor)")
    gpus: list[BudgetMiB | Literal["auto"]] | Literal["auto"] | None = Field(
        None, description="several GPUs: one budget per GPU index, each an integer MiB or `auto` (that GPU's free "
                          "VRAM), or `auto` for every GPU NVML sees; null: one GPU (vram.budget_mib on vram.gpu)")

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kv_type_bytes" in data:
            raise At("kv_type_bytes", "replaced by workers.kv_cache_type (llama.cpp's names: f16, q8_0, q4_0, ...), "
                                      "which llama-server is also given; write `workers: {kv_cache_type: f16}`")
        return data

    @field_validator("budget_mib", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> Any:
        if isinstance(v, bool) or not (isinstance(v, int) or v == "auto"):
            raise ValueError(f"expected an integer MiB, `auto` or 0, got {v!r}")
        if isinstance(v, int) and v < 0:
            raise ValueError("must be >= 0 (0 = CPU only)")
        return v

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> Any:
        if v is None or v == "auto":
            return v
        if not isinstance(v, list):
            raise ValueError(f"expected `auto` or a list of per-GPU budgets (MiB or `auto`), got {v!r}")
        if not v:
            raise ValueError("empty list; give one budget per GPU, `auto`, or remove the key for one GPU")
        for i, b in enumerate(v):
            if isinstance(b, bool) or not (isinstance(b, int) or b == "auto"):
                raise At(f"[{i}]", f"expected an integer MiB or `auto`, got {b!r}")
            if isinstance(b, int) and b < 0:
                raise At(f"[{i}]", "must be >= 0 (0 = leave this GPU out)")
        return v

    @model_validator(mode="after")
    def _one_budget(self) -> VramSpec:
        if self.gpus is not None and self.budget_mib != "auto":
            raise At("gpus", f"set either vram.budget_mib (one GPU, here {self.budget_mib!r}) or vram.gpus (one "
                             "budget per GPU), not both; remove vram.budget_mib")
        return self


class GatewaySpec(_Spec):
    """The OpenAI-compatible HTTP gateway."""

    host: str = Field("127.0.0.1", description="bind address (loopback by default)")
    port: int = Field(8080, ge=1, le=65535, description="gateway port")
    api_key: str | None = Field(None, description="require `Authorization: Bearer KEY` (use ${ENV_VAR}); null: open")
    validate_answers: bool = Field(True, alias="validate", description="check answers (empty, bad JSON, "
                                                                       "non-compiling code) and fall back")
    request_timeout_s: float = Field(300.0, gt=0, description="per-request timeout towards a worker, seconds")

    @field_validator("api_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("empty; remove the key for an open gateway or set a value")
        return v


class WorkersSpec(_Spec):
    """The llama-server worker processes."""

    host: str = Field("127.0.0.1", description="bind address of the workers")
    start_port: int = Field(10001, ge=1, le=65535, description="first worker port; agents get consecutive ports in "
                                                               "sorted-name order")
    health_interval_s: float = Field(1.0, gt=0, description="seconds between health checks")
    startup_timeout_s: float = Field(180.0, gt=0, description="seconds a worker may take to load")
    max_restarts: int = Field(5, ge=0, description="restarts per worker before it is given up")
    oom_retries: int = Field(3, ge=0, description="re-plans with fewer GPU layers after an out-of-memory load "
                                                  "failure")
    log_dir: str | None = Field(None, description="worker log folder (default: a temp folder)")
    kv_cache_type: KvCacheType = Field("f16", description="KV cache type of every worker (llama-server "
                                                          "`--cache-type-k/-v`); the planner counts its bytes per "
                                                          "element (q8_0 1.0625, q4_0 0.5625, f16 2); a quantized "
                                                          "type needs flash_attn: on")
    flash_attn: FlashAttn = Field("on", description="flash attention of every worker (llama-server `-fa`); `off` "
                                                    "makes the compute buffer grow with n_ctx x n_head")


class BusSpec(_Spec):
    """NATS JetStream task bus."""

    enabled: bool = Field(False, description="consume tasks from the bus while serving")
    url: str = Field("nats://127.0.0.1:4222", pattern=r"^(nats|tls)://", description="NATS server URL")
    stream: str = Field("QUANTSWARM", pattern=TOKEN_RE.pattern, description="JetStream stream holding tasks, "
                                                                            "results and dead letters")
    tasks_subject: str = Field("tasks.new", pattern=SUBJECT_RE.pattern, description="subject tasks are published on")
    results_subject: str = Field("results.completed", pattern=SUBJECT_RE.pattern,
                                 description="subject results are published on")
    dead_subject: str = Field("tasks.dead", pattern=SUBJECT_RE.pattern,
                              description="subject malformed / failed tasks go to, with the reason")
    durable: str = Field("quantswarm-workers", pattern=TOKEN_RE.pattern,
                         description="durable pull consumer shared by every host (the queue group)")
    concurrency: int = Field(0, ge=0, description="tasks in flight per host (0: the swarm's total slots)")
    max_deliver: int = Field(5, ge=1, description="deliveries before a failing (or crashing) task is dead-lettered")
    ack_wait_s: float = Field(120.0, gt=0, description="seconds without a progress heartbeat before a task is "
                                                       "redelivered (a running task sends one every ack_wait_s / 3)")
    duplicate_window_s: float = Field(600.0, gt=0, description="JetStream dedup window for message ids (task ids)")
    max_age_s: float = Field(7 * 86400.0, gt=0, description="stream retention: messages older than this are removed "
                                                           "(>= duplicate_window_s)")
    max_msgs: int = Field(1_000_000, ge=1, description="stream retention: at most this many messages; a full stream "
                                                       "refuses new ones")
    max_bytes: int = Field(1 << 30, ge=1, description="stream retention: at most this many bytes; a full stream "
                                                      "refuses new ones")

    @model_validator(mode="after")
    def _retention(self) -> BusSpec:
        if self.max_age_s < self.duplicate_window_s:
            raise ValueError("max_age_s must be >= duplicate_window_s")
        return self

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.startswith(("nats://", "tls://")):
            raise ValueError(f"{v!r} is not a nats:// URL")
        return v

    @field_validator("stream", "durable", mode="before")
    @classmethod
    def _token(cls, v: Any) -> Any:
        if isinstance(v, str) and not TOKEN_RE.match(v):
            raise ValueError(f"{v!r}: letters, digits, `_` and `-` only")
        return v

    @field_validator("tasks_subject", "results_subject", "dead_subject", mode="before")
    @classmethod
    def _subject(cls, v: Any) -> Any:
        if isinstance(v, str) and not SUBJECT_RE.match(v):
            raise ValueError(f"{v!r} is not a plain NATS subject (tokens separated by dots, no wildcards)")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> BusSpec:
        seen: dict[str, str] = {}
        for attr in ("tasks_subject", "results_subject", "dead_subject"):
            s = getattr(self, attr)
            if s in seen:
                raise At(attr, f"{s!r} is also bus.{seen[s]}; subjects must differ")
            seen[s] = attr
        return self


class MonitorSpec(_Spec):
    """NVML sampler."""

    enabled: bool = Field(True, description="sample the GPU while serving (says once and records nothing without "
                                            "NVML)")
    interval_s: float = Field(1.0, gt=0, description="seconds between samples")
    csv: str = Field("runs/monitor.csv", description="CSV file of samples (relative to the spec's directory)")
    temp_alert_c: float = Field(85.0, description="log an alert line above this GPU temperature")


SECTIONS = ("router", "vram", "gateway", "workers", "bus", "monitor")


class SwarmConfig(_Spec):
    """A whole swarm deployment (see the module docstring for path resolution).

    Sections: agents (map name -> AgentSpec), router, fallback (agent names, tried in order when an
    answer fails validation), vram, gateway, workers, bus, monitor.
    """

    model_config = ConfigDict(extra="forbid", strict=True, title="quantswarm swarm spec")

    version: Literal[1] = Field(1, description="spec format version")
    models_dir: str | None = Field(None, description="folder relative model paths resolve against")
    agents: dict[AgentName, AgentSpec] = Field(default_factory=dict, description="agents by name (at least one)")
    router: RouterSpec = Field(default_factory=RouterSpec, description="model=auto routing")
    fallback: list[str] = Field(default_factory=list, description="hierarchical fallback chain of agent names")
    vram: VramSpec = Field(default_factory=VramSpec, description="VRAM budget")
    gateway: GatewaySpec = Field(default_factory=GatewaySpec, description="HTTP gateway")
    workers: WorkersSpec = Field(default_factory=WorkersSpec, description="worker processes")
    bus: BusSpec = Field(default_factory=BusSpec, description="NATS JetStream bus")
    monitor: MonitorSpec = Field(default_factory=MonitorSpec, description="NVML monitor")
    _path: str = PrivateAttr("")

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section written as an empty key (``router:``) takes every default."""
        if isinstance(data, dict):
            data = {k: ({} if k in SECTIONS and v is None else v) for k, v in data.items()}
        return data

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        if v != 1 or isinstance(v, bool):
            raise ValueError(f"{v!r} is not supported; write `version: 1`")
        return v

    @field_validator("agents", mode="before")
    @classmethod
    def _agents(cls, v: Any) -> Any:
        if not isinstance(v, dict) or not v:
            raise ValueError("expected a mapping of agent name -> settings with at least one agent")
        return {k: ({} if body is None else body) for k, body in v.items()}

    @model_validator(mode="after")
    def _names(self) -> SwarmConfig:
        for name, agent in self.agents.items():
            agent._name = name
        return self

    @property
    def path(self) -> str:
        """The spec file this config was loaded from."""
        return self._path

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


# --- documentation -----------------------------------------------------------------------------

def swarm_schema() -> dict:
    """The spec's JSON schema (the committed ``data/swarms/swarm.schema.json``)."""
    schema = SwarmConfig.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    """:func:`swarm_schema` as the committed file's text."""
    return json.dumps(swarm_schema(), indent=2) + "\n"


def describe_spec() -> str:
    """Every key with its default and help text (for `quantswarm serve --explain`)."""
    lines: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            key = f"{prefix}{f.alias or name}"
            if model is SwarmConfig and name == "agents":
                lines.append(f"{key}.NAME: {f.description}")
                walk(AgentSpec, f"{key}.NAME.")
                continue
            nested = [t for t in (get_args(f.annotation) or (f.annotation,))
                      if isinstance(t, type) and issubclass(t, BaseModel)]
            if nested:
                lines.append(f"{key}: {f.description}")
                walk(nested[0], f"{key}.")
            else:
                lines.append(f"{key} (default {f.get_default(call_default_factory=True)!r}): {f.description}")

    walk(SwarmConfig, "")
    return "\n".join(lines)

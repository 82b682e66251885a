"""VRAM planner: choose ``n_gpu_layers`` per agent so the swarm fits the GPU budget with headroom.

The arithmetic follows how llama.cpp places a model with ``-ngl N``: the last N repeating blocks go
to the GPU (``i_gpu_start = n_layer - N``), and N = n_layers + 1 also moves the output head (for a
model with tied embeddings llama.cpp duplicates ``token_embd`` as the output). Token embeddings stay
in host memory. The KV cache of an offloaded block lives on the GPU:
``bytes/token/layer = n_head_kv * head_dim * 2 (K and V) * type_bytes``, times ``n_ctx * parallel``.
Each context adds a measured overhead (CUDA context + compute buffers, ``vram.overhead_mib``).

Agents are served in priority order: the router agent first, then by ``usage`` (descending), then
spec order; each takes as many layers as still fit. Pinned ``n_gpu_layers`` are honoured first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from quantswarm.errors import ConfigError, QuantswarmError
from quantswarm.registry import ModelInfo, inspect_gguf
from serving.swarm_config import AgentSpec, SwarmConfig

MIB = 2**20


@dataclass
class ModelShape:
    """What the planner needs from a GGUF: per-block bytes, head bytes and KV bytes per token per block.

    ``output_gpu_bytes`` is what the output head puts on the GPU when offloaded (for tied embeddings
    llama.cpp copies ``token_embd``); ``output_host_bytes`` is what it costs on the host when not
    (nothing extra for tied embeddings: it reads ``token_embd`` in place).
    """

    n_layers: int
    layer_bytes: list[int]  # block 0 .. n_layers-1
    output_gpu_bytes: int
    output_host_bytes: int
    host_only_bytes: int  # token embeddings and other tensors that never leave host memory
    kv_bytes_per_token_layer: float

    @classmethod
    def from_gguf(cls, info: ModelInfo, kv_type_bytes: float = 2.0) -> ModelShape:
        named = info.other_tensors
        out_w, embd, norm = (named.get(k, 0) for k in ("output.weight", "token_embd.weight", "output_norm.weight"))
        return cls(
            n_layers=info.n_layers,
            layer_bytes=[info.layer_bytes.get(i, 0) for i in range(info.n_layers)],
            output_gpu_bytes=(out_w or embd) + norm,
            output_host_bytes=out_w + norm,
            host_only_bytes=info.other_bytes - out_w - norm,
            kv_bytes_per_token_layer=info.n_head_kv * info.head_dim * 2 * kv_type_bytes,
        )

    def gpu_weight_bytes(self, ngl: int) -> int:
        """Weight bytes on the GPU for ``-ngl ngl`` (last blocks first, then the output head)."""
        k = min(ngl, self.n_layers)
        blocks = sum(self.layer_bytes[self.n_layers - k:]) if k else 0
        return blocks + (self.output_gpu_bytes if ngl > self.n_layers else 0)

    def cpu_weight_bytes(self, ngl: int) -> int:
        """Weight bytes left in host memory for ``-ngl ngl``."""
        k = min(ngl, self.n_layers)
        blocks = sum(self.layer_bytes[: self.n_layers - k])
        return blocks + self.host_only_bytes + (0 if ngl > self.n_layers else self.output_host_bytes)

    def kv_bytes(self, layers: int, tokens: int) -> float:
        return self.kv_bytes_per_token_layer * min(layers, self.n_layers) * tokens


@dataclass
class AgentPlan:
    """The planned placement of one agent."""

    name: str
    n_layers: int
    n_gpu_layers: int
    gpu_weights: int
    gpu_kv: float
    overhead: int
    cpu_weights: int
    cpu_kv: float
    pinned: bool = False

    @property
    def gpu_bytes(self) -> float:
        return self.gpu_weights + self.gpu_kv + self.overhead

    @property
    def cpu_bytes(self) -> float:
        return self.cpu_weights + self.cpu_kv

    @property
    def full(self) -> bool:
        return self.n_gpu_layers > self.n_layers


@dataclass
class VramPlan:
    """Placement of every agent; ``budget`` is None for a CPU-only plan."""

    agents: dict[str, AgentPlan]
    budget_bytes: int | None
    headroom_bytes: int
    order: list[str] = field(default_factory=list)

    @property
    def gpu_bytes(self) -> float:
        return sum(a.gpu_bytes for a in self.agents.values())

    @property
    def cpu_bytes(self) -> float:
        return sum(a.cpu_bytes for a in self.agents.values())

    def rows(self) -> list[dict]:
        """The plan as table rows (MiB)."""
        out = []
        for name in self.order:
            a = self.agents[name]
            out.append({
                "agent": name, "ngl": f"{a.n_gpu_layers}/{a.n_layers + 1}" + (" pin" if a.pinned else ""),
                "gpu_weights_MiB": f"{a.gpu_weights / MIB:.1f}", "gpu_kv_MiB": f"{a.gpu_kv / MIB:.1f}",
                "overhead_MiB": f"{a.overhead / MIB:.0f}", "gpu_total_MiB": f"{a.gpu_bytes / MIB:.1f}",
                "cpu_MiB": f"{a.cpu_bytes / MIB:.1f}",
            })
        return out

    def summary(self) -> str:
        if self.budget_bytes is None:
            return f"CPU-only plan: {self.cpu_bytes / MIB:.1f} MiB of host memory, 0 MiB VRAM"
        return (f"VRAM {self.gpu_bytes / MIB:.1f} MiB of budget {self.budget_bytes / MIB:.0f} MiB "
                f"(headroom {self.headroom_bytes / MIB:.0f} MiB kept free); host {self.cpu_bytes / MIB:.1f} MiB")


def priority_order(cfg: SwarmConfig) -> list[str]:
    """Router agent first, then by usage (descending), then spec order."""
    names = list(cfg.agents)
    router = cfg.router_agent()
    return sorted(names, key=lambda n: (n != router, -cfg.agents[n].usage, names.index(n)))


def agent_plan(name: str, agent: AgentSpec, shape: ModelShape, ngl: int, overhead: int, gpu: bool,
               pinned: bool = False) -> AgentPlan:
    tokens = agent.n_ctx * agent.parallel
    ngl = max(0, min(ngl, shape.n_layers + 1))
    gpu_w = shape.gpu_weight_bytes(ngl)
    gpu_kv = shape.kv_bytes(ngl, tokens)
    return AgentPlan(
        name=name, n_layers=shape.n_layers, n_gpu_layers=ngl, gpu_weights=gpu_w, gpu_kv=gpu_kv,
        overhead=overhead if gpu else 0, cpu_weights=shape.cpu_weight_bytes(ngl),
        cpu_kv=shape.kv_bytes(shape.n_layers, tokens) - gpu_kv, pinned=pinned,
    )


def plan_vram(cfg: SwarmConfig, budget_mib: int | None, shapes: dict[str, ModelShape] | None = None,
              reduce: dict[str, int] | None = None) -> VramPlan:
    """Place the swarm in ``budget_mib`` (None or 0: CPU only). ``reduce`` caps an agent's layers (OOM re-plan).

    Raises ConfigError when the budget cannot hold the router agent fully (or pinned layers do not fit).
    """
    shapes = shapes or load_shapes(cfg)
    order = priority_order(cfg)
    reduce = reduce or {}
    v = cfg.vram
    if not budget_mib:
        plans = {n: agent_plan(n, cfg.agents[n], shapes[n], 0, 0, gpu=False) for n in order}
        return VramPlan(plans, None, 0, order)
    budget = budget_mib * MIB
    headroom = v.headroom_mib * MIB
    overhead = v.overhead_mib * MIB
    left = budget - headroom - overhead * len(order)
    if left < 0:
        raise ConfigError(f"vram.budget_mib: {budget_mib} MiB cannot hold the headroom ({v.headroom_mib} MiB) and "
                          f"{len(order)} contexts of vram.overhead_mib={v.overhead_mib}; raise the budget")
    plans: dict[str, AgentPlan] = {}
    for n in order:  # pinned first
        a = cfg.agents[n]
        if a.n_gpu_layers is not None:
            p = agent_plan(n, a, shapes[n], a.n_gpu_layers, overhead, gpu=True, pinned=True)
            left -= p.gpu_bytes - overhead
            plans[n] = p
    if left < 0:
        raise ConfigError(f"agents: pinned n_gpu_layers need {(budget - headroom - left) / MIB:.0f} MiB, more than "
                          f"vram.budget_mib - headroom_mib = {budget_mib - v.headroom_mib} MiB; lower a pin")
    router = cfg.router_agent()
    for n in order:
        if n in plans:
            continue
        a, s = cfg.agents[n], shapes[n]
        best = 0
        for ngl in range(min(s.n_layers + 1, reduce.get(n, s.n_layers + 1)), 0, -1):
            p = agent_plan(n, a, s, ngl, overhead, gpu=True)
            if p.gpu_bytes - overhead <= left:
                best = ngl
                break
        if n == router and best <= s.n_layers and n not in reduce:
            full = agent_plan(n, a, s, s.n_layers + 1, overhead, gpu=True)
            raise ConfigError(f"vram.budget_mib: {budget_mib} MiB cannot hold even the router agent {n!r} on GPU "
                              f"(needs {full.gpu_bytes / MIB:.0f} MiB + headroom {v.headroom_mib} MiB); "
                              "raise the budget or lower its n_ctx/parallel")
        p = agent_plan(n, a, s, best, overhead, gpu=True)
        left -= p.gpu_bytes - overhead
        plans[n] = p
    return VramPlan({n: plans[n] for n in order}, budget, headroom, order)


def load_shapes(cfg: SwarmConfig) -> dict[str, ModelShape]:
    """Read each agent's GGUF (the files must exist: quantize missing ones first)."""
    return {n: ModelShape.from_gguf(inspect_gguf(a.model), cfg.vram.kv_type_bytes) for n, a in cfg.agents.items()}


def resolve_budget_mib(cfg: SwarmConfig) -> int:
    """The budget in MiB: the spec's integer, or for `auto` the GPU's free VRAM (0 without NVML: CPU plan)."""
    from quantswarm.energy import free_vram_mib

    b = cfg.vram.budget_mib
    if b != "auto":
        return int(b)
    free = free_vram_mib()
    return int(free[cfg.vram.gpu]) if len(free) > cfg.vram.gpu else 0


def host_available_bytes() -> int:
    """MemAvailable from /proc/meminfo (0 if unreadable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def preflight(plan: VramPlan, gpu: int = 0) -> list[str]:
    """Check free VRAM (NVML) and free RAM for the plan; raises QuantswarmError when short, else returns notes."""
    from quantswarm.energy import free_vram_mib, nvml_status

    notes = []
    if plan.budget_bytes is not None:
        free = free_vram_mib()
        if len(free) <= gpu:
            raise QuantswarmError(f"preflight: the plan puts {plan.gpu_bytes / MIB:.0f} MiB on GPU {gpu} but NVML "
                                  f"says: {nvml_status()}; set vram.budget_mib: 0 for a CPU-only swarm")
        need = plan.gpu_bytes / MIB + plan.headroom_bytes / MIB
        if free[gpu] < need:
            raise QuantswarmError(f"preflight: GPU {gpu} has {free[gpu]:.0f} MiB free, the plan needs {need:.0f} MiB "
                                  "(incl. headroom); lower vram.budget_mib or free the GPU")
        notes.append(f"GPU {gpu}: {free[gpu]:.0f} MiB free, plan needs {need:.0f} MiB incl. headroom")
    avail = host_available_bytes()
    if avail and avail < plan.cpu_bytes:
        raise QuantswarmError(f"preflight: {avail / MIB:.0f} MiB of RAM available, the offloaded layers and KV need "
                              f"{plan.cpu_bytes / MIB:.0f} MiB; give more GPU budget or fewer/smaller agents")
    notes.append(f"RAM: {avail / MIB:.0f} MiB available, plan needs {plan.cpu_bytes / MIB:.0f} MiB on the host")
    return notes


def is_oom(log_text: str) -> bool:
    """Whether a llama-server load log reports an out-of-memory failure."""
    t = log_text.lower()
    return any(s in t for s in ("out of memory", "cudamalloc failed", "failed to allocate", "unable to allocate",
                                "cuda error: out of memory", "ggml_backend_cuda_buffer_type_alloc_buffer"))

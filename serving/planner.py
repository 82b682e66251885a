"""VRAM planner: choose ``n_gpu_layers`` per agent so the swarm fits the GPU budget with headroom.

The arithmetic follows how llama.cpp places a model with ``-ngl N``: the last N repeating blocks go
to the GPU (``i_gpu_start = n_layer - N``), and N = n_layers + 1 also moves the output head (for a
model with tied embeddings llama.cpp duplicates ``token_embd`` as the output). Token embeddings stay
in host memory. The KV cache of an offloaded block lives on the GPU:
``bytes/token/layer = n_head_kv(layer) * (head_dim_k + head_dim_v) * type_bytes``, times the context's cells
(``n_ctx * parallel`` padded as llama.cpp pads it); ``type_bytes`` is that of the agent's ``kv_cache_type``
(q8_0 1.0625, f16 2: :mod:`serving.memory_model`). The KV head count may differ per block; a block without KV
heads holds no cache.
Each context adds its compute buffer (:func:`serving.memory_model.compute_buffer_bytes`: grows with n_ubatch,
and with the slot's n_ctx x n_head without flash attention), on the GPU when it has one (on every GPU of a split),
else on the host, plus a measured constant on each GPU it uses (CUDA context, ``vram.overhead_mib``).

Agents are served in priority order: the router agent first, then by ``usage`` (descending), then
spec order; each takes as many layers as still fit. Pinned ``n_gpu_layers`` are honoured first.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quantswarm.errors import ConfigError, QuantswarmError
from quantswarm.registry import ModelInfo, inspect_gguf
from serving.memory_model import GraphDims, compute_buffer_bytes, kv_cells, kv_type_block, kv_type_bytes
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
    kv_layer_bytes: list[float]  # KV cache bytes per token of context, block 0 .. n_layers-1
    graph: GraphDims | None = None  # sizes of the compute graph (None: no compute buffer counted)

    @classmethod
    def from_gguf(cls, info: ModelInfo, kv_cache_type: str = "f16") -> ModelShape:
        """The shape of a GGUF with a KV cache of llama.cpp type ``kv_cache_type`` (f16, q8_0, ...)."""
        named = info.other_tensors
        out_w, embd, norm = (named.get(k, 0) for k in ("output.weight", "token_embd.weight", "output_norm.weight"))
        return cls(
            n_layers=info.n_layers,
            layer_bytes=[info.layer_bytes.get(i, 0) for i in range(info.n_layers)],
            output_gpu_bytes=(out_w or embd) + norm,
            output_host_bytes=out_w + norm,
            host_only_bytes=info.other_bytes - out_w - norm,
            kv_layer_bytes=info.kv_bytes_per_token_layers(kv_type_bytes(kv_cache_type)),
            graph=GraphDims(n_embd=info.n_embd, n_ff=info.n_ff, n_head=info.n_head,
                            n_embd_k_gqa=info.n_head_kv * info.head_dim, n_vocab=info.n_vocab),
        )

    def compute_bytes(self, agent: AgentSpec) -> int:
        """The agent's compute buffer (bytes; 0 without graph sizes)."""
        if self.graph is None:
            return 0
        return compute_buffer_bytes(self.graph, agent.n_ctx, agent.parallel, agent.n_ubatch,
                                    flash_attn=(agent.flash_attn or "on") == "on",
                                    kv_cache_type=agent.kv_cache_type or "f16")

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
        """KV cache bytes of the last ``layers`` blocks (the offloaded ones) for ``tokens`` of context."""
        k = min(layers, self.n_layers)
        return sum(self.kv_layer_bytes[self.n_layers - k:]) * tokens if k > 0 else 0.0


@dataclass
class AgentPlan:
    """The planned placement of one agent.

    ``gpu`` is the main GPU index (None: CPU-only plan); ``tensor_split`` (one integer proportion per GPU
    index) is set when the layers are split across GPUs, and ``devices`` holds the bytes per GPU index.
    ``overhead`` is the measured constant per GPU context, ``compute`` the compute buffer(s): on the GPU(s) of a
    GPU plan, in host memory on a CPU-only plan.
    """

    name: str
    n_layers: int
    n_gpu_layers: int
    gpu_weights: int
    gpu_kv: float
    overhead: int
    cpu_weights: int
    cpu_kv: float
    compute: int = 0
    pinned: bool = False
    gpu: int | None = None
    tensor_split: list[int] | None = None
    devices: dict[int, float] = field(default_factory=dict)

    @property
    def gpu_bytes(self) -> float:
        return self.gpu_weights + self.gpu_kv + self.overhead + (self.compute if self.gpu is not None else 0)

    @property
    def cpu_bytes(self) -> float:
        return self.cpu_weights + self.cpu_kv + (self.compute if self.gpu is None else 0)

    @property
    def full(self) -> bool:
        return self.n_gpu_layers > self.n_layers

    @property
    def gpu_label(self) -> str:
        if self.gpu is None:
            return "-"
        return "+".join(map(str, sorted(self.devices))) if self.tensor_split else str(self.gpu)

    def server_args(self, multi_gpu: bool) -> list[str]:
        """llama-server flags for the placement; none on a one-GPU or CPU plan (llama.cpp's defaults hold)."""
        if not multi_gpu or self.gpu is None:
            return []
        if self.tensor_split:
            return ["--split-mode", "layer", "--tensor-split", ",".join(map(str, self.tensor_split))]
        return ["--split-mode", "none", "--main-gpu", str(self.gpu)]


@dataclass
class VramPlan:
    """Placement of every agent; ``budget`` is None for a CPU-only plan.

    ``gpu_budgets`` maps each GPU index to its budget in bytes (one entry for a one-GPU plan);
    ``multi_gpu`` is set when the spec has ``vram.gpus`` with more than one GPU.
    """

    agents: dict[str, AgentPlan]
    budget_bytes: int | None
    headroom_bytes: int
    order: list[str] = field(default_factory=list)
    gpu_budgets: dict[int, int] = field(default_factory=dict)
    multi_gpu: bool = False

    @property
    def gpu_bytes(self) -> float:
        return sum(a.gpu_bytes for a in self.agents.values())

    @property
    def cpu_bytes(self) -> float:
        return sum(a.cpu_bytes for a in self.agents.values())

    def per_gpu_bytes(self) -> dict[int, float]:
        """Planned bytes on each GPU index of the budget (0 for an unused one)."""
        out = dict.fromkeys(self.gpu_budgets, 0.0)
        for a in self.agents.values():
            for d, b in a.devices.items():
                out[d] = out.get(d, 0.0) + b
        return out

    def rows(self) -> list[dict]:
        """The plan as table rows (MiB); on a multi-GPU plan the `ngl` cell also names the GPU(s)."""
        out = []
        for name in self.order:
            a = self.agents[name]
            ngl = f"{a.n_gpu_layers}/{a.n_layers + 1}" + (" pin" if a.pinned else "")
            if self.multi_gpu:
                ngl += f" @gpu{a.gpu_label}"
            out.append({
                "agent": name, "ngl": ngl, "gpu": a.gpu_label,
                "gpu_weights_MiB": f"{a.gpu_weights / MIB:.1f}", "gpu_kv_MiB": f"{a.gpu_kv / MIB:.1f}",
                "overhead_MiB": f"{a.overhead / MIB:.0f}", "compute_MiB": f"{a.compute / MIB:.1f}",
                "gpu_total_MiB": f"{a.gpu_bytes / MIB:.1f}",
                "cpu_MiB": f"{a.cpu_bytes / MIB:.1f}",
            })
        return out

    def summary(self) -> str:
        if self.budget_bytes is None:
            return f"CPU-only plan: {self.cpu_bytes / MIB:.1f} MiB of host memory, 0 MiB VRAM"
        line = (f"VRAM {self.gpu_bytes / MIB:.1f} MiB of budget {self.budget_bytes / MIB:.0f} MiB "
                f"(headroom {self.headroom_bytes / MIB:.0f} MiB kept free); host {self.cpu_bytes / MIB:.1f} MiB")
        if self.multi_gpu:
            used = self.per_gpu_bytes()
            line += "\n" + "; ".join(f"GPU {d}: {used[d] / MIB:.1f} of {b / MIB:.0f} MiB"
                                     for d, b in sorted(self.gpu_budgets.items()))
        return line


def priority_order(cfg: SwarmConfig) -> list[str]:
    """Router agent first, then by usage (descending), then spec order."""
    names = list(cfg.agents)
    router = cfg.router_agent()
    return sorted(names, key=lambda n: (n != router, -cfg.agents[n].usage, names.index(n)))


def agent_plan(name: str, agent: AgentSpec, shape: ModelShape, ngl: int, overhead: int, gpu: bool | int,
               pinned: bool = False, partial_offload: int = 0) -> AgentPlan:
    """One agent on one GPU (``gpu``: its index, True for GPU 0, False for a CPU-only plan). ``partial_offload``
    (bytes) is added to the context's overhead when only some of its layers are on the GPU."""
    tokens = kv_cells(agent.n_ctx, agent.parallel)[1]
    ngl = max(0, min(ngl, shape.n_layers + 1))
    if 1 <= ngl <= shape.n_layers:
        overhead += partial_offload
    gpu_w = shape.gpu_weight_bytes(ngl)
    gpu_kv = shape.kv_bytes(ngl, tokens)
    index = None if gpu is False else (0 if gpu is True else gpu)
    p = AgentPlan(
        name=name, n_layers=shape.n_layers, n_gpu_layers=ngl, gpu_weights=gpu_w, gpu_kv=gpu_kv,
        overhead=overhead if index is not None else 0, cpu_weights=shape.cpu_weight_bytes(ngl),
        cpu_kv=shape.kv_bytes(shape.n_layers, tokens) - gpu_kv, compute=shape.compute_bytes(agent), pinned=pinned,
        gpu=index,
    )
    if index is not None:
        p.devices = {index: p.gpu_bytes}
    return p


def split_plan(name: str, agent: AgentSpec, shape: ModelShape, ngl: int, overhead: int, split: list[int],
               pinned: bool = False) -> AgentPlan:
    """One agent's offloaded layers split across GPUs (``--split-mode layer --tensor-split``).

    ``split`` has one proportion per GPU index. Layer placement follows llama.cpp's ``load_tensors``: the
    offloaded layers in order (blocks, then the output head), the j-th of ``act`` goes to the first GPU whose
    cumulative share exceeds ``j / act``; a block's KV cache lives with it, and each GPU used holds a context
    (the constant ``overhead`` and a compute buffer: each GPU's scheduler reserves one).
    """
    p = agent_plan(name, agent, shape, ngl, overhead, gpu=True, pinned=pinned)
    n, ngl = shape.n_layers, p.n_gpu_layers
    k = min(ngl, n)
    items = [(il, shape.layer_bytes[il]) for il in range(n - k, n)]  # (block, bytes); -1 is the output head
    if ngl > n:
        items.append((-1, shape.output_gpu_bytes))
    cum = list(itertools.accumulate(np.float32(x) for x in split))
    cum = [np.float32(c / cum[-1]) for c in cum]
    tokens = kv_cells(agent.n_ctx, agent.parallel)[1]
    compute = p.compute
    devices: dict[int, float] = {}
    for j, (il, nbytes) in enumerate(items):
        d = bisect.bisect_right(cum, np.float32(j) / np.float32(len(items)))
        devices[d] = devices.get(d, 0.0) + nbytes + (shape.kv_layer_bytes[il] * tokens if il >= 0 else 0.0)
    p.devices = {d: b + overhead + compute for d, b in sorted(devices.items())}
    p.overhead = overhead * len(p.devices)
    p.compute = compute * len(p.devices)
    p.gpu = min(p.devices) if p.devices else 0
    p.tensor_split = list(split)
    return p


def plan_vram(cfg: SwarmConfig, budget_mib: int | None, shapes: dict[str, ModelShape] | None = None,
              reduce: dict[str, int] | None = None, gpus_mib: list[int] | None = None) -> VramPlan:
    """Place the swarm in ``budget_mib`` (None or 0: CPU only). ``reduce`` caps an agent's layers (OOM re-plan).

    With ``vram.gpus`` in the spec the budgets are one per GPU index: ``gpus_mib`` when given, else
    :func:`resolve_gpu_budgets` (NVML free memory for `auto`); ``budget_mib`` 0 still means CPU only.

    Placement, in order: pinned ``n_gpu_layers`` / ``tensor_split`` first; then agents in priority order
    (router first, then usage), each whole on one GPU, best fit (the GPU left with the least room that holds
    it; a ``gpu`` pin restricts the choice); a model that fits no single GPU is split across GPUs
    (``tensor_split`` proportional to each GPU's room left); otherwise it is partly offloaded to the CPU on
    the GPU with the most room, as on one GPU. Headroom is kept on every GPU, and each context costs
    ``vram.overhead_mib`` plus its compute buffer on every GPU it uses. With one GPU this is exactly the
    single-GPU planner.

    Raises ConfigError when the router cannot be held fully on GPU (or pins do not fit), naming the key.
    """
    shapes = shapes or load_shapes(cfg)
    order = priority_order(cfg)
    reduce = reduce or {}
    v = cfg.vram
    multi = v.gpus is not None
    if not budget_mib and gpus_mib is None:
        plans = {n: agent_plan(n, cfg.agents[n], shapes[n], 0, 0, gpu=False) for n in order}
        return VramPlan(plans, None, 0, order)
    if multi:
        budgets = dict(enumerate(gpus_mib if gpus_mib is not None else resolve_gpu_budgets(cfg)))
        budgets = {d: int(b) for d, b in budgets.items() if b > 0}
        if not budgets:
            plans = {n: agent_plan(n, cfg.agents[n], shapes[n], 0, 0, gpu=False) for n in order}
            return VramPlan(plans, None, 0, order)
    else:
        budgets = {v.gpu: int(budget_mib)}
    key = "vram.gpus" if multi else "vram.budget_mib"
    return _Placer(cfg, shapes, order, reduce, budgets, key).run()


class _Placer:
    """The placement state of :func:`plan_vram`: bytes left per GPU, contexts still to be placed."""

    def __init__(self, cfg: SwarmConfig, shapes: dict[str, ModelShape], order: list[str], reduce: dict[str, int],
                 budgets: dict[int, int], key: str):
        v = cfg.vram
        self.cfg, self.shapes, self.order, self.reduce, self.key = cfg, shapes, order, reduce, key
        self.budgets = budgets
        self.headroom, self.overhead = v.headroom_mib * MIB, v.overhead_mib * MIB
        self.partial = v.partial_offload_mib * MIB
        self.left = {d: b * MIB - self.headroom for d, b in budgets.items()}
        self.single = len(budgets) == 1
        self.plans: dict[str, AgentPlan] = {}
        # bytes of each agent's context on a GPU: the measured constant and its compute buffer
        self.ctx = {n: self.overhead + shapes[n].compute_bytes(cfg.agents[n]) for n in order}
        budget_text = f"{next(iter(budgets.values()))} MiB" if self.single else f"{list(budgets.values())} MiB"
        self.budget_text = budget_text
        if sum(self.left.values()) - sum(self.ctx.values()) < 0 or min(self.left.values()) < 0:
            per = "" if self.single else " per GPU"
            raise ConfigError(f"{key}: {budget_text} cannot hold the headroom ({v.headroom_mib} MiB{per}) and "
                              f"{len(order)} contexts of vram.overhead_mib={v.overhead_mib} plus their compute "
                              f"buffers ({sum(self.ctx.values()) / MIB:.0f} MiB in all); raise the budget")

    def spare(self, d: int) -> float:
        """Bytes left on GPU ``d``; on one GPU less the contexts of the agents not placed yet (reserved up front)."""
        if self.single:
            return self.left[d] - sum(b for n, b in self.ctx.items() if n not in self.plans)
        return self.left[d]

    def room(self, d: int, n: str) -> float:
        """Bytes agent ``n``'s placement (its own context included) may take on GPU ``d``."""
        return self.spare(d) + (self.ctx[n] if self.single and n not in self.plans else 0)

    def take(self, p: AgentPlan) -> None:
        for d, b in p.devices.items():
            self.left[d] -= b
        self.plans[p.name] = p

    def run(self) -> VramPlan:
        cfg, v = self.cfg, self.cfg.vram
        for n in self.order:  # pinned first
            a, s = cfg.agents[n], self.shapes[n]
            if a.tensor_split is not None:
                ngl = s.n_layers + 1 if a.n_gpu_layers is None else a.n_gpu_layers
                split = self._split_vector(n, a.tensor_split)
                p = split_plan(n, a, s, ngl, self.overhead, split, pinned=True)
                over = [d for d, b in p.devices.items() if b > self.room(d, n)]
                if over:
                    raise ConfigError(f"agents.{n}.tensor_split: {a.tensor_split} puts "
                                      f"{p.devices[over[0]] / MIB:.0f} MiB on GPU {over[0]}, which has "
                                      f"{self.room(over[0], n) / MIB:.0f} MiB left; change the split or lower "
                                      f"n_gpu_layers")
                self.take(p)
            elif a.n_gpu_layers is not None:
                d = self._pinned_gpu(n) if a.gpu is not None else max(self.left, key=lambda i: (self.room(i, n), -i))
                self.take(agent_plan(n, a, s, a.n_gpu_layers, self.overhead, gpu=d, pinned=True,
                                     partial_offload=self.partial))
        if any(self.spare(d) < 0 for d in self.left):
            d = min(self.left, key=self.spare)
            if self.single:
                need = self.budgets[d] * MIB - self.headroom - self.spare(d)
                raise ConfigError(f"agents: pinned n_gpu_layers need {need / MIB:.0f} MiB, more than "
                                  f"vram.budget_mib - headroom_mib = {self.budgets[d] - v.headroom_mib} MiB; "
                                  "lower a pin")
            raise ConfigError(f"agents: pinned n_gpu_layers overfill GPU {d} by {-self.spare(d) / MIB:.0f} MiB "
                              f"of vram.gpus[{d}] = {self.budgets[d]} MiB (headroom {v.headroom_mib} MiB); lower "
                              "a pin or move it (agents.NAME.gpu)")
        router = cfg.router_agent()
        for n in self.order:
            if n not in self.plans:
                self.take(self._place(n, n == router))
        plans = {n: self.plans[n] for n in self.order}
        total = sum(self.budgets.values()) * MIB
        return VramPlan(plans, total, self.headroom, self.order, {d: b * MIB for d, b in self.budgets.items()},
                        multi_gpu=self.key == "vram.gpus" and len(self.budgets) > 1)

    def _pinned_gpu(self, n: str) -> int:
        d = self.cfg.agents[n].gpu
        if d not in self.left:
            raise ConfigError(f"agents.{n}.gpu: GPU {d} has no budget (GPUs with a budget: "
                              f"{sorted(self.left)}); pin another GPU or check vram.gpus")
        return d

    def _split_vector(self, n: str, ts: list[float]) -> list[float]:
        if any(x > 0 and i not in self.left for i, x in enumerate(ts)):
            raise ConfigError(f"agents.{n}.tensor_split: {ts} gives layers to a GPU without a budget "
                              f"(GPUs with a budget: {sorted(self.left)})")
        return list(ts)

    def _place(self, n: str, is_router: bool) -> AgentPlan:
        a, s, ov = self.cfg.agents[n], self.shapes[n], self.overhead
        gpus = [self._pinned_gpu(n)] if a.gpu is not None else sorted(self.left)
        if n not in self.reduce:
            full = agent_plan(n, a, s, s.n_layers + 1, ov, gpu=gpus[0])
            fits = [d for d in gpus if full.gpu_bytes <= self.room(d, n)]
            if fits:  # best fit: the GPU left with the least room
                return agent_plan(n, a, s, s.n_layers + 1, ov, gpu=min(fits, key=lambda d: (self.room(d, n), d)))
            if a.gpu is None and len(gpus) > 1:
                p = self._try_split(n)
                if p is not None:
                    return p
            if is_router:
                raise self._router_error(n, full)
        d = max(gpus, key=lambda i: (self.room(i, n), -i))
        if not self.single and self.room(d, n) < self.ctx[n]:
            where = f"agents.{n}.gpu: GPU {d}" if a.gpu is not None else f"{self.key}: no GPU"
            compute_mib = (self.ctx[n] - self.overhead) / MIB
            raise ConfigError(f"{where} has no room left for agent {n!r}'s context (vram.overhead_mib="
                              f"{self.cfg.vram.overhead_mib} + compute buffer {compute_mib:.0f} MiB); raise the "
                              "budgets or serve fewer agents")
        best = 0
        for ngl in range(min(s.n_layers + 1, self.reduce.get(n, s.n_layers + 1)), 0, -1):
            if agent_plan(n, a, s, ngl, ov, gpu=d, partial_offload=self.partial).gpu_bytes <= self.room(d, n):
                best = ngl
                break
        return agent_plan(n, a, s, best, ov, gpu=d, partial_offload=self.partial)

    def _try_split(self, n: str) -> AgentPlan | None:
        """Full offload split over the GPUs with room, proportional to the room (MiB) each has left."""
        a, s, ov = self.cfg.agents[n], self.shapes[n], self.overhead
        room = {d: int((self.room(d, n) - self.ctx[n]) // MIB) for d in sorted(self.left)}
        split = [max(0, room.get(i, 0)) for i in range(max(self.left) + 1)]
        if sum(x > 0 for x in split) < 2:
            return None
        p = split_plan(n, a, s, s.n_layers + 1, ov, split)
        return p if all(b <= self.room(d, n) for d, b in p.devices.items()) else None

    def _router_error(self, n: str, full: AgentPlan) -> ConfigError:
        v = self.cfg.vram
        if self.single:
            return ConfigError(f"vram.budget_mib: {self.budget_text} cannot hold even the router agent {n!r} on "
                               f"GPU (needs {full.gpu_bytes / MIB:.0f} MiB + headroom {v.headroom_mib} MiB); "
                               "raise the budget or lower its n_ctx/parallel")
        a = self.cfg.agents[n]
        where = (f"agents.{n}.gpu: GPU {a.gpu} ({self.room(a.gpu, n) / MIB:.0f} MiB left)" if a.gpu is not None
                 else f"vram.gpus: {self.budget_text} (left per GPU: "
                      f"{ {d: round(self.room(d, n) / MIB) for d in sorted(self.left)} } MiB)")
        return ConfigError(f"{where} cannot hold the router agent {n!r} fully on GPU, on one GPU or split "
                           f"(needs {full.gpu_bytes / MIB:.0f} MiB + headroom {v.headroom_mib} MiB per GPU); "
                           "raise the budgets or lower its n_ctx/parallel")


def load_shapes(cfg: SwarmConfig) -> dict[str, ModelShape]:
    """Read each agent's GGUF (the files must exist: quantize missing ones first) with its KV cache type."""
    shapes = {}
    for n, a in cfg.agents.items():
        info = inspect_gguf(a.model)
        check_cache_blocks(info, a.kv_cache_type or "f16", f"agents.{n}.kv_cache_type")
        shapes[n] = ModelShape.from_gguf(info, a.kv_cache_type or "f16")
    return shapes


def check_cache_blocks(info: ModelInfo, kv_cache_type: str, key: str) -> None:
    """A quantized cache packs each head's row in whole blocks: llama.cpp refuses a type whose block size does not
    divide the K/V head size (``llama_init_from_model``); so does this, in one line."""
    block = kv_type_block(kv_cache_type)[0]
    for dim in {info.head_dim, info.head_dim_v or info.head_dim} - {0}:
        if dim % block:
            raise ConfigError(f"{key}: {kv_cache_type} stores blocks of {block} elements, which do not divide "
                              f"{info.path.name}'s head size {dim}; use f16 or a type whose block divides it")


def resolve_budget_mib(cfg: SwarmConfig) -> int:
    """The budget in MiB: the spec's integer, or for `auto` the GPU's free VRAM (0 without NVML: CPU plan).

    With ``vram.gpus`` it is the sum of :func:`resolve_gpu_budgets` (0 without NVML where `auto` is asked).
    """
    from quantswarm.energy import free_vram_mib

    if cfg.vram.gpus is not None:
        return sum(resolve_gpu_budgets(cfg))
    b = cfg.vram.budget_mib
    if b != "auto":
        return int(b)
    free = free_vram_mib()
    return int(free[cfg.vram.gpu]) if len(free) > cfg.vram.gpu else 0


def resolve_gpu_budgets(cfg: SwarmConfig, free: list[float] | None = None) -> list[int]:
    """One budget (MiB) per GPU index from ``vram.gpus``: integers as written, `auto` from NVML free memory.

    ``free`` (MiB per GPU) replaces the NVML reading, for tests. `auto` for a GPU NVML does not see is 0, and
    ``vram.gpus: auto`` without NVML gives [] (a CPU plan).
    """
    from quantswarm.energy import free_vram_mib

    g = cfg.vram.gpus
    if g is None:
        return [resolve_budget_mib(cfg)]
    if free is None and (g == "auto" or "auto" in g):
        free = free_vram_mib()
    free = free or []
    if g == "auto":
        return [int(f) for f in free]
    return [int(b) if b != "auto" else (int(free[i]) if i < len(free) else 0) for i, b in enumerate(g)]


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
        need_by_gpu = plan.per_gpu_bytes() if plan.multi_gpu else {gpu: plan.gpu_bytes}
        for d, used in sorted(need_by_gpu.items()):
            if len(free) <= d:
                raise QuantswarmError(f"preflight: the plan puts {used / MIB:.0f} MiB on GPU {d} but NVML "
                                      f"says: {nvml_status()} ({len(free)} GPUs); set vram.budget_mib: 0 for a "
                                      "CPU-only swarm or fix vram.gpus")
            need = used / MIB + plan.headroom_bytes / MIB
            if free[d] < need:
                raise QuantswarmError(f"preflight: GPU {d} has {free[d]:.0f} MiB free, the plan needs {need:.0f} "
                                      "MiB (incl. headroom); lower vram.budget_mib / vram.gpus or free the GPU")
            notes.append(f"GPU {d}: {free[d]:.0f} MiB free, plan needs {need:.0f} MiB incl. headroom")
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

"""Several llama-server processes over one GGUF, used as one engine.

One llama-server process tops out at a fixed number of generated tokens per second however many slots it has (its
per-token work runs on one CPU thread), while the GPU behind it has room for more. ``ReplicatedEngine`` starts
``replicas`` processes (each with ``parallel`` slots) and sends every request to the replica with the fewest
requests in flight, so ``replicas x parallel`` requests run at once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from quantswarm.engine.base import Completion, GenerationParams, Message
from quantswarm.engine.server import LlamaServerEngine
from quantswarm.errors import EngineError

CORES_PER_REPLICA = 4  # the H200's best measured layout: 4 replicas x 16 slots on 16 cores (2.7k tok/s, 2026-11-30)
MAX_REPLICAS = 8
RUNTIME_MIB = 300  # CUDA context + compute buffers per llama-server process, a margin over measured ~250


def replica_mib(weights_bytes: int, kv_bytes_per_token: float, n_ctx: int, parallel: int, n_vocab: int) -> float:
    """Estimated device memory of one llama-server replica in MiB: weights, the f16 KV cache of ``parallel`` slots
    of ``n_ctx`` tokens, the f32 logits of one token per slot, and ``RUNTIME_MIB``."""
    kv = kv_bytes_per_token * n_ctx * parallel
    return (weights_bytes + kv + 4 * n_vocab * parallel) / 2**20 + RUNTIME_MIB


def auto_replicas(free_vram_mib: list[float], per_replica_mib: float, cores: int,
                  models_at_once: int = 1) -> tuple[int, str]:
    """``--replicas auto``: (replicas, why) from the first visible GPU's free memory and the CPU cores.

    A llama-server process caps its generated tok/s by its one thread of per-token work (measured on an H200:
    ~1.2k tok/s at any slot count), so replicas pay while there are cores for them: ``cores //
    CORES_PER_REPLICA``, as many as fit in 90% of the free memory, at most ``MAX_REPLICAS``; all three shared by
    ``models_at_once`` models. Without a GPU, 1 (replicas would share the same cores as one process's threads)."""
    if not free_vram_mib:
        return 1, "no GPU visible: replicas would only share the same CPU cores"
    free = free_vram_mib[0] / models_at_once
    fit = int(0.9 * free // per_replica_mib)
    by_cores = cores // (CORES_PER_REPLICA * models_at_once)
    n = max(1, min(fit, by_cores, MAX_REPLICAS))
    return n, (f"{fit} fit in {free:.0f} MiB free at ~{per_replica_mib:.0f} MiB each, {by_cores} by {cores} cores "
               f"/ {CORES_PER_REPLICA}{f' / {models_at_once} models' if models_at_once > 1 else ''}, "
               f"at most {MAX_REPLICAS}")


def placement_args(gpus: tuple[int, ...], replica: int) -> tuple[str, ...]:
    """llama-server flags that put replica ``replica`` whole on GPU ``gpus[replica % len(gpus)]`` (a CUDA index),
    none when ``gpus`` is empty (llama.cpp's default: every replica's layers split over all visible GPUs)."""
    if not gpus:
        return ()
    return ("--split-mode", "none", "--main-gpu", str(gpus[replica % len(gpus)]))


class ReplicatedEngine:
    """``replicas`` llama-server processes of one model; requests go to the least-busy replica. ``gpus`` spreads
    the replicas over those GPUs in turn, each replica whole on one (``placement_args``)."""

    backend = "llama-server"

    def __init__(self, model_path: str, *, replicas: int = 2, parallel: int = 4, gpus: tuple[int, ...] = (),
                 **kwargs):
        if replicas < 1:
            raise EngineError(f"replicas must be >= 1, not {replicas}")
        self.model_path = str(model_path)
        self.gpus = tuple(gpus)
        extra = tuple(kwargs.pop("extra_args", ()))
        with ThreadPoolExecutor(replicas) as pool:
            futures = [pool.submit(LlamaServerEngine, model_path, parallel=parallel,
                                   extra_args=extra + placement_args(self.gpus, i), **kwargs) for i in range(replicas)]
        started, errors = [], []
        for f in futures:
            try:
                started.append(f.result())
            except EngineError as exc:
                errors.append(exc)
        if errors:
            for eng in started:
                eng.close()
            raise EngineError(f"{len(errors)} of {replicas} replicas failed to start: {errors[0]}")
        self.engines: list[LlamaServerEngine] = started
        self.parallel = parallel * replicas
        self.replicas = replicas
        self.url = self.engines[0].url
        self._busy = [0] * replicas
        self._lock = threading.Lock()

    def _pick(self) -> int:
        with self._lock:
            i = min(range(self.replicas), key=self._busy.__getitem__)
            self._busy[i] += 1
            return i

    def _call(self, method: str, *args):
        i = self._pick()
        try:
            return getattr(self.engines[i], method)(*args)
        finally:
            with self._lock:
                self._busy[i] -= 1

    def chat(self, messages: list[Message], params: GenerationParams | None = None) -> Completion:
        return self._call("chat", messages, params)

    def complete(self, prompt: str, params: GenerationParams | None = None) -> Completion:
        return self._call("complete", prompt, params)

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        return self._call("choice_logprobs", messages, choices)

    def alive(self) -> bool:
        """True while every replica's process runs."""
        return all(e.proc.poll() is None for e in self.engines)

    @property
    def pids(self) -> list[int]:
        return [e.pid for e in self.engines]

    def close(self) -> None:
        for e in self.engines:
            e.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

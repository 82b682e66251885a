"""llama.cpp engine: two backends behind one interface (see :class:`Engine`)."""

from __future__ import annotations

from quantswarm.engine.base import Completion, Engine, GenerationParams, Message, best_choice
from quantswarm.engine.build import find_tool
from quantswarm.errors import EngineError

BACKENDS = ("auto", "llama-server", "llama-cpp-python")


def open_engine(model_path: str, backend: str = "auto", **kwargs) -> Engine:
    """Load ``model_path`` with a backend: llama-server (throughput) or llama-cpp-python (in-process).

    ``auto`` picks llama-server when the tool is built, else in-process contexts. Keyword
    arguments (n_ctx, parallel, n_gpu_layers, n_threads, seed, lora_path) go to the backend; ``replicas`` > 1 (or
    ``gpus``, the GPUs to spread them over) starts that many llama-server processes behind one engine
    (:class:`~quantswarm.engine.replicas.ReplicatedEngine`).
    """
    replicas = int(kwargs.pop("replicas", 1) or 1)
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "llama-server" if find_tool("llama-server") else "llama-cpp-python"
    if (replicas > 1 or kwargs.get("gpus")) and backend != "llama-server":
        raise EngineError(f"replicas={replicas} needs the llama-server backend, not {backend}")
    if backend == "llama-server":
        from quantswarm.engine.server import LlamaServerEngine

        if replicas > 1 or kwargs.get("gpus"):
            from quantswarm.engine.replicas import ReplicatedEngine

            return ReplicatedEngine(model_path, replicas=replicas, **kwargs)
        return LlamaServerEngine(model_path, **kwargs)
    from quantswarm.engine.inprocess import InProcessEngine

    return InProcessEngine(model_path, **kwargs)


__all__ = ["BACKENDS", "Completion", "Engine", "GenerationParams", "Message", "best_choice", "open_engine"]

"""The router LM: the swarm's cheapest model served by llama.cpp's llama-server, seen by DSPy through LiteLLM."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from quantswarm.errors import ConfigError
from quantswarm.registry import DEFAULT_MODEL, resolve_model


def resolve_router_model(spec: str, swarm_router_model: str = "") -> Path:
    """The router GGUF: an explicit path, the swarm's cheapest agent's file if on this machine, else SmolLM2-135M."""
    from quantswarm.paths import models_dir

    if spec:
        return resolve_model(spec)
    if swarm_router_model:
        root = models_dir()
        hits = [root / swarm_router_model] if (root / swarm_router_model).is_file() else \
            list(root.glob(f"**/{swarm_router_model}"))
        if hits:
            return hits[0]
        try:
            return resolve_model(swarm_router_model)
        except Exception:
            pass
    return resolve_model(DEFAULT_MODEL)


def start_router_server(model: Path, *, n_ctx: int = 4096, parallel: int = 2, seed: int = 0,
                        n_threads: int | None = None, n_gpu_layers: int = -1, embeddings: bool = False):
    """Start llama-server on 127.0.0.1 for the router model; the caller closes it.

    ``n_gpu_layers`` -1 puts the whole router LM on the GPU (a CPU build ignores it). ``embeddings`` serves
    ``/embedding`` (mean-pooled) instead of completions.
    ``n_threads`` defaults to $QUANTSWARM_ROUTER_THREADS, else 1: the router is co-resident with the swarm's agents,
    and on a busy CPU llama.cpp's spinning thread pool collapses token generation when threads are oversubscribed.
    """
    from quantswarm.engine.server import LlamaServerEngine

    threads = n_threads or int(os.environ.get("QUANTSWARM_ROUTER_THREADS", "1"))
    extra = ("--embeddings", "--pooling", "mean") if embeddings else ()
    return LlamaServerEngine(str(model), n_ctx=n_ctx, parallel=parallel, seed=seed, n_threads=threads,
                             n_gpu_layers=n_gpu_layers, extra_args=extra)


def dspy_lm(api_base: str, *, max_tokens: int, temperature: float = 0.0, name: str = "router"):
    """A DSPy LM for a llama-server URL; ``hosted_vllm/`` sends ``max_tokens`` (which llama.cpp honours)."""
    import dspy

    if not api_base.startswith(("http://", "https://")):
        raise ConfigError(f"api_base={api_base!r}: give a URL such as http://127.0.0.1:8080")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)  # truncation at max_tokens is intended here
    base = api_base.rstrip("/")
    base = base if base.endswith("/v1") else base + "/v1"
    return dspy.LM(f"hosted_vllm/{name}", api_base=base, api_key="local", max_tokens=max_tokens,
                   temperature=temperature, cache=False, num_retries=1)

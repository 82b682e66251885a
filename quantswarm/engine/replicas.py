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


class ReplicatedEngine:
    """``replicas`` llama-server processes of one model; requests go to the least-busy replica."""

    backend = "llama-server"

    def __init__(self, model_path: str, *, replicas: int = 2, parallel: int = 4, **kwargs):
        if replicas < 1:
            raise EngineError(f"replicas must be >= 1, not {replicas}")
        self.model_path = str(model_path)
        with ThreadPoolExecutor(replicas) as pool:
            futures = [pool.submit(LlamaServerEngine, model_path, parallel=parallel, **kwargs) for _ in range(replicas)]
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

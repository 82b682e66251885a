"""The engine interface every job uses, whichever llama.cpp backend is behind it."""

from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Message = dict[str, str]


@dataclass
class GenerationParams:
    """Decoding settings; temperature 0 means greedy."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF grammar that constrains the output (llama.cpp)


@dataclass
class Completion:
    """One answer, with the counts and timings every results row records."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    finish_reason: str = ""
    prompt_ms: float | None = None  # prompt processing time reported by llama.cpp
    gen_ms: float | None = None  # generation time reported by llama.cpp
    top_logprobs: list[dict[str, float]] = field(default_factory=list)  # per generated token


@runtime_checkable
class Engine(Protocol):
    """A loaded model that answers chat requests; ``parallel`` requests may run at once."""

    backend: str
    model_path: str
    parallel: int

    def chat(self, messages: list[Message], params: GenerationParams | None = None) -> Completion: ...

    def complete(self, prompt: str, params: GenerationParams | None = None) -> Completion: ...

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        """Log-probability of each single-token choice (e.g. "A".."D") as the next answer token."""
        ...

    def close(self) -> None: ...


def best_choice(logprobs: dict[str, float]) -> str:
    """The choice with the highest log-probability ('' if none was seen)."""
    finite = {k: v for k, v in logprobs.items() if not math.isinf(v)}
    return max(finite, key=finite.__getitem__) if finite else ""


def fold_choice_logprobs(candidates: list[tuple[str, float]], choices: list[str]) -> dict[str, float]:
    """Map (token text, logprob) pairs onto choices: the best token whose stripped text is the choice."""
    out = {c: -math.inf for c in choices}
    for token, lp in candidates:
        key = token.strip()
        if key in out and lp > out[key]:
            out[key] = lp
    return out


@contextmanager
def quiet_native_stderr(logfile: str | None = None):
    """Send the C library's stderr (llama.cpp's per-tensor logs) to ``logfile`` or /dev/null for a block."""
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(logfile or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)
